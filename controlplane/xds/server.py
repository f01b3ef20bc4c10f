"""The State-of-the-World ADS server, and the gRPC server around it.

One ADS stream serves one Envoy. Its first request carries ``node``; ``node.cluster`` names the
Gateway (``namespace/name``) whose snapshot the stream serves, ``node.id`` tells Envoys apart. If
the Gateway has no snapshot yet the stream stays open and is served as soon as one is set; if its
snapshot is removed the stream stays open and Envoy keeps its config.

Protocol (SotW, one stream for all types):

* A type is served once the Envoy has sent a request for it. Clusters and listeners are always
  sent whole; endpoints and routes are sent for the names the Envoy requested that exist in the
  snapshot (``"*"`` asks for all).
* A response is sent for a type when what it would carry differs from what was last sent for
  that type on the stream, or the Envoy subscribed to names the last response did not cover.
  Names the Envoy unsubscribes from need no response.
* At most one response per type is in flight: the next one waits for the ACK or NACK of the
  previous (as go-control-plane does), which coalesces bursts of snapshots for slow Envoys.
* A request whose ``response_nonce`` is not the last nonce sent for its type is stale and ignored
  entirely, as go-control-plane does (Envoy repeats its subscription with its next ACK). Before
  anything was sent for a type on a stream, the nonce is not checked: Envoy carries the nonce of
  its previous stream across reconnects. Nonces carry a random per-process prefix, so a nonce of
  a previous control plane process can never match.
* A request with the current nonce is an ACK, or a NACK if it has ``error_detail``. A NACK is
  recorded in the registry and logged at WARNING as one line (node, gateway, type, rejected
  version, Envoy's message). The rejected content is not sent again (Envoy keeps its last good
  config); a later, different snapshot is sent normally.
* An Envoy that reconnects announcing the cluster/listener version that is current gets no
  response for that type: versions are content hashes, so equal versions mean equal content and a
  restarted control plane causes no churn.

Make-before-break, additions: changed types go out in ``PUSH_ORDER`` (clusters, endpoints,
listeners, routes), and listeners and routes are held back while clusters or endpoints have a
response in flight or a change still to send. Envoy ACKs CDS only once new clusters have warmed
(received their endpoints), so a route never points at a cluster that is not ready. Endpoints are
never held back (warming needs them, and Envoy asks for them before it ACKs CDS), and routes do not
wait for listeners (a new listener warms until its routes arrive, and Envoy asks for them before
it ACKs the listener).

Make-before-break, removals: routes the Envoy is still running may point at clusters a new
snapshot drops. So while the new listeners/routes are not applied yet, CDS carries the new
clusters *plus* the removed ones the Envoy has (ACKed, or in flight and not NACKed; with their
last-sent definitions), under a version that is the content hash of that union, and EDS keeps the
removed clusters' endpoints while Envoy still subscribes to them. Once every subscribed listener and
route response is answered (ACKed, or NACKed: Envoy has decided) and nothing is left to send for
them, the final CDS without the removed clusters is sent. If listeners and routes have nothing to
send, removed clusters go at once. A snapshot arriving meanwhile is handled the same way from the
current state. The Envoy's current clusters are known per stream only: after a reconnect (a new
stream), CDS is the snapshot's.

A CDS NACK does not hold back listeners and routes: Envoy has decided, and holding them would let
one bad cluster freeze every route change of the Gateway.

Delta (incremental) ADS is this stream with per-resource state: :mod:`.delta` subclasses
``_AdsStream`` and overrides what is Delta's own (requests, plans, responses), so that the
lifecycle, the nonce and ACK/NACK rules, the push order and the held clusters are the ones above.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc
from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc, discovery_pb2
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..identity import Authorizer, OperatorOnly
from .cache import Entry, Snapshot, SnapshotCache, content_version
from .resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES
from .tracking import NodeRegistry, StreamState

log = logging.getLogger("mirrorplane.xds")

ADS_SERVICE_NAME = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
CONTROL_PLANE_ID = "mirrorplane"

# Types whose SotW responses always carry every resource (missing = deleted).
_ALWAYS_ALL = frozenset({CLUSTER, LISTENER})
_ROUTING = (LISTENER, ROUTE)
# What a type waits for: listeners and routes go out only once clusters and endpoints are applied.
# Endpoints never wait (Envoy defers its CDS ACK until new clusters have warmed, which needs EDS),
# and routes do not wait for listeners (Envoy's RDS request for a new listener comes before it
# ACKs the listener).
_WAITS_FOR: dict[str, tuple[str, ...]] = {
    CLUSTER: (),
    ENDPOINT: (),
    LISTENER: (CLUSTER, ENDPOINT),
    ROUTE: (CLUSTER, ENDPOINT),
}


def build_response(
    type_url: str,
    version: str,
    resources: Iterable[bytes],
    nonce: str,
    *,
    control_plane_id: str | None = CONTROL_PLANE_ID,
) -> discovery_pb2.DiscoveryResponse:
    """A SotW DiscoveryResponse from already serialized resources of ``type_url``."""
    response = discovery_pb2.DiscoveryResponse(
        version_info=version, type_url=type_url, nonce=nonce
    )
    add = response.resources.add
    for data in resources:
        add(type_url=type_url, value=data)
    if control_plane_id:
        response.control_plane.identifier = control_plane_id
    return response


def _short(type_url: str) -> str:
    return SHORT_NAMES.get(type_url, type_url)


class _Reject(Exception):
    """Close the stream with a status (a malformed request)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass
class _Plan:
    version: str
    entries: Mapping[str, Entry]


@dataclass
class _TypeStream:
    """What one stream knows about one type (the server side; the registry has the public view)."""

    type_url: str
    subscribed: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    sent: Mapping[str, Entry] | None = None
    """What the Envoy was last sent (pruned when it unsubscribes), ``None`` before that."""
    sent_names: frozenset[str] = frozenset()
    sent_wildcard: bool = False
    acked: Mapping[str, Entry] | None = None
    """What the Envoy last ACKed (pruned like ``sent``)."""
    nacked: bool = False
    """The last response sent was NACKed: the Envoy runs ``acked``, not ``sent``."""
    version: str | None = None
    nonce: str | None = None
    in_flight: bool = False
    envoy_version: str = ""
    """``version_info`` of the first request: what a reconnecting Envoy already has."""


def _same_entries(a: Mapping[str, Entry], b: Mapping[str, Entry]) -> bool:
    if a is b:
        return True
    if len(a) != len(b):
        return False
    for name, entry in a.items():
        other = b.get(name)
        if other is None or other.version != entry.version:
            return False
    return True


class _AdsStream:
    def __init__(self, servicer: "AggregatedDiscoveryServicer", context: grpc.aio.ServicerContext):
        self._cache = servicer.cache
        self._registry = servicer.registry
        self._cp_id = servicer.control_plane_id
        self._authorizer = servicer.authorizer
        self._ctx = context
        self._state: StreamState | None = None
        self._claimed = "node=? gateway=?"
        self._snapshot: Snapshot | None = None
        self._types: dict[str, _TypeStream] = {}
        self._nonces = itertools.count(1)
        self._nonce_prefix = servicer.nonce_prefix
        self._tasks: list[asyncio.Future] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        reason = "closed by client"
        try:
            await self._serve()
        except _Reject as e:
            reason = f"rejected: {e.details}"
            log.warning(
                "xds.stream_rejected %s peer=%s code=%s reason=%r", self._who(), self._ctx.peer(), e.code.name, e.details
            )
            await self._ctx.abort(e.code, e.details)
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception as e:
            reason = f"error: {type(e).__name__}"
            log.exception("xds stream failed %s", self._who())
            await self._ctx.abort(grpc.StatusCode.INTERNAL, f"control plane error: {type(e).__name__}")
        finally:
            for task in self._tasks:
                task.cancel()
            if self._state is not None:
                self._registry.close_stream(self._state)
                log.info("xds stream closed %s reason=%s", self._who(), reason)

    def _who(self) -> str:
        s = self._state
        if s is None:
            return self._claimed
        return f"node={s.node_id} gateway={s.gateway} stream={s.stream_id}"

    async def _serve(self) -> None:
        first = await self._ctx.read()
        if first is grpc.aio.EOF:
            return
        node = first.node if first.HasField("node") else None
        if node is None or not node.id:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id")
        gateway = node.cluster
        ns, _, name = gateway.partition("/")
        if not ns or not name or "/" in name:
            raise _Reject(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node {node.id!r}: node.cluster must be the Gateway as namespace/name, "
                f"got {gateway!r}",
            )
        self._claimed = f"node={node.id} gateway={gateway}"
        denial = self._authorizer.stream_denial(self._ctx, gateway)
        if denial is not None:
            raise _Reject(grpc.StatusCode.PERMISSION_DENIED, denial)
        agent = node.user_agent_name
        if node.HasField("user_agent_build_version"):
            v = node.user_agent_build_version.version
            agent += f" {v.major_number}.{v.minor_number}.{v.patch}"
        elif node.user_agent_version:
            agent += f" {node.user_agent_version}"
        self._state = self._registry.open_stream(
            node_id=node.id, gateway=gateway, peer=self._ctx.peer() or "", user_agent=agent
        )
        log.info("xds stream connected %s peer=%s agent=%r", self._who(), self._state.peer, agent)

        self._snapshot = self._cache.get(gateway)
        if self._snapshot is None:
            log.info("xds waiting for a snapshot %s", self._who())
        else:
            self._state.snapshot_version = self._snapshot.version
        await self._on_request(first)

        read: asyncio.Future | None = None
        watch: asyncio.Future | None = None
        while True:
            if read is None:
                read = asyncio.ensure_future(self._ctx.read())
            if watch is None:
                watch = asyncio.ensure_future(self._cache.wait_for_change(gateway, self._snapshot))
            self._tasks = [read, watch]
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                request = read.result()
                read = None
                if request is grpc.aio.EOF:
                    return
                await self._on_request(request)
            if watch in done:
                snapshot = watch.result()
                watch = None
                await self._on_snapshot(snapshot)

    # -- input ------------------------------------------------------------------------------

    async def _on_snapshot(self, snapshot: Snapshot | None) -> None:
        assert self._state is not None
        if snapshot is None:
            log.info("xds gateway snapshot removed, keeping the stream open %s", self._who())
        elif self._snapshot is None:
            log.info("xds snapshot available %s version=%s", self._who(), snapshot.version)
        self._snapshot = snapshot
        self._state.snapshot_version = snapshot.version if snapshot else None
        await self._push()

    def _served(self, type_url: str) -> bool:
        """Whether requests for ``type_url`` are served (others are ignored); none is rejected."""
        if not type_url:
            raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "type_url is required on ADS")
        if type_url not in PUSH_ORDER:
            log.debug("xds ignoring unsupported type %s type=%s", self._who(), type_url)
            return False
        return True

    async def _on_request(self, req: discovery_pb2.DiscoveryRequest) -> None:
        assert self._state is not None
        type_url = req.type_url
        if not self._served(type_url):
            return
        ts = self._types.get(type_url)
        nonce = req.response_nonce
        if ts is not None and ts.nonce is not None and nonce:
            if nonce != ts.nonce:
                log.debug(
                    "xds stale nonce ignored %s type=%s nonce=%s current=%s",
                    self._who(), _short(type_url), nonce, ts.nonce,
                )
                return
            if ts.in_flight:
                ts.in_flight = False
                if req.HasField("error_detail"):
                    ts.nacked = True
                    self._on_nack(ts, req, kept_version=req.version_info)
                else:
                    ts.acked = ts.sent
                    self._registry.record_ack(
                        self._state, type_url, version=req.version_info, nonce=nonce
                    )
                    log.debug(
                        "xds ACK %s type=%s version=%s nonce=%s",
                        self._who(), _short(type_url), req.version_info, nonce,
                    )
        else:
            # Nothing sent for this type on this stream yet. Envoy keeps the nonce (and a NACK's
            # error_detail) of its previous stream across reconnects, so neither is checked here.
            if ts is None:
                ts = self._types[type_url] = _TypeStream(type_url)
            if ts.sent is None:
                ts.envoy_version = req.version_info
        self._subscribe(ts, req)
        await self._push()

    def _on_nack(self, ts: _TypeStream, req, *, kept_version: str) -> None:
        """Record and log a NACK of the response in flight (``req``: SotW or Delta request)."""
        assert self._state is not None
        message = req.error_detail.message
        self._registry.record_nack(
            self._state,
            ts.type_url,
            version=ts.version or "",
            nonce=req.response_nonce,
            message=message,
            code=req.error_detail.code,
            kept_version=kept_version,
        )
        log.warning(
            "xds NACK node=%s gateway=%s type=%s version=%s nonce=%s kept_version=%s error=%r",
            self._state.node_id, self._state.gateway, _short(ts.type_url), ts.version,
            req.response_nonce, kept_version, message,
        )

    def _subscribe(self, ts: _TypeStream, req: discovery_pb2.DiscoveryRequest) -> None:
        assert self._state is not None
        requested = frozenset(req.resource_names)
        wildcard = ts.type_url in _ALWAYS_ALL or "*" in requested
        names = requested - {"*"}
        if ts.subscribed and (wildcard, names) == (ts.wildcard, ts.names):
            return
        ts.subscribed, ts.wildcard, ts.names = True, wildcard, names
        if not wildcard and ts.sent is not None:
            # Unsubscribed names need no response; forget we sent them so that a later
            # re-subscription gets them again.
            ts.sent = {n: e for n, e in ts.sent.items() if n in names}
            ts.sent_names &= names
            if ts.acked is not None:
                ts.acked = {n: e for n, e in ts.acked.items() if n in names}
        self._registry.record_subscription(self._state, ts.type_url, names, wildcard=wildcard)

    # -- output -----------------------------------------------------------------------------

    @staticmethod
    def _envoy_may_have(ts: _TypeStream) -> dict[str, Entry]:
        """Resources of this type the Envoy has, or will have once it applies what is in flight."""
        have = dict(ts.acked or {})
        if ts.sent is not None and not ts.nacked:
            have.update(ts.sent)
        return have

    def _removed_clusters(self, snap: Snapshot) -> dict[str, Entry]:
        """Clusters the Envoy may have that the snapshot no longer has."""
        cds = self._types.get(CLUSTER)
        if cds is None:
            return {}
        current = snap[CLUSTER].entries
        return {n: e for n, e in self._envoy_may_have(cds).items() if n not in current}

    def _routing_settled(self, snap: Snapshot) -> bool:
        """Every subscribed listener/route response is answered and nothing is left to send."""
        for type_url in _ROUTING:
            ts = self._types.get(type_url)
            if ts is None:
                continue
            if ts.in_flight or self._needs_send(ts, self._plan(ts, snap)):
                return False
        return True

    def _holding(self, snap: Snapshot) -> dict[str, Entry]:
        """Clusters to keep in CDS for make-before-break (empty when none)."""
        removed = self._removed_clusters(snap)
        if removed and not self._routing_settled(snap):
            return removed
        return {}

    def _held(self, ts: _TypeStream, snap: Snapshot) -> dict[str, Entry]:
        """Removed resources of this type kept for make-before-break: the clusters of
        :meth:`_holding`, and the endpoints the Envoy may have that the snapshot dropped."""
        if ts.type_url not in (CLUSTER, ENDPOINT):
            return {}
        keep = self._holding(snap)
        if not keep or ts.type_url == CLUSTER:
            return keep
        current = snap[ts.type_url].entries
        return {
            n: e
            for n, e in self._envoy_may_have(ts).items()
            if (ts.wildcard or n in ts.names) and n not in current
        }

    def _plan(self, ts: _TypeStream, snap: Snapshot) -> _Plan:
        tsnap = snap[ts.type_url]
        if ts.wildcard:
            entries: Mapping[str, Entry] = tsnap.entries
        else:
            entries = {n: tsnap.entries[n] for n in sorted(ts.names) if n in tsnap.entries}
        held = self._held(ts, snap)
        if not held:
            return _Plan(tsnap.version, entries)
        union = {**entries, **held}
        return _Plan(content_version((e.name, e.data) for e in union.values()), union)

    @staticmethod
    def _needs_send(ts: _TypeStream, plan: _Plan) -> bool:
        if ts.sent is None:
            return ts.wildcard or bool(ts.names)
        if ts.wildcard and not ts.sent_wildcard:
            return True
        if not ts.wildcard and ts.names - ts.sent_names:
            return True
        return not _same_entries(plan.entries, ts.sent)

    def _resume(self, snap: Snapshot) -> None:
        """A reconnecting Envoy that already has the current clusters/listeners gets no resend."""
        assert self._state is not None
        for type_url in _ALWAYS_ALL:
            ts = self._types.get(type_url)
            if ts is None or ts.sent is not None or not ts.envoy_version:
                continue
            plan = self._plan(ts, snap)
            if plan.version == ts.envoy_version:
                ts.sent, ts.acked, ts.version = plan.entries, plan.entries, plan.version
                ts.sent_wildcard, ts.sent_names = ts.wildcard, ts.names
                self._registry.record_resumed(self._state, type_url, plan.version, plan.entries)
                log.debug(
                    "xds resumed %s type=%s version=%s", self._who(), _short(type_url), plan.version
                )
            ts.envoy_version = ""

    async def _push(self) -> None:
        snap = self._snapshot
        if snap is None:
            return
        assert self._state is not None
        self._resume(snap)
        busy: set[str] = set()  # types with a response in flight or a change still to send
        for type_url in PUSH_ORDER:
            ts = self._types.get(type_url)
            if ts is None:
                continue
            plan = self._plan(ts, snap)
            pending = self._needs_send(ts, plan)
            if pending and not ts.in_flight and not busy.intersection(_WAITS_FOR[type_url]):
                await self._send(ts, plan)
            if pending or ts.in_flight:
                busy.add(type_url)
        self._update_held(snap)

    def _update_held(self, snap: Snapshot) -> None:
        assert self._state is not None
        cds = self._types.get(CLUSTER)
        held = cds.sent.keys() - snap[CLUSTER].entries.keys() if cds and cds.sent else ()
        self._state.held_clusters = frozenset(held)

    def _new_nonce(self) -> str:
        assert self._state is not None
        return f"{self._nonce_prefix}-{self._state.stream_id}-{next(self._nonces)}"

    async def _send(self, ts: _TypeStream, plan: _Plan) -> None:
        assert self._state is not None and self._snapshot is not None
        nonce = self._new_nonce()
        response = build_response(
            ts.type_url,
            plan.version,
            (e.data for e in plan.entries.values()),
            nonce,
            control_plane_id=self._cp_id,
        )
        ts.sent, ts.version, ts.nonce, ts.in_flight = plan.entries, plan.version, nonce, True
        ts.nacked = False
        ts.sent_names, ts.sent_wildcard = ts.names, ts.wildcard
        ts.envoy_version = ""
        if ts.type_url == CLUSTER:
            self._update_held(self._snapshot)
        self._registry.record_sent(
            self._state,
            ts.type_url,
            version=plan.version,
            nonce=nonce,
            resources=len(plan.entries),
            entries=plan.entries,
        )
        log.debug(
            "xds push %s type=%s version=%s nonce=%s resources=%d",
            self._who(), _short(ts.type_url), plan.version, nonce, len(plan.entries),
        )
        await self._ctx.write(response)


class AggregatedDiscoveryServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """ADS: State of the World, and Delta (incremental, :mod:`.delta`)."""

    def __init__(
        self,
        cache: SnapshotCache,
        registry: NodeRegistry,
        *,
        control_plane_id: str | None = CONTROL_PLANE_ID,
        authorizer: Authorizer = Authorizer(enforced=False),
    ) -> None:
        self.cache = cache
        self.registry = registry
        self.control_plane_id = control_plane_id
        self.authorizer = authorizer
        # Envoy keeps nonces across reconnects, so nonces must not repeat across restarts either.
        self.nonce_prefix = secrets.token_hex(4)

    async def StreamAggregatedResources(self, request_iterator, context) -> None:  # noqa: N802
        await _AdsStream(self, context).run()

    async def DeltaAggregatedResources(self, request_iterator, context) -> None:  # noqa: N802
        from .delta import DeltaAdsStream  # built on _AdsStream below: imported late

        await DeltaAdsStream(self, context).run()


ServiceAdder = Callable[[grpc.aio.Server], object]
"""Registers one more servicer on a server, e.g. ``lambda s: add_FooServicer_to_server(x, s)``."""


def build_server(
    cache: SnapshotCache,
    registry: NodeRegistry,
    *,
    address: str = "127.0.0.1:18000",
    control_plane_id: str | None = CONTROL_PLANE_ID,
    credentials: grpc.ServerCredentials | None = None,
    authorizer: Authorizer = Authorizer(enforced=False),
    services: Iterable[tuple[str, ServiceAdder]] = (),
    self_checked: Iterable[str] = (),
    health_servicer: health.aio.HealthServicer | None = None,
) -> grpc.aio.Server:
    """A gRPC server with ADS, health (overall SERVING, unless ``health_servicer`` is the
    caller's, who then sets it) and reflection; not started.

    ``services`` are more services on the same port, as (full service name, adder) pairs: the
    adder registers the servicer and reflection lists the name (the admin API and CSDS).
    ``self_checked`` names those among them that check the caller's identity themselves (the
    access log receiver: Envoys, not the operator, call it).

    Create it inside the running event loop. ``SO_REUSEPORT`` is off, so binding a port that is in
    use fails instead of silently sharing it with another process. With ``credentials`` the port
    speaks TLS (mutual TLS when they require client certificates) and nothing else. An enforcing
    ``authorizer`` (mutual TLS) limits each ADS stream to its certificate's Gateway and every
    service but ADS, health and reflection to the operator identity (:mod:`controlplane.identity`).
    """
    server = grpc.aio.server(
        interceptors=[OperatorOnly(self_checked=[ADS_SERVICE_NAME, *self_checked])] if authorizer.enforced else [],
        options=[
            ("grpc.so_reuseport", 0),
            # Find dead Envoys (half-open TCP) instead of keeping their streams forever.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
    )
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        AggregatedDiscoveryServicer(cache, registry, control_plane_id=control_plane_id, authorizer=authorizer), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer or health.aio.HealthServicer(), server)
    names = [ADS_SERVICE_NAME, health.SERVICE_NAME]
    for name, add in services:
        add(server)
        names.append(name)
    reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), server)
    if credentials is not None:
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    return server
