"""The controller's stamped statuses hold the parts routes have in common once
(status.share_parents), and read as they did: the same JSON for every object, nothing shared
that differs."""

from __future__ import annotations

import copy
import json
from typing import Any

from benchmarks.workload import objects
from controlplane.controller import Controller
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.status import stamp
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.xds.cache import SnapshotCache


def test_routes_stamped_at_once_share_their_parent_ref_and_conditions() -> None:
    controller = Controller(SnapshotCache())
    controller.update(Store.from_objects(from_dict(schema.validate(o)) for o in objects(8)))
    routes = [body for key, body in controller.statuses.items() if key[0] == "HTTPRoute"]
    assert len(routes) == 8
    assert len({id(r["parents"][0]["conditions"]) for r in routes}) == 1
    assert len({id(r["parents"][0]["parentRef"]) for r in routes}) == 1
    assert len({id(r["parents"][0]) for r in routes}) == 8  # each route's own parent entry


def test_stamped_bodies_read_as_stamp_makes_them() -> None:
    statuses = translate(Store.from_objects(from_dict(schema.validate(o)) for o in objects(4))).statuses
    now = "2026-01-01T00:00:00Z"
    cond = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "m", "observedGeneration": 1}
    odd: dict[tuple[str, str, str], dict[str, Any]] = {
        ("HTTPRoute", "ns", "nested"): {
            "parents": [{"parentRef": {"name": "gw", "x": {"y": 1}}, "conditions": [cond]}]
        },
        ("HTTPRoute", "ns", "plain"): {"parents": [{"parentRef": {"name": "gw"}, "conditions": [cond]}]},
        ("HTTPRoute", "ns", "odd"): {"parents": ["not a dict", {"controllerName": "c"}]},
        ("Gateway", "ns", "gw2"): {"conditions": [cond], "listeners": []},
    }
    controller = Controller(SnapshotCache())
    controller._record_statuses({**statuses, **odd})
    for key, body in {**statuses, **odd}.items():
        expected = stamp(copy.deepcopy(body), None, now)
        got = controller.statuses[key]
        assert json.dumps(got).replace(_time(got), now) == json.dumps(expected), key


def _time(body: object) -> str:
    text = json.dumps(body)
    at = text.find('"lastTransitionTime": "')
    return text[at + 23 : at + 43] if at >= 0 else "2026-01-01T00:00:00Z"
