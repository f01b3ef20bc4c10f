"""The RequestMirror tests (upstream httproute-request-mirror.go, -multiple-mirrors.go and
-percentage-mirror.go, v1.6.1 semantics).

The mirror check is upstream's ExpectMirroredRequest: read the logs of every pod labelled
``app=<mirror Service>`` since now − 30 s and find echo-basic's "Echoing back request made to
<path incl. ?gateway-api-conformance-request-id=uuid> to client" line within 10 s.
"""

from __future__ import annotations

import asyncio
import math
import time

from .env import INFRA, SAME_NAMESPACE, Env
from .http import MAX_TIME_TO_CONSISTENCY, REQUEST_TIMEOUT, Case, expect_consistent, mirror_regexp
from .status import ConformanceError
from .suite import conformance_test
from .tests_core import MODIFIED, V1, V2, V3, accepted_with_refs

MIRROR = ["Gateway", "HTTPRoute", "HTTPRouteRequestMirror"]


def mirror_case(path: str, *mirrors: str, modify: bool = False) -> Case:
    extra = MODIFIED if modify else {}
    return Case(path=path, backend=V1, namespace=INFRA, mirrored_to=tuple((INFRA, m) for m in mirrors), **extra)


async def expect_mirrored(env: Env, case: Case) -> None:
    """The primary answers as expected, and every mirror backend logged this very request."""
    case = case.with_request_id()
    since = time.time() - MAX_TIME_TO_CONSISTENCY
    await expect_consistent(env.client, await env.target(SAME_NAMESPACE), case)
    pattern = mirror_regexp(case.expect_path or case.path)
    for namespace, service in case.mirrored_to:
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while not any(pattern.search(line) for line in env.pods.logs(namespace, service, since)):
            if time.monotonic() > deadline:
                raise ConformanceError(f"{case.path}: no mirrored request in the logs of {namespace}/{service} within {REQUEST_TIMEOUT:g}s")
            await asyncio.sleep(0.05)


@conformance_test("HTTPRouteRequestMirror", "An HTTPRoute with a request mirror filter", MIRROR, ["tests/httproute-request-mirror.yaml"])
async def request_mirror(env: Env) -> None:
    await env.gateway_and_routes_accepted(SAME_NAMESPACE, [(INFRA, "request-mirror")])
    await asyncio.gather(
        expect_mirrored(env, mirror_case("/mirror", V2)),
        expect_mirrored(env, mirror_case("/mirror-and-modify-headers", V2, modify=True)),
    )


@conformance_test(
    "HTTPRouteRequestMultipleMirrors",
    "An HTTPRoute with two request mirror filters",
    MIRROR + ["HTTPRouteRequestMultipleMirrors"],
    ["tests/httproute-request-multiple-mirrors.yaml"],
)
async def request_multiple_mirrors(env: Env) -> None:
    await env.gateway_and_routes_accepted(SAME_NAMESPACE, [(INFRA, "request-multiple-mirrors")])
    await asyncio.gather(
        expect_mirrored(env, mirror_case("/multi-mirror", V2, V3)),
        expect_mirrored(env, mirror_case("/multi-mirror-and-modify-request-headers", V2, V3, modify=True)),
    )


TOTAL_REQUESTS = 500
DISTRIBUTION_CHECKS = 5
CONCURRENT_REQUESTS = 10


def binomial_band(percent: float, n: int = TOTAL_REQUESTS) -> tuple[float, float]:
    """v1.6.1's tolerance: μ ± 3σ of Binomial(n, p) (20 % of 500 → [73.2, 126.8])."""
    p = percent / 100
    mu, sigma = n * p, math.sqrt(n * p * (1 - p))
    return mu - 3 * sigma, mu + 3 * sigma


async def _mirrored_count(env: Env, case: Case, since: float) -> int:
    """Lines for this batch's path in the mirror's logs, once mirrors stop arriving."""
    pattern = mirror_regexp(case.expect_path or case.path)
    (namespace, service), = case.mirrored_to
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while time.monotonic() < deadline:
        count = sum(1 for line in env.pods.logs(namespace, service, since) if pattern.search(line))
        if count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since > 0.5:
            break
        await asyncio.sleep(0.05)
    return last


async def _percentage(env: Env, case: Case, percent: int) -> None:
    target = await env.target(SAME_NAMESPACE)
    await expect_consistent(env.client, target, case.with_request_id())
    low, high = binomial_band(percent)
    why = ""
    semaphore = asyncio.Semaphore(CONCURRENT_REQUESTS)

    async def one(batch: Case) -> None:
        async with semaphore:
            await expect_consistent(env.client, target, batch, threshold=1)

    for _ in range(DISTRIBUTION_CHECKS):
        batch = case.with_request_id()
        since = time.time()
        await asyncio.gather(*(one(batch) for _ in range(TOTAL_REQUESTS)))
        count = await _mirrored_count(env, batch, since)
        if low <= count <= high:
            return
        why = f"{case.path}: {count} of {TOTAL_REQUESTS} mirrored, want [{low:.1f}, {high:.1f}] ({percent} %)"
    raise ConformanceError(f"{why} in all {DISTRIBUTION_CHECKS} distribution checks")


@conformance_test(
    "HTTPRouteRequestPercentageMirror",
    "An HTTPRoute with percentage based request mirroring",
    MIRROR[:2] + ["HTTPRouteRequestPercentageMirror"],
    ["tests/httproute-request-percentage-mirror.yaml"],
    provisional=True,
)
async def request_percentage_mirror(env: Env) -> None:
    await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "request-percentage-mirror"))
    await asyncio.gather(
        _percentage(env, mirror_case("/percent-mirror", V2), 20),
        _percentage(env, mirror_case("/percent-mirror-fraction", V2), 50),
        _percentage(env, mirror_case("/percent-mirror-and-modify-headers", V2, modify=True), 35),
    )


