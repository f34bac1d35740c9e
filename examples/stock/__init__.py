"""The stock example: a small service of its own (`stock.proto`) that keeps itself within its
capacity with `herdlab.server.LoadShedder`, and a client that gains a retry policy, guards and
single-flight from `herdlab.client` and `herdlab.singleflight` in a few lines.

    python -m examples.stock.server --port 50070 --slots 8 --latency 0.05
    python -m examples.stock.client --target 127.0.0.1:50070 --callers 500 --skus 20
"""
