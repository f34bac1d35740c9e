from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CheckRequest(_message.Message):
    __slots__ = ("sku",)
    SKU_FIELD_NUMBER: _ClassVar[int]
    sku: str
    def __init__(self, sku: _Optional[str] = ...) -> None: ...

class CheckReply(_message.Message):
    __slots__ = ("sku", "count")
    SKU_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    sku: str
    count: int
    def __init__(self, sku: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("sku", "changes")
    SKU_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    sku: str
    changes: int
    def __init__(self, sku: _Optional[str] = ..., changes: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("arrivals", "served", "refused", "dropped", "max_in_flight")
    class ArrivalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ARRIVALS_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    arrivals: _containers.ScalarMap[str, int]
    served: int
    refused: int
    dropped: int
    max_in_flight: int
    def __init__(self, arrivals: _Optional[_Mapping[str, int]] = ..., served: _Optional[int] = ..., refused: _Optional[int] = ..., dropped: _Optional[int] = ..., max_in_flight: _Optional[int] = ...) -> None: ...
