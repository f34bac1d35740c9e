"""Chaos backends: one interface (`base.Backend`), one file per way of running the lab."""
