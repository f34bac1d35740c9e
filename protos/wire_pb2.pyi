from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WireEmpty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Fault(_message.Message):
    __slots__ = ("name", "link", "kind", "stream", "toxicity", "attributes", "for_ms", "once", "expires_at_unix", "added_at_unix", "counts")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    TOXICITY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    FOR_MS_FIELD_NUMBER: _ClassVar[int]
    ONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    ADDED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    link: str
    kind: str
    stream: str
    toxicity: float
    attributes: _containers.ScalarMap[str, float]
    for_ms: float
    once: bool
    expires_at_unix: float
    added_at_unix: float
    counts: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., link: _Optional[str] = ..., kind: _Optional[str] = ..., stream: _Optional[str] = ..., toxicity: _Optional[float] = ..., attributes: _Optional[_Mapping[str, float]] = ..., for_ms: _Optional[float] = ..., once: _Optional[bool] = ..., expires_at_unix: _Optional[float] = ..., added_at_unix: _Optional[float] = ..., counts: _Optional[_Mapping[str, float]] = ...) -> None: ...

class FaultRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class FaultList(_message.Message):
    __slots__ = ("faults",)
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    faults: _containers.RepeatedCompositeFieldContainer[Fault]
    def __init__(self, faults: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ...) -> None: ...

class Link(_message.Message):
    __slots__ = ("name", "listen", "upstream", "connections", "counts", "bins")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    listen: str
    upstream: str
    connections: int
    counts: _containers.ScalarMap[str, int]
    bins: _containers.RepeatedCompositeFieldContainer[LinkBin]
    def __init__(self, name: _Optional[str] = ..., listen: _Optional[str] = ..., upstream: _Optional[str] = ..., connections: _Optional[int] = ..., counts: _Optional[_Mapping[str, int]] = ..., bins: _Optional[_Iterable[_Union[LinkBin, _Mapping]]] = ...) -> None: ...

class LinkBin(_message.Message):
    __slots__ = ("unix_ms", "counts")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    unix_ms: int
    counts: _containers.ScalarMap[str, int]
    def __init__(self, unix_ms: _Optional[int] = ..., counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class LinkList(_message.Message):
    __slots__ = ("links",)
    LINKS_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[Link]
    def __init__(self, links: _Optional[_Iterable[_Union[Link, _Mapping]]] = ...) -> None: ...
