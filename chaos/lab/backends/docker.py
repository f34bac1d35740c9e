"""The Docker backend: the lab's services as containers of a compose project, driven through the
Docker Engine API.

A service is the one container labelled `com.docker.compose.service=<name>` (one-off `compose run`
containers excluded), within the compose project named by `HERDLAB_COMPOSE_PROJECT` when it is
set. The engine is the one `DOCKER_HOST` names (the local socket by default).

kill is SIGKILL through the engine; stop is the engine's stop (SIGTERM, then SIGKILL once the
service's grace plus a margin has passed, read from the container's command and environment);
restore starts the same container again (same command, same
address) and returns once its gRPC health says SERVING; pause and resume are the engine's cgroup
freezer. Where each service answers is given by `HERDLAB_DB_TARGET` / `HERDLAB_CACHE_TARGET` and
`HERDLAB_DB_METRICS_URL` / `HERDLAB_CACHE_METRICS_URL` (and `HERDLAB_CACHE_2_...`,
`HERDLAB_REDIS_TARGET` for the replicas profile), as seen from where this backend runs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors

from chaos.lab.backends.base import (
    SERVICES,
    STOP_MARGIN_S,
    Backend,
    BackendError,
    ServiceInfo,
    Stopped,
    check_service,
)
from chaos.lab.redis import wait_redis
from herdlab.config import grace_s
from herdlab.grpcutil import env_tls_ca, wait_serving

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
ENGINE_TIMEOUT_S = 30
SIGKILLED = 128 + 9  # a container's exit code when the engine had to SIGKILL it

PROJECT_ENV = "HERDLAB_COMPOSE_PROJECT"
SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"
ONEOFF_LABEL = "com.docker.compose.oneoff"

DEFAULT_GRPC = {
    "db": "127.0.0.1:50051",
    "cache": "127.0.0.1:50052",
    "cache-2": "127.0.0.1:50053",
    "redis": "127.0.0.1:6379",
}
DEFAULT_METRICS = {
    "db": "http://127.0.0.1:9101/metrics",
    "cache": "http://127.0.0.1:9102/metrics",
    "cache-2": "http://127.0.0.1:9104/metrics",
}

# Engine states that are neither running nor paused: created, restarting, removing, exited, dead.
_STATES = {"running": "running", "paused": "paused"}

# The SDK's own errors, and the transport's (requests' errors are OSErrors) when the engine goes.
_ENGINE_ERRORS = (docker.errors.DockerException, OSError)


def _metrics_env(service: str) -> str:
    return f"HERDLAB_{service.upper().replace('-', '_')}_METRICS_URL"


def metrics_url(service: str) -> str:
    """Where `service`'s /metrics answers as seen from this machine: the environment's
    `HERDLAB_<SERVICE>_METRICS_URL`, else the port the compose file publishes."""
    return os.environ.get(_metrics_env(service)) or DEFAULT_METRICS.get(service, "")


def metrics_urls_given() -> bool:
    """Whether the environment says where some service's /metrics answers (a stack reached
    without the engine: another machine, a tunnel)."""
    return any(os.environ.get(_metrics_env(service)) for service in DEFAULT_METRICS)


def _one_line(error: BaseException) -> str:
    explanation = getattr(error, "explanation", None)
    return " ".join(str(explanation or error).split())


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, project: str | None = None) -> None:
        self.project = project or os.environ.get(PROJECT_ENV) or None
        try:
            self.client: Any = docker.from_env(timeout=ENGINE_TIMEOUT_S)
        except _ENGINE_ERRORS as exc:
            where = os.environ.get("DOCKER_HOST") or "the default socket"
            raise BackendError(f"docker not reachable at {where}: {_one_line(exc)}") from exc

    # -- finding containers ---------------------------------------------------------------------

    def _containers(self, service: str) -> list[Any]:
        labels = [f"{SERVICE_LABEL}={service}", f"{ONEOFF_LABEL}=False"]
        if self.project:
            labels.append(f"{PROJECT_LABEL}={self.project}")
        try:
            found: list[Any] = self.client.containers.list(all=True, filters={"label": labels})
        except _ENGINE_ERRORS as exc:
            raise BackendError(f"docker: listing containers failed: {_one_line(exc)}") from exc
        return found

    def _container(self, service: str) -> Any:
        check_service(service)
        return self._pick(service, self._containers(service))

    def _pick(self, service: str, found: list[Any]) -> Any:
        scope = f" in compose project {self.project!r}" if self.project else ""
        if not found:
            raise BackendError(
                f"no container for compose service {service!r}{scope}; is the stack up "
                "(docker compose up)?"
            )
        if len(found) > 1:
            names = ", ".join(sorted(str(c.name) for c in found))
            raise BackendError(
                f"{len(found)} containers for compose service {service!r}{scope} ({names}); "
                f"set {PROJECT_ENV} to the compose project to act on"
            )
        return found[0]

    def _info(self, service: str, container: Any) -> ServiceInfo:
        env = service.upper().replace("-", "_")
        return ServiceInfo(
            name=service,
            state=_STATES.get(str(container.status), "stopped"),
            grpc=os.environ.get(f"HERDLAB_{env}_TARGET") or DEFAULT_GRPC.get(service, ""),
            metrics=metrics_url(service),
            container=str(container.id),
        )

    def _refresh(self, service: str, container: Any) -> ServiceInfo:
        try:
            container.reload()
        except _ENGINE_ERRORS as exc:
            raise BackendError(f"docker: {service}: {_one_line(exc)}") from exc
        return self._info(service, container)

    def _require(self, service: str, container: Any, state: str) -> None:
        current = self._info(service, container).state
        if current != state:
            raise BackendError(f"{service} is {current}, not {state} (container {container.name})")

    # -- Backend --------------------------------------------------------------------------------

    def status(self) -> dict[str, ServiceInfo]:
        services = {}
        for service in (*SERVICES, "cache-2", "redis"):
            found = self._containers(service)
            if found:
                services[service] = self._info(service, self._pick(service, found))
        return services

    def kill(self, service: str) -> ServiceInfo:
        def kill(container: Any) -> None:
            container.kill(signal="SIGKILL")
            container.wait(condition="not-running", timeout=STOP_TIMEOUT_S)

        return self._refresh(service, self._change(service, "running", "killing", kill))

    def stop(self, service: str) -> Stopped:
        container = self._container(service)
        config = container.attrs.get("Config") or {}
        argv = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
        env = dict(str(e).partition("=")[::2] for e in config.get("Env") or [])
        bound = grace_s(argv, env) + STOP_MARGIN_S
        started = time.monotonic()
        self._change(service, "running", "stopping", lambda c: c.stop(timeout=math.ceil(bound)))
        took = time.monotonic() - started
        info = self._refresh(service, container)
        forced = container.attrs.get("State", {}).get("ExitCode") == SIGKILLED
        return Stopped(info, round(took, 3), bound, forced)

    def restore(self, service: str) -> ServiceInfo:
        container = self._change(service, "stopped", "starting", lambda c: c.start())
        info = self._info(service, container)
        if self._wait_ready(service, container, info.grpc):
            return self._refresh(service, container)
        if self._info(service, container).state == "stopped":
            code = container.attrs.get("State", {}).get("ExitCode")
            problem = f"{service} exited (code {code}) before it was SERVING on {info.grpc}"
        else:
            problem = f"{service} did not become SERVING on {info.grpc} within {READY_TIMEOUT_S:g}s"
        raise BackendError(problem + self._last_log_line(container))

    def pause(self, service: str) -> ServiceInfo:
        return self._refresh(
            service, self._change(service, "running", "pausing", lambda c: c.pause())
        )

    def resume(self, service: str) -> ServiceInfo:
        container = self._change(service, "paused", "resuming", lambda c: c.unpause())
        return self._refresh(service, container)

    # -- helpers --------------------------------------------------------------------------------

    def _change(self, service: str, state: str, doing: str, change: Callable[[Any], None]) -> Any:
        """`service`'s container, once `change` is done to it; BackendError unless it was in
        `state` or if the engine refused (`doing`: what the error says was tried)."""
        container = self._container(service)
        self._require(service, container, state)
        try:
            change(container)
        except _ENGINE_ERRORS as exc:
            raise BackendError(f"docker: {doing} {service} failed: {_one_line(exc)}") from exc
        return container

    def _wait_ready(self, service: str, container: Any, target: str) -> bool:
        """Waits for SERVING (Redis: for PONG), giving up early if the container stops again
        (crash, bad config). A service is verified against `HERDLAB_TLS_CA` when it is set."""

        def alive() -> bool:
            return self._alive(container)

        if service == "redis":
            return wait_redis(target, READY_TIMEOUT_S, alive=alive)
        return wait_serving(target, READY_TIMEOUT_S, alive=alive, ca=env_tls_ca())

    def _alive(self, container: Any) -> bool:
        try:
            container.reload()
        except _ENGINE_ERRORS:
            return True  # the engine did not answer this time; the deadline still bounds waiting
        return container.status in ("running", "restarting")

    def logs(self, service: str, *, lines: int, follow: bool) -> Iterator[str]:
        container = self._container(service)
        try:
            if not follow:
                yield from container.logs(tail=lines).decode(errors="replace").splitlines()
                return
            for chunk in container.logs(tail=lines, stream=True, follow=True):
                yield chunk.decode(errors="replace").rstrip("\n")
        except _ENGINE_ERRORS as exc:
            raise BackendError(f"docker: {service}: {_one_line(exc)}") from exc

    def _last_log_line(self, container: Any) -> str:
        try:
            logs = container.logs(tail=1).decode(errors="replace").strip()
        except _ENGINE_ERRORS:
            return ""
        return f": {' '.join(logs.split())}" if logs else ""
