"""Equal parts of what the API server sends are held once (jsonshare), without changing what
anyone reads: the same JSON, types and key order, and the same limits per object."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from controlplane.providers.jsonshare import Sharer
from controlplane.providers.yamlread import Limits, RejectedError


def route(i: int, second: int) -> dict[str, Any]:
    condition = {"type": "Accepted", "status": "True", "lastTransitionTime": f"2026-01-01T00:00:0{second}Z"}
    return {
        "metadata": {"name": f"r{i}", "namespace": "ns"},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
            "rules": [{"matches": [{"path": {"value": f"/r{i}"}}], "backendRefs": [{"name": "svc", "weight": 1}]}],
        },
        "status": {"parents": [{"controllerName": "example.com/c", "conditions": [condition]}]},
    }


def test_equal_parts_are_one_object_and_every_object_reads_the_same() -> None:
    sharer = Sharer()
    sent = [route(i, i % 2) for i in range(6)]
    shared = [sharer.share(json.loads(json.dumps(body))) for body in sent]
    assert shared == sent
    assert all(json.dumps(a) == json.dumps(b) for a, b in zip(shared, sent, strict=True))  # key order too
    assert len({id(body["spec"]["parentRefs"]) for body in shared}) == 1
    assert len({id(body["spec"]["rules"][0]["backendRefs"]) for body in shared}) == 1
    assert len({id(body["status"]) for body in shared}) == 2  # written in two different seconds
    assert len({id(body["spec"]["rules"]) for body in shared}) == 6  # their paths differ


def test_parts_equal_in_python_but_not_in_json_stay_apart() -> None:
    sharer = Sharer()
    parts = [{"v": 1}, {"v": True}, {"v": 1.0}, [1], [True], [1.0], {"a": 1, "b": 2}, {"b": 2, "a": 1}]
    shared = [sharer.share(copy.deepcopy(p)) for p in parts]
    assert [json.dumps(s) for s in shared] == [json.dumps(p) for p in parts]
    assert [type(s["v"] if isinstance(s, dict) and "v" in s else s[0]) for s in shared[:6]] == [int, bool, float] * 2
    assert len({id(s) for s in shared}) == len(parts)


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        (Limits(max_depth=3), "nested deeper than 3 levels"),
        (Limits(max_nodes=20), "larger than 20 nodes"),
        (Limits(max_bytes=100), "or 100 bytes"),
    ],
)
def test_an_object_over_the_limits_is_refused(limits: Limits, error: str) -> None:
    body = route(1, 0)
    with pytest.raises(RejectedError, match=error):
        Sharer(limits).share(body)
    assert Sharer().share(body) == route(1, 0)


def test_a_long_string_anywhere_counts_against_the_size() -> None:
    """check_tree, the walk this one replaces, counted the characters of the strings it reached
    after the last dict or list it opened but never compared them with the limit: a long
    annotation, read last, passed."""
    body = route(1, 0)
    body["metadata"]["annotations"] = {"note": "x" * 5_000}
    with pytest.raises(RejectedError, match="or 4000 bytes"):
        Sharer(Limits(max_bytes=4_000)).share(body)
