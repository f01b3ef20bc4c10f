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
