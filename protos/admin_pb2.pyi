from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Faults(_message.Message):
    __slots__ = ("latency_ms", "spread_ms", "error_rate")
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SPREAD_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    latency_ms: float
    spread_ms: float
    error_rate: float
    def __init__(self, latency_ms: _Optional[float] = ..., spread_ms: _Optional[float] = ..., error_rate: _Optional[float] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("concurrency", "queue", "discipline", "codel_target_ms", "codel_interval_ms")
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    DISCIPLINE_FIELD_NUMBER: _ClassVar[int]
    CODEL_TARGET_MS_FIELD_NUMBER: _ClassVar[int]
    CODEL_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    concurrency: int
    queue: int
    discipline: str
    codel_target_ms: float
    codel_interval_ms: float
    def __init__(self, concurrency: _Optional[int] = ..., queue: _Optional[int] = ..., discipline: _Optional[str] = ..., codel_target_ms: _Optional[float] = ..., codel_interval_ms: _Optional[float] = ...) -> None: ...

class DbState(_message.Message):
    __slots__ = ("faults", "capacity", "arrivals", "completed", "rejected", "dropped", "failed", "in_flight", "queued", "capacity_per_s", "slot_seconds", "standing", "dropped_by_stage", "max_in_flight_per_key")
    class DroppedByStageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ARRIVALS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_PER_S_FIELD_NUMBER: _ClassVar[int]
    SLOT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STANDING_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BY_STAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_PER_KEY_FIELD_NUMBER: _ClassVar[int]
    faults: Faults
    capacity: Capacity
    arrivals: int
    completed: int
    rejected: int
    dropped: int
    failed: int
    in_flight: int
    queued: int
    capacity_per_s: float
    slot_seconds: float
    standing: bool
    dropped_by_stage: _containers.ScalarMap[str, int]
    max_in_flight_per_key: int
    def __init__(self, faults: _Optional[_Union[Faults, _Mapping]] = ..., capacity: _Optional[_Union[Capacity, _Mapping]] = ..., arrivals: _Optional[int] = ..., completed: _Optional[int] = ..., rejected: _Optional[int] = ..., dropped: _Optional[int] = ..., failed: _Optional[int] = ..., in_flight: _Optional[int] = ..., queued: _Optional[int] = ..., capacity_per_s: _Optional[float] = ..., slot_seconds: _Optional[float] = ..., standing: _Optional[bool] = ..., dropped_by_stage: _Optional[_Mapping[str, int]] = ..., max_in_flight_per_key: _Optional[int] = ...) -> None: ...

class Coalescing(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: _Optional[bool] = ...) -> None: ...

class Freshness(_message.Message):
    __slots__ = ("stale_while_revalidate_s", "stale_if_error_s", "beta", "ttl_jitter_pct")
    STALE_WHILE_REVALIDATE_S_FIELD_NUMBER: _ClassVar[int]
    STALE_IF_ERROR_S_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    TTL_JITTER_PCT_FIELD_NUMBER: _ClassVar[int]
    stale_while_revalidate_s: float
    stale_if_error_s: float
    beta: float
    ttl_jitter_pct: float
    def __init__(self, stale_while_revalidate_s: _Optional[float] = ..., stale_if_error_s: _Optional[float] = ..., beta: _Optional[float] = ..., ttl_jitter_pct: _Optional[float] = ...) -> None: ...

class CacheState(_message.Message):
    __slots__ = ("coalescing", "policy", "keys", "in_flight_keys", "db_attempts", "ttl_s", "freshness", "stale_served", "max_stale_age_s", "early_refreshes", "stale_refreshes")
    COALESCING_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_KEYS_FIELD_NUMBER: _ClassVar[int]
    DB_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    STALE_SERVED_FIELD_NUMBER: _ClassVar[int]
    MAX_STALE_AGE_S_FIELD_NUMBER: _ClassVar[int]
    EARLY_REFRESHES_FIELD_NUMBER: _ClassVar[int]
    STALE_REFRESHES_FIELD_NUMBER: _ClassVar[int]
    coalescing: bool
    policy: str
    keys: int
    in_flight_keys: int
    db_attempts: int
    ttl_s: float
    freshness: Freshness
    stale_served: int
    max_stale_age_s: float
    early_refreshes: int
    stale_refreshes: int
    def __init__(self, coalescing: _Optional[bool] = ..., policy: _Optional[str] = ..., keys: _Optional[int] = ..., in_flight_keys: _Optional[int] = ..., db_attempts: _Optional[int] = ..., ttl_s: _Optional[float] = ..., freshness: _Optional[_Union[Freshness, _Mapping]] = ..., stale_served: _Optional[int] = ..., max_stale_age_s: _Optional[float] = ..., early_refreshes: _Optional[int] = ..., stale_refreshes: _Optional[int] = ...) -> None: ...

class RecordRequest(_message.Message):
    __slots__ = ("after_seq", "limit")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    limit: int
    def __init__(self, after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("first_seq", "times_ns", "total", "oldest_seq")
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMES_NS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    first_seq: int
    times_ns: _containers.RepeatedScalarFieldContainer[int]
    total: int
    oldest_seq: int
    def __init__(self, first_seq: _Optional[int] = ..., times_ns: _Optional[_Iterable[int]] = ..., total: _Optional[int] = ..., oldest_seq: _Optional[int] = ...) -> None: ...
