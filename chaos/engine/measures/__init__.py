"""Measures, one idea per file, each registered by name in `chaos.engine.registry.MEASURES`.
A measure reads a trial's `Observations` and returns a JSON value; names are the same
everywhere (design: db_queries, amplification, recovery_s, lost, ...)."""
