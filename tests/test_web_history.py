"""The rule page's history (controlplane/web/history.py): per-interval results and latencies from
the shadow hub's running totals, within its bounds."""

from __future__ import annotations

from controlplane.shadow.hub import Comparisons, RuleStats
from controlplane.web.history import History

KEY = ("gw/a", "HTTPRoute ns/r", "0", "mirror/ns/m/8080")


def _pairs(stats: RuleStats, result: str, n: int, primary: float, mirror: float) -> None:
    stats.results[result] += n
    if result != "unpaired":
        stats.primary.extend([primary] * n)
        stats.mirror.extend([mirror] * n)


def test_each_interval_gets_its_own_results_and_latencies() -> None:
    c = Comparisons()
    stats = c.rules[KEY] = RuleStats()
    history = History(c)
    _pairs(stats, "same", 8, 0.001, 0.002)
    _pairs(stats, "status_differs", 2, 0.001, 0.002)
    history.tick(now=100)
    history.tick(now=105)  # nothing new: no point
    _pairs(stats, "same", 1, 0.010, 0.500)
    _pairs(stats, "unpaired", 3, 0, 0)
    history.tick(now=110)
    points = history.series([KEY])[KEY]
    assert [(p.at, p.results) for p in points] == [
        (100, {"same": 8, "status_differs": 2}),
        (110, {"same": 1, "unpaired": 3}),
    ]
    assert points[0].primary == (0.001, 0.001) and points[0].mirror == (0.002, 0.002)
    # Only the pair of the second interval counts for its latency, not the older samples.
    assert points[1].primary == (0.010, 0.010) and points[1].mirror == (0.5, 0.5)
    assert (points[1].pairs, points[1].differing) == (4, 3)
    assert history.changes == 2


def test_bounded_in_points_and_rules() -> None:
    c = Comparisons()
    history = History(c, points=3, max_rules=2)
    keys = [("gw/a", f"HTTPRoute ns/r{i}", "0", "m") for i in range(3)]
    for t, key in enumerate(keys):
        c.rules[key] = RuleStats()
        _pairs(c.rules[key], "same", 1, 0.001, 0.001)
        history.tick(now=t)
    assert set(history.series(keys)) == {keys[1], keys[2]}  # the one quiet longest made room
    for t in range(10):
        _pairs(c.rules[keys[2]], "same", 1, 0.001, 0.001)
        history.tick(now=10 + t)
    assert [p.at for p in history.series([keys[2]])[keys[2]]] == [17, 18, 19]
