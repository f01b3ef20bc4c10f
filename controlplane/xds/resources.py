"""The Envoy resources of one Gateway, grouped by xDS type.

This is the hand-off between the xDS translator (which builds it) and the snapshot cache (which
versions and serves it). Messages are google-protobuf (upb) classes from ``xds-protos``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf.message import Message

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

# Make-before-break: what a resource uses is sent before the resource that uses it.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes"}


_M = TypeVar("_M", bound=Message)


class Encoded(Mapping[str, _M], Generic[_M]):
    """Resources already serialized (deterministically), read as messages only on demand.

    The xDS translator assembles a RouteConfiguration from cached bytes (encoded.py): the
    snapshot takes those bytes as they are, instead of parsing 1.7 MB into a message only to
    serialize it again. Whoever reads a resource as a message (a NACK's diagnosis, offline
    tools) gets it parsed from the bytes each time: kept, a parsed 10,000-route
    RouteConfiguration would hold tens of MB of protobuf's C memory for as long as the snapshot
    is served.
    """

    def __init__(self, cls: type[_M], data: Mapping[str, bytes], digests: Mapping[str, bytes]) -> None:
        self.message_type = cls
        self.data: Mapping[str, bytes] = MappingProxyType(dict(data))
        # A content hash of each resource's bytes, made as they were assembled (cache.py turns it
        # into the resource's version without reading the bytes again).
        self.digests: Mapping[str, bytes] = MappingProxyType(dict(digests))

    def __getitem__(self, name: str) -> _M:
        return self.message_type.FromString(self.data[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Resources:
    """Named resources per type. Names are unique within a type."""

    # Each type's own class, so that its fields are known where the stubs exist (xds-protos ships
    # none today: to mypy they are Any, not a bare Message without fields).
    clusters: Mapping[str, Cluster] = field(default_factory=_empty)
    endpoints: Mapping[str, ClusterLoadAssignment] = field(default_factory=_empty)
    listeners: Mapping[str, Listener] = field(default_factory=_empty)
    routes: Mapping[str, RouteConfiguration] = field(default_factory=_empty)

    def by_type(self, type_url: str) -> Mapping[str, Message]:
        by_type: Mapping[str, Message] = getattr(self, SHORT_NAMES[type_url])
        return by_type

    def items(self) -> Iterator[tuple[str, Mapping[str, Message]]]:
        for type_url in PUSH_ORDER:
            yield type_url, self.by_type(type_url)
