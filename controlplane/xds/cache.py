"""Versioned snapshots of a Gateway's Envoy resources, and the cache the ADS server serves from.

A :class:`Snapshot` is built once per translation result: every resource is serialized exactly
once (deterministically) and the bytes are kept; responses are assembled from those bytes, so a
snapshot served to a thousand Envoys costs one serialization, not a thousand.

Versions are pure content hashes (no counters, no timestamps): the same resources give the same
versions in every process, so an Envoy that reconnects to a restarted control plane sees the
version it already has and gets no churn.

* resource version: short hash of the resource's bytes (of its parts' hashes, for a
  RouteConfiguration assembled from cached virtual hosts: xds/encoded.py);
* type version: short hash over the sorted ``(name, resource version)`` pairs of that type (the
  resource versions already stand for the bytes, which are not read again);
* snapshot version: short hash over the ``(type_url, type version)`` pairs.

The cache keeps one snapshot per Gateway (key ``namespace/name``, which is what Envoy sends as
``node.cluster``). Streams wait for a newer snapshot of their Gateway with
:meth:`SnapshotCache.wait_for_change`, which parks on one ``asyncio.Event`` per Gateway: a change
wakes exactly the streams of that Gateway, and an idle stream costs nothing (no polling).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf.message import Message

from .resources import ENDPOINT, PUSH_ORDER, SHORT_NAMES, Encoded, Resources

log = logging.getLogger("mirrorplane.xds")

VERSION_LENGTH = 16
"""Hex digits kept from the SHA-256 of a content hash (64 bits)."""

_LEN = struct.Struct(">Q")


def content_version(entries: Iterable[tuple[str, bytes]]) -> str:
    """Content hash over ``(name, bytes)`` pairs, independent of their order.

    Each name and value is length-prefixed so that no two different inputs share an encoding.
    Used for type versions, and by the server for versions of the make-before-break union.
    """
    h = hashlib.sha256()
    for name, data in sorted(entries, key=lambda e: e[0]):
        raw = name.encode()
        h.update(_LEN.pack(len(raw)))
        h.update(raw)
        h.update(_LEN.pack(len(data)))
        h.update(data)
    return h.hexdigest()[:VERSION_LENGTH]


def entries_version(entries: Iterable[Entry]) -> str:
    """The version of a set of resources: a content hash over their names and versions."""
    return content_version((e.name, e.version.encode()) for e in entries)


def bytes_version(data: bytes) -> str:
    """Content hash of one serialized resource."""
    return hashlib.sha256(data).hexdigest()[:VERSION_LENGTH]


def resource_name(type_url: str, message: Message) -> str:
    """The name Envoy knows a resource by (``cluster_name`` for ClusterLoadAssignment)."""
    name: str = getattr(message, "cluster_name" if type_url == ENDPOINT else "name")
    return name


def serialize(message: Message) -> bytes:
    """Deterministic bytes of ``message``.

    ``deterministic=True`` orders map entries of this message only: an ``Any`` payload (every
    typed_config) is opaque bytes, so the xDS translator packs with ``deterministic=True`` too.
    Together they make versions content hashes that survive restarts.
    """
    return message.SerializeToString(deterministic=True)


@dataclass(frozen=True, slots=True)
class Entry:
    """One serialized resource."""

    name: str
    version: str
    data: bytes


@dataclass(frozen=True)
class TypeSnapshot:
    """All resources of one xDS type in a snapshot."""

    type_url: str
    version: str
    entries: Mapping[str, Entry]

    @property
    def short_name(self) -> str:
        return SHORT_NAMES[self.type_url]

    def names(self) -> frozenset[str]:
        return frozenset(self.entries)

    def resource_versions(self) -> dict[str, str]:
        return {name: e.version for name, e in self.entries.items()}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries


@dataclass(frozen=True)
class Snapshot:
    """Immutable, versioned, pre-serialized resources of one Gateway."""

    gateway: str
    version: str
    types: Mapping[str, TypeSnapshot]
    # The messages this snapshot was built from: a later build reuses the serialized entry of any
    # message object it is handed again (translators never mutate a message once built).
    resources: Resources | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, gateway: str, resources: Resources, previous: Snapshot | None = None) -> Snapshot:
        """Serialize every resource once and compute content versions.

        Serialization is deterministic (see :func:`serialize`), so versions do not depend on map
        insertion order or on the process. With ``previous``, a message object that was already
        in it is not serialized again: an endpoint-only change re-serializes only endpoints.

        Raises ``ValueError`` if a message is not of the type its dict stands for, or if its
        own name (``name``, or ``cluster_name`` for endpoints) differs from its key: Envoy
        matches resources by the name inside the message, so either is a translator bug.
        """
        types: dict[str, TypeSnapshot] = {}
        before = previous.resources if previous is not None else None
        before_types = previous.types if previous is not None else {}
        for type_url, messages in resources.items():
            if before is not None and before.by_type(type_url) is messages:
                types[type_url] = before_types[type_url]
                continue
            known = before.by_type(type_url) if before is not None else {}
            expected = type_url.rsplit("/", 1)[1]
            entries: dict[str, Entry] = {}
            if isinstance(messages, Encoded):
                if messages.message_type.DESCRIPTOR.full_name != expected:
                    raise ValueError(f"{gateway}: {SHORT_NAMES[type_url]} holds {messages.message_type.__name__}")
                types[type_url] = _encoded_type(type_url, messages, known, before_types.get(type_url))
                continue
            for name, message in messages.items():
                if known.get(name) is message:
                    entries[name] = before_types[type_url].entries[name]
                    continue
                full_name = message.DESCRIPTOR.full_name
                if full_name != expected:
                    raise ValueError(
                        f"{gateway}: {SHORT_NAMES[type_url]}[{name!r}] is a {full_name}, expected {expected}"
                    )
                inner = resource_name(type_url, message)
                if inner != name:
                    raise ValueError(f"{gateway}: {SHORT_NAMES[type_url]}[{name!r}] carries name {inner!r}")
                data = serialize(message)
                entries[name] = Entry(name, bytes_version(data), data)
            ordered = {n: entries[n] for n in sorted(entries)}
            types[type_url] = TypeSnapshot(
                type_url=type_url,
                version=entries_version(ordered.values()),
                entries=MappingProxyType(ordered),
            )
        overall = content_version((t, types[t].version.encode()) for t in PUSH_ORDER)
        return cls(gateway=gateway, version=overall, types=MappingProxyType(types), resources=resources)

    def __getitem__(self, type_url: str) -> TypeSnapshot:
        return self.types[type_url]

    def version_of(self, type_url: str) -> str:
        return self.types[type_url].version

    def versions(self) -> dict[str, str]:
        """Type URL → type version, in PUSH_ORDER."""
        return {t: self.types[t].version for t in PUSH_ORDER}

    def changed_types(self, other: Snapshot | None) -> list[str]:
        """Type URLs (in PUSH_ORDER) whose version differs from ``other``'s."""
        if other is None:
            return list(PUSH_ORDER)
        return [t for t in PUSH_ORDER if self.types[t].version != other.types[t].version]

    def summary(self) -> dict[str, object]:
        """A small JSON-able description (for logs and the admin API)."""
        return {
            "gateway": self.gateway,
            "version": self.version,
            "types": {
                SHORT_NAMES[t]: {"version": self.types[t].version, "count": len(self.types[t])} for t in PUSH_ORDER
            },
        }


def _encoded_type(
    type_url: str, encoded: Encoded[Message], known: Mapping[str, Message], before: TypeSnapshot | None
) -> TypeSnapshot:
    """A type whose resources came serialized: their bytes are taken as they are, and their
    versions come from the digests made while they were assembled (resource versions of such a
    type hash its parts' hashes, see encoded.Assembled)."""
    previous = known.data if isinstance(known, Encoded) else {}
    entries: dict[str, Entry] = {}
    fresh = 0
    for name in sorted(encoded.data):
        data = encoded.data[name]
        if before is not None and previous.get(name) is data:
            entries[name] = before.entries[name]
        else:
            entries[name] = Entry(name, encoded.digests[name].hex()[:VERSION_LENGTH], data)
            fresh += 1
    if before is not None and not fresh and len(entries) == len(before.entries):
        return before
    return TypeSnapshot(
        type_url=type_url,
        version=entries_version(entries.values()),
        entries=MappingProxyType(entries),
    )


class SnapshotCache:
    """The current snapshot of every Gateway, with change notification for ADS streams.

    Not thread-safe: call :meth:`set` and :meth:`remove` from the event loop the server runs on
    (``loop.call_soon_threadsafe`` from elsewhere).
    """

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._events: dict[str, asyncio.Event] = {}

    def set(self, gateway: str, resources: Resources) -> Snapshot:
        """Build and store the snapshot of ``gateway``; wake its streams if the content changed.

        If the content is unchanged, the stored snapshot object is kept and returned, and no
        stream is woken.
        """
        return self.install(Snapshot.build(gateway, resources, previous=self._snapshots.get(gateway)))

    def install(self, new: Snapshot) -> Snapshot:
        """Store a snapshot built beforehand (possibly off the event loop, from the current one);
        like :meth:`set` otherwise."""
        gateway = new.gateway
        old = self._snapshots.get(gateway)
        if old is not None and old.version == new.version:
            log.debug("snapshot.unchanged gateway=%s version=%s", gateway, old.version)
            return old
        self._snapshots[gateway] = new
        log.debug(
            "snapshot.set gateway=%s version=%s changed=%s",
            gateway,
            new.version,
            ",".join(SHORT_NAMES[t] for t in new.changed_types(old)),
        )
        self._notify(gateway)
        return new

    def get(self, gateway: str) -> Snapshot | None:
        return self._snapshots.get(gateway)

    def __getitem__(self, gateway: str) -> Snapshot:
        """The snapshot of a Gateway that must have one (a KeyError names it otherwise)."""
        return self._snapshots[gateway]

    def remove(self, gateway: str) -> None:
        """Forget ``gateway``. Its streams are woken (they see ``None``) but stay open."""
        if self._snapshots.pop(gateway, None) is not None:
            log.debug("snapshot.removed gateway=%s", gateway)
            self._notify(gateway)

    def gateways(self) -> list[str]:
        return sorted(self._snapshots)

    def __contains__(self, gateway: object) -> bool:
        return gateway in self._snapshots

    def __len__(self) -> int:
        return len(self._snapshots)

    def __iter__(self) -> Iterator[str]:
        return iter(self.gateways())

    async def wait_for_change(self, gateway: str, known: Snapshot | None) -> Snapshot | None:
        """Return the snapshot of ``gateway`` as soon as it is not ``known`` (by identity).

        Returns immediately if it already differs. ``None`` means the Gateway has no snapshot
        (it was removed). Cancellation-safe.
        """
        while True:
            current = self._snapshots.get(gateway)
            if current is not known:
                return current
            event = self._events.get(gateway)
            if event is None:
                event = self._events[gateway] = asyncio.Event()
            await event.wait()

    def _notify(self, gateway: str) -> None:
        # Each event is used for one generation: set it (waking every waiter) and drop it, so the
        # next waiter creates a fresh one.
        event = self._events.pop(gateway, None)
        if event is not None:
            event.set()
