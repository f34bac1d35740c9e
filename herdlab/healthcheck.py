"""`python -m herdlab.healthcheck [TARGET]`: exit 0 if TARGET's grpc.health.v1 says SERVING.

The container healthcheck of the lab's image. TARGET is host:port, by default the value of
`HERDLAB_HEALTH_TARGET`; anything but SERVING within the timeout (unreachable, NOT_SERVING while
a server drains, an error status, no answer) exits 1 with one line on stderr.

Why not grpcio's own client: the check runs every 2 s in every container, and importing grpcio
(with protobuf and the lab's modules) cost 0.20 CPU-seconds per check, a tenth of a core per
container doing nothing. This module uses the standard library only and speaks the one exchange
it needs itself: HTTP/2 cleartext with prior knowledge (RFC 9113), one `Health/Check` call with
an empty request (its headers sent as literal HPACK fields, RFC 7541, so no table state), and the
one reply message read off the DATA frames (status is field 1, a varint; SERVING is 1).

A server serving TLS is checked over TLS (ALPN h2) when `HERDLAB_HEALTH_TLS_CA` names the CA
file to verify it against; the target's host must be a name its certificate carries.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import sys
import time

ENV_TARGET = "HERDLAB_HEALTH_TARGET"
ENV_TLS_CA = "HERDLAB_HEALTH_TLS_CA"
USAGE = "usage: python -m herdlab.healthcheck [HOST:PORT] [--timeout DURATION]"
SERVING = 1
MAX_FRAMES = 64  # bounded: a healthy reply takes a handful of frames

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
STREAM = 1


class Unhealthy(Exception):
    """The target did not say SERVING; the message says what it did."""


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def _literal(name_index: int, value: str) -> bytes:
    """A header field without indexing whose name is the HPACK static table's `name_index`."""
    raw = value.encode()
    prefix = bytes([name_index]) if name_index < 15 else bytes([15, name_index - 15])
    return prefix + bytes([len(raw)]) + raw


def request(authority: str, tls: bool = False) -> bytes:
    """Preface, SETTINGS, and the call: HEADERS then one DATA frame with an empty message."""
    block = (
        b"\x83"  # :method POST (static index 3)
        + (b"\x87" if tls else b"\x86")  # :scheme https or http (static index 7 or 6)
        + _literal(4, "/grpc.health.v1.Health/Check")  # :path
        + _literal(1, authority)  # :authority
        + _literal(31, "application/grpc")  # content-type
        + b"\x00\x02te\x08trailers"
    )
    return (
        PREFACE
        + frame(SETTINGS, 0, 0, b"")
        + frame(HEADERS, END_HEADERS, STREAM, block)
        + frame(DATA, END_STREAM, STREAM, b"\x00\x00\x00\x00\x00")
    )


def status_of(message: bytes) -> int:
    """The `status` of a serialized HealthCheckResponse (0, UNKNOWN, when absent)."""
    i = 0
    while i < len(message):
        tag = message[i]
        i += 1
        value = shift = 0
        while True:  # a varint; every field of this message is one
            if i >= len(message):
                raise Unhealthy("malformed health reply")
            byte = message[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if tag == 0x08:
            return value
    return 0


def check(target: str, timeout_s: float, ca: str | None = None) -> int:
    """The health status `target` answers within `timeout_s`, over TLS verified against the CA
    file `ca` when given; raises Unhealthy otherwise."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise Unhealthy(f"target {target!r} is not host:port")
    deadline = time.monotonic() + timeout_s
    try:
        with contextlib.ExitStack() as stack:
            address = (host.strip("[]"), int(port))
            conn = stack.enter_context(socket.create_connection(address, timeout=timeout_s))
            if ca is not None:
                context = ssl.create_default_context(cafile=ca)
                context.set_alpn_protocols(["h2"])
                conn = stack.enter_context(context.wrap_socket(conn, server_hostname=address[0]))
            conn.sendall(request(target, tls=ca is not None))
            reply = b""
            buffer = b""
            for _ in range(MAX_FRAMES):
                while len(buffer) < 9 or len(buffer) < 9 + int.from_bytes(buffer[:3], "big"):
                    conn.settimeout(max(0.001, deadline - time.monotonic()))
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise Unhealthy("connection closed before a reply")
                    buffer += chunk
                size = int.from_bytes(buffer[:3], "big")
                kind, flags, stream = struct.unpack(">BBI", buffer[3:9])
                payload, buffer = buffer[9 : 9 + size], buffer[9 + size :]
                if kind == SETTINGS and not flags & ACK:
                    conn.sendall(frame(SETTINGS, ACK, 0, b""))
                elif kind == GOAWAY or (kind == RST_STREAM and stream == STREAM):
                    raise Unhealthy("the server refused the call")
                elif kind == DATA and stream == STREAM:
                    reply += payload
                    if len(reply) >= 5 and len(reply) >= 5 + int.from_bytes(reply[1:5], "big"):
                        return status_of(reply[5 : 5 + int.from_bytes(reply[1:5], "big")])
                elif kind == HEADERS and stream == STREAM and flags & END_STREAM:
                    raise Unhealthy("the call ended without a reply (an error status)")
            raise Unhealthy(f"no reply within {MAX_FRAMES} frames")
    except TimeoutError as exc:
        raise Unhealthy("no reply in time") from exc
    except OSError as exc:
        raise Unhealthy(str(exc)) from exc


def parse_timeout(text: str) -> float:
    for suffix, scale in (("ms", 0.001), ("s", 1.0)):
        if text.endswith(suffix):
            text, unit = text[: -len(suffix)], scale
            break
    else:
        unit = 1.0
    try:
        value = float(text) * unit
    except ValueError:
        value = 0.0
    if not 0 < value <= 60:
        raise ValueError("--timeout: want a duration in (0, 60s], e.g. 2s or 500ms")
    return value


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    timeout = "2s"
    if "--timeout" in args:
        at = args.index("--timeout")
        if at + 1 >= len(args):
            print(f"healthcheck: --timeout needs a value; {USAGE}", file=sys.stderr)
            return 1
        timeout = args.pop(at + 1)
        args.pop(at)
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(f"healthcheck: {USAGE}", file=sys.stderr)
        return 1
    target = args[0] if args else os.environ.get(ENV_TARGET)
    if not target:
        print(f"healthcheck: no target: give host:port or set {ENV_TARGET}", file=sys.stderr)
        return 1
    try:
        status = check(target, parse_timeout(timeout), os.environ.get(ENV_TLS_CA) or None)
    except (ValueError, Unhealthy) as exc:
        print(f"healthcheck: {target}: {exc}", file=sys.stderr)
        return 1
    if status != SERVING:
        print(f"healthcheck: {target} answered status {status}, not SERVING", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
