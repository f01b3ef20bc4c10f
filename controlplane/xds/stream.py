"""What every ADS stream does, State of the World (:mod:`.sotw`) or Delta (:mod:`.delta`).

One ADS stream serves one Envoy. Its first request carries ``node``; ``node.cluster`` names the
Gateway (``namespace/name``) whose snapshot the stream serves, ``node.id`` tells Envoys apart. With
mutual TLS the client certificate must name that Gateway (:mod:`controlplane.identity`). If the
Gateway has no snapshot yet the stream stays open and is served as soon as one is set; if its
snapshot is removed the stream stays open and Envoy keeps its config.

The rules both flavours follow, kept here once (go-control-plane's ``pkg/server/stream``):

* A type is served once the Envoy has sent a request for it; a request without ``type_url`` closes
  the stream (INVALID_ARGUMENT), an unknown type is ignored.
* At most one response per type is in flight: the next one waits for the ACK or NACK of the
  previous (as go-control-plane does), which coalesces bursts of snapshots for slow Envoys.
* A ``response_nonce`` that is not the last nonce sent for its type is stale: its ACK or NACK is
  ignored. Nonces carry a random per-process prefix, so a nonce of a previous control plane process
  can never match.
* A NACK is recorded in the registry and logged at WARNING as one line (node, gateway, type,
  rejected version, Envoy's message). The rejected content is not sent again (Envoy keeps its last
  good config); a later, different snapshot is sent normally.

Make-before-break, additions: changed types go out in ``PUSH_ORDER`` (clusters, endpoints,
listeners, routes), and listeners and routes are held back while clusters or endpoints have a
response in flight or a change still to send. Envoy ACKs CDS only once new clusters have warmed
(received their endpoints), so a route never points at a cluster that is not ready. Endpoints are
never held back (warming needs them, and Envoy asks for them before it ACKs CDS), and routes do not
wait for listeners (a new listener warms until its routes arrive, and Envoy asks for them before
it ACKs the listener).

Make-before-break, removals: routes the Envoy is still running may point at clusters a new
snapshot drops. So while the new listeners/routes are not applied yet, the clusters the snapshot
removed that the Envoy has (ACKed, or in flight and not NACKed) are *held*: CDS keeps them, and EDS
keeps their endpoints while Envoy still subscribes to them. Once every subscribed listener and
route response is answered (ACKed, or NACKed: Envoy has decided) and nothing is left to send for
them, the held clusters go. If listeners and routes have nothing to send, removed clusters go at
once. A snapshot arriving meanwhile is handled the same way from the current state. The Envoy's
current clusters are known per stream only: after a reconnect (a new stream), CDS is the
snapshot's.

Clusters updated in place: Envoy re-creates a changed cluster, which warms until it receives its
ClusterLoadAssignment again, so the endpoints are sent again even when they did not change (SotW:
in answer to Envoy's repeated EDS request; Delta: unasked, since Envoy does not re-subscribe).
Otherwise the cluster finishes warming only after ``initial_fetch_timeout`` (15 s by default) and
the change applies that late (the xDS protocol's "eventual consistency considerations";
go-control-plane answers warming clusters the same way).

A CDS NACK does not hold back listeners and routes: Envoy has decided, and holding them would let
one bad cluster freeze every route change of the Gateway.

What differs — what the Envoy is known to have, what a plan and a response carry — is each
flavour's: :class:`AdsStream` calls it through the abstract methods below.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from ..errors import MirrorplaneError
from ..identity import Authorizer
from .cache import Entry, Snapshot, SnapshotCache
from .resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES
from .tracking import NodeRegistry, StreamState

log = logging.getLogger("mirrorplane.xds")

CONTROL_PLANE_ID = "mirrorplane"
"""What every response's ``control_plane.identifier`` says by default."""

ROUTING = (LISTENER, ROUTE)
# What a type waits for: listeners and routes go out only once clusters and endpoints are applied.
# Endpoints never wait (Envoy defers its CDS ACK until new clusters have warmed, which needs EDS),
# and routes do not wait for listeners (Envoy's RDS request for a new listener comes before it
# ACKs the listener).
WAITS_FOR: Mapping[str, tuple[str, ...]] = {
    CLUSTER: (),
    ENDPOINT: (),
    LISTENER: (CLUSTER, ENDPOINT),
    ROUTE: (CLUSTER, ENDPOINT),
}


def short(type_url: str) -> str:
    """``cds``/``eds``/``lds``/``rds`` for the log lines, or the type URL itself."""
    return SHORT_NAMES.get(type_url, type_url)


@dataclass(frozen=True)
class StreamDeps:
    """What every stream of one servicer shares."""

    cache: SnapshotCache
    registry: NodeRegistry
    authorizer: Authorizer
    control_plane_id: str | None
    nonce_prefix: str
    """Random per process: Envoy keeps nonces across reconnects, so they must not repeat across
    restarts either."""


class RequestError(MirrorplaneError):
    """Close the stream with a status (a malformed or forbidden request)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass
class TypeProgress:
    """What one stream knows about one type; each flavour adds what the Envoy has."""

    type_url: str
    wildcard: bool = False
    names: Set[str] = frozenset()
    """Names subscribed explicitly (besides the wildcard)."""
    version: str | None = None
    """Version of the last response sent."""
    nonce: str | None = None
    in_flight: bool = False
    resend: bool = False
    """Send the next response even if it tells the Envoy nothing new (a warming cluster's EDS)."""


T = TypeVar("T", bound=TypeProgress)
Req = TypeVar("Req")
Plan = TypeVar("Plan")
Have = TypeVar("Have")
"""What a flavour knows of one resource the Envoy has: the Entry sent (SotW), its version (Delta)."""


class AdsStream(ABC, Generic[Req, T, Plan, Have]):
    """One ADS stream: lifecycle, nonces, ACK/NACK bookkeeping, push order and held clusters."""

    def __init__(self, deps: StreamDeps, context: grpc.aio.ServicerContext) -> None:
        self.deps = deps
        self.ctx = context
        self.state: StreamState | None = None
        self.snapshot: Snapshot | None = None
        self.types: dict[str, T] = {}
        self._claimed = "node=? gateway=?"
        self._nonces = itertools.count(1)
        self._tasks: list[asyncio.Future[Any]] = []

    # -- what each flavour does its own way -------------------------------------------------

    @abstractmethod
    async def on_request(self, req: Req) -> None:
        """Apply one request (ACK/NACK, subscription) and push what it makes due."""

    @abstractmethod
    def envoy_may_have(self, ts: T) -> Mapping[str, Have]:
        """Resources of this type the Envoy has, or will have once it applies what is in flight."""

    @abstractmethod
    def plan(self, ts: T, snap: Snapshot) -> Plan:
        """The next response for ``ts`` from ``snap`` (including :meth:`held` resources)."""

    @abstractmethod
    def needs_send(self, ts: T, plan: Plan) -> bool:
        """Whether ``plan`` tells the Envoy anything new."""

    @abstractmethod
    async def send(self, ts: T, plan: Plan) -> None:
        """Write ``plan`` as a response (with :meth:`new_nonce`) and call :meth:`record_sent`."""

    @abstractmethod
    def names_sent(self, ts: T) -> Set[str]:
        """Names of the resources of this type the last responses left the Envoy with."""

    def resume(self, snap: Snapshot) -> None:
        """Take what a reconnecting Envoy already has into account before the first push."""

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        reason = "closed by client"
        try:
            await self._serve()
        except RequestError as e:
            reason = f"rejected: {e.details}"
            log.warning(
                "xds.stream_rejected %s peer=%s code=%s reason=%r", self.who(), self.ctx.peer(), e.code.name, e.details
            )
            await self.ctx.abort(e.code, e.details)
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception as e:
            reason = f"error: {type(e).__name__}"
            log.exception("xds.stream_failed %s", self.who())
            await self.ctx.abort(grpc.StatusCode.INTERNAL, f"control plane error: {type(e).__name__}")
        finally:
            for task in self._tasks:
                task.cancel()
            if self.state is not None:
                self.deps.registry.close_stream(self.state)
                log.info("xds.stream_closed %s reason=%r", self.who(), reason)

    def who(self) -> str:
        """``node=… gateway=… stream=…`` for the log lines."""
        s = self.state
        if s is None:
            return self._claimed
        return f"node={s.node_id} gateway={s.gateway} stream={s.stream_id}"

    async def _serve(self) -> None:
        first = await self.ctx.read()
        if first is grpc.aio.EOF:
            return
        node = first.node if first.HasField("node") else None
        if node is None or not node.id:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id")
        gateway = node.cluster
        ns, _, name = gateway.partition("/")
        if not ns or not name or "/" in name:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node {node.id!r}: node.cluster must be the Gateway as namespace/name, got {gateway!r}",
            )
        self._claimed = f"node={node.id} gateway={gateway}"
        denial = self.deps.authorizer.stream_denial(self.ctx, gateway)
        if denial is not None:
            raise RequestError(grpc.StatusCode.PERMISSION_DENIED, denial)
        agent = node.user_agent_name
        if node.HasField("user_agent_build_version"):
            v = node.user_agent_build_version.version
            agent += f" {v.major_number}.{v.minor_number}.{v.patch}"
        elif node.user_agent_version:
            agent += f" {node.user_agent_version}"
        self.state = self.deps.registry.open_stream(
            node_id=node.id, gateway=gateway, peer=self.ctx.peer() or "", user_agent=agent
        )
        log.info("xds.stream_connected %s peer=%s agent=%r", self.who(), self.state.peer, agent)

        cache = self.deps.cache
        self.snapshot = cache.get(gateway)
        if self.snapshot is None:
            log.info("xds.snapshot_waiting %s", self.who())
        else:
            self.deps.registry.record_snapshot(self.state, self.snapshot.version)
        await self.on_request(first)

        read: asyncio.Future[Any] | None = None
        watch: asyncio.Future[Snapshot | None] | None = None
        while True:
            if read is None:
                read = asyncio.ensure_future(self.ctx.read())
            if watch is None:
                watch = asyncio.ensure_future(cache.wait_for_change(gateway, self.snapshot))
            self._tasks = [read, watch]
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                request = read.result()
                read = None
                if request is grpc.aio.EOF:
                    return
                await self.on_request(request)
            if watch in done:
                snapshot = watch.result()
                watch = None
                await self._on_snapshot(snapshot)

    # -- input ------------------------------------------------------------------------------

    async def _on_snapshot(self, snapshot: Snapshot | None) -> None:
        assert self.state is not None
        if snapshot is None:
            log.info("xds.snapshot_removed %s stream=kept_open", self.who())
        elif self.snapshot is None:
            log.info("xds.snapshot_available %s version=%s", self.who(), snapshot.version)
        self.snapshot = snapshot
        self.deps.registry.record_snapshot(self.state, snapshot.version if snapshot else None)
        await self.push()

    def served(self, type_url: str) -> bool:
        """Whether requests for ``type_url`` are served (others are ignored); none is rejected."""
        if not type_url:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "type_url is required on ADS")
        if type_url not in PUSH_ORDER:
            log.debug("xds.type_ignored %s type=%s", self.who(), type_url)
            return False
        return True

    def stale(self, ts: T, nonce: str) -> bool:
        """``nonce`` answers an older response than the last one sent for the type: ignore it."""
        if not nonce or ts.nonce is None or nonce == ts.nonce:
            return False
        log.debug("xds.nonce_stale %s type=%s nonce=%s current=%s", self.who(), short(ts.type_url), nonce, ts.nonce)
        return True

    def on_ack(self, ts: T, *, version: str, nonce: str) -> None:
        assert self.state is not None
        self.deps.registry.record_ack(self.state, ts.type_url, version=version, nonce=nonce)
        log.debug("xds.ack %s type=%s version=%s nonce=%s", self.who(), short(ts.type_url), version, nonce)

    def on_nack(self, ts: T, nonce: str, error: Any, *, kept_version: str) -> None:
        """Record and log a NACK of the response in flight (``error``: the request's ``error_detail``)."""
        assert self.state is not None
        message = error.message
        self.deps.registry.record_nack(
            self.state,
            ts.type_url,
            version=ts.version or "",
            nonce=nonce,
            message=message,
            code=error.code,
            kept_version=kept_version,
        )
        log.warning(
            "xds.nack node=%s gateway=%s type=%s version=%s nonce=%s kept_version=%s error=%r",
            self.state.node_id,
            self.state.gateway,
            short(ts.type_url),
            ts.version,
            nonce,
            kept_version,
            message,
        )

    # -- output -----------------------------------------------------------------------------

    def _removed_clusters(self, snap: Snapshot) -> dict[str, Have]:
        """Clusters the Envoy may have that the snapshot no longer has."""
        cds = self.types.get(CLUSTER)
        if cds is None:
            return {}
        current = snap[CLUSTER].entries
        return {n: e for n, e in self.envoy_may_have(cds).items() if n not in current}

    def _routing_settled(self, snap: Snapshot) -> bool:
        """Every subscribed listener/route response is answered and nothing is left to send."""
        for type_url in ROUTING:
            ts = self.types.get(type_url)
            if ts is None:
                continue
            if ts.in_flight or self.needs_send(ts, self.plan(ts, snap)):
                return False
        return True

    def _holding(self, snap: Snapshot) -> dict[str, Have]:
        """Clusters to keep in CDS for make-before-break (empty when none)."""
        removed = self._removed_clusters(snap)
        if removed and not self._routing_settled(snap):
            return removed
        return {}

    def held(self, ts: T, snap: Snapshot) -> dict[str, Have]:
        """Removed resources of this type kept for make-before-break: the held clusters, and the
        endpoints the Envoy may have that the snapshot dropped."""
        if ts.type_url not in (CLUSTER, ENDPOINT):
            return {}
        keep = self._holding(snap)
        if not keep or ts.type_url == CLUSTER:
            return keep
        current = snap[ts.type_url].entries
        return {n: e for n, e in self.envoy_may_have(ts).items() if (ts.wildcard or n in ts.names) and n not in current}

    async def push(self) -> None:
        """Send what is due, type by type in ``PUSH_ORDER``, each waiting for ``WAITS_FOR``."""
        snap = self.snapshot
        if snap is None:
            return
        self.resume(snap)
        busy: set[str] = set()  # types with a response in flight or a change still to send
        for type_url in PUSH_ORDER:
            ts = self.types.get(type_url)
            if ts is None:
                continue
            plan = self.plan(ts, snap)
            pending = ts.resend or self.needs_send(ts, plan)
            if pending and not ts.in_flight and not busy.intersection(WAITS_FOR[type_url]):
                await self.send(ts, plan)
            if pending or ts.in_flight:
                busy.add(type_url)
        self._update_held(snap)

    def _update_held(self, snap: Snapshot) -> None:
        assert self.state is not None
        cds = self.types.get(CLUSTER)
        current = snap[CLUSTER].entries
        held = (n for n in self.names_sent(cds) if n not in current) if cds else ()
        self.state.held_clusters = frozenset(held)

    def new_nonce(self) -> str:
        assert self.state is not None
        return f"{self.deps.nonce_prefix}-{self.state.stream_id}-{next(self._nonces)}"

    def record_sent(self, ts: T, *, version: str, nonce: str, resources: int, entries: Mapping[str, Entry]) -> None:
        """Mark the response just built as in flight, in the stream and in the registry."""
        assert self.state is not None and self.snapshot is not None
        ts.version, ts.nonce, ts.in_flight, ts.resend = version, nonce, True, False
        if ts.type_url == CLUSTER:
            self._update_held(self.snapshot)
        self.deps.registry.record_sent(
            self.state, ts.type_url, version=version, nonce=nonce, resources=resources, entries=entries
        )
