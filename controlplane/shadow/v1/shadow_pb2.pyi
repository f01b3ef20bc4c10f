import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BodyReport(_message.Message):
    __slots__ = ("gateway", "request_id", "cluster", "body", "over_limit", "settings")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    OVER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    request_id: str
    cluster: str
    body: bytes
    over_limit: bool
    settings: str
    def __init__(self, gateway: _Optional[str] = ..., request_id: _Optional[str] = ..., cluster: _Optional[str] = ..., body: _Optional[bytes] = ..., over_limit: _Optional[bool] = ..., settings: _Optional[str] = ...) -> None: ...

class BodyReportAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetComparisonsRequest(_message.Message):
    __slots__ = ("gateway", "route")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    route: str
    def __init__(self, gateway: _Optional[str] = ..., route: _Optional[str] = ...) -> None: ...

class WatchDiffsRequest(_message.Message):
    __slots__ = ("gateway", "route")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    route: str
    def __init__(self, gateway: _Optional[str] = ..., route: _Optional[str] = ...) -> None: ...

class GetComparisonsResponse(_message.Message):
    __slots__ = ("rules", "receiver")
    RULES_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[RuleComparison]
    receiver: Receiver
    def __init__(self, rules: _Optional[_Iterable[_Union[RuleComparison, _Mapping]]] = ..., receiver: _Optional[_Union[Receiver, _Mapping]] = ...) -> None: ...

class Receiver(_message.Message):
    __slots__ = ("entries", "pending", "pending_limit", "window_seconds")
    class EntriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PENDING_LIMIT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.ScalarMap[str, int]
    pending: int
    pending_limit: int
    window_seconds: float
    def __init__(self, entries: _Optional[_Mapping[str, int]] = ..., pending: _Optional[int] = ..., pending_limit: _Optional[int] = ..., window_seconds: _Optional[float] = ...) -> None: ...

class RuleComparison(_message.Message):
    __slots__ = ("gateway", "route", "rule", "mirror", "results", "primary_latency", "mirror_latency", "recent")
    class ResultsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    MIRROR_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_LATENCY_FIELD_NUMBER: _ClassVar[int]
    MIRROR_LATENCY_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    route: str
    rule: str
    mirror: str
    results: _containers.ScalarMap[str, int]
    primary_latency: Latency
    mirror_latency: Latency
    recent: _containers.RepeatedCompositeFieldContainer[DifferingPair]
    def __init__(self, gateway: _Optional[str] = ..., route: _Optional[str] = ..., rule: _Optional[str] = ..., mirror: _Optional[str] = ..., results: _Optional[_Mapping[str, int]] = ..., primary_latency: _Optional[_Union[Latency, _Mapping]] = ..., mirror_latency: _Optional[_Union[Latency, _Mapping]] = ..., recent: _Optional[_Iterable[_Union[DifferingPair, _Mapping]]] = ...) -> None: ...

class Latency(_message.Message):
    __slots__ = ("count", "p50_seconds", "p90_seconds", "p99_seconds")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P90_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    count: int
    p50_seconds: float
    p90_seconds: float
    p99_seconds: float
    def __init__(self, count: _Optional[int] = ..., p50_seconds: _Optional[float] = ..., p90_seconds: _Optional[float] = ..., p99_seconds: _Optional[float] = ...) -> None: ...

class DifferingPair(_message.Message):
    __slots__ = ("gateway", "route", "rule", "mirror", "result", "request_id", "method", "path", "primary", "mirror_leg", "at", "detail")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    MIRROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    MIRROR_LEG_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    route: str
    rule: str
    mirror: str
    result: str
    request_id: str
    method: str
    path: str
    primary: Leg
    mirror_leg: Leg
    at: _timestamp_pb2.Timestamp
    detail: str
    def __init__(self, gateway: _Optional[str] = ..., route: _Optional[str] = ..., rule: _Optional[str] = ..., mirror: _Optional[str] = ..., result: _Optional[str] = ..., request_id: _Optional[str] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., primary: _Optional[_Union[Leg, _Mapping]] = ..., mirror_leg: _Optional[_Union[Leg, _Mapping]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class Leg(_message.Message):
    __slots__ = ("status", "grpc_status", "size", "digest", "latency_seconds", "failure", "headers", "excerpt")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    EXCERPT_FIELD_NUMBER: _ClassVar[int]
    status: int
    grpc_status: str
    size: int
    digest: str
    latency_seconds: float
    failure: str
    headers: _containers.ScalarMap[str, str]
    excerpt: str
    def __init__(self, status: _Optional[int] = ..., grpc_status: _Optional[str] = ..., size: _Optional[int] = ..., digest: _Optional[str] = ..., latency_seconds: _Optional[float] = ..., failure: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., excerpt: _Optional[str] = ...) -> None: ...
