"""RouteConfigurations assembled from the cached bytes of their virtual hosts.

A repeated message field on the wire is its elements one after another (tag, length, bytes),
and a deterministic serialization writes fields in field-number order. So a RouteConfiguration
is ``name`` + each virtual host framed as field 2 + the fields after it, and the bytes of a
virtual host that did not change can be reused as they are: a one-route edit in 10,000 builds
and serializes one virtual host, and the rest of the 1.7 MB message is one ``bytes.join``.

The Gateway API translator hands back the very same ``ir.VirtualHost`` object for a virtual
host that did not change (RouteMemo), so identity is the key: hashing a deep IR would cost what
it saves. What changed between two builds of a chain is found by comparing the two tuples place
by place (or, when their lengths differ, with set operations on ``id``s): C loops, so an update
costs what changed plus a few C passes over the chain, never a Python loop over every virtual
host. The bytes equal those of a message built whole (tests/test_incremental.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress
from operator import is_not
from typing import Any, NamedTuple, TypeVar

from .. import digest, ir

_T = TypeVar("_T")


# What one virtual host uses (vhost_usage): (mirror cluster, sample percent) pairs, compared
# response headers, and the clusters whose bodies are captured (None for a rule's primary, else
# the mirror's comparison settings).
VhostUsage = tuple[frozenset[tuple[str, int]], frozenset[str], frozenset[tuple[str, "ir.Comparison | None"]]]


@dataclass
class MirrorUsage:
    """Where routes mirror to, counted per virtual host so that one can be taken out again.

    ``percents`` counts (mirror cluster, sample percent of the rule) pairs, ``headers`` the
    compared response headers and ``bodies`` the clusters of rules that compare bodies: what the
    mirror clusters' buffer limits, the shadow logger (accesslog.py) and the body capture
    (bodycapture.py) are made from.
    """

    percents: Counter[tuple[str, int]] = field(default_factory=Counter)
    headers: Counter[str] = field(default_factory=Counter)
    bodies: Counter[tuple[str, ir.Comparison | None]] = field(default_factory=Counter)

    def add(self, usage: VhostUsage, sign: int = 1) -> None:
        for counter, items in zip((self.percents, self.headers, self.bodies), usage, strict=True):
            for item in items:
                counter[item] += sign  # type: ignore[index]

    def add_all(self, usages: list[VhostUsage]) -> None:
        """:meth:`add` for each of ``usages`` (Counter.update counts an iterable in C)."""
        percents, headers, bodies = zip(*usages, strict=True) if usages else ((), (), ())
        self.percents.update(chain.from_iterable(percents))
        self.headers.update(chain.from_iterable(headers))
        self.bodies.update(chain.from_iterable(bodies))

    def merge(self, other: MirrorUsage) -> None:
        self.percents.update(other.percents)
        self.headers.update(other.headers)
        self.bodies.update(other.bodies)

    def by_cluster(self) -> dict[str, list[int]]:
        """Mirror cluster → the sample percents of the rules mirroring to it."""
        out: dict[str, list[int]] = {}
        for (cluster, percent), n in sorted(self.percents.items()):
            if n > 0:
                out.setdefault(cluster, []).append(percent)
        return out

    def header_names(self) -> set[str]:
        return {h for h, n in self.headers.items() if n > 0}

    def body_capture(self) -> tuple[frozenset[str], Mapping[str, frozenset[ir.Comparison]]]:
        """(primary clusters, mirror cluster → comparison settings) of the rules comparing bodies."""
        primaries: set[str] = set()
        mirrors: dict[str, set[ir.Comparison]] = {}
        for (cluster, comparison), n in self.bodies.items():
            if n <= 0:
                continue
            if comparison is None:
                primaries.add(cluster)
            else:
                mirrors.setdefault(cluster, set()).add(comparison)
        return frozenset(primaries), {c: frozenset(s) for c, s in mirrors.items()}


def vhost_usage(vh: ir.VirtualHost) -> VhostUsage:
    pairs = frozenset((m.backend, m.comparison.sample_percent) for r in vh.routes for m in r.mirrors)
    headers = frozenset(h for r in vh.routes for m in r.mirrors for h in m.comparison.headers)
    bodies: set[tuple[str, ir.Comparison | None]] = set()
    for r in vh.routes:
        compared = [m for m in r.mirrors if m.comparison.body]
        if compared:
            bodies.update((b.backend, None) for b in r.backends if b.backend)
            bodies.update((m.backend, m.comparison) for m in compared)
    return pairs, headers, frozenset(bodies)


def usage_of(vhosts: Iterable[ir.VirtualHost]) -> MirrorUsage:
    usage = MirrorUsage()
    for vh in vhosts:
        usage.add(vhost_usage(vh))
    return usage


# A virtual host's framed bytes: its own bytes when just encoded, else a view into the
# RouteConfiguration it was last joined into (_share).
Part = bytes | memoryview


class Assembled(NamedTuple):
    data: bytes
    # SHA-256 over the SHA-256 of each part (head, each virtual host, tail): a content hash of
    # ``data`` that costs what changed, where hashing ``data`` whole would cost 5 ms per 9 MB.
    digest: bytes
    usage: MirrorUsage


def _sha256(data: bytes) -> bytes:
    return digest.sha256(data)  # with the GIL held: a build runs in a worker beside the event loop


@dataclass
class _Chain:
    """What the last build of one route table made: its virtual hosts and their bytes."""

    vhosts: tuple[ir.VirtualHost, ...] = ()
    parts: list[Part] = field(default_factory=list)  # framed bytes of each of ``vhosts``
    part_digests: list[bytes] = field(default_factory=list)  # and their SHA-256
    held: dict[int, ir.VirtualHost] = field(default_factory=dict)  # keeps every id in ``framed`` unique
    framed: dict[int, Part] = field(default_factory=dict)
    digests: dict[int, bytes] = field(default_factory=dict)
    usages: dict[int, VhostUsage] = field(default_factory=dict)
    usage: MirrorUsage = field(default_factory=MirrorUsage)
    data: bytes = b""
    digest: bytes = b""
    key: tuple[bytes, bytes] = (b"", b"")  # what besides the virtual hosts ``data`` was made from


def _share(state: _Chain, ids: Iterable[int], start: int) -> None:
    """Make each part a view into ``state.data``, so that the virtual hosts' bytes are kept once
    rather than twice (8.5 MB at 10,000 mirrored routes). After an edit too: views left pointing
    into the data before it kept that alive beside the new (5.6 MB more after the first change
    at 10,000 routes), for 3-8 ms of slicing per edit at 10,000 virtual hosts."""
    view = memoryview(state.data)
    ends = list(accumulate(map(len, state.parts), initial=start))
    state.parts = list(map(view.__getitem__, map(slice, ends, ends[1:])))
    state.framed = dict(zip(ids, state.parts, strict=True))


class EncodedMemo:
    """Per route table (FilterChain name), the serialized virtual hosts of the previous build.

    ``encoded`` counts the virtual hosts built and serialized (tests read it).
    """

    def __init__(self) -> None:
        self._chains: dict[str, _Chain] = {}
        self._used: set[str] = set()
        self._limit: int | None = None
        self._made: dict[str, tuple[object, Any]] = {}
        self.encoded = 0

    def begin(self, mirror_body_limit: int) -> None:
        """Start a build; another body limit changes every route, so nothing is kept."""
        if mirror_body_limit != self._limit:
            self._chains.clear()
            self._limit = mirror_body_limit
        self._used = set()

    def route_configuration(
        self,
        chain: ir.FilterChain,
        encode: Callable[[ir.VirtualHost], bytes],
        head: bytes,
        tail: bytes,
    ) -> Assembled:
        """The chain's RouteConfiguration (``head`` + its virtual hosts + ``tail``); ``encode``
        serializes one virtual host that was not seen before, framed as field 2 (a
        RouteConfiguration's ``virtual_hosts``)."""
        self._used.add(chain.name)
        state = self._chains.setdefault(chain.name, _Chain())
        vhosts = chain.virtual_hosts
        key = (head, tail)
        if state.vhosts is vhosts and state.key == key and state.data:
            return Assembled(state.data, state.digest, state.usage)
        old = state.vhosts
        if len(old) == len(vhosts):
            # An edit: compare position by position (a C loop); only differing places change.
            places = list(compress(range(len(vhosts)), map(is_not, old, vhosts)))
            self._swap(state, {id(old[i]) for i in places}, {id(vhosts[i]): vhosts[i] for i in places}, encode)
            for i in places:
                state.parts[i] = state.framed[id(vhosts[i])]
                state.part_digests[i] = state.digests[id(vhosts[i])]
            state.data = b"".join((head, *state.parts, tail))
            _share(state, map(id, vhosts), len(head))
        else:
            before, now = frozenset(map(id, old)), dict(zip(map(id, vhosts), vhosts, strict=True))
            self._swap(state, before, now, encode)
            state.parts = list(map(state.framed.__getitem__, now))
            state.part_digests = list(map(state.digests.__getitem__, now))
            state.data = b"".join((head, *state.parts, tail))
            _share(state, now, len(head))
        state.vhosts, state.key = vhosts, key
        state.digest = _sha256(b"".join((_sha256(head), *state.part_digests, _sha256(tail))))
        return Assembled(state.data, state.digest, state.usage)

    def _swap(
        self,
        state: _Chain,
        old: Set[int],
        new: Mapping[int, ir.VirtualHost],
        encode: Callable[[ir.VirtualHost], bytes],
    ) -> None:
        """Forget the virtual hosts (by id) only in ``old``, encode those only in ``new``."""
        for gone in old - new.keys():
            state.usage.add(state.usages.pop(gone), -1)
            del state.framed[gone], state.digests[gone], state.held[gone]
        # Those added, in C loops over the lot (a cold build adds 10,000).
        ids = list(new.keys() - old)
        vhosts = list(map(new.__getitem__, ids))
        data = list(map(encode, vhosts))
        usages = list(map(ir.by_backends_and_mirrors(vhost_usage), vhosts))
        state.held.update(zip(ids, vhosts, strict=True))
        state.framed.update(zip(ids, data, strict=True))
        state.digests.update(zip(ids, map(_sha256, data), strict=True))
        state.usages.update(zip(ids, usages, strict=True))
        state.usage.add_all(usages)
        self.encoded += len(ids)

    def reuse(self, kind: str, key: object, make: Callable[[], _T]) -> _T:
        """What ``make`` gave last time for ``kind`` if ``key`` equals the key it had then."""
        hit = self._made.get(kind)
        if hit is not None and hit[0] == key:
            value: _T = hit[1]
            return value
        made = make()
        self._made[kind] = (key, made)
        return made

    def done(self) -> None:
        """Forget route tables the build did not use."""
        for name in set(self._chains) - self._used:
            del self._chains[name]
