import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListNodesRequest(_message.Message):
    __slots__ = ("gateway", "node_id")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    node_id: str
    def __init__(self, gateway: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "gateway", "address", "user_agent", "connected_since", "stream_id", "snapshot_version", "held_clusters", "types")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HELD_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    gateway: str
    address: str
    user_agent: str
    connected_since: _timestamp_pb2.Timestamp
    stream_id: int
    snapshot_version: str
    held_clusters: _containers.RepeatedScalarFieldContainer[str]
    types: _containers.RepeatedCompositeFieldContainer[TypeState]
    def __init__(self, node_id: _Optional[str] = ..., gateway: _Optional[str] = ..., address: _Optional[str] = ..., user_agent: _Optional[str] = ..., connected_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stream_id: _Optional[int] = ..., snapshot_version: _Optional[str] = ..., held_clusters: _Optional[_Iterable[str]] = ..., types: _Optional[_Iterable[_Union[TypeState, _Mapping]]] = ...) -> None: ...

class TypeState(_message.Message):
    __slots__ = ("type", "type_url", "wildcard", "resource_names", "sent_version", "sent_nonce", "sent_at", "sent_resources", "in_flight", "acked_version", "acked_at", "ack_latency", "last_nack", "nacked", "responses", "acks", "nacks")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    WILDCARD_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAMES_FIELD_NUMBER: _ClassVar[int]
    SENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENT_NONCE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    SENT_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    ACK_LATENCY_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_FIELD_NUMBER: _ClassVar[int]
    NACKED_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    NACKS_FIELD_NUMBER: _ClassVar[int]
    type: str
    type_url: str
    wildcard: bool
    resource_names: _containers.RepeatedScalarFieldContainer[str]
    sent_version: str
    sent_nonce: str
    sent_at: _timestamp_pb2.Timestamp
    sent_resources: int
    in_flight: bool
    acked_version: str
    acked_at: _timestamp_pb2.Timestamp
    ack_latency: _duration_pb2.Duration
    last_nack: Nack
    nacked: bool
    responses: int
    acks: int
    nacks: int
    def __init__(self, type: _Optional[str] = ..., type_url: _Optional[str] = ..., wildcard: _Optional[bool] = ..., resource_names: _Optional[_Iterable[str]] = ..., sent_version: _Optional[str] = ..., sent_nonce: _Optional[str] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_resources: _Optional[int] = ..., in_flight: _Optional[bool] = ..., acked_version: _Optional[str] = ..., acked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ack_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last_nack: _Optional[_Union[Nack, _Mapping]] = ..., nacked: _Optional[bool] = ..., responses: _Optional[int] = ..., acks: _Optional[int] = ..., nacks: _Optional[int] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("version", "nonce", "at", "error_detail", "code", "kept_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAIL_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    KEPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    nonce: str
    at: _timestamp_pb2.Timestamp
    error_detail: str
    code: int
    kept_version: str
    def __init__(self, version: _Optional[str] = ..., nonce: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_detail: _Optional[str] = ..., code: _Optional[int] = ..., kept_version: _Optional[str] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("gateway", "node_id", "types", "names")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    node_id: str
    types: _containers.RepeatedScalarFieldContainer[str]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, gateway: _Optional[str] = ..., node_id: _Optional[str] = ..., types: _Optional[_Iterable[str]] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSnapshotResponse(_message.Message):
    __slots__ = ("gateway", "version", "types")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    version: str
    types: _containers.RepeatedCompositeFieldContainer[ResourceSet]
    def __init__(self, gateway: _Optional[str] = ..., version: _Optional[str] = ..., types: _Optional[_Iterable[_Union[ResourceSet, _Mapping]]] = ...) -> None: ...

class ResourceSet(_message.Message):
    __slots__ = ("type", "type_url", "version", "resources")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    type: str
    type_url: str
    version: str
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    def __init__(self, type: _Optional[str] = ..., type_url: _Optional[str] = ..., version: _Optional[str] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("name", "version", "resource")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    resource: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., resource: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("kind", "namespace", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("objects",)
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[ObjectStatus]
    def __init__(self, objects: _Optional[_Iterable[_Union[ObjectStatus, _Mapping]]] = ...) -> None: ...

class ObjectStatus(_message.Message):
    __slots__ = ("kind", "namespace", "name", "status")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    status: _struct_pb2.Struct
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class WatchNodesRequest(_message.Message):
    __slots__ = ("gateway", "node_id")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    gateway: str
    node_id: str
    def __init__(self, gateway: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class NodeEvent(_message.Message):
    __slots__ = ("kind", "at", "type", "version", "nonce", "latency", "error_detail", "node")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[NodeEvent.Kind]
        CURRENT: _ClassVar[NodeEvent.Kind]
        CONNECT: _ClassVar[NodeEvent.Kind]
        DISCONNECT: _ClassVar[NodeEvent.Kind]
        SEND: _ClassVar[NodeEvent.Kind]
        ACK: _ClassVar[NodeEvent.Kind]
        NACK: _ClassVar[NodeEvent.Kind]
    KIND_UNSPECIFIED: NodeEvent.Kind
    CURRENT: NodeEvent.Kind
    CONNECT: NodeEvent.Kind
    DISCONNECT: NodeEvent.Kind
    SEND: NodeEvent.Kind
    ACK: NodeEvent.Kind
    NACK: NodeEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAIL_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    kind: NodeEvent.Kind
    at: _timestamp_pb2.Timestamp
    type: str
    version: str
    nonce: str
    latency: _duration_pb2.Duration
    error_detail: str
    node: Node
    def __init__(self, kind: _Optional[_Union[NodeEvent.Kind, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[str] = ..., version: _Optional[str] = ..., nonce: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error_detail: _Optional[str] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...
