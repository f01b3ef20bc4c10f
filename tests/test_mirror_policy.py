"""MirrorPolicy: what the Gateway API translator makes of it (IR and status), and its CRD's
validation. The Envoy side is pinned by the golden cases tests/golden/policy-* and proven with a
real Envoy in tests/test_e2e_mirror_policy.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane import ir
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.status import stamp
from controlplane.gatewayapi.translator import translate
from controlplane.offline import translate_folder
from controlplane.providers.files import FileProvider

GOLDEN = Path(__file__).resolve().parent / "golden"

POLICY = """apiVersion: mirrorplane.io/v1alpha1
kind: MirrorPolicy
metadata: {name: cart-shadow, namespace: shop}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: cart}
  - {group: gateway.networking.k8s.io, kind: GRPCRoute, name: cart, sectionName: checkout}
  requestHeaderModifier:
    set: [{name: x-shadow, value: "true"}]
    add: [{name: x-run, value: "1"}]
    remove: [authorization]
  hostname: cart-next.internal
  keepShadowHostSuffix: false
  tracing: {sampling: Never}
  comparison:
    samplePercent: 10
    body: {enabled: true, maxBytes: 100}
    headers: [content-type]
    ignoreJSONPaths: ["$.timestamp", "$.items[*].id", "$.a[0].b"]
"""


def _mirrors(case: str) -> dict[str, tuple[ir.Mirror, ...]]:
    result = translate(FileProvider(GOLDEN / case / "input").load())
    return {
        r.name.split("/rule/")[1].split("/")[0]: r.mirrors
        for gw in result.gateways.values()
        for lst in gw.listeners
        for chain in lst.chains
        for vh in chain.virtual_hosts
        for r in vh.routes
    }


def test_every_field_reaches_every_mirror_of_the_targeted_rules() -> None:
    by_rule = _mirrors("policy-every-field")
    checkout = by_rule["checkout"]
    assert [m.backend for m in checkout] == ["mirror/server/pipy-mirror/8080", "mirror/server/audit/8080"]
    for m in checkout:  # the whole-route policy, on both mirrors of the rule alike
        assert m.policy == "server/cart-shadow"
        assert m.request_headers == ir.HeaderMods(
            set=(("x-shadow", "100%"),), add=(("x-shadow-run", "nightly"),), remove=("authorization", "cookie")
        )
        assert (m.hostname, m.trace_sampled, m.shadow_host_suffix) == ("cart-next.internal", True, False)
        assert m.comparison == ir.Comparison(
            sample_percent=25, body=True, body_limit_bytes=1024, headers=("content-type", "etag"),
            ignore_json_paths=("$.timestamp", "$.items[*].id"),
        )  # fmt: skip
    assert checkout[1].numerator == 50, "the RequestMirror filter's own fraction stays"
    # The sectionName policy is more specific: it alone sets the mirror of "browse".
    [browse] = by_rule["browse"]
    assert browse.policy == "server/browse-shadow"
    assert (browse.request_headers, browse.hostname) == (ir.NO_HEADER_MODS, None)
    assert (browse.shadow_host_suffix, browse.trace_sampled, browse.comparison) == (True, False, ir.DEFAULT_COMPARISON)
    assert by_rule["health"] == ()


def test_a_conflicted_or_invalid_policy_changes_nothing() -> None:
    [mirror] = _mirrors("policy-conflicts")["0"]
    assert mirror.policy == "server/older-a"
    assert mirror.request_headers.set == (("x-policy", "older-a"),)


def test_missing_targets_leave_the_mirror_and_the_deprecated_annotation_alone() -> None:
    [mirror] = _mirrors("policy-missing-target")["checkout"]
    assert mirror == ir.Mirror("mirror/server/pipy-mirror/8080", shadow_host_suffix=True)


def _invalid(body: dict[str, Any]) -> str:
    with pytest.raises(schema.ValidationError) as info:
        schema.validate(body)
    return str(info.value)


def test_crd_accepts_every_field_and_checks_what_envoy_and_gep_713_need() -> None:
    good = yaml.safe_load(POLICY)
    assert schema.validate(good)["spec"]["comparison"]["body"] == {"enabled": True, "maxBytes": 100}
    defaulted = schema.validate({**good, "spec": {**good["spec"], "tracing": {}, "comparison": {"body": {}}}})["spec"]
    assert defaulted["tracing"] == {"sampling": "FollowPrimary"}
    assert defaulted["comparison"] == {"samplePercent": 100, "body": {"enabled": False, "maxBytes": 65536}}

    bad = copy.deepcopy(good)
    bad["spec"]["targetRefs"][0]["group"] = "example.com"
    assert 'spec.targetRefs[0]: Invalid value: "object": group must be gateway.networking.k8s.io' in _invalid(bad)
    bad = copy.deepcopy(good)
    bad["spec"]["targetRefs"].append(dict(bad["spec"]["targetRefs"][0]))
    assert "sectionName must be unique when targetRefs includes 2 or more references to the same target" in _invalid(
        bad
    )
    bad = copy.deepcopy(good)
    bad["spec"]["keepShadowHostSuffix"] = True
    assert 'spec: Invalid value: "object": hostname and keepShadowHostSuffix cannot both be set' in _invalid(bad)
    bad = copy.deepcopy(good)
    bad["spec"]["comparison"]["samplePercent"] = 101
    bad["spec"]["comparison"]["ignoreJSONPaths"] = ["timestamp"]
    message = _invalid(bad)
    assert (
        "spec.comparison.samplePercent: Invalid value: 101: spec.comparison.samplePercent in body should be less than or equal to 100"
        in message
    )
    assert 'spec.comparison.ignoreJSONPaths[0]: Invalid value: "timestamp"' in message
    bad = copy.deepcopy(good)
    bad["spec"]["targetRefs"] = []
    assert "spec.targetRefs: Invalid value: 0: spec.targetRefs in body should have at least 1 items" in _invalid(bad)
    bad = copy.deepcopy(good)
    del bad["spec"]["targetRefs"]
    assert "spec.targetRefs: Required value" in _invalid(bad)


def test_transition_times_are_kept_per_ancestor() -> None:
    def body(status: str, *names: str) -> dict[str, Any]:
        return {"ancestors": [
            {"ancestorRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop", "name": n},
             "conditions": [{"type": "Accepted", "status": status}]}
            for n in names
        ]}  # fmt: skip

    old = stamp(body("True", "a", "b"), None, "T1")
    new = stamp({"ancestors": [body("True", "b")["ancestors"][0], body("False", "a")["ancestors"][0]]}, old, "T2")
    times = {a["ancestorRef"]["name"]: a["conditions"][0]["lastTransitionTime"] for a in new["ancestors"]}
    assert times == {"a": "T2", "b": "T1"}


def test_mirrorplane_translate_shows_what_each_policy_sets_comparison_included() -> None:
    out = json.loads(json.dumps(translate_folder(GOLDEN / "policy-every-field" / "input")))  # as the command prints it
    shown = {(m["route"].split("/rule/")[1], m["backend"]): m for m in out["mirrorPolicies"]}
    assert set(shown) == {
        ("checkout/match/0", "mirror/server/pipy-mirror/8080"),
        ("checkout/match/0", "mirror/server/audit/8080"),
        ("browse/match/0", "mirror/server/pipy-mirror/8080"),
    }
    checkout = shown[("checkout/match/0", "mirror/server/audit/8080")]
    assert checkout["policy"] == "server/cart-shadow" and checkout["hostname"] == "cart-next.internal"
    assert checkout["comparison"] == {
        "sample_percent": 25, "body": True, "body_limit_bytes": 1024, "headers": ["content-type", "etag"],
        "ignore_json_paths": ["$.timestamp", "$.items[*].id"],
    }  # fmt: skip
    assert out["status"]["MirrorPolicy/server/health-shadow"]["ancestors"][0]["conditions"][0]["reason"] == "Accepted"
