"""Status bodies made quickly at a cold start (status.py, translator.py) must be what the general
path makes, and each body must own its dicts: the well route's conditions are made once per
generation and copied, the first stamp takes a path of its own."""

from __future__ import annotations

from typing import Any

from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.status import stamp
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate


def _statuses(n: int = 12) -> dict[tuple[str, str, str], dict[str, Any]]:
    from benchmarks.workload import objects

    return translate(Store.from_objects(from_dict(schema.validate(o)) for o in objects(n))).statuses


def test_routes_that_are_well_hold_conditions_of_their_own() -> None:
    routes = [body for key, body in _statuses().items() if key[0] == "HTTPRoute"]
    first, second = (r["parents"][0]["conditions"] for r in routes[:2])
    assert first == second and first[0] is not second[0]
    first[0]["status"] = "False"
    assert second[0]["status"] == "True"
    again = [body for key, body in _statuses().items() if key[0] == "HTTPRoute"]
    assert again[0]["parents"][0]["conditions"][0]["status"] == "True", "a cached condition was changed"


def test_a_first_stamp_equals_the_general_stamp_with_nothing_to_keep() -> None:
    for key, body in _statuses().items():
        fresh = stamp(body, None, "2026-01-01T00:00:00Z")
        general = stamp(body, {"unrelated": []}, "2026-01-01T00:00:00Z")  # no old condition matches
        assert fresh == general, key
        assert list(fresh) == list(body), key
        assert "lastTransitionTime" not in str(body), "the translator's body was changed"


def test_a_first_stamp_of_any_shape_equals_the_general_stamp_and_owns_its_dicts() -> None:
    """A route's status takes a path of its own at its first stamp (status._stamped_parent);
    every other shape, and a parent with anything else in it, must be stamped as the general
    path stamps it, each dict and list a new one."""
    import copy

    cond = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "m", "observedGeneration": 1}
    ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "port": 80}
    parent = {"parentRef": ref, "controllerName": "c", "conditions": [cond, {**cond, "type": "ResolvedRefs"}]}
    shapes: list[Any] = [
        {"parents": [parent]},
        {"parents": [parent, {**parent, "parentRef": {"name": "other"}}]},
        {"parents": []},
        {"parents": [{**parent, "parentRef": {**ref, "nested": {"a": [1, {"b": 2}]}}}]},
        {"parents": [{**parent, "controllerName": ["not", "a", "name"]}]},
        {"parents": [{"parentRef": ref, "other": {"x": [1]}, "conditions": [cond]}]},
        {"parents": [{**parent, "extra": {"x": 1}}]},
        {"parents": [{**parent, "conditions": None}]},
        {"parents": [parent, "not a dict"]},
        {"parents": [parent], "conditions": [cond]},
        {"conditions": [cond], "listeners": [{"name": "l", "conditions": [cond], "supportedKinds": [{"k": 1}]}]},
    ]
    for body in shapes:
        before = copy.deepcopy(body)
        fresh = stamp(body, None, "2026-01-01T00:00:00Z")
        assert fresh == stamp(body, {"unrelated": []}, "2026-01-01T00:00:00Z"), body
        assert body == before, "the translator's body was changed"

        def containers(node: Any) -> list[int]:
            inner = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
            return [id(node)] + [i for v in inner for i in containers(v)] if isinstance(node, dict | list) else []

        assert not set(containers(fresh)) & set(containers(body)), body


def test_has_problem_says_what_conditions_in_finds() -> None:
    """status.has_problem (the cold start's shortcut before naming where each problem is) over
    every golden status, and a problem placed at each level conditions_in looks at alone."""
    import copy
    import json
    from pathlib import Path

    from controlplane.gatewayapi.status import conditions_in, has_problem, is_problem

    def slow(body: Any) -> bool:
        return any(is_problem(c) for _, c in conditions_in(body))

    bodies = [
        body
        for path in sorted((Path(__file__).parent / "golden").glob("*/status.json"))
        for body in json.loads(path.read_text()).values()
    ]
    assert any(slow(b) for b in bodies) and not all(slow(b) for b in bodies)
    bad = {"type": "Accepted", "status": "False", "reason": "R", "message": "m"}
    well = {"type": "Accepted", "status": "True", "reason": "R", "message": "m"}
    placed: list[dict[str, Any]] = [
        {"conditions": [well, bad]},
        {"conditions": [well], "listeners": [{"name": "l", "conditions": [bad]}]},
        {"parents": [{"parentRef": {"name": "gw"}, "conditions": [well]}, {"parentRef": {}, "conditions": [bad]}]},
        {"ancestors": [{"ancestorRef": {"name": "r"}, "conditions": [bad]}]},
        {"unrelated": [{"conditions": [bad]}], "conditions": [well]},  # not a place conditions_in looks
        {"conditions": [{**well, "type": "Conflicted"}]},
    ]
    for body in bodies + placed + [copy.deepcopy(b) | {"conditions": None} for b in placed]:
        assert has_problem(body) == slow(body), body


def test_many_statuses_becoming_well_are_counted_on_one_line(caplog: Any) -> None:
    """A cold start of thousands of routes logs one line for the statuses that became well (each
    at debug), every problem on a line of its own as ever, and a small update each object."""
    import logging

    from benchmarks.workload import objects, route
    from controlplane.controller import LOG_EACH_WELL, Controller
    from controlplane.xds.cache import SnapshotCache

    docs = objects(LOG_EACH_WELL + 10)
    broken = route(999)
    broken["spec"]["rules"][0]["backendRefs"][0]["name"] = "missing"
    store = Store.from_objects(from_dict(schema.validate(o)) for o in [*docs, broken])
    controller = Controller(SnapshotCache())
    caplog.set_level(logging.DEBUG, logger="mirrorplane.controller")
    controller.update(store)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "status.changed" in r.getMessage()]
    assert info == [f"status.changed objects={LOG_EACH_WELL + 12} ok=True"]  # and the GatewayClass and Gateway
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "status.changed object='HTTPRoute bench/route-3' ok=True" in debug
    assert len(debug) == LOG_EACH_WELL + 12
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "HTTPRoute bench/route-999" in warned[0], warned

    caplog.clear()
    fixed = route(999)
    controller.update(Store.from_objects([*store.objects(), from_dict(schema.validate(fixed))]))
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "status.changed" in r.getMessage()]
    assert info == ["status.changed object='HTTPRoute bench/route-999' ok=True"]


def test_a_shared_first_stamp_equals_stamping_then_sharing() -> None:
    """status.stamp_shared takes a route parent's parts from those already shared as it stamps. It must make
    what ``share_parents(stamp(...))`` makes, sharing the same parts among the same bodies, and
    hold nothing of the translator's bodies."""
    from controlplane.gatewayapi.status import share_parents, stamp_shared

    now = "2026-01-01T00:00:00Z"
    cond: dict[str, Any] = {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "m",
        "observedGeneration": 1,
    }
    ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "port": 80}
    parent: dict[str, Any] = {
        "parentRef": ref,
        "controllerName": "c",
        "conditions": [cond, {**cond, "type": "ResolvedRefs"}],
    }
    timed = {**cond, "lastTransitionTime": "2020-01-01T00:00:00Z"}
    bodies: list[Any] = [
        *_statuses().values(),
        {"parents": [parent]},
        {"parents": [{**parent, "conditions": [{**c} for c in parent["conditions"]]}]},  # equal, not the same
        {"parents": [{**parent, "conditions": [timed]}]},
        {"parents": [{**parent, "conditions": [cond, timed]}]},
        {"parents": [{**parent, "conditions": [{**cond, "lastTransitionTime": now}, timed]}]},
        {"parents": [{**parent, "parentRef": {**ref, "port": 81}}]},
        {"parents": [{**parent, "parentRef": {**ref, "nested": {"a": [1]}}}]},
        {"parents": [{**parent, "conditions": [cond, {"nested": {"a": 1}}]}]},
        {"parents": [{**parent, "extra": 1}]},
        {"parents": [parent, "not a dict"]},
        {"parents": [parent], "conditions": [cond]},
    ]

    def containers(node: Any) -> list[int]:
        inner = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        return [id(node)] + [i for v in inner for i in containers(v)] if isinstance(node, dict | list) else []

    def shape(made: list[Any]) -> list[Any]:  # which containers are one object, by first place seen
        first: dict[int, int] = {}
        return [first.setdefault(i, len(first)) for body in made for i in containers(body)]

    import copy

    before = copy.deepcopy(bodies)
    fused_parts: dict[tuple[Any, ...], Any] = {}
    general_parts: dict[tuple[Any, ...], Any] = {}
    fused = [stamp_shared(b, None, now, fused_parts) for b in bodies]
    general = [share_parents(stamp(b, None, now), general_parts) for b in bodies]
    assert fused == general
    assert shape(fused) == shape(general)
    assert bodies == before, "a translator's body was changed"
    # What either holds of the translator's: only the nested value of the one odd condition
    # (a condition is copied one level deep).
    held = {i for b in bodies for i in containers(b)}
    assert {i for f in fused for i in containers(f)} & held == {i for f in general for i in containers(f)} & held
    assert len({i for f in fused for i in containers(f)} & held) == 1
    old = general[0]
    assert stamp_shared(bodies[0], old, now, {}) == share_parents(stamp(bodies[0], old, now), {})
