"""The scenario engine: experiments as files, one runner, one kind of result document.

An experiment (`model.py`, read from a TOML file by `spec.py`) is data: the stack's settings, the
herd, setup actions, a timeline of actions, an end condition, the measures to compute, variants
to sweep and a hypothesis. The
runner (`runner.py`) runs each variant as a trial on a fresh local stack (`trial.py`), computes
the measures (`measures/`, one file each, registered), checks the hypothesis (`hypothesis.py`)
and writes a result document with provenance (`provenance.py`). Built-in scenarios are folders
(`chaos/scenarios/NAME/`): a shipped experiment file plus, where needed, a kind that names the
document's fields, so `chaos scenario NAME` and `chaos run FILE` are the same run.

Actions, conditions, measures, observers and kinds register themselves in `registry.py`: adding
one is one file plus its test.
"""
