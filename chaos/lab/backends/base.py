"""The interface every chaos backend implements: find the lab's services, kill, stop, restore,
pause and resume them by name, and read their logs. Names: `db`, `cache` (or its replicas
`cache-1` .. `cache-R`) and `redis` (the shared store). Which of them a stack has is the
stack's: `status()` lists them.

Runtime fault injection (latency, error rate, capacity, expiry) does not go through a backend: it
goes through the services' own admin RPCs, which work the same wherever the services run.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

SERVICES = ("db", "cache")  # every stack has these (the cache as `cache` or its replicas)
SERVICE_NAME = re.compile(r"db|cache|cache-[1-9][0-9]?|redis")
SERVICE_NAMES = "db, cache, cache-N or redis"
# How long past its grace a service told to stop may take to exit before it is SIGKILLed.
STOP_MARGIN_S = 5.0


def role_of(service: str) -> str:
    """What a service of the stack is: `db`, `cache` (`cache-<n>` replicas too), or `other`
    (a helper such as the local Prometheus)."""
    if service == "db":
        return "db"
    if service == "cache" or service.startswith("cache-"):
        return "cache"
    return "other"


class BackendError(Exception):
    """An action could not be done; the message says why, in one line."""


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    state: str  # "running", "paused" or "stopped"
    grpc: str  # host:port of its gRPC server
    metrics: str  # URL of its /metrics
    pid: int | None = None  # local backend
    container: str | None = None  # docker backend: container id


@dataclass(frozen=True)
class Stopped:
    """A graceful stop done: the service as it is now (stopped), seconds from SIGTERM to its
    exit, the bound it had (its grace plus `STOP_MARGIN_S`), and `forced`: it had not exited
    within the bound and was SIGKILLed."""

    info: ServiceInfo
    exit_s: float
    bound_s: float
    forced: bool


class Backend(ABC):
    name: str

    @abstractmethod
    def status(self) -> dict[str, ServiceInfo]:
        """Every lab service this backend knows, by name."""

    @abstractmethod
    def kill(self, service: str) -> ServiceInfo:
        """SIGKILL: the process is gone at once, connections reset, nothing drains."""

    @abstractmethod
    def stop(self, service: str) -> Stopped:
        """SIGTERM, as a deploy stops a service: it drains (health NOT_SERVING, new calls
        refused, GOAWAY on every connection, calls in flight given its grace) and exits; returns
        once it has. One still running past its grace plus `STOP_MARGIN_S` is SIGKILLed, and
        the result says so."""

    @abstractmethod
    def restore(self, service: str) -> ServiceInfo:
        """Starts a killed (or stopped) service again on the same address; returns once it is
        SERVING."""

    @abstractmethod
    def pause(self, service: str) -> ServiceInfo:
        """SIGSTOP (or the engine's pause): the process hangs; callers wait on their deadlines."""

    @abstractmethod
    def resume(self, service: str) -> ServiceInfo:
        """SIGCONT (or unpause)."""

    @abstractmethod
    def logs(self, service: str, *, lines: int, follow: bool) -> Iterator[str]:
        """The last `lines` lines of the service's log; with `follow`, then each new line until
        the stack is gone (or the caller stops reading)."""


def is_service(service: str) -> bool:
    """Whether `service` names a lab service some stack can have."""
    return SERVICE_NAME.fullmatch(service) is not None


def check_service(service: str) -> None:
    if not is_service(service):
        raise BackendError(f"unknown service {service!r}; choose from {SERVICE_NAMES}")
