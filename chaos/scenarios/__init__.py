"""Scripted scenarios: each runs on its own local stack and returns a result document (JSON)."""
