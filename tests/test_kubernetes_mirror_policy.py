"""MirrorPolicy in a cluster: kubectl apply → the Kubernetes provider → a real Envoy → the mirror
leg; the status writer fills status.ancestors, which `kubectl get mirrorpolicy -o yaml` shows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER
from kube import EXAMPLES, KubeStack, cluster, control_plane, seed, start_kube_stack
from support import wait_until


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[KubeStack]:
    async with cluster(tmp_path) as c:
        s = await start_kube_stack(c)  # applies manifests/examples, 40-mirrorpolicy.yaml included
        try:
            yield s
        finally:
            await s.exits.aclose()


async def _mirrored_headers(stack: KubeStack, path: str) -> tuple[dict, dict]:
    async with stack.session.get(f"http://127.0.0.1:{stack.port}{path}", headers={"Authorization": "Bearer t"}) as resp:
        assert resp.status == 200
    await wait_until(lambda: path in stack.logs["pipy-mirror"].paths(), message=f"the mirror got {path}")
    primary = next(h for h in stack.logs["pipy"].heads() if h["path"] == path)
    mirror = next(h for h in stack.logs["pipy-mirror"].heads() if h["path"] == path)
    return primary["headers"], mirror["headers"]


async def test_kubectl_apply_policy_status_and_delete(stack: KubeStack) -> None:
    c = stack.cluster

    async def accepted() -> bool:
        policy = await c.get("mirrorpolicy", "sample-shadow", "server")
        ancestors = (policy.get("status") or {}).get("ancestors") or []
        return bool(ancestors) and ancestors[0]["conditions"][0]["status"] == "True"

    await wait_until(accepted, message="kubectl get mirrorpolicy shows Accepted")
    policy = await c.get("mirrorpolicy", "sample-shadow", "server")
    [ancestor] = policy["status"]["ancestors"]
    assert ancestor["ancestorRef"] == {
        "group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "server", "name": "http-route-sample",
    }  # fmt: skip
    assert ancestor["controllerName"] == DEFAULT_CONTROLLER
    [cond] = ancestor["conditions"]
    assert (cond["type"], cond["reason"], cond["observedGeneration"]) == (
        "Accepted",
        "Accepted",
        policy["metadata"]["generation"],
    )
    assert cond["lastTransitionTime"]

    primary, mirror = await _mirrored_headers(stack, "/with-policy")
    assert mirror["x-mirrorplane-shadow"] == "true" and "authorization" not in mirror
    assert primary["authorization"] == "Bearer t" and "x-mirrorplane-shadow" not in primary

    # The route's own status is unchanged by the policy: Gateway API conditions only.
    route = await c.get("httproute", "http-route-sample", "server")
    assert {cond["type"] for p in route["status"]["parents"] for cond in p["conditions"]} == {
        "Accepted",
        "ResolvedRefs",
    }

    # A retarget to a rule that does not exist: TargetNotFound, at the new generation.
    await c.kubectl(
        "patch", "mirrorpolicy", "sample-shadow", "-n", "server", "--type=json",
        "-p", '[{"op": "add", "path": "/spec/targetRefs/0/sectionName", "value": "nope"}]',
    )  # fmt: skip

    async def not_found() -> bool:
        p = await c.get("mirrorpolicy", "sample-shadow", "server")
        [cond] = p["status"]["ancestors"][0]["conditions"]
        return cond["reason"] == "TargetNotFound" and cond["observedGeneration"] == p["metadata"]["generation"] == 2

    await wait_until(not_found, message="TargetNotFound for a sectionName naming no rule")

    await c.kubectl("delete", "mirrorpolicy", "sample-shadow", "-n", "server")

    async def defaults() -> bool:
        return all("request_headers_mutations" not in p for p in await stack.mirror_policies())

    await wait_until(defaults, message="Envoy back to the default mirror leg")
    _, mirror = await _mirrored_headers(stack, "/without-policy")
    assert mirror["authorization"] == "Bearer t"


async def test_bad_policies_are_refused_with_the_api_servers_wording(stack: KubeStack) -> None:
    c = stack.cluster
    text = (EXAMPLES / "40-mirrorpolicy.yaml").read_text()
    cel = text.replace(
        "  # hostname: pipy-next.server.svc", "  hostname: pipy-next.server.svc\n  keepShadowHostSuffix: true"
    )
    with pytest.raises(AssertionError) as refused:
        await c.kubectl("apply", "--validate=false", "-f", "-", input=cel.replace("sample-shadow", "both"))
    assert (
        'The MirrorPolicy "both" is invalid: spec: Invalid value: "object": '
        "hostname and keepShadowHostSuffix cannot both be set" in str(refused.value)
    )
    wrong_kind = text.replace("kind: HTTPRoute", "kind: Service")
    with pytest.raises(AssertionError) as refused:
        await c.kubectl("apply", "--validate=false", "-f", "-", input=wrong_kind.replace("sample-shadow", "svc"))
    assert 'spec.targetRefs[0].kind: Unsupported value: "Service": supported values: "HTTPRoute", "GRPCRoute"' in str(
        refused.value
    )
    # Strict field validation, as kubectl asks for it by default (this kubectl cannot: the fake
    # serves no OpenAPI document, so the request is sent as kubectl would send it).
    unknown = yaml.safe_load(text.replace("sample-shadow", "colour"))
    unknown["spec"]["colour"] = "red"
    with pytest.raises(AssertionError) as refused:
        await c.kubectl(
            "create", "--raw", "/apis/mirrorplane.io/v1alpha1/namespaces/server/mirrorpolicies?fieldValidation=Strict",
            "-f", "-", input=json.dumps(unknown),
        )  # fmt: skip
    assert 'unknown field \\"spec.colour\\"' in str(refused.value) or 'unknown field "spec.colour"' in str(
        refused.value
    )

    # The route keeps serving and mirroring.
    async with stack.session.get(f"http://127.0.0.1:{stack.port}/still") as resp:
        assert resp.status == 200
    await wait_until(lambda: "/still" in stack.logs["pipy-mirror"].paths(), message="still mirrored")
    for name in ("both", "svc", "colour"):
        with pytest.raises(AssertionError):
            await c.get("mirrorpolicy", name, "server")


async def test_a_cluster_without_the_crd_routes_without_policies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with cluster(tmp_path) as c:
        fake = c.need_fake("serving no MirrorPolicy CRD")
        await seed(c)
        fake.store.registry.remove("mirrorplane.io", "mirrorpolicies")
        plane, provider, _ = control_plane(c)
        caplog.set_level("WARNING", logger="mirrorplane.kubernetes")
        await plane.start()
        try:
            assert "MirrorPolicy" not in provider.reflectors
            assert ("server", "http-route-sample") in provider.store.httproutes
            assert plane.controller.gateways, "the example Gateway is translated"
            [line] = [r.getMessage() for r in caplog.records if "kind_not_served" in r.getMessage()]
            assert line.startswith("kubernetes.kind_not_served kind=MirrorPolicy group=mirrorplane.io version=v1alpha1")
        finally:
            await plane.stop()
