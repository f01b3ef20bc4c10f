"""The seed scenario end to end: YAML folder → control plane → ADS → a real Envoy → real echo
backends. Every change is made the way a user makes it: by editing a file."""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import pytest

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
    uri = f"/off?id={uuid.uuid4()}"
    assert (await stack.request(uri))[0] == 200
    with pytest.raises(TimeoutError):
        await wait_until(lambda: mirror.echoed(uri), timeout=1.0)

    stack.write("route.yaml", ROUTE_HEAD + rule("/", mirror_filter("pipy-mirror")))
    await wait_until(lambda: _has_policies(stack), message="Envoy receiving the mirror policy")
    uri = f"/on?id={uuid.uuid4()}"
    assert (await stack.request(uri))[0] == 200
    await wait_until(lambda: mirror.echoed(uri), message="mirroring after adding the filter")
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
    for uri in uris:
        await wait_until(lambda: stack.echos["pipy-mirror"].log.echoed(uri) and audit.log.echoed(uri))


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
    n = 500
    batch = uuid.uuid4().hex
    uris = [f"/pct?batch={batch}&i={i}" for i in range(n)]
    assert await fire(stack, uris) == [200] * n
    mirror = stack.echos["pipy-mirror"].log
    sigma = math.sqrt(n * p * (1 - p))
    low, high = n * p - 3 * sigma, n * p + 3 * sigma

    def count() -> int:
        return sum(1 for path in mirror.paths() if f"batch={batch}" in path)

    # Mirrored copies may trail the responses slightly: wait for the count to enter the band.
    try:
        await wait_until(lambda: count() >= low, timeout=5)
    except TimeoutError:
        pass
    assert low <= count() <= high, f"{count()} mirrored of {n}, expected {low:.1f}..{high:.1f}"


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


def _condition(stack: Stack, key: tuple[str, str, str], ctype: str) -> tuple[str, str] | None:
    body = stack.plane.controller.statuses.get(key) or {}
    for parent in body.get("parents", []):
        for c in parent["conditions"]:
            if c["type"] == ctype:
                return c["status"], c["reason"]
    return None


@pytest.mark.parametrize("failure", ["down", "slow"])
async def test_mirror_down_or_slow_leaves_client_unchanged(tmp_path: Path, failure: str) -> None:
    options = {"delay": 2.0} if failure == "slow" else {}
    s = await start_stack(tmp_path, mirror_options=options)
    try:
        if failure == "down":
            await s.echos["pipy-mirror"].runner.cleanup()
        started = time.monotonic()
        for i in range(10):
            status, answer = await s.request(f"/{failure}/{i}", data=b"payload")
            assert (status, answer) == (200, b"payload")
        elapsed = time.monotonic() - started
        # Ten sequential requests against a mirror that takes 2 s each: if the client waited for
        # the mirror even once, this would exceed 2 s.
        assert elapsed < 2.0, f"client waited for the mirror: {elapsed:.2f}s for 10 requests"
        if failure == "slow":
            await wait_until(lambda: len(s.echos["pipy-mirror"].log.paths()) >= 10, timeout=10)
    finally:
        await s.exits.aclose()
