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
* each mirrored route carries its tag (route, rule, mirrors), copied into the entry as a custom
  tag; each mirror cluster the lowest threshold of its rules (see tagging.CLUSTER_TAG);
* rules with ``comparison.body`` also get the upstream filter that sends bodies (bodycapture.py).

Why CEL and not ``runtime_filter``: docs/shadow-testing.md (Envoy 1.40 samples an upstream log
entry with independent randomness whatever the flag says: the upstream stream has no request id).
"""

from __future__ import annotations

from collections.abc import MutableMapping

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
from ..shadow.tagging import CLUSTER_TAG, METADATA_KEY, TAG, MirrorTag, RouteTag, body_settings, threshold
from .bodycapture import capture_route, uncapture_route

ALS_CLUSTER = "mirrorplane_als"
"""The bootstrap cluster ALS entries go to (envoy/bootstrap.yaml; the xDS port by default)."""
LOG_NAME = "mirrorplane.shadow"
ALWAYS_LOGGED_HEADERS = ("content-length", "content-type", "grpc-status")

_META = f"filter_metadata.{METADATA_KEY}"
# A mirror leg has no route in Envoy (its stream info is the async client's): it is recognised by
# the empty route name and sampled by its cluster's threshold; a primary by its route's.
CEL_FILTER = (
    "request.headers['x-request-id'] < (xds.route_name == ''"
    f" ? (has(xds.cluster_metadata.{_META}) ? xds.cluster_metadata.{_META}.below : '')"
    f" : (has(xds.route_metadata.{_META}) ? xds.route_metadata.{_META}.below : ''))"
)


def tag_route(source: ir.Route, route: route_pb2.Route) -> None:
    """Mark a mirrored Envoy route for the logger: its threshold and its tag (route, rule, mirrors).
    Depends on ``source`` alone, so virtual hosts built from it can be cached (EncodedMemo)."""
    name, rule = _source(source)
    mirrors = tuple(
        MirrorTag(
            cluster=m.backend,
            percent=m.comparison.sample_percent,
            always=m.numerator >= m.denominator,
            headers=m.comparison.headers,
            body=body_settings(m.comparison.body_limit_bytes, m.comparison.ignore_json_paths)
            if m.comparison.body
            else "",
        )
        for m in source.mirrors
    )
    meta = _set_below(route.metadata, max((m.percent for m in mirrors), default=0))
    meta.fields["tag"].string_value = RouteTag(name, rule, mirrors).encode()
    capture_route(source, route)


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
