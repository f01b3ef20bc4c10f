"""IR → Envoy resources (listeners, routes, clusters, endpoints) for one Gateway.

A pure function: the same IR always gives byte-identical messages, which is what makes versions
content hashes and restarts churn-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, extension_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2 as stats_log_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2 as early_mutation_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import range_pb2
from envoy.type.v3.percent_pb2 import FractionalPercent
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from .. import ir
from ..shadow.tagging import MIRRORED_SUFFIX
from . import wire
from .accesslog import add_shadow_logging, mark_mirror_clusters, tag_route, untag_route
from .bodycapture import add_body_capture
from .encoded import EncodedMemo, MirrorUsage, usage_of
from .resources import Encoded, Resources

# Requests to a backendRef that could not be resolved go to this cluster, which is never served;
# the route's cluster_not_found_response_code turns them into the 500 the spec asks for.
INVALID_BACKEND_CLUSTER = "invalid-backend-ref"

_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_CORS_FILTER = "envoy.filters.http.cors"
_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


# Since Envoy 1.33 a mirror copy streams alongside the request and shares its flow control: a
# mirror that reads slowly or not at all pauses the client's upload, so the primary never sees
# the end of the request (docs/mirroring.md). Only a request whose whole body fits in Envoy's
# buffers on the mirror side can never push back, so only bodies up to this many bytes are
# mirrored; a larger one (or one of unknown size) goes to an unmirrored twin of the route.
DEFAULT_MIRROR_BODY_LIMIT = 1024 * 1024
MAX_MIRROR_BODY_LIMIT = 1024 * 1024 * 1024
# Room for the request head beside the body in those buffers (Envoy's default header limit is 60 KiB).
MIRROR_HEAD_ROOM = 64 * 1024
# The body bound is an OR: a request is mirrored when its Content-Length is within the bound, or
# when it announces no body (no Content-Length, no Transfer-Encoding: an HTTP/1.1 request without
# either has none, but an HTTP/2 one may stream any amount, so only methods that carry none
# qualify). An Envoy route's header matches are ANDed, which used to take two mirrored routes per
# rule (…/match/N and …/match/N/no-body, each with header matches Envoy compiles per route).
# Instead each listener's connection manager decides once per request, before it selects the
# route, and writes the verdict into a header the mirrored route matches exactly
# (docs/mirroring.md; Envoy applies the table in about half the time, docs/performance.md).
BODY_HEADER = "x-mirrorplane-body"
"""Written by Envoy for each request before route selection ("true" when the body may be
mirrored; a client's value never survives), and removed before the request goes upstream, to the
backend or the mirror (RouteConfiguration ``request_headers_to_remove``)."""
_BODYLESS_METHODS = ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE")
MIRRORABLE = rc.HeaderMatcher(name=BODY_HEADER, string_match=string_pb2.StringMatcher(exact="true"))


def _mirrorable_expression(limit: int) -> str:
    """The CEL expression Envoy evaluates per request: true when the body may be mirrored.

    A Content-Length CEL cannot read as an int (beyond int64) is an error: the header is then not
    written, and the request is not mirrored. Envoy removes an HTTP/1.1 request's
    Transfer-Encoding before it selects the route, but after this runs.
    """
    methods = ", ".join(f"'{m}'" for m in _BODYLESS_METHODS)
    return (
        f"'content-length' in request.headers ? int(request.headers['content-length']) <= {limit}"
        f" : !('transfer-encoding' in request.headers) && request.method in [{methods}]"
    )


def body_verdict(limit: int) -> extension_pb2.TypedExtensionConfig:
    """The early header mutation that writes BODY_HEADER: removed first, so that a client's value
    cannot survive an expression that writes nothing."""
    verdict = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=BODY_HEADER, value=f"%CEL({_mirrorable_expression(limit)})%"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    mutation = early_mutation_pb2.HeaderMutation(
        mutations=[
            mutation_rules_pb2.HeaderMutation(remove=BODY_HEADER),
            mutation_rules_pb2.HeaderMutation(append=verdict),
        ]
    )
    return extension_pb2.TypedExtensionConfig(
        name="envoy.http.early_header_mutation.header_mutation", typed_config=_any(mutation)
    )


def _within(limit: int) -> rc.HeaderMatcher:
    """A Content-Length within the bound: a GRPCRoute's first mirrored route (the other one takes gRPC calls)."""
    return rc.HeaderMatcher(name="content-length", range_match=range_pb2.Int64Range(start=0, end=limit + 1))


# A gRPC call never announces its size: it is an HTTP/2 POST without content-length. Matching
# only known sizes would mean a gRPC mirror that never fires, so a GRPCRoute's mirrored route
# also takes every gRPC call (docs/grpc.md, "Mirroring and the body bound"). The buffers are the
# same bound + 64 KiB: a unary or server-streaming call whose request fits the bound can never
# push back on the client, however stuck the mirror.
_GRPC_CALL = rc.HeaderMatcher(name="content-type", string_match=string_pb2.StringMatcher(prefix="application/grpc"))


@dataclass(frozen=True)
class XdsOptions:
    bind_address: str = "0.0.0.0"
    # Gateway listener port → the port Envoy actually binds (tests and local runs remap ports).
    port_map: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    connect_timeout_seconds: int = 5
    # Requests with a larger body are not mirrored (see DEFAULT_MIRROR_BODY_LIMIT).
    mirror_body_limit: int = DEFAULT_MIRROR_BODY_LIMIT
    # Shadow testing: the upstream access log that compares mirror and primary (xds/accesslog.py).
    shadow: bool = True
    # Each mirrored route also carries its shadow tag as JSON, for `mirrorplane collect`, which
    # has no tag table (accesslog.RouteTags); it costs Envoy up to a quarter more per route update.
    shadow_tags_in_routes: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.mirror_body_limit <= MAX_MIRROR_BODY_LIMIT:
            raise ValueError(f"mirror body limit {self.mirror_body_limit}: expected 0..{MAX_MIRROR_BODY_LIMIT} bytes")


def build_resources(
    gateway: ir.GatewayIR, options: XdsOptions = XdsOptions(), memo: EncodedMemo | None = None
) -> Resources:
    """A Gateway's resources. With ``memo``, RouteConfigurations are assembled from the bytes of
    the virtual hosts the previous build already serialized (encoded.py), and clusters, endpoints
    and listeners made from the same input as last time are the same objects (so the snapshot
    does not serialize them again); the bytes are the same either way."""
    if memo is not None:
        memo.begin(options.mirror_body_limit)
    routes, usage = _route_configurations(gateway, options.mirror_body_limit, options.shadow_tags_in_routes, memo)
    mirrored, headers, bodies = usage.by_cluster(), usage.header_names(), usage.body_capture()
    backends = (gateway.backends, mirrored, bodies, options)
    clusters, endpoints = _reuse(memo, "clusters", backends, lambda: _clusters(gateway, options, mirrored, bodies))
    shape = tuple(
        (lst.name, lst.port, lst.tls, tuple(_chain_shape(c) for c in lst.chains)) for lst in gateway.listeners
    )
    listeners = _reuse(memo, "listeners", (shape, headers, options), lambda: _listeners(gateway, options, headers))
    return Resources(clusters=clusters, endpoints=endpoints, listeners=listeners, routes=routes)


_T = TypeVar("_T")


def _reuse(memo: EncodedMemo | None, kind: str, key: object, make: Callable[[], _T]) -> _T:
    return make() if memo is None else memo.reuse(kind, key, make)


def _chain_shape(chain: ir.FilterChain) -> tuple[object, ...]:
    """What a chain's listener filter chain is made from (its routes are in the RouteConfiguration)."""
    return chain.name, chain.server_names, chain.certificates


def _route_configurations(
    gateway: ir.GatewayIR, limit: int, json_tags: bool, memo: EncodedMemo | None
) -> tuple[Mapping[str, route_pb2.RouteConfiguration], MirrorUsage]:
    usage = MirrorUsage()
    chains = [chain for listener in gateway.listeners for chain in listener.chains]
    if memo is None:
        for chain in chains:
            usage.merge(usage_of(chain.virtual_hosts))
        return MappingProxyType({c.name: _route_configuration(c, limit, json_tags) for c in chains}), usage
    encoded: dict[str, bytes] = {}
    digests: dict[str, bytes] = {}
    encoder = RouteEncoder(limit, json_tags)
    for chain in chains:
        assembled = memo.route_configuration(
            chain,
            encode=encoder.framed_virtual_host,
            head=route_pb2.RouteConfiguration(name=chain.name).SerializeToString(),
            tail=_route_configuration_tail(chain).SerializeToString(deterministic=True),
        )
        encoded[chain.name], digests[chain.name] = assembled.data, assembled.digest
        usage.merge(assembled.usage)
    memo.done()
    return Encoded(route_pb2.RouteConfiguration, encoded, digests), usage


def _clusters(
    gateway: ir.GatewayIR,
    options: XdsOptions,
    mirrored: dict[str, list[int]],
    bodies: tuple[Set[str], Mapping[str, Set[ir.Comparison]]],
) -> tuple[Mapping[str, cluster_pb2.Cluster], Mapping[str, endpoint_pb2.ClusterLoadAssignment]]:
    clusters, endpoints = {}, {}
    for backend in gateway.backends:
        clusters[backend.name] = _cluster(backend, options)
        if backend.name in mirrored:
            _hold_mirrored_bodies(clusters[backend.name], options.mirror_body_limit)
        if backend.discovery == "eds":
            endpoints[backend.name] = load_assignment(backend)
    if options.shadow:
        mark_mirror_clusters(mirrored, clusters)
        add_body_capture(gateway.name, *bodies, clusters)
    return MappingProxyType(clusters), MappingProxyType(endpoints)


def _listeners(gateway: ir.GatewayIR, options: XdsOptions, headers: set[str]) -> Mapping[str, listener_pb2.Listener]:
    listeners = {listener.name: _listener(listener, options) for listener in gateway.listeners}
    if options.shadow:
        add_shadow_logging(headers, listeners)
    return MappingProxyType(listeners)


def fractional_percent(numerator: int, denominator: int) -> FractionalPercent | None:
    """An exact Gateway API fraction as Envoy's FractionalPercent; None means 100 %.

    Integer math only: a denominator dividing 100, 10⁴ or 10⁶ is exact (25/50 → 50/HUNDRED);
    anything else is rounded to the nearest millionth (1/3 → 333333/MILLION).
    """
    if numerator >= denominator:
        return None
    for scale, kind in (
        (100, FractionalPercent.HUNDRED),
        (10_000, FractionalPercent.TEN_THOUSAND),
        (1_000_000, FractionalPercent.MILLION),
    ):
        if scale % denominator == 0:
            return FractionalPercent(numerator=numerator * (scale // denominator), denominator=kind)
    return FractionalPercent(
        numerator=(numerator * 1_000_000 + denominator // 2) // denominator, denominator=FractionalPercent.MILLION
    )


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _any(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    # Deterministic, so that map order inside typed_config never changes a version (cache.py).
    packed.Pack(msg, deterministic=True)
    return packed


def _socket(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


# --- clusters and endpoints --------------------------------------------------------------------


def _h2c_options() -> any_pb2.Any:
    """HTTP/2 with prior knowledge to the upstream (appProtocol kubernetes.io/h2c)."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    return _any(options)


_H2C_OPTIONS = _h2c_options()


def _cluster(backend: ir.Backend, options: XdsOptions) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=backend.name,
        connect_timeout=duration_pb2.Duration(seconds=options.connect_timeout_seconds),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    if backend.discovery == "eds":
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(_ads())
    else:
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        cluster.load_assignment.CopyFrom(load_assignment(backend))
    if backend.protocol == "h2c":
        cluster.typed_extension_protocol_options[_HTTP_PROTOCOL_OPTIONS].CopyFrom(_H2C_OPTIONS)
    return cluster


def _hold_mirrored_bodies(cluster: cluster_pb2.Cluster, limit: int) -> None:
    """A mirror connection buffers a whole mirrored request without pushing back on the client.

    Envoy stops reading the client when the mirror connection's buffer passes this limit, and a
    mirror that never reads would then stall the primary for good.
    """
    cluster.per_connection_buffer_limit_bytes.value = limit + MIRROR_HEAD_ROOM


def load_assignment(backend: ir.Backend) -> endpoint_pb2.ClusterLoadAssignment:
    """One backend's endpoints (also used alone by the controller's endpoint-only fast path)."""
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=_socket(e.host, e.port)))
        for e in backend.endpoints
    ]
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=backend.name)
    if lb_endpoints:
        cla.endpoints.append(endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints))
    return cla


# --- listeners ---------------------------------------------------------------------------------


def _listener(listener: ir.HTTPListener, options: XdsOptions) -> listener_pb2.Listener:
    port = options.port_map.get(listener.port, listener.port)
    out = listener_pb2.Listener(name=listener.name, address=_socket(options.bind_address, port))
    for chain in listener.chains:
        fc = out.filter_chains.add(
            name=chain.name,
            filters=[
                listener_components_pb2.Filter(
                    name="envoy.filters.network.http_connection_manager",
                    typed_config=_any(_manager(chain.name, options.mirror_body_limit)),
                )
            ],
        )
        if listener.tls:
            fc.filter_chain_match.server_names.extend(chain.server_names)
            fc.transport_socket.name = "envoy.transport_sockets.tls"
            fc.transport_socket.typed_config.CopyFrom(_any(_downstream_tls(chain)))
    if listener.tls:
        # SNI picks the chain; without the TLS inspector Envoy never sees the SNI.
        out.listener_filters.add(
            name="envoy.filters.listener.tls_inspector", typed_config=_any(tls_inspector_pb2.TlsInspector())
        )
    return out


def _manager(route_config: str, mirror_body_limit: int) -> hcm.HttpConnectionManager:
    return hcm.HttpConnectionManager(
        stat_prefix=route_config,
        rds=hcm.Rds(config_source=_ads(), route_config_name=route_config),
        http_filters=[
            # CORS is always present (inert without a route policy): adding a CORS route must
            # not change, and so drain, the listener.
            hcm.HttpFilter(name=_CORS_FILTER, typed_config=_any(cors_pb2.Cors())),
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())),
        ],
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        # Always present, mirrors or not: adding a mirror must not change (and so drain) the listener.
        access_log=[_NOT_MIRRORED_COUNTER],
        # Always present too, for the same reason.
        early_header_mutation_extensions=[body_verdict(mirror_body_limit)],
        # "host:PORT" with the listener's own port says nothing the listener does not know, and
        # kept, Envoy would copy it into redirects whose Location must carry the port the spec
        # computes (none for http:80 / https:443).
        strip_matching_host_port=True,
        # kubernetes.io/ws backends: the upgrade is allowed on every route, as plain HTTP/1.1
        # backends answer an unexpected Upgrade with an ordinary response anyway.
        upgrade_configs=[hcm.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
    )


NOT_MIRRORED_SUFFIX = "/not-mirrored"
"""The name suffix of a mirrored route's unmirrored twin (:func:`_routes`)."""
NOT_MIRRORED_STAT = "mirrorplane.not_mirrored"
"""Envoy's counter of requests a mirrored route did not mirror (the body bound), tagged ``route``."""


def _not_mirrored_counter() -> accesslog_pb2.AccessLog:
    """Counts, per route, the requests that went to an unmirrored twin, in one place per listener.

    Envoy counts them as ``mirrorplane.not_mirrored.route.<twin's name>`` (Prometheus:
    ``envoy_mirrorplane_not_mirrored{route="…"}``), created on the first such request. Each twin
    used to carry its own ``stat_prefix``, but Envoy builds a stats scope for every route that
    has one, on every route update: at 10,000 mirrored rules that was a third or more of Envoy's
    time to apply a change (docs/performance.md). This costs nothing per route; the CEL filter
    runs once per request, after the response.
    """
    prefix, name = NOT_MIRRORED_STAT.split(".")
    counter = stats_log_pb2.Config.Counter(
        stat=stats_log_pb2.Config.Stat(
            name=name, tags=[stats_log_pb2.Config.Tag(name="route", value_format="%ROUTE_NAME%")]
        ),
        value_fixed=wrappers_pb2.UInt64Value(value=1),
    )
    only_twins = accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=_any(cel_pb2.ExpressionFilter(expression=f"xds.route_name.endsWith('{NOT_MIRRORED_SUFFIX}')")),
        )
    )
    # Envoy 1.40 wants a stat_prefix or a stats_scope. It calls stat_prefix deprecated (a warning
    # when the listener loads), but xds-protos 1.85 has no stats_scope field to set instead.
    config = stats_log_pb2.Config(stat_prefix=prefix, counters=[counter])
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.stats", filter=only_twins, typed_config=_any(config))


_NOT_MIRRORED_COUNTER = _not_mirrored_counter()


def _downstream_tls(chain: ir.FilterChain) -> tls_pb2.DownstreamTlsContext:
    """Certificates inline: simple, but visible to anyone who can read Envoy's config_dump or the
    xDS stream (controlplane/tls.py protects the latter)."""
    common = tls_pb2.CommonTlsContext(alpn_protocols=["h2", "http/1.1"])
    for cert in chain.certificates:
        common.tls_certificates.add(
            certificate_chain=base_pb2.DataSource(inline_bytes=cert.cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=cert.key_pem),
        )
    return tls_pb2.DownstreamTlsContext(common_tls_context=common)


# --- routes ------------------------------------------------------------------------------------


def _virtual_host(vh: ir.VirtualHost, mirror_body_limit: int, json_tags: bool) -> rc.VirtualHost:
    routes = [envoy_route for r in vh.routes for envoy_route in _routes(r, mirror_body_limit, json_tags)]
    return rc.VirtualHost(name=vh.name, domains=list(vh.domains), routes=routes)


def _route_configuration(
    chain: ir.FilterChain, mirror_body_limit: int, json_tags: bool
) -> route_pb2.RouteConfiguration:
    out = route_pb2.RouteConfiguration(name=chain.name)
    out.virtual_hosts.extend(_virtual_host(vh, mirror_body_limit, json_tags) for vh in chain.virtual_hosts)
    out.MergeFrom(_route_configuration_tail(chain))
    return out


def _route_configuration_tail(chain: ir.FilterChain) -> route_pb2.RouteConfiguration:
    """What a chain's RouteConfiguration holds besides its name and its own virtual hosts: all of
    it comes after them in field order (encoded.py relies on that)."""
    out = route_pb2.RouteConfiguration(
        # Invalid backendRefs deliberately name a cluster that does not exist (→ 500).
        validate_clusters=wrappers_pb2.BoolValue(value=False),
        # Gateway API matches hostnames without the port ("very.specific.com:1234") while the
        # backend still sees the Host header the client sent.
        ignore_port_in_host_matching=True,
        # Envoy's own, for route selection: neither the backend nor the mirror sees it (the
        # shadow copies the headers after the router has applied this).
        request_headers_to_remove=[BODY_HEADER],
    )
    if chain.misdirected:
        misdirected = out.virtual_hosts.add(name=f"{chain.name}/misdirected", domains=list(chain.misdirected))
        route = misdirected.routes.add(name="misdirected-request")
        route.match.prefix = "/"
        route.direct_response.status = 421
    return out


def _routes(route: ir.Route, mirror_body_limit: int, json_tags: bool) -> list[rc.Route]:
    """One IR route as Envoy routes: mirrored only when the body is known to fit the bound.

    A mirrored route matches a Content-Length up to the bound, or a request that announces no
    body with a method that carries none (the verdict Envoy wrote, :func:`_mirrorable_expression`).
    A GRPCRoute's matches the Content-Length only, and a second mirrored route (``…/grpc``) takes
    the gRPC calls. Every other request falls through to the same route without mirrors, which
    Envoy counts by its name (:func:`_not_mirrored_counter`). The routes that mirror are named
    ``…/mirrored``: the shadow logger samples by that name (accesslog.CEL_FILTER).
    """
    out = _route(route)
    if not route.mirrors or not out.HasField("route"):
        return [out]
    tag_route(route, out, json_tags)  # shadow testing compares its legs (accesslog.py)
    unmirrored = rc.Route()
    unmirrored.CopyFrom(out)
    unmirrored.name += NOT_MIRRORED_SUFFIX
    del unmirrored.route.request_mirror_policies[:]
    untag_route(unmirrored)
    out.name += MIRRORED_SUFFIX
    # The mirror's copy is buffered under this per-request limit while its connection is not
    # ready yet; Envoy's default (1 MiB, the listener's) would push back above it.
    out.request_body_buffer_limit.value = mirror_body_limit + MIRROR_HEAD_ROOM
    if route.kind != "GRPCRoute":
        out.match.headers.append(MIRRORABLE)
        return [out, unmirrored]
    grpc = rc.Route()
    grpc.CopyFrom(out)
    grpc.name = route.name + "/grpc" + MIRRORED_SUFFIX
    grpc.match.headers.append(_GRPC_CALL)
    out.match.headers.append(_within(mirror_body_limit))
    return [out, grpc, unmirrored]


# --- routes as bytes ---------------------------------------------------------------------------
# The controller's builds (EncodedMemo) write each virtual host's bytes from fragments rather than
# building Route messages and serializing them: at 10,000 mirrored rules that was 30,000 messages
# and half the cold translation. A message is its fields in field-number order (wire.py), so a
# route is written field by field. What repeats from route to route (the route action of a
# backend and its mirrors, the header changes, the body bound's header matches) is encoded once
# per build by protobuf itself, from the functions above; names and paths are written here. The
# bytes equal ``serialize_virtual_host``'s, the messages built whole (tests/test_route_bytes.py,
# on every golden IR and on generated routes).


def serialize_virtual_host(vh: ir.VirtualHost, mirror_body_limit: int, json_tags: bool = False) -> bytes:
    """A virtual host built whole as a message and serialized by protobuf: the reference."""
    return _serialized(_virtual_host(vh, mirror_body_limit, json_tags))


_ROUTES = 3  # VirtualHost.routes
_NAME = 14  # Route.name
_STAT_PREFIX = 19  # Route.stat_prefix
# Where a mirrored route's shadow tag (tag_route) goes: metadata (4), between the route action (2)
# and the header changes (9). A tag in other fields is not merged here: the route is built as a
# message instead.
_TAG_FIELDS = frozenset(range(3, 9))
_ROOT_PREFIX = wire.string(1, "/")


def _serialized(msg: Message) -> bytes:
    data: bytes = msg.SerializeToString(deterministic=True)
    return data


class RouteEncoder:
    """Virtual hosts as bytes, for one build (the fragments it keeps are that build's).

    ``built`` counts the IR routes that were built as messages instead (a direct response, a
    redirect, a shadow tag outside the metadata): tests read it to know the fast path ran.
    """

    def __init__(self, mirror_body_limit: int, json_tags: bool = False) -> None:
        self.limit = mirror_body_limit
        self.json_tags = json_tags  # XdsOptions.shadow_tags_in_routes
        self.built = 0
        buffered = rc.Route()
        buffered.request_body_buffer_limit.value = mirror_body_limit + MIRROR_HEAD_ROOM
        self.buffered = _serialized(buffered)  # field 20
        # The mirrored route's own header matches (field 6), by kind.
        self.bound = {
            "HTTPRoute": _serialized(rc.RouteMatch(headers=[MIRRORABLE])),
            "GRPCRoute": _serialized(rc.RouteMatch(headers=[_within(mirror_body_limit)])),
        }
        # A GRPCRoute's second mirrored route: its header matches.
        self.grpc = _serialized(rc.RouteMatch(headers=[_GRPC_CALL]))
        self._actions: dict[tuple[object, ...], tuple[bytes, bytes, bytes | None]] = {}
        self._changes: dict[tuple[object, ...], bytes] = {}
        self._matches: dict[tuple[object, ...], tuple[bytes, bytes]] = {}
        self._middles: dict[tuple[object, ...], tuple[bytes | None, bytes]] = {}
        self._middle_ids: dict[tuple[int | None, ...], tuple[tuple[bytes | None, bytes], tuple[object, ...]]] = {}
        self._route_heads: dict[int, bytes] = {}  # _joined_route's, by size

    def virtual_host(self, vh: ir.VirtualHost) -> bytes:
        return b"".join(self._fields(vh))

    def framed_virtual_host(self, vh: ir.VirtualHost) -> bytes:
        """A virtual host as one element of RouteConfiguration.virtual_hosts (field 2), its head
        and fields joined once (not joined, then copied behind its head)."""
        parts = self._fields(vh)
        parts[0] = wire.head(2, sum(map(len, parts)))
        return b"".join(parts)

    def _fields(self, vh: ir.VirtualHost) -> list[bytes]:
        """A virtual host's fields, after an empty first item (a place for a head)."""
        parts = [b"", wire.string(1, vh.name)] if vh.name else [b""]
        parts += [wire.string(2, d) for d in vh.domains]
        parts += [self.routes(r) for r in vh.routes]
        return parts

    def routes(self, route: ir.Route) -> bytes:
        """One IR route's Envoy routes (as :func:`_routes` makes them), each framed as VirtualHost.routes."""
        if route.direct_status is not None or route.redirect is not None:
            return self._built(route)  # no route action: rare, and never mirrored
        m = route.match
        # The match's fields around a mirrored route's own header matches: the path (field 2,
        # or 10 or 14 after the header and query matches, fields 6 and 7).
        before = after = b""
        path_type = m.path_type
        if path_type == "Exact":
            before = wire.delimited(2, m.path.encode())  # a oneof member: written even when empty
        elif path_type == "RegularExpression":
            after = wire.delimited(10, wire.string(2, m.path) if m.path else b"")
        elif (prefix := m.path.rstrip("/")) == "":
            before = _ROOT_PREFIX
        else:  # path_separated_prefix (field 14): most routes
            encoded = prefix.encode()
            after = _PREFIX_HEADS[len(encoded)] + encoded if len(encoded) < 0x80 else wire.delimited(14, encoded)
        if m.headers or m.method or m.query_params:
            headers, query = self._header_matches(m)
            before, after = before + headers, query + after
        name = route.name
        stat = wire.string(_STAT_PREFIX, route.stat_prefix) if route.stat_prefix else b""
        if not route.mirrors:
            return self._joined_route(before + after, self._middle(route)[1], name, stat)
        if self.json_tags:  # the JSON tag names the route: nothing to share
            mirrored, unmirrored, _ = self._action(route)
            tag, changes = _tag_fields(route, True), self._header_changes(route)
            if not wire.numbers(tag) <= _TAG_FIELDS:
                return self._built(route)
            tagged: bytes | None = mirrored + tag + changes
            untagged = unmirrored + changes
        else:
            tagged, untagged = self._middle(route)
        if tagged is None:
            return self._built(route)
        buffered = stat + self.buffered
        mirrored_ = self._joined_route(
            before + self.bound[route.kind] + after, tagged, name + MIRRORED_SUFFIX, buffered
        )
        # untag_route takes off what tag_route added: the twin carries no tag.
        twin = self._joined_route(before + after, untagged, name + NOT_MIRRORED_SUFFIX, stat)
        if route.kind == "GRPCRoute":
            grpc = self._joined_route(before + self.grpc + after, tagged, name + "/grpc" + MIRRORED_SUFFIX, buffered)
            return b"".join((mirrored_, grpc, twin))
        return mirrored_ + twin

    def _joined_route(self, match: bytes, middle: bytes, name: str, tail: bytes) -> bytes:
        """One Envoy route framed as VirtualHost.routes: its match (field 1), fields 2 to 13, its
        name (14) and what follows (``tail``), with every length worked out before one join (a
        cold build writes 20,000 routes: a ``delimited`` per field was a tenth of it). A route's
        own head (two bytes of length, mostly) is kept per size for the build."""
        n = len(match)
        head = _MATCH_HEADS[n] if n < 0x80 else wire.head(1, n)
        encoded = name.encode()
        k = len(encoded)
        if not k:
            named = b""
        else:
            named = _NAME_HEADS[k] if k < 0x80 else wire.head(_NAME, k)
        size = len(head) + n + len(middle) + len(named) + k + len(tail)
        framing = self._route_heads.get(size)
        if framing is None:
            framing = self._route_heads[size] = wire.head(_ROUTES, size)
        return b"".join((framing, head, match, middle, named, encoded, tail))

    def _middle(self, route: ir.Route) -> tuple[bytes | None, bytes]:
        """Fields 2 to 13 of a route: the route action, the shadow tag (without its JSON) and
        the header changes of a mirrored route (None when its tag cannot be merged here), and
        those of a route without mirrors or the unmirrored twin. What they read of the route is
        the key (``_action``, ``_header_changes``).

        Looked up first by the identity of what it reads: the routes of one rule, and of rules
        with the same filters and backends (rules.rule_body), hold the same objects, and hashing
        them by value calls each frozen dataclass's ``__hash__`` (a tenth of a 16-rule build).
        An equal value in another object misses there and is found by value; the entry keeps
        the objects, so their ids stay theirs for the build."""
        ids = (
            id(route.backends),
            id(route.mirrors),
            id(route.rewrite),
            route.timeout_ms,
            route.backend_timeout_ms,
            id(route.request_headers),
            id(route.response_headers),
            id(route.cors),
        )
        found = self._middle_ids.get(ids)
        if found is not None:
            return found[0]
        key = (
            route.backends,
            route.mirrors,
            route.rewrite,
            route.timeout_ms,
            route.backend_timeout_ms,
            route.request_headers,
            route.response_headers,
            route.cors,
        )
        hit = self._middles.get(key)
        if hit is None:
            mirrored, unmirrored, tag = self._action(route)
            changes = self._header_changes(route)
            if not route.mirrors:
                hit = (None, mirrored + changes)
            else:
                hit = (None if tag is None else mirrored + tag + changes, unmirrored + changes)
            self._middles[key] = hit
        self._middle_ids[ids] = (hit, key)
        return hit

    def _built(self, route: ir.Route) -> bytes:
        self.built += 1
        return b"".join(wire.delimited(_ROUTES, _serialized(r)) for r in _routes(route, self.limit, self.json_tags))

    def _action(self, route: ir.Route) -> tuple[bytes, bytes, bytes | None]:
        """The route action (field 2) with the mirrors and without them (the unmirrored twin's),
        and a mirrored route's shadow tag without its JSON (``tag_route`` reads nothing else of
        the route than its mirrors then; None for a route without mirrors)."""
        key = (route.backends, route.mirrors, route.rewrite, route.timeout_ms, route.backend_timeout_ms)
        hit = self._actions.get(key)
        if hit is None:
            action = _action(route)
            mirrored = wire.delimited(2, _serialized(action))
            del action.request_mirror_policies[:]
            tag = _tag_fields(route, False) if route.mirrors else None
            if tag is not None and not wire.numbers(tag) <= _TAG_FIELDS:
                tag = None  # merged nowhere: the route is built as a message
            hit = self._actions[key] = (mirrored, wire.delimited(2, _serialized(action)), tag)
        return hit

    def _header_changes(self, route: ir.Route) -> bytes:
        """Fields 9 to 13: header changes and the CORS policy."""
        key = (route.request_headers, route.response_headers, route.cors)
        hit = self._changes.get(key)
        if hit is None:
            out = rc.Route()
            _add_header_changes(out, route.request_headers, route.response_headers, route.cors)
            hit = self._changes[key] = _serialized(out)
        return hit

    def _header_matches(self, m: ir.Match) -> tuple[bytes, bytes]:
        """A match's header matches (field 6) and query matches (field 7)."""
        key = (m.headers, m.method, m.query_params)
        hit = self._matches.get(key)
        if hit is None:
            headers, query = rc.RouteMatch(), rc.RouteMatch()
            _add_header_matches(headers, m.headers, m.method, ())
            _add_header_matches(query, (), None, m.query_params)
            hit = self._matches[key] = (_serialized(headers), _serialized(query))
        return hit


def _tag_fields(route: ir.Route, json_tags: bool) -> bytes:
    """What shadow testing adds to a mirrored route (tag_route), serialized on its own."""
    marked = rc.Route()
    tag_route(route, marked, json_tags)
    return _serialized(marked)


_MATCH_HEADS, _NAME_HEADS = wire.short_heads(1), wire.short_heads(_NAME)  # Route.match, Route.name
_PREFIX_HEADS = wire.short_heads(14)  # RouteMatch.path_separated_prefix


def _route(route: ir.Route) -> rc.Route:
    out = rc.Route(name=route.name, match=_match(route.match))
    if route.direct_status is not None:
        out.direct_response.status = route.direct_status
    elif route.redirect is not None:
        out.redirect.CopyFrom(_redirect(route.redirect))
    else:
        out.route.CopyFrom(_action(route))
    if route.stat_prefix:
        out.stat_prefix = route.stat_prefix
    _add_header_changes(out, route.request_headers, route.response_headers, route.cors)
    return out


def _add_header_changes(out: rc.Route, request: ir.HeaderMods, response: ir.HeaderMods, cors: ir.Cors | None) -> None:
    """A route's fields 9 to 13: header changes and the CORS policy."""
    if cors is not None:
        out.typed_per_filter_config[_CORS_FILTER].CopyFrom(_any(_cors(cors)))
    out.request_headers_to_add.extend(_header_options(request))
    out.request_headers_to_remove.extend(request.remove)
    out.response_headers_to_add.extend(_header_options(response))
    out.response_headers_to_remove.extend(response.remove)


def _string_match(value: str, regex: bool) -> string_pb2.StringMatcher:
    if regex:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=value))
    return string_pb2.StringMatcher(exact=value)


def _match(match: ir.Match) -> rc.RouteMatch:
    out = rc.RouteMatch()
    if match.path_type == "Exact":
        out.path = match.path
    elif match.path_type == "RegularExpression":
        out.safe_regex.regex = match.path
    elif match.path.rstrip("/") == "":
        out.prefix = "/"
    else:
        # "/v2" and "/v2/" both match /v2 and /v2/..., but not /v2example.
        out.path_separated_prefix = match.path.rstrip("/")
    _add_header_matches(out, match.headers, match.method, match.query_params)
    return out


def _add_header_matches(
    out: rc.RouteMatch, headers: tuple[ir.StringMatch, ...], method: str | None, query: tuple[ir.StringMatch, ...]
) -> None:
    for h in headers:
        out.headers.append(rc.HeaderMatcher(name=h.name, string_match=_string_match(h.value, h.regex)))
    if method:
        out.headers.append(rc.HeaderMatcher(name=":method", string_match=_string_match(method, False)))
    for q in query:
        out.query_parameters.append(rc.QueryParameterMatcher(name=q.name, string_match=_string_match(q.value, q.regex)))


def _action(route: ir.Route) -> rc.RouteAction:
    action = rc.RouteAction(cluster_not_found_response_code=rc.RouteAction.INTERNAL_SERVER_ERROR)
    if len(route.backends) == 1 and not (route.backends[0].request_headers or route.backends[0].response_headers):
        action.cluster = route.backends[0].backend or INVALID_BACKEND_CLUSTER
    else:
        for b in route.backends:
            weight = action.weighted_clusters.clusters.add(
                name=b.backend or INVALID_BACKEND_CLUSTER, weight=wrappers_pb2.UInt32Value(value=b.weight)
            )
            weight.request_headers_to_add.extend(_header_options(b.request_headers))
            weight.request_headers_to_remove.extend(b.request_headers.remove)
            weight.response_headers_to_add.extend(_header_options(b.response_headers))
            weight.response_headers_to_remove.extend(b.response_headers.remove)
    if route.rewrite is not None:
        rewrite = route.rewrite
        if rewrite.hostname:
            action.host_rewrite_literal = rewrite.hostname
        if rewrite.full_path is not None:
            action.regex_rewrite.pattern.regex = "^.*$"
            action.regex_rewrite.substitution = rewrite.full_path
        elif rewrite.path_regex is not None:
            action.regex_rewrite.pattern.regex, action.regex_rewrite.substitution = rewrite.path_regex
    if route.timeout_ms is not None:
        action.timeout.CopyFrom(_duration_ms(route.timeout_ms))
    if route.backend_timeout_ms:
        action.retry_policy.num_retries.value = 0
        action.retry_policy.per_try_timeout.CopyFrom(_duration_ms(route.backend_timeout_ms))
    action.request_mirror_policies.extend(_mirror_policy(m) for m in route.mirrors)
    return action


def _mirror_policy(m: ir.Mirror) -> rc.RouteAction.RequestMirrorPolicy:
    """One mirror. What a MirrorPolicy sets acts on the mirrored copy only: Envoy applies
    ``request_headers_mutations`` and ``host_rewrite_literal`` after copying the request."""
    policy = rc.RouteAction.RequestMirrorPolicy(
        cluster=m.backend, disable_shadow_host_suffix_append=not m.shadow_host_suffix
    )
    fraction = fractional_percent(m.numerator, m.denominator)
    if fraction is not None:
        policy.runtime_fraction.default_value.CopyFrom(fraction)
    if m.trace_sampled is not None:
        policy.trace_sampled.value = m.trace_sampled
    if m.hostname:
        policy.host_rewrite_literal = m.hostname
    # Envoy runs the mutations in order; removing first matches a route's own header handling.
    policy.request_headers_mutations.extend(
        mutation_rules_pb2.HeaderMutation(remove=name) for name in m.request_headers.remove
    )
    policy.request_headers_mutations.extend(
        mutation_rules_pb2.HeaderMutation(append=opt) for opt in _header_options(m.request_headers)
    )
    return policy


def _redirect(redirect: ir.Redirect) -> rc.RedirectAction:
    out = rc.RedirectAction(response_code=_REDIRECT_CODES[redirect.status_code])
    if redirect.scheme:
        out.scheme_redirect = redirect.scheme
    if redirect.hostname:
        out.host_redirect = redirect.hostname
    if redirect.port is not None:
        out.port_redirect = redirect.port
    if redirect.full_path is not None:
        out.path_redirect = redirect.full_path
    elif redirect.path_regex is not None:
        out.regex_rewrite.pattern.regex, out.regex_rewrite.substitution = redirect.path_regex
    return out


def _cors(cors: ir.Cors) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin_matcher(o) for o in cors.allow_origins],
        allow_methods=", ".join(cors.allow_methods),
        allow_headers=", ".join(cors.allow_headers),
        expose_headers=", ".join(cors.expose_headers),
    )
    if cors.max_age is not None:
        out.max_age = str(cors.max_age)
    if cors.allow_credentials:
        out.allow_credentials.value = True
    return out


def _origin_matcher(origin: str) -> string_pb2.StringMatcher:
    """Gateway API origins: exact, "*" (any), or with "*" standing for any run of characters."""
    pattern = ir.origin_regex(origin)
    if pattern is None:
        return string_pb2.StringMatcher(exact=origin)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def _duration_ms(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def _header_options(mods: ir.HeaderMods) -> list[base_pb2.HeaderValueOption]:
    """Values are literal in Gateway API, while Envoy reads ``%...%`` in them as a format command
    (and NACKs the whole RouteConfiguration for "100%"): every ``%`` is escaped as ``%%``."""
    opt = base_pb2.HeaderValueOption
    return [
        opt(
            header=base_pb2.HeaderValue(key=k, value=v.replace("%", "%%")), append_action=opt.OVERWRITE_IF_EXISTS_OR_ADD
        )
        for k, v in mods.set
    ] + [
        opt(header=base_pb2.HeaderValue(key=k, value=v.replace("%", "%%")), append_action=opt.APPEND_IF_EXISTS_OR_ADD)
        for k, v in mods.add
    ]
