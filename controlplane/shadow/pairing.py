"""Pairing the legs of one request by (Gateway, x-request-id), in a bounded window.

A request waits here until its primary and every mirror leg Envoy will log for it have come, or
until ``window`` seconds passed (then each missing leg makes an ``unpaired`` result), or until
``limit`` other requests wait behind it (then it is evicted and counted as dropped: memory stays
bounded whatever Envoy sends, e.g. only one leg's entries for ever).

Which legs Envoy logs for a request is its rule's tag, found by route name in the tag table of
the last translation. That table changes when a version is installed, before Envoy applies it,
and an entry can come as late as the window (a slow request started under the old routes, then
the logger's flush): so each superseded table is held for one window more (at most :data:`HELD`
per Gateway), and a request is read with the newest version of its rule that explains what came
of it (docs/shadow-testing.md, "The tag table").
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .entries import Leg
from .tagging import MIRRORED_SUFFIX, MirrorTag, RouteTag, TagTables, sampled

DEFAULT_WINDOW = 60.0
"""Seconds a leg waits for the other: longer than a route's default timeout (15 s) plus the
access log's flush interval, so a slow mirror is compared, not called unpaired."""
HELD = 8
"""Superseded tag tables held per Gateway at most, the newest, however often it changes: each is
one dict of references to tags and names it shares with the others (200 KiB at 10,000 rules)."""
DEFAULT_LIMIT = 50_000
"""Requests waiting at once: about 1.5 KiB each (benchmarks/shadow.py), some 80 MiB at the most."""
log = logging.getLogger("mirrorplane.shadow")

UNKNOWN = "(unknown)"
"""Route and rule of a mirror leg whose primary never came (only the primary names them)."""


@dataclass(frozen=True)
class Pair:
    gateway: str
    route: str
    rule: str
    mirror: MirrorTag
    primary: Leg | None  # None: unpaired (the primary never came)
    mirror_leg: Leg | None  # None: unpaired (the mirror leg never came)


@dataclass(slots=True)
class _Pending:
    at: float
    primary: Leg | None = None
    tag: RouteTag | None = None  # the version of its rule the request is read with
    versions: tuple[RouteTag, ...] = ()  # its rule's differing versions still held, newest first
    mirrors: dict[str, Leg] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)


@functools.lru_cache(maxsize=4096)
def _decode(text: str) -> RouteTag:
    """Every primary of a rule carries the same tag: one decoded object serves them all."""
    return RouteTag.decode(text)


def _sampling(tag: RouteTag, request_id: str) -> set[str]:
    """The mirrors of ``tag`` that sample this id: under ``tag`` Envoy logs a leg to each, and
    the primary if there is any (its route's threshold is the highest of their percents)."""
    return {m.cluster for m in tag.mirrors if sampled(request_id, m.percent)}


def _lookup(table: Mapping[str, RouteTag], route: str) -> RouteTag | None:
    # The table is keyed by the rule's route; Envoy's mirrored routes add a segment (…/mirrored),
    # and a GRPCRoute rule's second one another (…/grpc/mirrored).
    route = route.removesuffix(MIRRORED_SUFFIX)
    return table.get(route) or table.get(route.rpartition("/")[0])


Emit = Callable[[Pair], None]
Count = Callable[[str, int], None]


class Pairer:
    def __init__(
        self,
        emit: Emit,
        count: Count,
        *,
        window: float = DEFAULT_WINDOW,
        limit: int = DEFAULT_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit, self.count = emit, count
        self.window, self.limit, self.clock = window, limit, clock
        self._pending: OrderedDict[tuple[str, str], _Pending] = OrderedDict()
        self.tables: TagTables = {}  # the last translation's (set_tables)
        # Per Gateway, the tables it superseded, newest first, each with when it is let go.
        self._held: dict[str, list[tuple[float, Mapping[str, RouteTag]]]] = {}
        self._release = math.inf  # when the first held table is let go
        self._untabled: set[str] = set()  # Gateways already warned about (shadow.no_tags)

    def __len__(self) -> int:
        return len(self._pending)

    def set_tables(self, tables: TagTables) -> None:
        """The tag tables of a new translation. A Gateway's table that changed (the controller
        hands out the same object while nothing did) is held one window more for late entries;
        tables are never changed once handed out, so holding one copies nothing."""
        until = self.clock() + self.window
        for gateway, old in self.tables.items():
            if tables.get(gateway) is not old:
                held = self._held.setdefault(gateway, [])
                held.insert(0, (until, old))
                del held[HELD:]
                self._release = min(self._release, until)
        self.tables = tables

    def add(self, gateway: str, leg: Leg) -> None:
        now = self.clock()
        self.expire(now)
        tag: RouteTag | None = None
        versions: tuple[RouteTag, ...] = ()
        if leg.primary:
            try:
                tag = self._tag(gateway, leg)
            except (ValueError, KeyError, TypeError):
                self.count("malformed", 1)
                return
            held = None if leg.tag else self._held.get(gateway)
            if held:  # a version of its routes installed less than a window ago
                versions = self._versions(tag, held, leg.route)
                if versions:
                    tag = versions[0]
                    if len(versions) == 1:  # one version after all (its route only in held tables)
                        versions = ()
            if tag is None:
                self.count("untagged", 1)
                return
            leg.tag = leg.route = ""  # the pending leg keeps no copy
        key = (gateway, leg.request_id)
        p = self._pending.get(key)
        if p is None:
            if len(self._pending) >= self.limit:
                self._pending.popitem(last=False)
                self.count("dropped_window_full", 1)
            p = self._pending[key] = _Pending(now)
        if leg.primary:
            p.primary, p.tag, p.versions = leg, tag, versions
        else:
            p.mirrors[leg.cluster] = leg
        self._settle(key, p)

    def _tag(self, gateway: str, leg: Leg) -> RouteTag | None:
        """The entry's own tag if its route carried one, else its route's in the Gateway's table.
        None: a route the table does not know (removed, or not mirrored)."""
        if leg.tag:
            return _decode(leg.tag)
        table = self.tables.get(gateway)
        if table is None:
            if gateway not in self._untabled and gateway not in self._held:  # said once per Gateway
                self._untabled.add(gateway)
                log.warning(
                    "shadow.no_tags gateway=%s route=%s reason=%s",
                    gateway,
                    leg.route or "-",
                    "the entry carries no shadow tag and no tag table is known for its Gateway;"
                    " a separate `mirrorplane collect` needs the control plane started with --shadow-tags-in-routes",
                )
            return None
        return _lookup(table, leg.route)

    @staticmethod
    def _versions(
        tag: RouteTag | None, held: list[tuple[float, Mapping[str, RouteTag]]], route: str
    ) -> tuple[RouteTag, ...]:
        """The route's tags in the last table and the held ones, newest first, each once; ()
        when the held tables have the last one's (they share the tags of routes that did not
        change: one ``is`` each)."""
        found: list[RouteTag] | None = None
        for _, table in held:
            old = _lookup(table, route)
            if old is None or old is tag:
                continue
            if found is None:
                found = [] if tag is None else [tag]
            if old not in found:
                found.append(old)
        return () if found is None else tuple(found)

    def _settle(self, key: tuple[str, str], p: _Pending) -> None:
        """Emit every pair now complete; forget the request once nothing more is expected.

        With several versions of its rule held, the request is read with the newest one that
        explains what came of it: under which Envoy logs its primary (some mirror samples its id)
        and each mirror leg that came (a mirror to that cluster samples it). It waits for every
        leg a version explaining it expects, so that a leg only an older version logs is paired."""
        if p.primary is None or p.tag is None:
            return
        rid = key[1]
        waiting = False
        if p.versions:
            came = p.mirrors.keys() | p.done
            fits = [(t, s) for t in p.versions if (s := _sampling(t, rid)) and s >= came]
            p.tag = fits[0][0] if fits else p.versions[0]
            waiting = any(not s <= came for _, s in fits[1:])
        expected = 0
        for m in p.tag.mirrors:
            if m.cluster in p.done:
                continue
            if not sampled(rid, m.percent):  # its cluster may still log it for another rule
                if p.mirrors.pop(m.cluster, None) is not None:
                    self.count("not_sampled", 1)
                continue
            leg = p.mirrors.pop(m.cluster, None)
            if leg is None:
                expected += 1
                continue
            p.done.add(m.cluster)
            self.emit(Pair(key[0], p.tag.route, p.tag.rule, m, p.primary, leg))
        if p.mirrors:  # legs of clusters this rule does not mirror to: not ours to compare
            self.count("unexpected", len(p.mirrors))
            p.mirrors.clear()
        if not expected and not waiting:
            del self._pending[key]

    def expire(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if now >= self._release:
            self._let_go(now)
        while self._pending:
            key, p = next(iter(self._pending.items()))
            if p.at + self.window > now:
                return
            del self._pending[key]
            self._unpaired(key, p)

    def _let_go(self, now: float) -> None:
        """Drop the held tables whose window has passed."""
        for gateway, held in list(self._held.items()):
            while held and held[-1][0] <= now:
                held.pop()
            if not held:
                del self._held[gateway]
        self._release = min((held[-1][0] for held in self._held.values()), default=math.inf)

    def _unpaired(self, key: tuple[str, str], p: _Pending) -> None:
        gateway, rid = key
        if p.tag is not None:
            for m in p.tag.mirrors:
                if m.cluster in p.done or not sampled(rid, m.percent):
                    continue
                if m.always:
                    self.emit(Pair(gateway, p.tag.route, p.tag.rule, m, p.primary, None))
                else:  # a Gateway API fraction below 100 %: this request may not have been mirrored
                    self.count("not_mirrored", 1)
        for cluster, leg in p.mirrors.items():
            if leg.cluster_min and not rid < leg.cluster_min:  # a rule sampling less may not have logged its primary
                self.count("not_sampled", 1)
            else:
                self.emit(Pair(gateway, UNKNOWN, UNKNOWN, MirrorTag(cluster, 100, True, ()), None, leg))
