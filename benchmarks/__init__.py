"""herdlab's benchmarks: each headline claim measured beside its physical limit and its peers.

`python -m benchmarks` runs every section in one run and rewrites `BENCHMARKS.md` and
`benchmarks/results.json` (see `__main__.py`). One module per section: `coalescing`,
`hit_path`, `policies` (on `contention`, Brooker's model), `recovery` (`herd_recovery`),
`herd_scale`, `sharpness`, `wire_proxy`; the processes they drive: `loadgen` (the load
generator), `bare_server` (the limit for the cache), `peers` (in-process stampede protection),
`herd_probe` (one herd). Each section's module writes its own part of the Markdown; `report`
assembles them (with `markdown`'s tables and units).
"""
