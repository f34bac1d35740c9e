"""`python -m chaos.wire`: the wire-fault proxy as a process of the local stack.

It serves its links (`--link NAME:PORT:UPSTREAM_HOST:UPSTREAM_PORT`, repeatable) and its admin
plane with health (`--port`) on 127.0.0.1 until SIGTERM or SIGINT; then every connection is
closed and every fault dropped with it (`serve_links`, which `chaos proxy` runs too). The local
stack starts it like the services, between the DB and the cache, so `chaos partition` and
friends (separate invocations) reach it by the address in the stack's state, and it dies with
`chaos down`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import click

from chaos.wire.admin import WireAdminServicer
from chaos.wire.proxy import ALL_LINKS, Link
from herdlab import logs, loop
from herdlab.auth import token_problem
from herdlab.grpcutil import Service, serve
from protos import wire_pb2


def parse_link(text: str) -> tuple[str, int, str, int]:
    """`NAME:PORT:UPSTREAM_HOST:UPSTREAM_PORT` as (name, port, host, port)."""
    parts = text.split(":")
    if len(parts) != 4 or parts[0] not in ALL_LINKS:
        raise click.BadParameter(
            f"expected NAME:PORT:UPSTREAM_HOST:UPSTREAM_PORT with NAME one of "
            f"{', '.join(ALL_LINKS)}, got {text!r}",
            param_hint="--link",
        )
    try:
        port, upstream_port = int(parts[1]), int(parts[3])
    except ValueError:
        raise click.BadParameter(
            f"ports must be integers in {text!r}", param_hint="--link"
        ) from None
    if not (0 <= port <= 65535 and 1 <= upstream_port <= 65535):
        raise click.BadParameter(f"ports out of range in {text!r}", param_hint="--link")
    return parts[0], port, parts[2], upstream_port


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="Admin plane (gRPC) port.")
@click.option("--link", "links", multiple=True, required=True, help="NAME:PORT:HOST:PORT.")
@click.option("--seed", default=None, type=int, help="Seed of jitter and toxicity draws.")
@click.option("--grace", default=1.0, type=click.FloatRange(0, 60), show_default=True)
@click.option("--admin-token", envvar="HERDLAB_ADMIN_TOKEN", default=None)
@click.version_option(None, "--version", "show_version", package_name="herdlab", prog_name="wire")
@loop.option
@loop.gc_option
def main(
    host: str,
    port: int,
    links: tuple[str, ...],
    seed: int | None,
    grace: float,
    admin_token: str | None,
    loop_name: str,
) -> None:
    """The lab's wire-fault proxy."""
    logs.setup("wire")
    problem = token_problem(host, admin_token)
    if problem:
        raise click.UsageError(problem)
    parsed = [parse_link(text) for text in links]
    if len({name for name, *_ in parsed}) != len(parsed):
        raise click.UsageError("each link name may be given once")
    loop.run(serve_links(host, port, parsed, seed, grace, admin_token), loop_name)


async def serve_links(
    host: str,
    port: int,
    links: Sequence[tuple[str, int, str, int]],
    seed: int | None,
    grace: float,
    admin_token: str | None,
    on_listening: Callable[[dict[str, Link]], None] | None = None,
) -> None:
    """Serves `links` (name, listen port, upstream host, upstream port) on `host` and the admin
    plane on `port` until SIGTERM or SIGINT; `on_listening` is told once every link listens."""
    rng = random.Random(seed)
    proxied = {
        name: Link(name, upstream_host, upstream_port, rng=random.Random(rng.random()))
        for name, _, upstream_host, upstream_port in links
    }
    try:
        for name, listen_port, *_ in links:
            await proxied[name].start(host, listen_port)
            print(f"wire {name}: {proxied[name].listen} -> {proxied[name].upstream}", flush=True)
        if on_listening is not None:
            on_listening(proxied)
        service = Service(
            WireAdminServicer(proxied), wire_pb2.DESCRIPTOR.services_by_name["WireAdmin"]
        )
        await serve([service], host=host, port=port, grace_s=grace, admin_token=admin_token)
    finally:
        for link in proxied.values():
            await link.stop()


if __name__ == "__main__":
    main()
