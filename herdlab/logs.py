"""The services' log: one logfmt line per event an operator acts on, on stderr.

A service writes a line when it listens (its addresses and every setting), one per change made
through its admin service (what was asked and the state that resulted), one when it starts
draining and one when it has drained. The local stack sends stderr to `<state dir>/logs/NAME.log`
(`chaos logs NAME`); in compose it is the container's log. Lines look like

    ts=2026-11-28T06:41:07.512Z level=info service=db event=listening grpc=127.0.0.1:50051 ...

logfmt (as Heroku, Grafana Loki and `hl` read it) rather than JSON: the lines are read by people
in a terminal as often as by tools. The standard library's logging carries the records; only
the line's format is the lab's own (`LogfmtFormatter`), since no logfmt formatter is in the
libraries the services already depend on.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

_LOGGER = logging.getLogger("herdlab")
_BARE = re.compile(r"^[A-Za-z0-9_.:/@%+,\-]+$")


def quote(value: Any) -> str:
    """A logfmt value: bare when it is one plain token, else double-quoted with `"` and `\\`
    escaped and control characters written out."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if text and _BARE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        head = (
            f"ts={stamp}.{millis:03d}Z level={record.levelname.lower()} "
            f"service={quote(self.service)} event={quote(record.getMessage())}"
        )
        fields: Mapping[str, Any] = getattr(record, "fields", {})
        return " ".join([head, *(f"{key}={quote(value)}" for key, value in fields.items())])


def setup(service: str) -> None:
    """Sends the lab's log lines to stderr, formatted for `service`. Called once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(service))
    _LOGGER.handlers[:] = [handler]
    _LOGGER.setLevel(logging.INFO)
    _LOGGER.propagate = False


def event(name: str, **fields: Any) -> None:
    """One line: `event=name` and `fields` in the order given."""
    _LOGGER.info(name, extra={"fields": fields})
