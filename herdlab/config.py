"""Configuration parsing shared by the services and the CLI: durations with unit suffixes and
probabilities, as click parameter types so bad values become one clear line and exit code 2;
and the texts the lab writes numbers and durations back in, which these parsers read."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from herdlab.grpcutil import ServerTls
from herdlab.units import format_duration as format_duration
from herdlab.units import format_number as format_number
from herdlab.units import format_value as format_value
from herdlab.units import parse_duration as parse_duration


class DurationType(click.ParamType[float, Any]):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float | int):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class ProbabilityType(click.ParamType[float, Any]):
    name = "probability"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            p = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number between 0 and 1", param, ctx)
        if not 0.0 <= p <= 1.0:
            self.fail(f"{value!r} is not between 0 and 1", param, ctx)
        return p


DURATION = DurationType()
PROBABILITY = ProbabilityType()


F = TypeVar("F", bound=Callable[..., Any])


PORT = click.IntRange(0, 65535)
GRACE_ENV = "HERDLAB_GRACE"
DEFAULT_GRACE = "5s"


def env_option(
    flag: str,
    envvar: str,
    default: Any,
    help: str,
    *,
    type: click.ParamType[Any] | None = None,
    show_default: bool | str | None = True,
) -> Callable[[F], F]:
    """An option settable by the environment variable `envvar`, both shown in its help."""
    return click.option(
        flag,
        envvar=envvar,
        default=default,
        type=type,
        show_default=show_default,
        show_envvar=True,
        help=help,
    )


def server_options(
    prog_name: str, env_prefix: str, port: int, metrics_port: int
) -> Callable[[F], F]:
    """`--version`, and the listening options every lab server takes, each settable by
    environment variable: `{env_prefix}_HOST`, `_PORT`, `_METRICS_HOST`, `_METRICS_PORT`,
    `_TLS_CERT`, `_TLS_KEY`, `HERDLAB_GRACE` and `HERDLAB_ADMIN_TOKEN` (see `herdlab.auth`).
    The command receives `tls_cert` and `tls_key` (paths or None); `server_tls` checks them."""

    def decorate(command: F) -> F:
        options = [
            # Named apart from the DB's `version` setting (`--data-version`), which it would shadow.
            click.version_option(
                None, "--version", "show_version", package_name="herdlab", prog_name=prog_name
            ),
            env_option("--host", f"{env_prefix}_HOST", "127.0.0.1", "gRPC listen address."),
            env_option("--port", f"{env_prefix}_PORT", port, "gRPC port.", type=PORT),
            env_option(
                "--metrics-host",
                f"{env_prefix}_METRICS_HOST",
                "127.0.0.1",
                "Prometheus /metrics listen address.",
            ),
            env_option(
                "--metrics-port",
                f"{env_prefix}_METRICS_PORT",
                metrics_port,
                "Prometheus /metrics port (0: off).",
                type=PORT,
            ),
            env_option(
                "--grace",
                GRACE_ENV,
                DEFAULT_GRACE,
                "On SIGTERM, how long in-flight calls may take to finish.",
                type=DURATION,
            ),
            env_option(
                "--admin-token",
                "HERDLAB_ADMIN_TOKEN",
                None,
                "Token the admin plane requires (required when --host is not loopback).",
                show_default=None,
            ),
            click.option(
                "--tls-cert",
                envvar=f"{env_prefix}_TLS_CERT",
                default=None,
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                show_envvar=True,
                help="Serve gRPC over TLS with this certificate (PEM; with --tls-key).",
            ),
            click.option(
                "--tls-key",
                envvar=f"{env_prefix}_TLS_KEY",
                default=None,
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                show_envvar=True,
                help="The private key of --tls-cert (PEM).",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def grace_s(argv: Sequence[str], env: Mapping[str, str]) -> float:
    """The drain grace of a lab server started with `argv` and `env`: its last `--grace`, else
    `HERDLAB_GRACE`, else the default; a value that does not parse counts as the default (the
    server would not have started with it)."""
    given = env.get(GRACE_ENV, DEFAULT_GRACE)
    for i, word in enumerate(argv):
        if word == "--grace" and i + 1 < len(argv):
            given = argv[i + 1]
        elif word.startswith("--grace="):
            given = word.partition("=")[2]
    try:
        return parse_duration(given)
    except ValueError:
        return parse_duration(DEFAULT_GRACE)


def server_tls(cert: Path | None, key: Path | None) -> ServerTls | None:
    """The TLS of `--tls-cert` and `--tls-key`: both or neither (UsageError otherwise)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise click.UsageError("--tls-cert and --tls-key go together: give both or neither")
    return ServerTls(cert, key)
