"""Wire faults: a TCP proxy in front of the DB and/or the cache whose bytes can be delayed,
throttled, dropped (a partition), reset or cut, at runtime (`chaos up --proxy db,cache`).

- `proxy.py`: the links, the pipe, the cross-cutting rules (direction, toxicity, expiry);
- `toxics/`: one file per fault, registered by kind;
- `admin.py`: the typed admin plane (gRPC `WireAdmin`) and its client;
- `__main__.py`: `python -m chaos.wire`, the process the local stack starts.
"""
