"""The stack of an experiment (`[stack]`, beside `[stack.db]` and `[stack.cache]`, and the wire
proxy's keys, `chaos.wire.settings`): how many replicas of the cache, where they keep values,
whether every link runs TLS, and the replicas scenario's fault.

Declared with `herdlab.settings` like the services' settings, so `stack.replicas` and
`stack.store` can be swept (`[variants]`, `configurations`) and selected (`[[expect]]`,
a timeline step's `variant`) as any other setting. The default is the lab's one stack: one
`cache`, values in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.lab.backends.local import MAX_REPLICAS, STORES
from chaos.lab.tls import DEFAULT_KEY, KEYS
from herdlab.settings import Settings, setting


@dataclass(frozen=True)
class StackSettings(Settings):
    replicas: int = setting(
        1,
        "replicas",
        "int",
        "Cache replicas: one is `cache`, more are `cache-1` .. `cache-R` behind round_robin.",
        lo=1,
        hi=MAX_REPLICAS,
    )
    store: str = setting(
        "local",
        "store",
        "choice",
        "Where the replicas keep values: each its own, or a redis-server the stack starts "
        "(leases across replicas).",
        choices=STORES,
    )
    tls: bool = setting(
        False,
        "tls",
        "bool",
        "Serve the DB and the cache over TLS with certificates made for the trial; every client "
        "verifies them (needs the `tls` extra).",
    )
    tls_key: str = setting(
        DEFAULT_KEY,
        "tls_key",
        "choice",
        "With tls: the server certificate's key (an RSA key costs the server more per "
        "handshake: rsa-3072 about 60 times a P-256 signature).",
        choices=tuple(KEYS),
    )
    own_core: bool = setting(
        False,
        "own_core",
        "bool",
        "Pin the cache to a core of its own (the lowest this process may use) and the trial's "
        "other processes (the controller, the DB, the proxy, the herd) to the rest, as the "
        "benchmarks pin servers and load generators: on a small machine the cache then keeps "
        "its core while clients churn. Needs two cores.",
    )
    kill_holder: bool = setting(
        False,
        "kill_holder",
        "bool",
        "Whether this row's timeline kills the lease holder (a step selects rows by it).",
    )
