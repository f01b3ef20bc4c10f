"""Shadow testing's part of the Envoy config: the upstream access log both legs need (issue 15).

:func:`tag_route` is called for each mirrored route as it is built (:func:`.translator._routes`),
:func:`mark_mirror_clusters` and :func:`add_shadow_logging` once per Gateway from
:func:`.translator.build_resources`:

* every router gets one gRPC access logger (``envoy.access_loggers.http_grpc``) to the
  ``mirrorplane_als`` bootstrap cluster. It is the same on every listener whatever the routes,
  so adding or removing a mirror never changes (and so never drains) a listener; only the set of
  compared response headers (the union of the Gateway's comparisons) is part of it;
* its CEL filter keeps an entry when the request's ``x-request-id`` is below a threshold that
  the route (primary leg) or the mirror cluster (mirror leg, which has no route in Envoy) carries
  in its metadata (:mod:`controlplane.shadow.tagging`): unmarked routes and clusters log nothing;
* the receiver finds a primary entry's tag (route, rule, mirrors) by its route name in the
  Gateway's :class:`RouteTags`, which the controller hands it after each translation: the JSON
  tag would be a third of what Envoy rebuilds on every route update (docs/performance.md). With
  ``XdsOptions.shadow_tags_in_routes`` each mirrored route carries it too, copied into the entry
  as a custom tag (for ``mirrorplane collect``); each mirror cluster carries the lowest threshold
  of its rules (see tagging.CLUSTER_TAG);
* rules with ``comparison.body`` also get the upstream filter that sends bodies (bodycapture.py).

Why CEL and not ``runtime_filter``: docs/shadow-testing.md (Envoy 1.40 samples an upstream log
entry with independent randomness whatever the flag says: the upstream stream has no request id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from itertools import compress
from operator import is_not
from types import MappingProxyType

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import grpc_service_pb2
from envoy.config.core.v3.base_pb2 import Metadata
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.metadata.v3 import metadata_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message

from .. import ir
from ..shadow.tagging import (
    CLUSTER_TAG,
    METADATA_KEY,
    MIRRORED_SUFFIX,
    TAG,
    MirrorTag,
    RouteTag,
    body_settings,
    threshold,
)
from .bodycapture import capture_route, uncapture_route

ALS_CLUSTER = "mirrorplane_als"
"""The bootstrap cluster ALS entries go to (envoy/bootstrap.yaml; the xDS port by default)."""
LOG_NAME = "mirrorplane.shadow"
ALWAYS_LOGGED_HEADERS = ("content-length", "content-type", "grpc-status")

_META = f"filter_metadata.{METADATA_KEY}"
# A mirror leg has no route in Envoy (its stream info is the async client's): it is recognised by
# the empty route name and sampled by its cluster's threshold; a primary by its route's.
# A mirrored route with no threshold of its own samples every id (MIRRORED_SUFFIX).
CEL_FILTER = (
    "request.headers['x-request-id'] < (xds.route_name == ''"
    f" ? (has(xds.cluster_metadata.{_META}) ? xds.cluster_metadata.{_META}.below : '')"
    f" : (has(xds.route_metadata.{_META}) ? xds.route_metadata.{_META}.below"
    f" : (xds.route_name.endsWith('{MIRRORED_SUFFIX}') ? '{threshold(100)}' : '')))"
)


def tag_route(source: ir.Route, route: route_pb2.Route, json_tag: bool = False) -> None:
    """Mark a mirrored Envoy route for the logger: its sampling threshold, which the CEL filter
    reads in Envoy, unless it samples every id (its name says so, MIRRORED_SUFFIX). Its tag
    (route, rule, mirrors) reaches the receiver by the route's name (:class:`RouteTags`);
    ``json_tag`` also puts it into the route as JSON, for receivers with no controller beside them
    (``mirrorplane collect``, XdsOptions.shadow_tags_in_routes). Depends on ``source`` alone, so
    virtual hosts built from it can be cached (EncodedMemo); without ``json_tag``, on its
    ``mirrors`` alone, so routes with the same ones share it (RouteEncoder)."""
    percent = max((m.comparison.sample_percent for m in source.mirrors), default=0)
    if json_tag or threshold(percent) != threshold(100):
        meta = _set_below(route.metadata, percent)
        if json_tag:
            meta.fields["tag"].string_value = route_tag(source).encode()
    capture_route(source, route)


def route_tag(source: ir.Route) -> RouteTag:
    """What the receiver pairs and compares a mirrored route's entries by."""
    name, rule = _source(source)
    return RouteTag(name, rule, mirror_tags(source.mirrors))


def mirror_tags(mirrors: tuple[ir.Mirror, ...]) -> tuple[MirrorTag, ...]:
    """The mirrors' part of a route's tag: made from them alone (RouteTags shares it)."""
    return tuple(
        MirrorTag(
            cluster=m.backend,
            percent=m.comparison.sample_percent,
            always=m.numerator >= m.denominator,
            headers=m.comparison.headers,
            body=body_settings(m.comparison.body_limit_bytes, m.comparison.ignore_json_paths)
            if m.comparison.body
            else "",
        )
        for m in mirrors
    )


class RouteTags:
    """One Gateway's tag table: each mirrored route's :class:`RouteTag` by its name, which the
    receiver looks a primary entry's route name up in (docs/shadow-testing.md, "The tag table").

    Made from the IR alone, like the routes, and kept up to date by what changed: the Gateway API
    translator hands back the very same ``ir.VirtualHost`` for one that did not change (RouteMemo,
    as encoded.py relies on), so the virtual hosts that differ are found by C passes over each
    route table's tuple (place by place, or by ``id`` when the lengths differ), and only their
    routes are tagged again. Each table handed out is a new dict (one C copy of the last), never
    changed after: the controller makes it in its worker thread, the receiver reads it on the
    event loop. While nothing changed the same object is handed out again: that is how the
    receiver tells a new version (it holds the one superseded while late entries may need it).
    A route attached to several virtual hosts has one tag (it depends on the route alone);
    ``_count`` says in how many of them it still is.
    """

    def __init__(self) -> None:
        self._chains: dict[str, tuple[ir.VirtualHost, ...]] = {}
        self._count: dict[str, int] = {}
        self._tags: dict[str, RouteTag] = {}  # the last table handed out (read-only from then on)
        self._view: Mapping[str, RouteTag] = MappingProxyType(self._tags)

    def table(self, gateway: ir.GatewayIR) -> Mapping[str, RouteTag]:
        chains = {c.name: c.virtual_hosts for listener in gateway.listeners for c in listener.chains}
        table: dict[str, RouteTag] | None = None
        for name in self._chains.keys() | chains.keys():
            old, new = self._chains.get(name, ()), chains.get(name, ())
            if old is new:
                continue
            if table is None:
                table = self._tags.copy()
            self._swap(table, *_differing(old, new))
        if table is not None:
            self._chains, self._tags, self._view = chains, table, MappingProxyType(table)
        return self._view

    def _swap(
        self, table: dict[str, RouteTag], gone: Iterable[ir.VirtualHost], added: Iterable[ir.VirtualHost]
    ) -> None:
        count = self._count
        for vh in gone:
            for r in vh.routes:
                if r.mirrors:
                    count[r.name] -= 1
                    if not count[r.name]:
                        del count[r.name], table[r.name]
        # Rules repeat their mirrors, and the routes of one rule (or of rules alike) hold the same
        # tuple: looked up by its identity (the routes are alive meanwhile), then by value, which
        # calls each frozen dataclass's __hash__.
        by_id: dict[int, tuple[MirrorTag, ...]] = {}
        shared: dict[tuple[ir.Mirror, ...], tuple[MirrorTag, ...]] = {}
        for vh in added:
            for r in vh.routes:
                mirrors = r.mirrors
                if mirrors:
                    name = r.name
                    count[name] = count.get(name, 0) + 1
                    tags = by_id.get(id(mirrors))
                    if tags is None:
                        tags = shared.get(mirrors)
                        if tags is None:
                            tags = shared[mirrors] = mirror_tags(mirrors)
                        by_id[id(mirrors)] = tags
                    source = r.source
                    table[name] = _make_tag(source, r.rule, tags) if source else _make_tag(*_source(r), tags)


_make_tag = ir.positional(RouteTag)  # one per mirrored route at a cold start


def _differing(
    old: tuple[ir.VirtualHost, ...], new: tuple[ir.VirtualHost, ...]
) -> tuple[list[ir.VirtualHost], list[ir.VirtualHost]]:
    """(virtual hosts only in ``old``, only in ``new``), found by C loops as encoded.py does."""
    if len(old) == len(new):
        places = list(compress(range(len(new)), map(is_not, old, new)))
        return [old[i] for i in places], [new[i] for i in places]
    before, after = dict(zip(map(id, old), old, strict=True)), dict(zip(map(id, new), new, strict=True))
    return [before[i] for i in before.keys() - after.keys()], [after[i] for i in after.keys() - before.keys()]


def untag_route(route: route_pb2.Route) -> None:
    uncapture_route(route)
    if METADATA_KEY in route.metadata.filter_metadata:
        del route.metadata.filter_metadata[METADATA_KEY]
        if not route.metadata.filter_metadata:
            route.ClearField("metadata")


def mark_mirror_clusters(percents: dict[str, list[int]], clusters: MutableMapping[str, cluster_pb2.Cluster]) -> None:
    """The thresholds of the mirror clusters. ``percents``: mirror cluster → the sample percents
    of the rules mirroring to it (encoded.MirrorUsage counts them)."""
    for name, ps in percents.items():
        if name in clusters:
            meta = _set_below(clusters[name].metadata, max(ps))
            meta.fields["min"].string_value = threshold(min(ps))


def add_shadow_logging(headers: set[str], listeners: MutableMapping[str, listener_pb2.Listener]) -> None:
    """The logger on every router; ``headers``: the response headers any mirror compares."""
    logger = _logger(tuple(sorted(headers | set(ALWAYS_LOGGED_HEADERS))))
    for listener in listeners.values():
        for chain in listener.filter_chains:
            for f in chain.filters:
                _add_logger(f.typed_config, logger)


def _source(route: ir.Route) -> tuple[str, str]:
    """(route, rule) for display; from the route's name when the IR does not say."""
    if route.source:
        return route.source, route.rule
    parts = route.name.split("/")  # httproute/NS/NAME/rule/RULE/match/N
    if len(parts) >= 5 and parts[3] == "rule":
        return f"HTTPRoute {parts[1]}/{parts[2]}", parts[4]
    return route.name, route.rule


def _set_below(metadata: Metadata, percent: int) -> struct_pb2.Struct:
    meta: struct_pb2.Struct = metadata.filter_metadata[METADATA_KEY]
    meta.fields["below"].string_value = threshold(percent)
    return meta


def _logger(headers: tuple[str, ...]) -> accesslog_pb2.AccessLog:
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=LOG_NAME,
            transport_api_version=2,  # V3
            grpc_service=grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=ALS_CLUSTER)
            ),
            buffer_flush_interval=duration_pb2.Duration(nanos=500_000_000),
            custom_tags=[
                _metadata_tag(TAG, metadata_pb2.MetadataKind(route=metadata_pb2.MetadataKind.Route()), "tag"),
                _metadata_tag(
                    CLUSTER_TAG, metadata_pb2.MetadataKind(cluster=metadata_pb2.MetadataKind.Cluster()), "min"
                ),
            ],
        ),
        additional_response_headers_to_log=list(headers),
        additional_response_trailers_to_log=["grpc-status"],
    )
    flt = accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=_any(cel_pb2.ExpressionFilter(expression=CEL_FILTER)),
        )
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.http_grpc", filter=flt, typed_config=_any(config))


def _metadata_tag(tag: str, kind: metadata_pb2.MetadataKind, field: str) -> custom_tag_pb2.CustomTag:
    return custom_tag_pb2.CustomTag(
        tag=tag,
        metadata=custom_tag_pb2.CustomTag.Metadata(
            kind=kind,
            metadata_key=metadata_pb2.MetadataKey(
                key=METADATA_KEY, path=[metadata_pb2.MetadataKey.PathSegment(key=field)]
            ),
        ),
    )


def _add_logger(typed_config: any_pb2.Any, logger: accesslog_pb2.AccessLog) -> None:
    manager = hcm.HttpConnectionManager()
    if not typed_config.Unpack(manager):
        return
    for f in manager.http_filters:
        if f.name == "envoy.filters.http.router":
            router = router_pb2.Router()
            f.typed_config.Unpack(router)
            router.upstream_log.append(logger)
            f.typed_config.CopyFrom(_any(router))
    typed_config.CopyFrom(_any(manager))


def _any(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg, deterministic=True)
    return packed
