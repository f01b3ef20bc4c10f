"""What every connected Envoy has been sent, and what it ACKed or NACKed.

The ADS server is the only writer; the admin API and the metrics are readers. The model:

* :class:`NodeRegistry` — every open ADS stream (an Envoy may briefly have two while it
  reconnects), queryable by node id and by Gateway, plus observers and a bounded list of recent
  events;
* :class:`StreamState` — one stream: node id, Gateway, peer, connected-since, and per type
* :class:`TypeState` — subscription, last response sent (version, nonce, time, resource count),
  last ACK (version, time, push-to-ACK latency), last :class:`Nack`, counters.

Observers are plain callables taking an :class:`Event`; they run synchronously inside the server's
event loop, so they must be quick (increment a counter, observe a histogram). An observer that
raises is logged and otherwise ignored.

Times: ``*_at`` fields are wall-clock (``time.time()``) for display; latencies are measured on
the monotonic clock.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .resources import PUSH_ORDER, SHORT_NAMES

if TYPE_CHECKING:
    from .cache import Entry

log = logging.getLogger("mirrorplane.xds")


@dataclass(frozen=True)
class Nack:
    """Envoy rejected a response."""

    version: str
    """The version Envoy rejected (the one we sent with ``nonce``)."""
    nonce: str
    message: str
    """Envoy's ``error_detail.message``."""
    code: int
    """Envoy's ``error_detail.code`` (a google.rpc.Code; usually 0 or 3)."""
    at: float
    kept_version: str
    """The ``version_info`` of the NACK: the version Envoy keeps using (may be empty)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "nonce": self.nonce,
            "message": self.message,
            "code": self.code,
            "at": self.at,
            "kept_version": self.kept_version,
        }


@dataclass
class TypeState:
    """Per-stream, per-type xDS state."""

    type_url: str
    wildcard: bool = False
    resource_names: frozenset[str] = frozenset()
    """Names the Envoy subscribed to (meaningless when ``wildcard``)."""
    subscribed_at: float | None = None

    sent_version: str | None = None
    sent_nonce: str | None = None
    sent_at: float | None = None
    sent_resources: int = 0
    """How many resources the last response carried."""
    in_flight: bool = False
    """The last response has been neither ACKed nor NACKed yet."""

    acked_version: str | None = None
    acked_at: float | None = None
    last_ack_latency: float | None = None
    """Seconds from sending a response to its ACK, for the last ACK."""

    last_nack: Nack | None = None

    responses: int = 0
    acks: int = 0
    nacks: int = 0

    sent_entries: Mapping[str, Entry] | None = field(default=None, repr=False)
    """Every resource the Envoy holds once it applies the last response (the server's own
    mapping, not a copy), so CSDS can tell per resource what it runs; ``None`` if not reported."""
    acked_entries: Mapping[str, Entry] | None = field(default=None, repr=False)

    _sent_mono: float | None = field(default=None, repr=False)

    @property
    def short_name(self) -> str:
        return SHORT_NAMES.get(self.type_url, self.type_url)

    @property
    def nacked(self) -> bool:
        """The last answered response was a NACK (Envoy runs an older version of this type)."""
        return self.last_nack is not None and self.last_nack.nonce == self.sent_nonce

    def to_dict(self) -> dict[str, Any]:
        return {
            "type_url": self.type_url,
            "wildcard": self.wildcard,
            "resource_names": sorted(self.resource_names),
            "subscribed_at": self.subscribed_at,
            "sent_version": self.sent_version,
            "sent_nonce": self.sent_nonce,
            "sent_at": self.sent_at,
            "sent_resources": self.sent_resources,
            "in_flight": self.in_flight,
            "acked_version": self.acked_version,
            "acked_at": self.acked_at,
            "last_ack_latency": self.last_ack_latency,
            "last_nack": self.last_nack.to_dict() if self.last_nack else None,
            "responses": self.responses,
            "acks": self.acks,
            "nacks": self.nacks,
        }


@dataclass
class StreamState:
    """One ADS stream of one Envoy."""

    stream_id: int
    node_id: str
    gateway: str
    peer: str
    connected_at: float
    user_agent: str = ""
    """``node.user_agent_name`` and its version, e.g. ``envoy 1.40.0``."""
    snapshot_version: str | None = None
    """Version of the snapshot the stream currently serves (``None``: waiting for one)."""
    held_clusters: frozenset[str] = frozenset()
    """Clusters kept in CDS only until Envoy has applied routes that no longer use them."""
    types: dict[str, TypeState] = field(default_factory=dict)

    def type_state(self, type_url: str) -> TypeState:
        ts = self.types.get(type_url)
        if ts is None:
            ts = self.types[type_url] = TypeState(type_url)
        return ts

    @property
    def last_nack(self) -> Nack | None:
        """The most recent NACK on this stream over all types."""
        nacks = [ts.last_nack for ts in self.types.values() if ts.last_nack is not None]
        return max(nacks, key=lambda n: n.at, default=None)

    def to_dict(self) -> dict[str, Any]:
        order = {t: i for i, t in enumerate(PUSH_ORDER)}
        return {
            "stream_id": self.stream_id,
            "node_id": self.node_id,
            "gateway": self.gateway,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "user_agent": self.user_agent,
            "snapshot_version": self.snapshot_version,
            "held_clusters": sorted(self.held_clusters),
            "types": {
                ts.short_name: ts.to_dict()
                for ts in sorted(self.types.values(), key=lambda s: order.get(s.type_url, 99))
            },
        }


class EventKind(enum.Enum):
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    SUBSCRIBE = "subscribe"
    SEND = "send"
    ACK = "ack"
    NACK = "nack"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    stream: StreamState
    at: float
    type_url: str | None = None
    version: str | None = None
    nonce: str | None = None
    latency: float | None = None
    """For ACK and NACK: seconds since the response was sent."""
    message: str | None = None
    """For NACK: Envoy's error message."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "stream_id": self.stream.stream_id,
            "node_id": self.stream.node_id,
            "gateway": self.stream.gateway,
            "at": self.at,
            "type": SHORT_NAMES.get(self.type_url, self.type_url) if self.type_url else None,
            "version": self.version,
            "nonce": self.nonce,
            "latency": self.latency,
            "message": self.message,
        }


Observer = Callable[[Event], None]


class NodeRegistry:
    """Connected ADS streams and their per-type ACK/NACK state."""

    def __init__(self, *, recent_events: int = 256) -> None:
        self._streams: dict[int, StreamState] = {}
        self._ids = itertools.count(1)
        self._observers: list[Observer] = []
        self.recent: deque[Event] = deque(maxlen=recent_events)
        """The last events (SUBSCRIBE and SEND excluded to keep it readable)."""
        # What the Kubernetes status writer gives way to (``pushing``): every response neither
        # ACKed nor NACKed yet, as (stream id, type URL), and the streams that have not yet taken
        # up their Gateway's newest snapshot (``snapshot_due``).
        self._in_flight: set[tuple[int, str]] = set()
        self._due: set[int] = set()
        self._answered: list[asyncio.Future[None]] = []

    # -- readers ---------------------------------------------------------------------------

    def streams(self) -> list[StreamState]:
        return list(self._streams.values())

    def get(self, stream_id: int) -> StreamState | None:
        return self._streams.get(stream_id)

    def by_node(self, node_id: str) -> list[StreamState]:
        return [s for s in self._streams.values() if s.node_id == node_id]

    def by_gateway(self, gateway: str) -> list[StreamState]:
        return [s for s in self._streams.values() if s.gateway == gateway]

    def nodes(self) -> dict[str, list[StreamState]]:
        """Node id → its open streams."""
        out: dict[str, list[StreamState]] = {}
        for s in self._streams.values():
            out.setdefault(s.node_id, []).append(s)
        return out

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, node_id: object) -> bool:
        return any(s.node_id == node_id for s in self._streams.values())

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self._streams.values()]

    def pushing(self) -> bool:
        """Whether a push to some Envoy is due or in flight (sent, neither ACKed nor NACKed)."""
        return bool(self._in_flight or self._due)

    async def answered(self) -> None:
        """Until nothing is pushing: every response ACKed, NACKed or its stream closed."""
        while self.pushing():
            waiter = asyncio.get_running_loop().create_future()
            self._answered.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._answered:
                    self._answered.remove(waiter)

    def _landed(self, stream: StreamState, type_url: str | None = None) -> None:
        """A response was answered (``type_url``), or the stream took up a snapshot or closed."""
        if type_url is None:
            self._due.discard(stream.stream_id)
        else:
            self._in_flight.discard((stream.stream_id, type_url))
        if not self.pushing():
            for waiter in self._answered:
                if not waiter.done():
                    waiter.set_result(None)
            self._answered.clear()

    # -- observers -------------------------------------------------------------------------

    def add_observer(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event)`` for every event; returns a function that removes it."""
        self._observers.append(observer)

        def remove() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return remove

    def _emit(self, event: Event) -> None:
        if event.kind not in (EventKind.SUBSCRIBE, EventKind.SEND):
            self.recent.append(event)
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.exception("registry.observer_failed observer=%r event=%s", observer, event.kind.value)

    # -- writers (the ADS server) ----------------------------------------------------------

    def open_stream(self, *, node_id: str, gateway: str, peer: str, user_agent: str = "") -> StreamState:
        stream = StreamState(
            stream_id=next(self._ids),
            node_id=node_id,
            gateway=gateway,
            peer=peer,
            connected_at=time.time(),
            user_agent=user_agent,
        )
        self._streams[stream.stream_id] = stream
        self._emit(Event(EventKind.CONNECT, stream, stream.connected_at))
        return stream

    def close_stream(self, stream: StreamState) -> None:
        if self._streams.pop(stream.stream_id, None) is not None:
            for type_url in stream.types:
                self._landed(stream, type_url)
            self._landed(stream)
            self._emit(Event(EventKind.DISCONNECT, stream, time.time()))

    def snapshot_due(self, stream: StreamState) -> None:
        """A newer snapshot of the stream's Gateway is in the cache: the stream will take it up
        (``record_snapshot``) and push what changed."""
        self._due.add(stream.stream_id)

    def record_snapshot(self, stream: StreamState, version: str | None) -> None:
        """The stream serves the snapshot ``version`` now (None: its Gateway has none)."""
        stream.snapshot_version = version
        self._landed(stream)

    def record_subscription(
        self, stream: StreamState, type_url: str, names: Iterable[str], *, wildcard: bool
    ) -> TypeState:
        ts = stream.type_state(type_url)
        ts.wildcard = wildcard
        ts.resource_names = frozenset(names)
        ts.subscribed_at = time.time()
        self._emit(Event(EventKind.SUBSCRIBE, stream, ts.subscribed_at, type_url))
        return ts

    def record_sent(
        self,
        stream: StreamState,
        type_url: str,
        *,
        version: str,
        nonce: str,
        resources: int,
        entries: Mapping[str, Entry] | None = None,
    ) -> TypeState:
        ts = stream.type_state(type_url)
        ts.sent_entries = entries
        ts.sent_version = version
        ts.sent_nonce = nonce
        ts.sent_at = time.time()
        ts._sent_mono = time.monotonic()
        ts.sent_resources = resources
        ts.in_flight = True
        self._in_flight.add((stream.stream_id, type_url))
        ts.responses += 1
        self._emit(Event(EventKind.SEND, stream, ts.sent_at, type_url, version, nonce))
        return ts

    def record_resumed(
        self,
        stream: StreamState,
        type_url: str,
        version: str,
        entries: Mapping[str, Entry] | None = None,
    ) -> TypeState:
        """Envoy reconnected already holding ``version``, which is current: nothing is sent."""
        ts = stream.type_state(type_url)
        ts.sent_entries = ts.acked_entries = entries
        ts.sent_version = version
        ts.acked_version = version
        ts.acked_at = time.time()
        ts.in_flight = False
        self._landed(stream, type_url)
        return ts

    def record_ack(self, stream: StreamState, type_url: str, *, version: str, nonce: str) -> TypeState:
        ts = stream.type_state(type_url)
        now = time.time()
        latency = time.monotonic() - ts._sent_mono if ts._sent_mono is not None else None
        ts.acked_version = version
        ts.acked_entries = ts.sent_entries
        ts.acked_at = now
        ts.last_ack_latency = latency
        ts.in_flight = False
        self._landed(stream, type_url)
        ts.acks += 1
        self._emit(Event(EventKind.ACK, stream, now, type_url, version, nonce, latency))
        return ts

    def record_nack(
        self,
        stream: StreamState,
        type_url: str,
        *,
        version: str,
        nonce: str,
        message: str,
        code: int = 0,
        kept_version: str = "",
    ) -> Nack:
        ts = stream.type_state(type_url)
        now = time.time()
        latency = time.monotonic() - ts._sent_mono if ts._sent_mono is not None else None
        nack = Nack(version, nonce, message, code, now, kept_version)
        ts.last_nack = nack
        ts.in_flight = False
        self._landed(stream, type_url)
        ts.nacks += 1
        self._emit(Event(EventKind.NACK, stream, now, type_url, version, nonce, latency, message))
        return nack
