"""Shadow testing end to end (issue 15): a real Envoy's upstream access log over gRPC ALS to the
control plane, legs paired by x-request-id and compared (docs/shadow-testing.md)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from e2e import Stack, start_stack
from support import wait_until

ROUTE = "HTTPRoute server/shadow"
GATEWAY = "server/simple-gateway"
# Requests under /t/ go to their own route, so that the stack's readiness probe on the seed
# route (GET /) is never counted here.
SHADOW_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shadow, namespace: server}
spec:
  parentRefs: [{name: simple-gateway, port: 8000}]
  rules:
  - name: compared
    matches: [{path: {type: PathPrefix, value: /t/}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: pipy-mirror, port: 8080}}
    backendRefs: [{name: pipy, port: 8080}]
"""


MIRROR = "mirror/server/pipy-mirror/8080"


def results(stack: Stack, route: str = ROUTE) -> dict[str, int]:
    out: dict[str, int] = {}
    for (gw, r, rule, mirror), stats in stack.plane.comparisons.rules.items():
        if r != route:
            continue
        assert (gw, rule, mirror) == (GATEWAY, "compared", MIRROR)
        for k, v in stats.results.items():
            out[k] = out.get(k, 0) + v
    return out


async def compared(stack: Stack, n: int, **kw: Any) -> dict[str, int]:
    await wait_until(lambda: sum(results(stack).values()) >= n, timeout=30, message=f"{n} comparisons")
    return results(stack)


async def shadow_stack(tmp_path: Path, **mirror_options: Any) -> Stack:
    stack = await start_stack(tmp_path, mirror_options=mirror_options)
    stack.write("shadow.yaml", SHADOW_ROUTE)
    await wait_until(lambda: _routed(stack), timeout=15, message="the /t/ route served")
    return stack


async def _routed(stack: Stack) -> bool:
    return len(await stack.mirror_policies()) == 2  # the seed route's and ours


@pytest.fixture
async def shadow(tmp_path: Path) -> AsyncIterator[Stack]:
    stack = await shadow_stack(tmp_path)
    try:
        yield stack
    finally:
        await stack.exits.aclose()


async def test_identical_answers_are_paired_and_same(shadow: Stack) -> None:
    stack = shadow
    # The echo answers a body with the same bytes; a GET's answer would quote the request head,
    # which differs on the mirror (Host with -shadow, x-envoy-internal).
    for i in range(5):
        status, _ = await stack.request(f"/t/same/{i}", data=b"hello %d" % i)
        assert status == 200
    got = await compared(stack, 5)
    assert got == {"same": 5}


async def test_mirror_500_is_status_differs(tmp_path: Path) -> None:
    stack = await shadow_stack(tmp_path, status=500)
    try:
        for i in range(3):
            assert (await stack.request(f"/t/x/{i}"))[0] == 200
        assert await compared(stack, 3) == {"status_differs": 3}
        stats = stack.plane.comparisons.rules[(GATEWAY, ROUTE, "compared", MIRROR)]
        d = stats.recent[-1]
        assert (d.primary.status, d.mirror_leg.status, d.detail) == (200, 500, "status 200 != 500")
        assert d.primary.request_id == d.mirror_leg.request_id
    finally:
        await stack.exits.aclose()

