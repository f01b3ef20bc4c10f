"""Comparison results over time, for the rule page's chart.

The shadow hub keeps running totals per (Gateway, route, rule, mirror) and the last 1024 latencies
of each leg; it keeps no time series. Every ``interval`` seconds :meth:`History.tick` turns the
change since the previous tick into one :class:`Point` per rule that had pairs: that interval's
results and both legs' p50/p99 (the latencies appended since the last tick are the newest ones
in the hub's deques). Bounded: ``points`` per rule, points only for intervals with pairs, and at
most ``max_rules`` rules (the one quiet longest makes room).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..shadow.hub import Comparisons

RuleKey = tuple[str, str, str, str]
"""(Gateway, route, rule, mirror), as the shadow hub keys its rules."""

INTERVAL = 5.0
POINTS = 360  # 30 minutes of 5 s intervals
MAX_RULES = 2000


@dataclass(frozen=True, slots=True)
class Point:
    at: float  # wall-clock end of the interval
    results: dict[str, int]  # pairs of this interval by result
    primary: tuple[float, float]  # p50, p99 in seconds (0, 0 when no pair had both legs)
    mirror: tuple[float, float]

    @property
    def pairs(self) -> int:
        return sum(self.results.values())

    @property
    def differing(self) -> int:
        return self.pairs - self.results.get("same", 0)


def p50_p99(samples: list[float]) -> tuple[float, float]:
    if not samples:
        return 0.0, 0.0
    ordered = sorted(samples)
    n = len(ordered)
    return ordered[min(n - 1, n // 2)], ordered[min(n - 1, int(0.99 * n))]


def _newest(samples: deque[float], n: int) -> list[float]:
    return list(itertools.islice(reversed(samples), min(n, len(samples))))


class History:
    def __init__(
        self, comparisons: Comparisons, *, interval: float = INTERVAL, points: int = POINTS, max_rules: int = MAX_RULES
    ) -> None:
        self.comparisons = comparisons
        self.interval = interval
        self.points = points
        self.max_rules = max_rules
        self.changes = 0  # points appended so far: the page's generation includes it
        self._seen: dict[RuleKey, Tally[str]] = {}
        self._series: dict[RuleKey, deque[Point]] = {}

    def series(self, keys: Iterable[RuleKey]) -> dict[RuleKey, list[Point]]:
        return {k: list(self._series[k]) for k in keys if k in self._series}

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for key, stats in self.comparisons.rules.items():
            before = self._seen.get(key)
            if before is not None and sum(before.values()) == sum(stats.results.values()):
                continue
            current = Tally(stats.results)
            new = current - before if before is not None else current
            self._seen[key] = current
            paired = sum(new.values()) - new.get("unpaired", 0)
            point = Point(
                now, dict(new), p50_p99(_newest(stats.primary, paired)), p50_p99(_newest(stats.mirror, paired))
            )
            self._append(key, point)
        for gone in [k for k in self._seen if k not in self.comparisons.rules]:
            del self._seen[gone]

    def _append(self, key: RuleKey, point: Point) -> None:
        self.changes += 1
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_rules:
                quiet = min(self._series, key=lambda k: self._series[k][-1].at)
                del self._series[quiet]
            series = self._series[key] = deque(maxlen=self.points)
        series.append(point)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.tick()
