"""Result documents as a report folder: markdown tables, plots and an HTML page."""
