from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    HIT: _ClassVar[Source]
    MISS: _ClassVar[Source]
    COALESCED: _ClassVar[Source]
    STALE: _ClassVar[Source]
SOURCE_UNSPECIFIED: Source
HIT: Source
MISS: Source
COALESCED: Source
STALE: Source

class CacheGetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class CacheGetResponse(_message.Message):
    __slots__ = ("key", "value", "version", "source", "stale_age_s")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STALE_AGE_S_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    version: int
    source: Source
    stale_age_s: float
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ..., version: _Optional[int] = ..., source: _Optional[_Union[Source, str]] = ..., stale_age_s: _Optional[float] = ...) -> None: ...

class ExpireRequest(_message.Message):
    __slots__ = ("keys", "all")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class ExpireResponse(_message.Message):
    __slots__ = ("expired",)
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    expired: int
    def __init__(self, expired: _Optional[int] = ...) -> None: ...
