"""Runnable examples of the lab's library (`herdlab`) in a service of one's own."""
