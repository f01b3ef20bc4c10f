"""Prometheus metrics of one control plane, in its own registry.

Each :class:`ControlPlane` owns a :class:`Metrics` (tests run several in one process, and the
global prometheus_client registry would mix them up or refuse duplicate names). Counters and
histograms follow the events of the :class:`NodeRegistry` (pushes, ACKs, NACKs and their
latency), of the controller (translation time, status changes) and of the provider (watch
events). Gauges are read at scrape time from the live state, so they can never drift: connected
streams, resources served, and the NACKs standing right now with Envoy's message.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .xds.cache import SnapshotCache
from .xds.resources import PUSH_ORDER, SHORT_NAMES
from .xds.tracking import Event, EventKind, NodeRegistry

CONTENT_TYPE = CONTENT_TYPE_LATEST
NACK_MESSAGE_LIMIT = 300
"""Characters of Envoy's NACK message kept in a label (the admin API has all of it)."""
NACK_MESSAGE_HIDDEN = "(hidden: /metrics is not on loopback; `mirrorplane nodes` shows it)"
"""The error label when /metrics is exposed: Envoy's messages can quote config, and /metrics has
no authentication (Prometheus and probes must reach it)."""

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _LiveState(Collector):
    """Gauges computed from the registry and the cache at scrape time."""

    def __init__(self, nodes: NodeRegistry, cache: SnapshotCache, nack_messages: bool) -> None:
        self.nodes = nodes
        self.cache = cache
        self.nack_messages = nack_messages

    def collect(self) -> Iterator[Metric]:
        streams = GaugeMetricFamily(
            "mirrorplane_xds_streams",
            "Connected ADS streams by Gateway and the xDS type they subscribed to.",
            labels=["gateway", "type"],
        )
        counts: dict[tuple[str, str], int] = {}
        nacked = GaugeMetricFamily(
            "mirrorplane_xds_nack_info",
            "1 per node and type whose last response was NACKed: the Envoy runs an older version. "
            "error is Envoy's message (cut short).",
            labels=["gateway", "node_id", "type", "version", "error"],
        )
        for stream in self.nodes.streams():
            for ts in stream.types.values():
                key = (stream.gateway, ts.short_name)
                counts[key] = counts.get(key, 0) + 1
                if ts.nacked and ts.last_nack is not None:
                    message = ts.last_nack.message[:NACK_MESSAGE_LIMIT] if self.nack_messages else NACK_MESSAGE_HIDDEN
                    nacked.add_metric([stream.gateway, stream.node_id, ts.short_name, ts.last_nack.version, message], 1)
        for (gateway, type_name), n in sorted(counts.items()):
            streams.add_metric([gateway, type_name], n)
        yield streams
        yield nacked

        resources = GaugeMetricFamily(
            "mirrorplane_xds_resources",
            "Resources in the snapshot each Gateway serves, by xDS type.",
            labels=["gateway", "type"],
        )
        for gateway in self.cache.gateways():
            snapshot = self.cache.get(gateway)
            if snapshot is None:
                continue
            for type_url in PUSH_ORDER:
                resources.add_metric([gateway, SHORT_NAMES[type_url]], len(snapshot[type_url]))
        yield resources


class Metrics:
    def __init__(
        self,
        nodes: NodeRegistry,
        cache: SnapshotCache,
        *,
        mirror_body_limit: int | None = None,
        nack_messages: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        r.register(_LiveState(nodes, cache, nack_messages))
        self.connects = Counter(
            "mirrorplane_xds_stream_connects", "ADS streams opened, by Gateway.", ["gateway"], registry=r
        )
        self.pushes = Counter(
            "mirrorplane_xds_pushes", "Responses sent, by Gateway and type.", ["gateway", "type"], registry=r
        )
        self.acks = Counter(
            "mirrorplane_xds_acks", "Responses ACKed, by Gateway and type.", ["gateway", "type"], registry=r
        )
        self.nacks = Counter(
            "mirrorplane_xds_nacks", "Responses NACKed, by Gateway and type.", ["gateway", "type"], registry=r
        )
        self.push_ack = Histogram(
            "mirrorplane_xds_push_ack_seconds",
            "From sending a response to its ACK or NACK, by type.",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.translation = Histogram(
            "mirrorplane_translation_seconds",
            "Time to translate every object and build every Gateway's Envoy resources.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.status_changes = Counter(
            "mirrorplane_status_changes", "Objects whose Gateway API conditions changed.", registry=r
        )
        self.provider_events = Counter(
            "mirrorplane_provider_events",
            "Changes the provider (folder watch, Kubernetes watch) delivered.",
            registry=r,
        )
        if mirror_body_limit is not None:
            # What the requests Envoy counts as not mirrored (docs/mirroring.md) were measured against.
            Gauge(
                "mirrorplane_mirror_body_limit_bytes",
                "Requests with a larger body (or one of unknown size) reach only the primary, not the mirrors.",
                registry=r,
            ).set(mirror_body_limit)
        nodes.add_observer(self.on_xds_event)

    def on_xds_event(self, event: Event) -> None:
        gateway = event.stream.gateway
        if event.kind is EventKind.CONNECT:
            self.connects.labels(gateway).inc()
            return
        if event.type_url is None:
            return
        type_name = SHORT_NAMES.get(event.type_url, event.type_url)
        if event.kind is EventKind.SEND:
            self.pushes.labels(gateway, type_name).inc()
        elif event.kind in (EventKind.ACK, EventKind.NACK):
            (self.acks if event.kind is EventKind.ACK else self.nacks).labels(gateway, type_name).inc()
            if event.latency is not None:
                self.push_ack.labels(type_name).observe(event.latency)

    def on_update(self, seconds: float, status_changes: int) -> None:
        """Controller hook: one translation done."""
        self.translation.observe(seconds)
        self.status_changes.inc(status_changes)

    def on_provider_event(self) -> None:
        self.provider_events.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of this control plane only (plus process metrics)."""
        return generate_latest(self.registry)
