"""Delta (incremental) ADS: the same stream rules as State of the World, in resources, not types.

A Delta stream follows the rules of :mod:`.stream` as the SotW stream (:mod:`.sotw`) does
(lifecycle, node and Gateway, one response in flight per type, stale nonces, NACKs recorded in
the same :class:`NodeRegistry`, make-before-break ordering and held clusters) with a different
notion of what the Envoy has and what a response carries:

* Per type, the stream keeps ``known``: name → version of every resource the Envoy has or will
  have once it applies what is in flight. Versions are the content hashes of :mod:`.cache`, so
  the ``initial_resource_versions`` of a reconnecting Envoy (also after a control plane restart)
  are compared as they are: only what differs is sent.
* A response carries the resources in the subscription whose version differs from ``known``,
  and ``removed_resources`` for the names in ``known`` that left the snapshot or the
  subscription (the Envoy dropped ``"*"``), plus the names the Envoy subscribed to that do not
  exist (told once: that is how Delta says "does not exist", and it lets a warming cluster
  finish). An endpoint-only change therefore sends exactly the changed ClusterLoadAssignments.
* Subscriptions are changes: ``resource_names_subscribe`` / ``_unsubscribe``, ``"*"`` for
  wildcard, and an empty first request for clusters or listeners is wildcard (legacy). They are
  applied from every request, even one with a stale nonce (Envoy does not repeat them; only the
  ACK or NACK part of a stale request is ignored). Unsubscribed names need no response. A
  subscribe of a name already subscribed is answered with the resource (the protocol's
  "the client may have forgotten it").
* A cluster the Envoy had that a response changes is re-created by Envoy and warms until its
  ClusterLoadAssignment arrives again, but on Delta Envoy does not re-subscribe (the old cluster
  still watches the name, envoyproxy/envoy#47302): so its endpoints are sent again right after,
  changed or not (as go-control-plane does for warming clusters).
* The first request of a type on a stream is always answered, even with nothing in it: Envoy's
  initialization waits for a first response of each wildcard type, and the empty answer to a
  reconnecting Envoy that has everything current gives it a nonce to ACK.
* A NACK leaves ``known`` as sent: the rejected content is not sent again (a later, different
  version of the resource is). The registry's ``kept_version`` is the last ACKed one.
* Make-before-break removals: while clusters are held, their names (and the
  endpoints the snapshot dropped) are simply not put in ``removed_resources`` yet.

A response is assembled per stream from the snapshot's serialized bytes; nothing is serialized
per stream.
"""

from __future__ import annotations

import logging
from collections.abc import Set
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from .cache import Entry, Snapshot, content_version
from .resources import CLUSTER, ENDPOINT, LISTENER
from .stream import AdsStream, TypeProgress, short

log = logging.getLogger("mirrorplane.xds")

# Types for which an empty first subscription means "everything" (legacy wildcard).
_LEGACY_WILDCARD = frozenset({CLUSTER, LISTENER})


@dataclass
class _DeltaType(TypeProgress):
    """What one Delta stream knows about one type."""

    names: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)
    """Name → version the Envoy has or will have (sent, or announced on reconnect)."""
    absent: set[str] = field(default_factory=set)
    """Subscribed names the Envoy was told do not exist."""
    answered: bool = False
    """A response was sent for this type on this stream."""


@dataclass
class _DeltaPlan:
    version: str
    """``system_version_info``: the type's version, or a hash over what the Envoy keeps."""
    updates: list[Entry]
    removed: list[str]


class DeltaStream(AdsStream[discovery_pb2.DeltaDiscoveryRequest, _DeltaType, _DeltaPlan, str]):
    """One ``DeltaAggregatedResources`` stream."""

    # -- input ------------------------------------------------------------------------------

    async def on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        assert self.state is not None
        type_url = req.type_url
        if not self.served(type_url):
            return
        ts = self.types.get(type_url)
        if ts is None:
            # The first request of this type on this stream: what a reconnecting Envoy has.
            ts = self.types[type_url] = _DeltaType(type_url, known=dict(req.initial_resource_versions))
            ts.wildcard = type_url in _LEGACY_WILDCARD and not req.resource_names_subscribe
        else:
            self._on_answer(ts, req)
        self._subscribe(ts, req)
        await self.push()

    def _on_answer(self, ts: _DeltaType, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        """The ACK or NACK part of a request (none when it carries no nonce)."""
        assert self.state is not None
        nonce = req.response_nonce
        if not nonce or ts.nonce is None or self.stale(ts, nonce) or not ts.in_flight:
            return
        ts.in_flight = False
        if req.HasField("error_detail"):
            kept = self.state.type_state(ts.type_url).acked_version or ""
            self.on_nack(ts, nonce, req.error_detail, kept_version=kept)
        else:
            self.on_ack(ts, version=ts.version or "", nonce=nonce)

    def _subscribe(self, ts: _DeltaType, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        assert self.state is not None
        subscribe, unsubscribe = set(req.resource_names_subscribe), set(req.resource_names_unsubscribe)
        if ts.answered and not subscribe and not unsubscribe:
            return
        if "*" in subscribe:
            ts.wildcard = True
        if "*" in unsubscribe:
            ts.wildcard = False
        if ts.answered:
            for name in subscribe & ts.names:
                ts.known.pop(name, None)  # subscribed again: the Envoy may have forgotten it, send it
        ts.names |= subscribe - {"*"}
        ts.names -= unsubscribe
        for name in unsubscribe:
            ts.absent.discard(name)
            if not ts.wildcard:
                ts.known.pop(name, None)  # the Envoy drops it itself
        self.deps.registry.record_subscription(self.state, ts.type_url, ts.names, wildcard=ts.wildcard)

    # -- output -----------------------------------------------------------------------------

    def envoy_may_have(self, ts: _DeltaType) -> dict[str, str]:
        return ts.known

    def names_sent(self, ts: _DeltaType) -> Set[str]:
        return ts.known.keys()

    def plan(self, ts: _DeltaType, snap: Snapshot) -> _DeltaPlan:
        current = snap[ts.type_url].entries
        scope = current if ts.wildcard else {n: current[n] for n in sorted(ts.names) if n in current}
        held = self.held(ts, snap)
        updates = [e for n, e in scope.items() if ts.known.get(n) != e.version]
        removed = sorted(n for n in ts.known if n not in scope and n not in held)
        removed += sorted(n for n in ts.names - ts.absent if n not in current and n not in ts.known)
        if held:
            kept = {**{n: e.version for n, e in scope.items()}, **held}
            version = content_version((n, v.encode()) for n, v in kept.items())
        else:
            version = snap[ts.type_url].version
        return _DeltaPlan(version, updates, removed)

    def needs_send(self, ts: _DeltaType, plan: _DeltaPlan) -> bool:
        if plan.updates or plan.removed:
            return True
        return not ts.answered and (ts.wildcard or bool(ts.names))

    def _rewarm(self, changed_clusters: list[Entry]) -> None:
        """Forget the endpoints of clusters Envoy will re-create, so that they are sent again."""
        eds = self.types.get(ENDPOINT)
        if eds is None:
            return
        for entry in changed_clusters:
            cluster = cluster_pb2.Cluster.FromString(entry.data)
            if cluster.type == cluster_pb2.Cluster.EDS:
                eds.known.pop(cluster.eds_cluster_config.service_name or cluster.name, None)

    def _holds(self, ts: _DeltaType) -> dict[str, Entry]:
        """For the registry (CSDS): the snapshot's resources the Envoy holds once it applies what
        was sent. (Resources it holds in another version, e.g. held clusters, are left out.)"""
        assert self.snapshot is not None
        current = self.snapshot[ts.type_url].entries
        holds = {}
        for name, version in ts.known.items():
            entry = current.get(name)
            if entry is not None and entry.version == version:
                holds[name] = entry
        return holds

    async def send(self, ts: _DeltaType, plan: _DeltaPlan) -> None:
        nonce = self.new_nonce()
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=plan.version,
            type_url=ts.type_url,
            nonce=nonce,
            removed_resources=plan.removed,
        )
        if ts.type_url == CLUSTER:
            self._rewarm([e for e in plan.updates if e.name in ts.known])
        add = response.resources.add
        for e in plan.updates:
            add(name=e.name, version=e.version, resource=any_pb2.Any(type_url=ts.type_url, value=e.data))
            ts.known[e.name] = e.version
        ts.absent.difference_update(e.name for e in plan.updates)
        for name in plan.removed:
            ts.known.pop(name, None)
            if name in ts.names:
                ts.absent.add(name)
        if self.deps.control_plane_id:
            response.control_plane.identifier = self.deps.control_plane_id
        ts.answered = True
        self.record_sent(ts, version=plan.version, nonce=nonce, resources=len(plan.updates), entries=self._holds(ts))
        log.debug(
            "xds.push %s type=%s version=%s nonce=%s resources=%d removed=%d",
            self.who(),
            short(ts.type_url),
            plan.version,
            nonce,
            len(plan.updates),
            len(plan.removed),
        )
        await self.ctx.write(response)
