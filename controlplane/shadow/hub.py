"""Where compared pairs go: Prometheus metrics, per-rule counts and latency, the last differing
pairs, and live watchers (the admin API's WatchDiffs). Everything here is bounded."""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from envoy.data.accesslog.v3 import accesslog_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .bodies import BodyStore, Digest
from .compare import BODY_INDEPENDENT, compare
from .entries import Leg, leg_from_entry
from .pairing import DEFAULT_LIMIT, DEFAULT_WINDOW, Pair, Pairer
from .tagging import TagTables

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RECENT = 10
"""Differing pairs kept per (Gateway, route, rule, mirror)."""
SAMPLES = 1024
"""Latencies kept per leg and rule for the admin API's percentiles."""
MAX_RULES = 10_000
"""(Gateway, route, rule, mirror) combinations tracked: entries name them, so a bound keeps a
misbehaving sender from growing the label set without end."""
WATCH_BUFFER = 1024
BODY_WAIT = 5.0
"""Seconds a pair of a rule comparing bodies waits for its bodies' digests once both entries came
(they usually come first: Envoy sends a body as the leg ends, and its access log every 0.5 s).
After that it is compared by size, and each missing digest is counted ``body_missing``."""


@dataclass(frozen=True)
class Diff:
    """A differing pair, as the admin API shows it."""

    gateway: str
    route: str
    rule: str
    mirror: str
    result: str
    detail: str
    primary: Leg | None
    mirror_leg: Leg | None
    at: float

    @property
    def request_id(self) -> str:
        leg = self.primary or self.mirror_leg
        assert leg is not None  # a Diff has at least one leg
        return leg.request_id


@dataclass
class RuleStats:
    results: Tally[str] = field(default_factory=Tally)
    primary: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    mirror: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    recent: deque[Diff] = field(default_factory=lambda: deque(maxlen=RECENT))


class Comparisons:
    """The receiver's state. ``add_entry`` is called for every log entry; it never blocks."""

    def __init__(
        self, *, window: float = DEFAULT_WINDOW, limit: int = DEFAULT_LIMIT, body_wait: float = BODY_WAIT
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._results = Counter(
            "mirrorplane_mirror_comparisons",
            "Mirrored requests compared with their primary, by result "
            "(same, status_differs, body_differs, headers_differ, mirror_failed, unpaired).",
            ["gateway", "route", "rule", "mirror", "result"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "mirrorplane_mirror_latency_seconds",
            "Upstream latency of compared requests, primary and mirror leg side by side.",
            ["gateway", "route", "rule", "leg"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._entries = Counter(
            "mirrorplane_mirror_log_entries",
            "Access log entries the receiver got, by what became of them (paired, dropped_window_full, ...).",
            ["outcome"],
            registry=self.registry,
        )
        Gauge(
            "mirrorplane_mirror_pending_requests", "Requests waiting for their other leg.", registry=self.registry
        ).set_function(lambda: len(self.pairer))
        self.entries: Tally[str] = Tally()
        self.rules: dict[tuple[str, str, str, str], RuleStats] = {}
        self.watchers: set[asyncio.Queue[Diff | None]] = set()
        self.pairer = Pairer(self._on_pair, self.count, window=window, limit=limit)
        self.bodies = BodyStore(self.count, limit=limit, ttl=window)
        self.body_wait = body_wait
        # Pairs waiting for their digests, by (Gateway, request id), oldest first; at most ``limit``.
        self._awaiting: OrderedDict[tuple[str, str], list[tuple[float, Pair]]] = OrderedDict()
        self._awaiting_pairs = 0

    def count(self, outcome: str, n: int) -> None:
        self.entries[outcome] += n
        self._entries.labels(outcome).inc(n)

    def add_entry(self, gateway: str, entry: accesslog_pb2.HTTPAccessLogEntry) -> None:
        self.count("received", 1)
        try:
            leg = leg_from_entry(entry)
        except ValueError:  # an enum value newer than our protos
            self.count("malformed", 1)
            return
        if not leg.request_id:
            self.count("malformed", 1)
            return
        self.pairer.add(gateway, leg)

    def set_tags(self, tables: TagTables) -> None:
        """The tag tables of the last translation (the controller's ``tag_listeners``)."""
        self.pairer.set_tables(tables)

    def expire(self) -> None:
        self.pairer.expire()
        self.bodies.expire()
        now = self.pairer.clock()
        while self._awaiting:
            key, waiting = next(iter(self._awaiting.items()))
            if waiting[0][0] + self.body_wait > now:
                return
            self._give_up(key)

    def add_bodies(self, gateway: str, request_id: str, cluster: str, digests: dict[str, Digest]) -> None:
        """A leg's body digests (bodies.BodyReceiver); completes the pairs that waited for them."""
        self.bodies.add((gateway, request_id, cluster), digests)
        waiting = self._awaiting.get((gateway, request_id))
        if waiting is None:
            return
        still = [(at, pair) for at, pair in waiting if not self._join(pair)]
        for _, pair in waiting:
            if not any(p is pair for _, p in still):
                self._record(pair)
        self._awaiting_pairs -= len(waiting) - len(still)
        if still:
            waiting[:] = still
        else:
            del self._awaiting[(gateway, request_id)]

    def _on_pair(self, pair: Pair) -> None:
        primary, mirror = pair.primary, pair.mirror_leg
        if (
            pair.mirror.body
            and primary is not None
            and mirror is not None
            and compare(primary, mirror, ())[0] not in BODY_INDEPENDENT
            and not self._join(pair)
        ):
            key = (pair.gateway, primary.request_id)
            if self._awaiting_pairs >= self.pairer.limit:
                self._give_up(next(iter(self._awaiting)))
            self._awaiting.setdefault(key, []).append((self.pairer.clock(), pair))
            self._awaiting_pairs += 1
            return
        self._record(pair)

    def _join(self, pair: Pair) -> bool:
        """Give both legs their digests under the rule's settings, if both have come."""
        assert pair.primary is not None and pair.mirror_leg is not None
        setting = pair.mirror.body
        p = self.bodies.get((pair.gateway, pair.primary.request_id, pair.primary.cluster), setting)
        m = self.bodies.get((pair.gateway, pair.mirror_leg.request_id, pair.mirror_leg.cluster), setting)
        if p is None or m is None:
            return False
        pair.primary.digest, pair.primary.excerpt = p.digest, p.excerpt
        pair.mirror_leg.digest, pair.mirror_leg.excerpt = m.digest, m.excerpt
        return True

    def _give_up(self, key: tuple[str, str]) -> None:
        """Compare without digests (by size) the pairs of a request whose bodies did not all come."""
        waiting = self._awaiting.pop(key)
        self._awaiting_pairs -= len(waiting)
        for _, pair in waiting:
            assert pair.primary is not None and pair.mirror_leg is not None
            missing = sum(
                self.bodies.get((pair.gateway, leg.request_id, leg.cluster), pair.mirror.body) is None
                for leg in (pair.primary, pair.mirror_leg)
            )
            self.count("body_missing", missing)
            self._record(pair)

    def _record(self, pair: Pair) -> None:
        key = (pair.gateway, pair.route, pair.rule, pair.mirror.cluster)
        stats = self.rules.get(key)
        if stats is None:
            if len(self.rules) >= MAX_RULES:
                self.count("dropped_too_many_rules", 2)
                return
            stats = self.rules[key] = RuleStats()
        if pair.primary is None or pair.mirror_leg is None:
            result, detail = "unpaired", "no primary entry" if pair.primary is None else "no mirror entry"
            self.count("unpaired", 1)
        else:
            result, detail = compare(pair.primary, pair.mirror_leg, pair.mirror.headers)
            self.count("paired", 2)
            stats.primary.append(pair.primary.latency)
            stats.mirror.append(pair.mirror_leg.latency)
            self._latency.labels(pair.gateway, pair.route, pair.rule, "primary").observe(pair.primary.latency)
            self._latency.labels(pair.gateway, pair.route, pair.rule, "mirror").observe(pair.mirror_leg.latency)
        stats.results[result] += 1
        self._results.labels(*key, result).inc()
        if result == "same":
            return
        diff = Diff(*key, result, detail, pair.primary, pair.mirror_leg, time.time())
        stats.recent.append(diff)
        for q in list(self.watchers):
            try:
                q.put_nowait(diff)
            except asyncio.QueueFull:  # a watcher that does not read is ended, not buffered for
                self.watchers.discard(q)
                q.get_nowait()
                q.put_nowait(None)

    def watch(self) -> asyncio.Queue[Diff | None]:
        q: asyncio.Queue[Diff | None] = asyncio.Queue(WATCH_BUFFER)
        self.watchers.add(q)
        return q

    def render(self) -> bytes:
        return generate_latest(self.registry)


def percentile(samples: deque[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
