"""Pairing the legs of one request by (Gateway, x-request-id), in a bounded window.

A request waits here until its primary and every mirror leg Envoy will log for it have come, or
until ``window`` seconds passed (then each missing leg makes an ``unpaired`` result), or until
``limit`` other requests wait behind it (then it is evicted and counted as dropped: memory stays
bounded whatever Envoy sends, e.g. only one leg's entries for ever).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .entries import Leg
from .tagging import MirrorTag, RouteTag, TagTables, sampled

DEFAULT_WINDOW = 60.0
"""Seconds a leg waits for the other: longer than a route's default timeout (15 s) plus the
access log's flush interval, so a slow mirror is compared, not called unpaired."""
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
    tag: RouteTag | None = None
    mirrors: dict[str, Leg] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)


@functools.lru_cache(maxsize=4096)
def _decode(text: str) -> RouteTag:
    """Every primary of a rule carries the same tag: one decoded object serves them all."""
    return RouteTag.decode(text)


def _stale(request_id: str, tag: RouteTag) -> bool:
    """Whether a primary Envoy logged was served under another version of its rule than ``tag``:
    Envoy logs a primary below its route's threshold, the highest of its mirrors' percents, so
    one that no mirror of ``tag`` samples was logged with other percents. The tag table changes
    when a version is installed, before Envoy applies it, and entries come up to 0.5 s late (a
    lowered ``samplePercent``). Its mirror legs are then expected as Envoy logged them, which
    ``tag`` cannot say: all of them, and paired as they come."""
    return not any(sampled(request_id, m.percent) for m in tag.mirrors)


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
        self.tables: TagTables = {}  # replaced whole after each translation (Comparisons.set_tags)
        self._untabled: set[str] = set()  # Gateways already warned about (shadow.no_tags)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, gateway: str, leg: Leg) -> None:
        now = self.clock()
        self.expire(now)
        tag: RouteTag | None = None
        if leg.primary:
            try:
                tag = self._tag(gateway, leg)
            except (ValueError, KeyError, TypeError):
                self.count("malformed", 1)
                return
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
            p.primary, p.tag = leg, tag
        else:
            p.mirrors[leg.cluster] = leg
        self._settle(key, p)

    def _tag(self, gateway: str, leg: Leg) -> RouteTag | None:
        """The entry's own tag if its route carried one, else its route's in the Gateway's table.
        None: a route the table does not know (removed meanwhile, or not mirrored)."""
        if leg.tag:
            return _decode(leg.tag)
        table = self.tables.get(gateway)
        if table is None:
            if gateway not in self._untabled:  # said once per Gateway: every primary would repeat it
                self._untabled.add(gateway)
                log.warning(
                    "shadow.no_tags gateway=%s route=%s reason=%s",
                    gateway,
                    leg.route or "-",
                    "the entry carries no shadow tag and no tag table is known for its Gateway;"
                    " a separate `mirrorplane collect` needs the control plane started with --shadow-tags-in-routes",
                )
            return None
        # A rule's twin routes (…/match/N/no-body, …/grpc) are named after it plus one segment.
        return table.get(leg.route) or table.get(leg.route.rpartition("/")[0])

    def _settle(self, key: tuple[str, str], p: _Pending) -> None:
        """Emit every pair now complete; forget the request once nothing more is expected."""
        if p.primary is None or p.tag is None:
            return
        rid = key[1]
        expected = 0
        stale = _stale(rid, p.tag)
        for m in p.tag.mirrors:
            if m.cluster in p.done:
                continue
            if not stale and not sampled(rid, m.percent):  # its cluster may still log it for another rule
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
        if not expected:
            del self._pending[key]

    def expire(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        while self._pending:
            key, p = next(iter(self._pending.items()))
            if p.at + self.window > now:
                return
            del self._pending[key]
            self._unpaired(key, p)

    def _unpaired(self, key: tuple[str, str], p: _Pending) -> None:
        gateway, rid = key
        if p.tag is not None:
            stale = _stale(rid, p.tag)
            for m in p.tag.mirrors:
                if m.cluster in p.done or not (stale or sampled(rid, m.percent)):
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
