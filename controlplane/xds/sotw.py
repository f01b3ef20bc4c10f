"""State-of-the-World ADS: one stream for all types, every response a whole set.

The stream's lifecycle, nonces, NACKs, push order and held clusters are :mod:`.stream`'s; what is
SotW's own:

* Clusters and listeners are always sent whole; endpoints and routes are sent for the names the
  Envoy requested that exist in the snapshot (``"*"`` asks for all).
* A response is sent for a type when what it would carry differs from what was last sent for
  that type on the stream, or the Envoy subscribed to names the last response did not cover.
  Names the Envoy unsubscribes from need no response.
* A request whose ``response_nonce`` is stale is ignored entirely, subscription included, as
  go-control-plane does (Envoy repeats its subscription with its next ACK). Before anything was
  sent for a type on a stream, the nonce is not checked: Envoy carries the nonce of its previous
  stream across reconnects.
* An Envoy that reconnects announcing the cluster/listener version that is current gets no
  response for that type: versions are content hashes, so equal versions mean equal content and a
  restarted control plane causes no churn.
* After a CDS response, a repeated EDS request (it answers no EDS response in flight) comes from
  clusters Envoy re-created and that now warm: it is answered with the endpoints even if they did
  not change. Without a CDS response since the last EDS one, a repeat gets nothing (Envoy repeats
  its EDS request also when it only drops clusters).
* Held clusters (make-before-break removals): CDS carries the new clusters *plus* the held ones,
  with their last-sent definitions, under a version that is the content hash of that union; the
  final CDS without them follows once routing has settled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2

from .cache import Entry, Snapshot, entries_version
from .resources import CLUSTER, ENDPOINT, LISTENER
from .stream import CONTROL_PLANE_ID, AdsStream, TypeProgress, short

log = logging.getLogger("mirrorplane.xds")

# Types whose SotW responses always carry every resource (missing = deleted).
_ALWAYS_ALL = frozenset({CLUSTER, LISTENER})


def build_response(
    type_url: str,
    version: str,
    resources: Iterable[bytes],
    nonce: str,
    *,
    control_plane_id: str | None = CONTROL_PLANE_ID,
) -> discovery_pb2.DiscoveryResponse:
    """A SotW DiscoveryResponse from already serialized resources of ``type_url``."""
    response = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    add = response.resources.add
    for data in resources:
        add(type_url=type_url, value=data)
    if control_plane_id:
        response.control_plane.identifier = control_plane_id
    return response


@dataclass
class _Plan:
    version: str
    entries: Mapping[str, Entry]


@dataclass
class _SotwType(TypeProgress):
    """What one SotW stream knows about one type (the registry has the public view)."""

    names: frozenset[str] = frozenset()
    subscribed: bool = False
    sent: Mapping[str, Entry] | None = None
    """What the Envoy was last sent (pruned when it unsubscribes), ``None`` before that."""
    sent_names: frozenset[str] = frozenset()
    sent_wildcard: bool = False
    acked: Mapping[str, Entry] | None = None
    """What the Envoy last ACKed (pruned like ``sent``)."""
    nacked: bool = False
    """The last response sent was NACKed: the Envoy runs ``acked``, not ``sent``."""
    envoy_version: str = ""
    """``version_info`` of the first request: what a reconnecting Envoy already has."""
    clusters_sent: bool = False
    """(EDS) A CDS response went out since the last EDS response: clusters may be warming."""


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


class SotwStream(AdsStream[discovery_pb2.DiscoveryRequest, _SotwType, _Plan, Entry]):
    """One ``StreamAggregatedResources`` stream."""

    # -- input ------------------------------------------------------------------------------

    async def on_request(self, req: discovery_pb2.DiscoveryRequest) -> None:
        assert self.state is not None
        type_url = req.type_url
        if not self.served(type_url):
            return
        ts = self.types.get(type_url)
        nonce = req.response_nonce
        if ts is not None and ts.nonce is not None and nonce:
            if self.stale(ts, nonce):
                return
            if ts.in_flight:
                ts.in_flight = False
                if req.HasField("error_detail"):
                    ts.nacked = True
                    self.on_nack(ts, nonce, req.error_detail, kept_version=req.version_info)
                else:
                    ts.acked = ts.sent
                    self.on_ack(ts, version=req.version_info, nonce=nonce)
            elif ts.clusters_sent and not ts.nacked:
                # A repeat after a CDS update: re-created clusters warm until they get endpoints.
                ts.resend = True
        else:
            # Nothing sent for this type on this stream yet. Envoy keeps the nonce (and a NACK's
            # error_detail) of its previous stream across reconnects, so neither is checked here.
            if ts is None:
                ts = self.types[type_url] = _SotwType(type_url)
            if ts.sent is None:
                ts.envoy_version = req.version_info
        self._subscribe(ts, req)
        await self.push()

    def _subscribe(self, ts: _SotwType, req: discovery_pb2.DiscoveryRequest) -> None:
        assert self.state is not None
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
        self.deps.registry.record_subscription(self.state, ts.type_url, names, wildcard=wildcard)

    # -- output -----------------------------------------------------------------------------

    def envoy_may_have(self, ts: _SotwType) -> dict[str, Entry]:
        have = dict(ts.acked or {})
        if ts.sent is not None and not ts.nacked:
            have.update(ts.sent)
        return have

    def names_sent(self, ts: _SotwType) -> Set[str]:
        return ts.sent.keys() if ts.sent else frozenset()

    def plan(self, ts: _SotwType, snap: Snapshot) -> _Plan:
        tsnap = snap[ts.type_url]
        if ts.wildcard:
            entries: Mapping[str, Entry] = tsnap.entries
        else:
            entries = {n: tsnap.entries[n] for n in sorted(ts.names) if n in tsnap.entries}
        held = self.held(ts, snap)
        if not held:
            return _Plan(tsnap.version, entries)
        union = {**entries, **held}
        return _Plan(entries_version(union.values()), union)

    def needs_send(self, ts: _SotwType, plan: _Plan) -> bool:
        if ts.sent is None:
            return ts.wildcard or bool(ts.names)
        if ts.wildcard and not ts.sent_wildcard:
            return True
        if not ts.wildcard and ts.names - ts.sent_names:
            return True
        return not _same_entries(plan.entries, ts.sent)

    def resume(self, snap: Snapshot) -> None:
        """A reconnecting Envoy that already has the current clusters/listeners gets no resend."""
        assert self.state is not None
        for type_url in _ALWAYS_ALL:
            ts = self.types.get(type_url)
            if ts is None or ts.sent is not None or not ts.envoy_version:
                continue
            plan = self.plan(ts, snap)
            if plan.version == ts.envoy_version:
                ts.sent, ts.acked, ts.version = plan.entries, plan.entries, plan.version
                ts.sent_wildcard, ts.sent_names = ts.wildcard, ts.names
                self.deps.registry.record_resumed(self.state, type_url, plan.version, plan.entries)
                log.debug("xds.resumed %s type=%s version=%s", self.who(), short(type_url), plan.version)
            ts.envoy_version = ""

    async def send(self, ts: _SotwType, plan: _Plan) -> None:
        nonce = self.new_nonce()
        response = build_response(
            ts.type_url,
            plan.version,
            (e.data for e in plan.entries.values()),
            nonce,
            control_plane_id=self.deps.control_plane_id,
        )
        ts.sent, ts.nacked, ts.envoy_version = plan.entries, False, ""
        ts.sent_names, ts.sent_wildcard, ts.clusters_sent = ts.names, ts.wildcard, False
        eds = self.types.get(ENDPOINT) if ts.type_url == CLUSTER else None
        if eds is not None:
            eds.clusters_sent = True
        self.record_sent(ts, version=plan.version, nonce=nonce, resources=len(plan.entries), entries=plan.entries)
        log.debug(
            "xds.push %s type=%s version=%s nonce=%s resources=%d",
            self.who(),
            short(ts.type_url),
            plan.version,
            nonce,
            len(plan.entries),
        )
        await self.ctx.write(response)
