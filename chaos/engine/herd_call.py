"""The herd against any gRPC method (`chaos herd --call pkg.Service/Method --data '{...}'`).

The method's request and response types come from the server's reflection service
(grpcio-reflection's descriptor database, each of its calls bounded by a deadline), or from the
user's .proto files compiled at run time by grpcio-tools' protoc (`--proto FILE --import-path
DIR`, the `proto` extra) into a descriptor set. Each request is the `--data` JSON template with
its placeholders filled (`{{key}}` from the herd's key distribution, `{{user}}`, `{{seq}}`,
`{{uuid}}`), read into the request type by protobuf's own JSON mapping, so a field the type does
not have is refused before anything starts. Replies are checked only where the user gives an
expectation (`--expect-field path=template`); otherwise values are reported unchecked.

Unary and server-streaming methods are called (a stream is read to its end within the attempt's
deadline, at most `MAX_STREAM_MESSAGES` messages); client-streaming and bidi methods are refused.

Every problem found before the herd starts is a `CallError`: one line naming it.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import Message

from chaos.lab import extras
from herdlab.grpcutil import sync_channel

PLACEHOLDERS = ("key", "user", "seq", "uuid")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
# How long resolving a method may wait for the target: its first connection, each reflection call.
ANSWER_TIMEOUT_S = 5.0
PROTOC_TIMEOUT_S = 60.0
MAX_STREAM_MESSAGES = 100_000
MAX_METADATA = 64
_METADATA_KEY = re.compile(r"^[0-9a-z_.-]+$")


class CallError(ValueError):
    """A method, template, expectation or target the herd cannot use; one line."""


# -- the method's types ---------------------------------------------------------------------------


def split_method(call: str) -> tuple[str, str]:
    """`pkg.Service/Method` (or `pkg.Service.Method`) as (service, method)."""
    service, sep, method = call.strip().lstrip("/").rpartition("/")
    if not sep:
        service, sep, method = call.strip().rpartition(".")
    if not sep or not service or not method:
        raise CallError(f"--call must read pkg.Service/Method, got {call!r}")
    return service, method


def answers(target: str, tls_ca: str | None, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
    """CallError unless a connection to `target` is READY within `timeout_s`; a first connect
    that fails (refused, no route, a TLS handshake refused) is an answer of no at once."""
    channel = sync_channel(target, [], tls_ca)
    seen: list[grpc.ChannelConnectivity] = []
    settled = threading.Event()

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            seen.append(state)
            settled.set()

    channel.subscribe(watch, try_to_connect=True)
    try:
        if not settled.wait(timeout_s):
            raise CallError(
                f"target {target} does not answer (no connection within {timeout_s:g}s)"
            )
        if seen[0] is not grpc.ChannelConnectivity.READY:
            raise CallError(f"target {target} does not answer (its connection failed)")
    finally:
        channel.unsubscribe(watch)
        channel.close()


def compile_protos(proto: str, import_paths: Sequence[str]) -> descriptor_pool.DescriptorPool:
    """A pool of `proto` and its imports, compiled by grpcio-tools' protoc in a child process (its
    errors are the child's output: the first is the one line)."""
    try:
        extras.require(extras.PROTO, "--proto")
    except extras.MissingExtra as exc:
        raise CallError(str(exc)) from None
    if not Path(proto).is_file():
        raise CallError(f"--proto {proto}: no such file")
    paths = list(import_paths) or [str(Path(proto).parent)]
    with tempfile.TemporaryDirectory(prefix="herdlab-proto-") as folder:
        out = Path(folder) / "set.pb"
        argv = [sys.executable, "-m", "grpc_tools.protoc", *(f"-I{p}" for p in paths)]
        argv += ["--include_imports", f"--descriptor_set_out={out}", proto]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROTOC_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CallError(
                f"--proto {proto}: protoc did not finish within {PROTOC_TIMEOUT_S:g}s"
            ) from None
        if done.returncode != 0 or not out.is_file():
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            first = lines[0].strip() if lines else f"protoc exited {done.returncode}"
            raise CallError(f"--proto {proto} does not compile: {first}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


class _Deadline(grpc.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    """Gives every reflection call a deadline (the descriptor database sets none)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(details._replace(timeout=self.timeout_s), requests)


def reflected(target: str, service: str, tls_ca: str | None) -> ServiceDescriptor:
    """`service` as the server at `target` describes it by reflection."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    answers(target, tls_ca)
    channel = sync_channel(target, [], tls_ca)
    try:
        database = ProtoReflectionDescriptorDatabase(
            grpc.intercept_channel(channel, _Deadline(ANSWER_TIMEOUT_S))
        )
        pool = descriptor_pool.DescriptorPool(database)
        try:
            found: ServiceDescriptor = pool.FindServiceByName(service)
        except KeyError:
            offered = ", ".join(s for s in database.get_services() if "reflection" not in s)
            raise CallError(
                f"unknown service {service} at {target}; it offers: {offered or 'none'}"
            ) from None
        return found
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            raise CallError(
                f"{target} does not serve reflection; give the method's --proto FILE"
            ) from None
        raise CallError(f"reflection at {target} failed: {code.name if code else exc}") from None
    finally:
        channel.close()


def from_pool(pool: descriptor_pool.DescriptorPool, service: str, proto: str) -> ServiceDescriptor:
    try:
        found: ServiceDescriptor = pool.FindServiceByName(service)
    except KeyError:
        raise CallError(f"unknown service {service} in --proto {proto}") from None
    return found


# -- templates ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A JSON value whose strings may hold `{{name}}` placeholders (`PLACEHOLDERS`)."""

    value: Any

    @classmethod
    def parse_json(cls, text: str, where: str) -> Template:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise CallError(f"{where} is not JSON: {exc}") from None
        cls._check(value, where)
        return cls(value)

    @classmethod
    def _check(cls, value: Any, where: str) -> None:
        if isinstance(value, dict):
            for inner in value.values():
                cls._check(inner, where)
        elif isinstance(value, list):
            for inner in value:
                cls._check(inner, where)
        elif isinstance(value, str):
            for name in _PLACEHOLDER.findall(value):
                if name not in PLACEHOLDERS:
                    raise CallError(
                        f"{where}: unknown placeholder {{{{{name}}}}}; known: "
                        + ", ".join(f"{{{{{p}}}}}" for p in PLACEHOLDERS)
                    )

    def render(self, values: Mapping[str, str]) -> Any:
        return _render(self.value, values)


def _render(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, values) for v in value]
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], value)
    return value


SAMPLE = {"key": "key-0", "user": "0", "seq": "0", "uuid": str(uuid.UUID(int=0, version=4))}


# -- expectations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """`path=template`: the reply's field at `path` (dotted field names) reads the template."""

    path: tuple[str, ...]
    template: str

    @classmethod
    def parse(cls, text: str, reply: Descriptor) -> Expect:
        path, sep, template = text.partition("=")
        if not sep or not path.strip():
            raise CallError(f"--expect-field must read path=template, got {text!r}")
        names = tuple(path.strip().split("."))
        message = reply
        for index, name in enumerate(names):
            field = message.fields_by_name.get(name)
            if field is None:
                known = ", ".join(message.fields_by_name) or "no fields"
                raise CallError(
                    f"--expect-field {path}: {message.full_name} has no field {name!r}; it has: "
                    f"{known}"
                )
            last = index == len(names) - 1
            if field.is_repeated or (last and field.message_type is not None):
                raise CallError(f"--expect-field {path}: {name} is not a single scalar field")
            if not last:
                if field.message_type is None:
                    raise CallError(f"--expect-field {path}: {name} is not a message")
                message = field.message_type
        Template._check(template, f"--expect-field {path}")
        return cls(names, template)

    def holds(self, reply: Message, values: Mapping[str, str]) -> bool:
        value: Any = reply
        for name in self.path:
            value = getattr(value, name)
        return bool(_text(value, reply, self.path) == _render(self.template, values))


def _text(value: Any, reply: Message, path: tuple[str, ...]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    message = reply
    for name in path[:-1]:
        message = getattr(message, name)
    field = message.DESCRIPTOR.fields_by_name[path[-1]]
    if field.enum_type is not None:
        entry = field.enum_type.values_by_number.get(value)
        return entry.name if entry is not None else str(value)
    return str(value)


# -- the call -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One method of the user's service as the herd calls it."""

    method: str  # "/pkg.Service/Method"
    request_type: type[Message]
    response_type: type[Message]
    server_streaming: bool
    template: Template
    metadata: tuple[tuple[str, str], ...] = ()
    expect: tuple[Expect, ...] = ()

    @property
    def checked(self) -> bool:
        return bool(self.expect)

    def values(self, key: str, user: int, seq: int, rng: random.Random) -> dict[str, str]:
        return {
            "key": key,
            "user": str(user),
            "seq": str(seq),
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        }

    def request(self, values: Mapping[str, str]) -> Message:
        message = self.request_type()
        json_format.ParseDict(self.template.render(values), message)
        return message

    def callable(self, channel: grpc.aio.Channel) -> Any:
        """The channel's multi-callable for this method."""
        make = channel.unary_stream if self.server_streaming else channel.unary_unary
        return make(
            self.method,
            request_serializer=self.request_type.SerializeToString,
            response_deserializer=self.response_type.FromString,
        )

    async def invoke(self, method: Any, request: Message, timeout_s: float) -> list[Message]:
        """One attempt: the reply, or a stream's messages to its end."""
        metadata = self.metadata or None
        if not self.server_streaming:
            return [await method(request, timeout=timeout_s, metadata=metadata)]
        replies: list[Message] = []
        stream = method(request, timeout=timeout_s, metadata=metadata)
        async for reply in stream:
            replies.append(reply)
            if len(replies) >= MAX_STREAM_MESSAGES:
                stream.cancel()
                break
        return replies

    def matches(self, replies: Sequence[Message], values: Mapping[str, str]) -> bool:
        """Every expectation holds for every message received."""
        return all(e.holds(r, values) for r in replies for e in self.expect)


def parse_metadata(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    found = []
    for text in pairs:
        key, sep, value = text.partition("=")
        key = key.strip().lower()
        if not sep or not _METADATA_KEY.match(key):
            raise CallError(f"--metadata must read k=v with k of 0-9 a-z _ . -, got {text!r}")
        if key.endswith("-bin"):
            raise CallError(f"--metadata {key}: binary (-bin) headers are not supported")
        found.append((key, value))
    if len(found) > MAX_METADATA:
        raise CallError(f"--metadata: at most {MAX_METADATA} pairs")
    return tuple(found)


def resolve(
    target: str,
    call: str,
    data: str,
    *,
    proto: str | None = None,
    import_paths: Sequence[str] = (),
    tls_ca: str | None = None,
    metadata: Sequence[str] = (),
    expect: Sequence[str] = (),
) -> Call:
    """The `Call` these options describe, its types from reflection at `target` or from `proto`;
    CallError naming the first problem (the target is asked to answer either way)."""
    service_name, method_name = split_method(call)
    template = Template.parse_json(data, "--data")
    pairs = parse_metadata(metadata)
    if proto is not None:
        service = from_pool(compile_protos(proto, import_paths), service_name, proto)
        answers(target, tls_ca)
    else:
        service = reflected(target, service_name, tls_ca)
    method = service.methods_by_name.get(method_name)
    if method is None:
        raise CallError(
            f"unknown method {service_name}/{method_name}; {service_name} has: "
            + (", ".join(service.methods_by_name) or "none")
        )
    if method.client_streaming:
        kind = "bidi" if method.server_streaming else "client-streaming"
        raise CallError(
            f"{service_name}/{method_name} is {kind}; the herd calls unary and server-streaming "
            "methods"
        )
    found = Call(
        method=f"/{service_name}/{method_name}",
        request_type=message_factory.GetMessageClass(method.input_type),
        response_type=message_factory.GetMessageClass(method.output_type),
        server_streaming=bool(method.server_streaming),
        template=template,
        metadata=pairs,
        expect=tuple(Expect.parse(text, method.output_type) for text in expect),
    )
    try:
        found.request(SAMPLE)
    except json_format.ParseError as exc:
        raise CallError(f"--data does not fit {method.input_type.full_name}: {exc}") from None
    return found
