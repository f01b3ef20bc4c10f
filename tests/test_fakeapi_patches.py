"""The fake API server's patch formats and selectors, as pure functions.

Strategic merge patch is what kubectl's client-side apply sends for built-in
kinds; these cases are the directives it emits (taken from `kubectl apply
-v=8` output) and must merge as the real server merges them.
"""

from __future__ import annotations

import pytest

from fakeapi.patches import PatchError, PatchFormatError, apply_patch, json_patch, merge_patch, strategic_merge_patch
from fakeapi.selectors import SelectorError, parse_field_selector, parse_label_selector

POD = {
    "containers": [
        {"name": "envoy", "image": "envoy:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
        {"name": "side", "image": "side:1"},
    ],
    "volumes": [{"name": "config", "configMap": {"name": "c"}}],
    "tolerations": [{"key": "a"}],
}


def test_merge_patch_merges_maps_replaces_lists_and_deletes_nulls() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3], "x": None}) == {"a": {"c": 2, "d": 3}, "l": [3]}
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1}, "the target is not modified"


def test_strategic_merge_merges_lists_by_their_merge_key() -> None:
    patch = {
        "$setElementOrder/containers": [{"name": "envoy"}, {"name": "side"}],
        "containers": [
            {
                "name": "envoy",
                "image": "envoy:2",
                "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                "env": [{"name": "A", "value": "9"}],
            }
        ],
        "tolerations": [{"key": "b"}],
    }
    out = strategic_merge_patch(POD, patch)
    envoy, side = out["containers"]
    assert envoy["image"] == "envoy:2" and envoy["env"] == [{"name": "A", "value": "9"}, {"name": "B", "value": "2"}]
    assert side == {"name": "side", "image": "side:1"}
    assert out["tolerations"] == [{"key": "b"}], "a list without a merge key is replaced"


def test_strategic_merge_directives() -> None:
    deleted = strategic_merge_patch(POD, {"containers": [{"name": "side", "$patch": "delete"}]})
    assert [c["name"] for c in deleted["containers"]] == ["envoy"]
    replaced = strategic_merge_patch(POD, {"containers": [{"name": "only", "image": "o:1"}, {"$patch": "replace"}]})
    assert replaced["containers"] == [{"name": "only", "image": "o:1"}]
    reordered = strategic_merge_patch(POD, {"$setElementOrder/containers": [{"name": "side"}, {"name": "envoy"}]})
    assert [c["name"] for c in reordered["containers"]] == ["side", "envoy"]
    retained = strategic_merge_patch(
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, {"$retainKeys": ["type"], "type": "Recreate"}
    )
    assert retained == {"type": "Recreate"}
    finalizers = strategic_merge_patch({"finalizers": ["a", "b"]}, {"$deleteFromPrimitiveList/finalizers": ["a"]})
    assert finalizers == {"finalizers": ["b"]}
    assert strategic_merge_patch({"finalizers": ["a"]}, {"finalizers": ["b"]}) == {"finalizers": ["a", "b"]}
    assert strategic_merge_patch({"spec": {"a": 1}, "x": 1}, {"spec": {"$patch": "delete"}}) == {"x": 1}
    assert strategic_merge_patch({"spec": {"a": 1, "b": 2}}, {"spec": {"$patch": "replace", "c": 3}}) == {
        "spec": {"c": 3}
    }


def test_service_ports_merge_by_port_and_container_ports_by_container_port() -> None:
    service = {"ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9901}]}
    assert strategic_merge_patch(service, {"ports": [{"port": 80, "targetPort": 8080}]})["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "admin", "port": 9901},
    ]
    container = {"ports": [{"containerPort": 8000, "name": "http"}]}
    assert strategic_merge_patch(container, {"ports": [{"containerPort": 8000, "protocol": "TCP"}]})["ports"] == [
        {"containerPort": 8000, "name": "http", "protocol": "TCP"}
    ]


def test_json_patch_operations() -> None:
    doc = {"spec": {"hostnames": ["a"], "rules": [{"x": 1}]}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/spec/hostnames/-", "value": "b"},
            {"op": "replace", "path": "/spec/rules/0/x", "value": 2},
            {"op": "copy", "from": "/spec/hostnames", "path": "/spec/copy"},
            {"op": "move", "from": "/spec/copy", "path": "/moved"},
            {"op": "remove", "path": "/spec/hostnames/0"},
            {"op": "test", "path": "/moved/1", "value": "b"},
            {"op": "add", "path": "/a~1b", "value": True},
        ],
    )
    assert out == {"spec": {"hostnames": ["b"], "rules": [{"x": 2}]}, "moved": ["a", "b"], "a/b": True}
    assert doc == {"spec": {"hostnames": ["a"], "rules": [{"x": 1}]}}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "test", "path": "/spec/hostnames/0", "value": "z"}])
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    with pytest.raises(PatchFormatError):
        apply_patch("application/json-patch+json", doc, {"spec": {}})
    with pytest.raises(PatchFormatError):
        apply_patch("text/plain", doc, {})


def test_label_selector_grammar() -> None:
    obj = {"metadata": {"labels": {"app.kubernetes.io/name": "envoy", "tier": "edge"}}}
    for text, expected in [
        ("app.kubernetes.io/name=envoy", True),
        ("app.kubernetes.io/name in (envoy, other)", True),
        ("tier notin (edge)", False),
        ("tier,!missing", True),
        ("tier!=edge", False),
        ("  tier == edge , app.kubernetes.io/name  ", True),
        ("", True),
    ]:
        assert parse_label_selector(text)(obj) is expected, text
    for bad in ("a in (b", "=x", "a==b==c"):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)


def test_field_selector() -> None:
    obj = {"metadata": {"name": "a", "namespace": "n"}, "spec": {"nodeName": "x"}}
    assert parse_field_selector("metadata.name=a,metadata.namespace==n")(obj)
    assert not parse_field_selector("metadata.name!=a")(obj)
    assert parse_field_selector("spec.nodeName=x")(obj)
    with pytest.raises(SelectorError):
        parse_field_selector("metadata.name~a")
