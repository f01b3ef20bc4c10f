"""The README's "In a cluster" flow end to end: kubectl apply → the Kubernetes provider → a real
Envoy mirroring to real echo backends → status that `kubectl get` shows."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiohttp
import pytest

from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER
from kube import EXAMPLES, SYSTEM, KubeStack, cluster, start_kube_stack
from support import free_port, wait_until


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[KubeStack]:
    async with cluster(tmp_path) as c:
        s = await start_kube_stack(c)
        try:
            yield s
        finally:
            await s.exits.aclose()


def _conditions(parent: dict) -> dict[str, tuple[str, int]]:
    return {c["type"]: (c["status"], c["observedGeneration"]) for c in parent["conditions"]}


async def test_kubectl_apply_mirrors_and_kubectl_get_shows_status(stack: KubeStack) -> None:
    c = stack.cluster
    status, body = await stack.request("/hello", data=b"Hello world")
    assert status == 200 and b"Hello world" in body
    await wait_until(lambda: "/hello" in stack.logs["pipy-mirror"].paths(), message="the mirror got a copy")
    assert stack.logs["pipy"].paths().count("/hello") == 1

    async def route_status() -> dict:
        route = await c.get("httproute", "http-route-sample", "server")
        return route

    async def accepted() -> bool:
        route = await route_status()
        parents = (route.get("status") or {}).get("parents") or []
        return bool(parents) and _conditions(parents[0]).get("Accepted", ("", 0))[0] == "True"

    await wait_until(accepted, message="kubectl get httproute shows Accepted")
    route = await route_status()
    [parent] = route["status"]["parents"]
    assert parent["controllerName"] == DEFAULT_CONTROLLER
    assert parent["parentRef"]["name"] == "simple-gateway"
    generation = route["metadata"]["generation"]
    assert _conditions(parent) == {"Accepted": ("True", generation), "ResolvedRefs": ("True", generation)}
    assert all(cond["lastTransitionTime"] for cond in parent["conditions"])

    gateway_class = await c.get("gatewayclass", "mirrorplane")
    assert _conditions(gateway_class["status"])["Accepted"][0] == "True"

    # The Envoy fleet's Service gets a load balancer: the Gateway reports its address, typed.
    await c.kubectl(
        "patch",
        "service",
        "envoy",
        "-n",
        "mirrorplane-system",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}',
    )

    async def gateway_address() -> list:
        gw = await c.get("gateway", "simple-gateway", "server")
        return (gw.get("status") or {}).get("addresses") or []

    await wait_until(
        lambda: _eq(gateway_address(), [{"type": "IPAddress", "value": "203.0.113.7"}]),
        message="Gateway status.addresses from the Envoy Service's load balancer",
    )
    gw = await c.get("gateway", "simple-gateway", "server")
    assert gw["status"]["listeners"][0]["attachedRoutes"] == 1

    # Writes were merge patches to the status subresource, never to the objects themselves.
    if c.fake is not None:
        writes = [
            r for r in c.fake.requests() if r.method in ("PATCH", "PUT") and "gateway.networking.k8s.io" in r.path
        ]
        assert writes and all(r.path.endswith("/status") for r in writes)
        assert {r.content_type.split(";")[0] for r in writes} == {"application/merge-patch+json"}

    # Remove the mirror filter with kubectl apply: Envoy stops mirroring, status follows the generation.
    text = (EXAMPLES / "30-httproute.yaml").read_text()
    start, end = text.index("    filters:"), text.index("    backendRefs:")
    await c.apply(text[:start] + text[end:])

    async def no_mirror() -> bool:
        return await stack.mirror_policies() == []

    await wait_until(no_mirror, message="Envoy without the mirror policy")

    async def observed_2() -> bool:
        route = await route_status()
        return route["metadata"]["generation"] == 2 and all(
            gen == 2 for _, gen in _conditions(route["status"]["parents"][0]).values()
        )

    await wait_until(observed_2, message="status observedGeneration follows the spec change")
    await stack.request("/after", data=b"x")
    assert "/after" in stack.logs["pipy"].paths()

    # A sentinel that must reach the mirror, sent after: re-applying the filter mirrors again.
    await c.apply(text)
    await wait_until(lambda: _has_mirror(stack), message="Envoy holding the mirror policy again")

    # Resent until mirrored: the policy can arrive while its cluster is still warming.
    async def sentinel_mirrored() -> bool:
        await stack.request("/sentinel", data=b"x")
        return "/sentinel" in stack.logs["pipy-mirror"].paths()

    await wait_until(sentinel_mirrored, timeout=30, message="the sentinel mirrored")
    assert "/after" not in stack.logs["pipy-mirror"].paths()


async def _has_mirror(stack: KubeStack) -> bool:
    return bool(await stack.mirror_policies())


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_serve_kubernetes_process_writes_status_and_releases_its_lease(tmp_path: Path) -> None:
    """`mirrorplane serve --kubernetes` as the Deployment runs it: ready, status, clean stop."""
    async with cluster(tmp_path) as c:
        await c.install()
        await c.apply(EXAMPLES)
        http_port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "controlplane.cli",
            "serve",
            "--kubernetes",
            f"--kubeconfig={c.kubeconfig}",
            f"--xds-port={free_port()}",
            f"--http-port={http_port}",
            f"--lease-namespace={SYSTEM}",
            "--identity=replica-1",
            "--gateway-service=mirrorplane-system/envoy",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with aiohttp.ClientSession() as session:

                async def ready() -> bool:
                    async with session.get(f"http://127.0.0.1:{http_port}/readyz") as resp:
                        return resp.status == 200

                await wait_until(ready, timeout=15, message="/readyz")

            async def accepted() -> bool:
                route = await c.get("httproute", "http-route-sample", "server")
                return bool((route.get("status") or {}).get("parents"))

            await wait_until(accepted, message="status written by the process")
            held = await c.get("lease", "mirrorplane-status-writer", SYSTEM)
            assert held["spec"]["holderIdentity"] == "replica-1"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, out.decode()
        assert b"lease.released" in out
        held = await c.get("lease", "mirrorplane-status-writer", SYSTEM)
        assert not held["spec"].get("holderIdentity"), "released on a clean shutdown"
