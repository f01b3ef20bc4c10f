"""The Envoy resources of one Gateway, grouped by xDS type.

This is the hand-off between the xDS translator (which builds it) and the snapshot cache (which
versions and serves it). Messages are google-protobuf (upb) classes from ``xds-protos``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf.message import Message

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

# Make-before-break: what a resource uses is sent before the resource that uses it.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners", ROUTE: "routes"}


def _empty() -> Mapping[str, Message]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Resources:
    """Named resources per type. Names are unique within a type."""

    clusters: Mapping[str, Message] = field(default_factory=_empty)
    endpoints: Mapping[str, Message] = field(default_factory=_empty)
    listeners: Mapping[str, Message] = field(default_factory=_empty)
    routes: Mapping[str, Message] = field(default_factory=_empty)

    def by_type(self, type_url: str) -> Mapping[str, Message]:
        by_type: Mapping[str, Message] = getattr(self, SHORT_NAMES[type_url])
        return by_type

    def items(self) -> Iterator[tuple[str, Mapping[str, Message]]]:
        for type_url in PUSH_ORDER:
            yield type_url, self.by_type(type_url)
