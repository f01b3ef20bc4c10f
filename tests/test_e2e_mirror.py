"""The seed scenario end to end: YAML folder → control plane → ADS → a real Envoy → real echo
backends. Every change is made the way a user makes it: by editing a file."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.tests_mirror import DISTRIBUTION_CHECKS, TOTAL_REQUESTS, binomial_band
from e2e import Stack, digest, fire, service_yaml, start_stack
from support import wait_until

ROUTE_HEAD = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: http-route-sample
  namespace: server
spec:
  parentRefs:
  - name: simple-gateway
    port: 8000
  rules:
"""
PRIMARY = """    backendRefs:
    - name: pipy
      port: 8080
"""


def mirror_filter(service: str, extra: str = "") -> str:
    return f"""    - type: RequestMirror
      requestMirror:
        backendRef:
          name: {service}
          port: 8080{extra}
"""


def rule(path: str, *filters: str) -> str:
    out = f"""  - matches:
    - path:
        type: PathPrefix
        value: {path}
"""
    if filters:
        out += "    filters:\n" + "".join(filters)
    return out + PRIMARY



async def test_seed_post_is_answered_by_primary_and_mirrored_byte_for_byte(stack: Stack) -> None:
    body = b"Hello world"
    status, answer = await stack.request("/", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, answer) == (200, b"Hello world")
    primary, mirror = stack.echos["pipy"].log, stack.echos["pipy-mirror"].log

    def both_saw_it() -> bool:
        return any(h.get("body") == digest(body) for h in mirror.heads()) and any(
            h.get("body") == digest(body) for h in primary.heads()
        )

    await wait_until(both_saw_it, message="primary and mirror both logging the POST")
    mirrored = next(h for h in mirror.heads() if h.get("body") == digest(body))
    assert mirrored["method"] == "POST" and mirrored["path"] == "/"
    # The mirror sees the real Host, not Envoy's default "-shadow" suffix (the listener's own
    # port is stripped from Host, as for every request: see xds/translator.py _manager).
    assert mirrored["headers"]["host"] == "127.0.0.1"
    assert mirrored["headers"]["content-type"] == "application/x-www-form-urlencoded"


async def test_get_with_query_is_mirrored_and_answered_with_echo_json(stack: Stack) -> None:
    uri = f"/anything?id={uuid.uuid4()}"
    status, answer = await stack.request(uri)
    assert status == 200
    assert b'"path": "' + uri.encode() + b'"' in answer
    await wait_until(lambda: stack.echos["pipy-mirror"].log.echoed(uri), message="mirror logging the GET")
    assert stack.echos["pipy"].log.echoed(uri)


async def test_editing_the_route_file_starts_and_stops_mirroring_without_restarting_envoy(stack: Stack) -> None:
    pid = stack.envoy.pid
    mirror = stack.echos["pipy-mirror"].log
    stack.write("route.yaml", ROUTE_HEAD + rule("/"))
    await wait_until(lambda: _no_policies(stack), message="Envoy dropping the mirror policy")
    off = f"/off?id={uuid.uuid4()}"
    assert (await stack.request(off))[0] == 200

    stack.write("route.yaml", ROUTE_HEAD + rule("/", mirror_filter("pipy-mirror")))
    await wait_until(lambda: _has_policies(stack), message="Envoy receiving the mirror policy")
    on = f"/on?id={uuid.uuid4()}"
    assert (await stack.request(on))[0] == 200
    await wait_until(lambda: mirror.echoed(on), message="mirroring after adding the filter")
    assert not mirror.echoed(off), "mirrored while the filter was removed (the sentinel /on came later)"
    assert stack.envoy.pid == pid, "Envoy must not be restarted"


async def _no_policies(stack: Stack) -> bool:
    return not await stack.mirror_policies()


async def _has_policies(stack: Stack) -> bool:
    return bool(await stack.mirror_policies())


async def test_two_mirrors_both_get_every_request(stack: Stack) -> None:
    audit = await stack.add_echo("audit")
    stack.write("audit.yaml", service_yaml("audit", audit.port))
    stack.write("route.yaml", ROUTE_HEAD + rule("/", mirror_filter("pipy-mirror"), mirror_filter("audit")))
    await wait_until(lambda: _policy_count(stack, 2), message="two mirror policies in Envoy")
    uris = [f"/two?id={uuid.uuid4()}" for _ in range(5)]
    assert await fire(stack, uris) == [200] * 5

    def echoed_by_both(uri: str) -> bool:
        return stack.echos["pipy-mirror"].log.echoed(uri) and audit.log.echoed(uri)

    for uri in uris:
        await wait_until(functools.partial(echoed_by_both, uri))


async def _policy_count(stack: Stack, n: int) -> bool:
    return len(await stack.mirror_policies()) == n


@pytest.mark.parametrize(
    ("spec", "p"),
    [("\n        percent: 20", 0.20), ("\n        fraction:\n          numerator: 25\n          denominator: 50", 0.50)],
    ids=["percent-20", "fraction-25-50"],
)
async def test_mirror_fraction_within_three_sigma(stack: Stack, spec: str, p: float) -> None:
    stack.write("route.yaml", ROUTE_HEAD + rule("/", mirror_filter("pipy-mirror", spec)))
    await wait_until(lambda: _fraction_is(stack, p), message=f"Envoy holding the {p:.0%} mirror policy")
    low, high = binomial_band(p * 100)
    mirror = stack.echos["pipy-mirror"].log
    counts = []
    # μ±3σ misses 0.27% of correct batches: retry as the conformance harness does (a wrong
    # fraction misses the band every time).

    def mirrored(batch: str) -> int:
        return sum(1 for path in mirror.paths() if f"batch={batch}" in path)

    for _ in range(DISTRIBUTION_CHECKS):
        batch = uuid.uuid4().hex
        uris = [f"/pct?batch={batch}&i={i}" for i in range(TOTAL_REQUESTS)]
        assert await fire(stack, uris) == [200] * TOTAL_REQUESTS
        counts.append(await _settled(functools.partial(mirrored, batch)))
        if low <= counts[-1] <= high:
            return
    pytest.fail(f"mirrored {counts} of {TOTAL_REQUESTS} in {DISTRIBUTION_CHECKS} batches, expected {low:.1f}..{high:.1f}")


async def _settled(count: Callable[[], int]) -> int:
    """The count once mirrored copies stop arriving (they may trail the responses)."""
    last, since = count(), time.monotonic()
    while time.monotonic() - since < 0.5:
        await asyncio.sleep(0.05)
        if count() != last:
            last, since = count(), time.monotonic()
    return last


async def _fraction_is(stack: Stack, p: float) -> bool:
    policies = await stack.mirror_policies()
    if len(policies) != 1:
        return False
    value = policies[0].get("runtime_fraction", {}).get("default_value", {})
    scale = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}[value.get("denominator", "HUNDRED")]
    return value.get("numerator", 0) / scale == p


async def test_route_with_missing_mirror_backend_keeps_serving_primary(stack: Stack) -> None:
    stack.write("route.yaml", ROUTE_HEAD + rule("/", mirror_filter("no-such-service")))
    key = ("HTTPRoute", "server", "http-route-sample")
    await wait_until(
        lambda: _condition(stack, key, "ResolvedRefs") == ("False", "BackendNotFound"),
        message="ResolvedRefs=False/BackendNotFound",
    )
    await wait_until(lambda: _no_policies(stack), message="no mirror policy naming an unserved cluster")
    assert _condition(stack, key, "Accepted") == ("True", "Accepted")
    status, answer = await stack.request("/", data=b"still here")
    assert (status, answer) == (200, b"still here")


async def _stat_above(stack: Stack, name: str, floor: int) -> bool:
    return (await stack.envoy.stat(name) or 0) > floor


def _condition(stack: Stack, key: tuple[str, str, str], ctype: str) -> tuple[str, str] | None:
    body = stack.plane.controller.statuses.get(key) or {}
    for parent in body.get("parents", []):
        for c in parent["conditions"]:
            if c["type"] == ctype:
                return c["status"], c["reason"]
    return None


@pytest.mark.parametrize("failure", ["down", "slow"])
async def test_mirror_down_or_slow_leaves_client_unchanged(tmp_path: Path, failure: str) -> None:
    # "slow": the mirror answers after 30 s, longer than the client session's 10 s timeout, so a
    # client that waited for the mirror even once would fail; no stopwatch needed.
    options = {"delay": 30.0} if failure == "slow" else {}
    s = await start_stack(tmp_path, mirror_options=options)
    try:
        (policy,) = await s.mirror_policies()
        failed = f"cluster.{policy['cluster']}.upstream_cx_connect_fail"
        before = await s.envoy.stat(failed) or 0
        if failure == "down":
            await s.echos["pipy-mirror"].runner.cleanup()
        for i in range(10):
            status, answer = await s.request(f"/{failure}/{i}", data=b"payload")
            assert (status, answer) == (200, b"payload")
        if failure == "slow":  # the mirror got every copy
            await wait_until(lambda: len(s.echos["pipy-mirror"].log.paths()) >= 10, timeout=30)
        else:  # Envoy did try the mirror: its connections to the mirror cluster failed
            await wait_until(lambda: _stat_above(s, failed, before), timeout=30, message=f"{failed} rising")
    finally:
        await s.exits.aclose()
