"""A load's Memo (``schema.remembering``) changes no verdict, no error and no decoded object.

Within ``remembering()`` an object or array field seen before in a valid object is taken whole
from the Memo and not checked again. Here the same objects are validated with and without it:
generated HTTPRoutes and GRPCRoutes (valid and invalid, from few names, so that fields repeat)
and the conformance objects; and the cases a wrong key would break: two fields that differ only
deep inside, an error in a field repeated at several places, values equal in Python but not in
type.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.gatewayapi import schema
from controlplane.providers.files import FileProvider
from test_schema import conformance_files, fixture_objects
from test_schema_projection import routes


def _outcome(body: dict[str, Any]) -> tuple[str, str]:
    """("valid", the decoded object's repr: types too, where == takes 1 for 1.0 and True), or
    ("error", the message)."""
    try:
        return ("valid", repr(schema.validate(copy.deepcopy(body))))
    except schema.ValidationError as exc:
        return ("error", str(exc))


def _both(bodies: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]], schema.Memo]:
    alone = [_outcome(b) for b in bodies]
    with schema.remembering() as memo:
        remembered = [_outcome(b) for b in bodies]
    return alone, remembered, memo


def _route(rules: list[dict[str, Any]], name: str = "r") -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": rules},
    }


def _mirror(port: Any, percent: Any = 50) -> list[dict[str, Any]]:
    backend = {"name": "mirror", "port": port}
    return [{"type": "RequestMirror", "requestMirror": {"backendRef": backend, "percent": percent}}]


@settings(max_examples=100, deadline=None)
@given(bodies=st.lists(routes(), min_size=1, max_size=4), twice=st.lists(st.integers(0, 3), max_size=4))
def test_objects_validate_the_same_within_remembering(bodies: list[dict[str, Any]], twice: list[int]) -> None:
    """Some of the routes again (so that their fields repeat, valid or not), each once more with
    its rules' first field in the first route's first rule (so that fields meet other fields)."""
    again = [bodies[i % len(bodies)] for i in twice]
    mixed = []
    for body in bodies[1:]:
        body = copy.deepcopy(body)
        if body["spec"]["rules"] and bodies[0]["spec"]["rules"] and body["kind"] == bodies[0]["kind"]:
            body["spec"]["rules"][0] = {**bodies[0]["spec"]["rules"][0], **body["spec"]["rules"][0]}
        mixed.append(body)
    alone, remembered, _ = _both([*bodies, *again, *mixed])
    assert remembered == alone


def test_the_conformance_objects_validate_the_same_within_remembering() -> None:
    bodies = [body for path in conformance_files() for body in fixture_objects(path)]
    assert len(bodies) > 50
    alone, remembered, memo = _both(bodies + bodies)  # the second time, from the Memo
    assert remembered == alone
    assert memo.hits > 0


def test_fields_that_differ_deep_inside_do_not_share_a_verdict() -> None:
    """The same filter but for the mirror's port, four levels down: the second is an error."""
    good = _route([{"filters": _mirror(8080)}], "good")
    bad = _route([{"filters": _mirror(0)}], "bad")
    alone, remembered, _ = _both([good, bad, good])
    assert remembered == alone
    assert remembered[1][0] == "error"
    assert "spec.rules[0].filters[0].requestMirror.backendRef.port" in remembered[1][1]


def test_values_equal_in_python_but_not_in_type_do_not_share_a_verdict() -> None:
    """``50``, ``50.0`` and ``True`` are equal in Python; only an integer is a percent."""
    bodies = [_route([{"filters": _mirror(8080, percent)}], f"r{i}") for i, percent in enumerate([50, 50.0, True, 1])]
    alone, remembered, _ = _both(bodies)
    assert remembered == alone
    assert [r[0] == "error" for r in remembered] == [False, True, True, False]


def test_an_error_in_a_repeated_field_is_said_at_each_place() -> None:
    valid = _route([{"filters": _mirror(8080)}, {"filters": _mirror(8080)}], "valid")
    broken = _route([{"filters": _mirror(0)} for _ in range(3)], "broken")
    alone, remembered, _ = _both([valid, broken, broken])
    assert remembered == alone
    for kind, message in remembered[1:]:
        assert kind == "error"
        for i in range(3):
            assert f"spec.rules[{i}].filters[0].requestMirror.backendRef.port" in message


def test_a_field_of_a_valid_object_is_taken_whole_and_shared() -> None:
    """What the Memo saves, and what it implies: the objects of one load share equal fields."""
    rules = [{"filters": _mirror(8080), "backendRefs": [{"name": "svc", "port": 80}]}]
    other = [{**rules[0], "matches": [{"path": {"type": "Exact", "value": "/b"}}]}]
    with schema.remembering() as memo:
        first, second = schema.validate(_route(copy.deepcopy(rules), "a")), schema.validate(_route(other, "b"))
    assert first["spec"]["rules"][0]["filters"] is second["spec"]["rules"][0]["filters"]
    assert first["spec"]["parentRefs"] is second["spec"]["parentRefs"]
    assert second["spec"]["rules"][0]["backendRefs"][0]["kind"] == "Service"  # decoded: defaults filled
    assert memo.hits == 3  # parentRefs, filters, backendRefs
    third = schema.validate(_route(copy.deepcopy(rules), "c"))  # outside: a copy of its own
    assert third["spec"]["rules"][0]["filters"] is not first["spec"]["rules"][0]["filters"]
    assert third == {**first, "metadata": third["metadata"]}


def test_the_memo_is_bounded_and_stops_looking_up_fields_that_never_repeat() -> None:
    with schema.remembering() as memo:
        for i in range(200):
            schema.validate(_route([{"matches": [{"path": {"type": "PathPrefix", "value": f"/p{i}"}}]}], f"r{i}"))
    matches = schema._compiled("gateway.networking.k8s.io/v1", "HTTPRoute").root
    for name in ("spec", "rules"):
        matches = matches.properties[name]
    matches = matches.items.properties["matches"]  # type: ignore[union-attr]
    assert memo.tries[matches] == [schema.Memo.TRIES, 0]  # then no more lookups
    # spec, rules, matches and path: TRIES values each, never again; parentRefs: one
    assert len(memo.entries) == 4 * schema.Memo.TRIES + 1
    with schema.remembering() as memo:
        memo.ENTRIES = 3  # type: ignore[misc]
        for i in range(20):
            schema.validate(_route([{"filters": _mirror(1000 + i)}], f"r{i}"))
        assert len(memo.entries) <= 3


def test_a_load_shares_repeated_fields_between_its_objects(tmp_path: Path) -> None:
    """The file provider reads a folder within ``remembering()``; its errors are the ones of a
    read without it (the first route's filter is repeated, broken, in the third)."""
    routes_ = [
        _route([{"filters": _mirror(8080)}, {"filters": _mirror(8080)}], "a"),
        _route([{"filters": _mirror(8080)}], "b"),
        _route([{"filters": _mirror(0)}, {"filters": _mirror(8080)}], "c"),
    ]
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump_all(routes_))
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(_route([{"filters": _mirror(8080)}], "d")))
    provider = FileProvider(tmp_path, helper=False)
    store = provider.load()
    a, b, d = (store.httproutes[("default", n)] for n in ("a", "b", "d"))
    assert a.spec["rules"][0]["filters"] is b.spec["rules"][0]["filters"]
    assert a.spec["rules"][0]["filters"] is d.spec["rules"][0]["filters"]  # one Memo for the folder
    (error,) = provider.errors[tmp_path / "routes.yaml"]
    assert error.object == "HTTPRoute default/c"
    assert "spec.rules[0].filters[0].requestMirror.backendRef.port" in error.message
    with pytest.raises(schema.ValidationError) as alone:
        schema.validate(routes_[2])
    assert error.message == str(alone.value)
