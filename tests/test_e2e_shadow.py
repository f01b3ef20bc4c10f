"""Shadow testing end to end (issue 15): a real Envoy's upstream access log over gRPC ALS to the
control plane, legs paired by x-request-id and compared (docs/shadow-testing.md)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from controlplane.shadow.entries import Leg
from controlplane.shadow.hub import Diff
from controlplane.shadow.tagging import sampled
from e2e import EchoLog, Stack, fire, h2_status, service_yaml, start_stack
from support import free_port, wait_until

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


def legs(d: Diff) -> tuple[Leg, Leg]:
    """Both legs of a paired comparison."""
    assert d.primary is not None and d.mirror_leg is not None, d
    return d.primary, d.mirror_leg


def _listening(log: EchoLog) -> bool:
    return "listening on" in log._buf


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
        primary, mirror_leg = legs(d)
        assert (primary.status, mirror_leg.status, d.detail) == (200, 500, "status 200 != 500")
        assert primary.request_id == mirror_leg.request_id
        assert mirror_leg.cluster_min == "~"  # Envoy copied the mirror cluster's metadata into the entry
    finally:
        await stack.exits.aclose()


async def test_slower_mirror_is_same_with_its_latency(tmp_path: Path) -> None:
    stack = await shadow_stack(tmp_path, delay=0.3)
    try:
        for i in range(3):
            assert (await stack.request(f"/t/slow/{i}", data=b"x"))[0] == 200
        assert await compared(stack, 3) == {"same": 3}
        stats = stack.plane.comparisons.rules[(GATEWAY, ROUTE, "compared", MIRROR)]
        assert min(stats.mirror) >= 0.3 > max(stats.primary)
        metrics = stack.plane.comparisons.render().decode()
        assert (
            'mirrorplane_mirror_latency_seconds_count{gateway="server/simple-gateway",leg="mirror",'
            'route="HTTPRoute server/shadow",rule="compared"} 3.0' in metrics
        )
        assert (
            'mirrorplane_mirror_comparisons_total{gateway="server/simple-gateway",mirror="mirror/server/pipy-mirror/8080",'
            'result="same",route="HTTPRoute server/shadow",rule="compared"} 3.0' in metrics
        )
    finally:
        await stack.exits.aclose()


async def test_mirror_down_is_mirror_failed(shadow: Stack) -> None:
    await shadow.echos["pipy-mirror"].runner.cleanup()
    assert (await shadow.request("/t/down", data=b"x"))[0] == 200
    assert await compared(shadow, 1) == {"mirror_failed": 1}
    d = shadow.plane.comparisons.rules[(GATEWAY, ROUTE, "compared", MIRROR)].recent[-1]
    primary, mirror_leg = legs(d)
    assert mirror_leg.status == 0 and "upstream_connection_failure" in mirror_leg.failure
    assert primary.status == 200


async def test_mirror_timing_out_is_mirror_failed(tmp_path: Path) -> None:
    stack = await shadow_stack(tmp_path, delay=3)
    try:
        stack.write(
            "shadow.yaml", SHADOW_ROUTE.replace("    backendRefs:", "    timeouts: {request: 1s}\n    backendRefs:")
        )
        await wait_until(lambda: _timeout_set(stack), timeout=15, message="the 1 s timeout served")
        assert (await stack.request("/t/slow", data=b"x"))[0] == 200
        assert await compared(stack, 1) == {"mirror_failed": 1}
        d = stack.plane.comparisons.rules[(GATEWAY, ROUTE, "compared", MIRROR)].recent[-1]
        primary, mirror_leg = legs(d)
        # Envoy 1.40 sets no response flag on the shadow's upstream entry when the shadow's timeout
        # (the route's) fires: there is just no response code, after the timeout.
        assert mirror_leg.failure == "no response" and mirror_leg.status == 0
        assert 0.5 < mirror_leg.latency < 3  # ended by the 1 s timeout, not by the 3 s answer
    finally:
        await stack.exits.aclose()


async def _timeout_set(stack: Stack) -> bool:
    dump = await stack.envoy.config_dump()
    return '"timeout": "1s"' in __import__("json").dumps(dump)


HALF = """apiVersion: mirrorplane.io/v1alpha1
kind: MirrorPolicy
metadata: {name: half, namespace: server}
spec:
  targetRefs:  # both routes mirroring to pipy-mirror: its cluster is logged at 50 % too
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: shadow}
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: http-route-sample}
  comparison: {samplePercent: 50}
"""


async def test_a_request_not_sampled_logs_neither_leg(shadow: Stack) -> None:
    """A MirrorPolicy's comparison.samplePercent 50: an id below the threshold is logged on both
    legs, one above it on neither (Envoy's own count of entries says so)."""
    stack = shadow
    stack.write("policy.yaml", HALF)
    # The mirror cluster's threshold changes, so Envoy re-creates the cluster, which warms until
    # its (unchanged) endpoints are sent again: they are, at once, not after the initial fetch
    # timeout (15 s), so the usual deadline holds.
    await wait_until(lambda: _no_full_threshold(stack), timeout=15, message="the 50 % thresholds served")
    # Envoy sets the id of an external request itself: read the ids from the mirror's log.
    assert set(await fire(stack, ["/t/s"] * 40)) == {200}
    ids = [h["headers"]["x-request-id"] for h in stack.echos["pipy-mirror"].log.heads() if h["path"] == "/t/s"]
    assert len(ids) == 40
    kept = [i for i in ids if sampled(i, 50)]
    assert 0 < len(kept) < 40  # random UUIDs: all 40 on one side has odds 2**-39
    assert sum((await compared(stack, len(kept))).values()) == len(kept)
    # Envoy's own count of entries its filter let through: every leg of all 40 requests has
    # ended (the mirror's were counted by Envoy before the pairs above could complete).
    written = await stack.envoy.stat("access_logs.grpc_access_log.logs_written")
    assert written == stack.plane.comparisons.entries["received"]
    # ... and all of them were paired: no leg of an unsampled request waits for its other leg.
    assert len(stack.plane.comparisons.pairer) == 0


async def _no_full_threshold(stack: Stack) -> bool:
    dump = json.dumps(await stack.envoy.config_dump(include_eds=False))
    return '"below": "8000"' in dump and '"below": "~"' not in dump


async def test_restart_envoy_keeps_serving_and_counting_resumes(shadow: Stack) -> None:
    from controlplane.providers.files import FileProvider
    from controlplane.serve import ControlPlane

    old = shadow.plane
    assert (await shadow.request("/t/before", data=b"x"))[0] == 200
    assert await compared(shadow, 1) == {"same": 1}
    await old.stop()
    # Envoy keeps serving (its last config) while nothing receives its logs.
    assert set(await fire(shadow, ["/t/while-down"] * 5)) == {200}
    plane = ControlPlane(
        FileProvider(shadow.dir),
        xds_host="127.0.0.1",
        xds_port=int(old.xds_address.rpartition(":")[2]),
        xds_options=old.controller.xds_options,
        http_port=None,
    )
    await plane.start()
    shadow.plane = plane
    shadow.exits.push_async_callback(plane.stop)
    # Envoy opens a new log stream for the next entries; the new process counts from zero.
    for i in range(3):
        assert (await shadow.request(f"/t/after/{i}", data=b"x"))[0] == 200
    await wait_until(lambda: results(shadow).get("same", 0) >= 3, timeout=30, message="counting resumed")


# --- the tag table: Envoy's routes carry only the sampling threshold (docs/shadow-testing.md) ---


def _shadow_metadata(dump: Any) -> list[dict[str, Any]]:
    """Every ``mirrorplane_shadow`` metadata in a config dump (routes and clusters)."""
    found: list[dict[str, Any]] = []
    if isinstance(dump, dict):
        for key, value in dump.items():
            if key == "mirrorplane_shadow":
                found.append(value)
            else:
                found += _shadow_metadata(value)
    elif isinstance(dump, list):
        for value in dump:
            found += _shadow_metadata(value)
    return found


async def _route_metadata(stack: Stack) -> list[dict[str, Any]]:
    return _shadow_metadata(await stack.envoy.config_dump("dynamic_route_configs"))


async def test_envoys_routes_carry_neither_the_tag_nor_a_full_threshold_and_legs_still_pair(shadow: Stack) -> None:
    """The JSON tag was a third of what Envoy rebuilds on each route update, and the threshold of
    a rule sampling every id a third of the rest (docs/performance.md): the logger samples such a
    route by its name (``…/mirrored``), the receiver finds its rule by that name in the
    controller's table. Only the mirror clusters carry their thresholds."""
    dump = await shadow.envoy.config_dump("dynamic_route_configs")
    assert _shadow_metadata(dump) == [], _shadow_metadata(dump)
    assert "/mirrored" in json.dumps(dump)
    for i in range(3):
        assert (await shadow.request(f"/t/untagged/{i}", data=b"x"))[0] == 200
    assert await compared(shadow, 3) == {"same": 3}
    assert shadow.plane.comparisons.entries["untagged"] == 0


LEG_HEADER = """apiVersion: mirrorplane.io/v1alpha1
kind: MirrorPolicy
metadata: {name: legs, namespace: server}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shadow}]
  requestHeaderModifier: {set: [{name: X-Echo-Set-Header, value: "x-leg:mirror"}]}
  comparison: {headers: [HEADERS]}
"""


async def _logs_header(stack: Stack, header: str) -> bool:
    listeners = (await stack.envoy.config_dump("dynamic_listeners")).get("configs", [])
    return all(f'"{header}"' in json.dumps(lst.get("active_state")) for lst in listeners) and bool(listeners)


async def test_a_rules_changed_comparison_headers_apply_to_new_requests(shadow: Stack) -> None:
    """The echo answers the header X-Echo-Set-Header asks for; the mirror leg's request says
    ``x-leg: mirror``, the primary's ``x-leg: primary``. Compared only once the rule says so: the
    rule's tag comes from the table the controller publishes with each translation."""
    stack = shadow
    stack.write("legs.yaml", LEG_HEADER.replace("HEADERS", "content-type"))
    await wait_until(lambda: _mirrors_set_the_header(stack), timeout=15, message="the mirror's header served")
    for i in range(3):
        status, _ = await stack.request(f"/t/legs/{i}", data=b"x", headers={"X-Echo-Set-Header": "x-leg:primary"})
        assert status == 200
    assert await compared(stack, 3) == {"same": 3}
    stack.write("legs.yaml", LEG_HEADER.replace("HEADERS", "content-type, x-leg"))
    await wait_until(lambda: _logs_header(stack, "x-leg"), timeout=15, message="x-leg logged")
    # New connections: one opened before the listener changed keeps its old logger while it drains.
    async with httpx.AsyncClient() as client:
        for i in range(3):
            answer = await client.post(
                f"{stack.url}/t/legs/2-{i}", content=b"x", headers={"X-Echo-Set-Header": "x-leg:primary"}
            )
            assert answer.status_code == 200
    assert await compared(stack, 6) == {"same": 3, "headers_differ": 3}
    d = stack.plane.comparisons.rules[(GATEWAY, ROUTE, "compared", MIRROR)].recent[-1]
    assert "x-leg" in d.detail, d.detail


async def _mirrors_set_the_header(stack: Stack) -> bool:
    return "x-leg:mirror" in json.dumps(await stack.envoy.config_dump("dynamic_route_configs"))


GATED_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: gated, namespace: server}
spec:
  parentRefs: [{name: simple-gateway, port: 8000}]
  rules:
  - name: held
    matches: [{path: {type: PathPrefix, value: /g/}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: MIRROR_SERVICE, port: 8080}}
    backendRefs: [{name: gated, port: 8080}]
    timeouts: {request: 120s}
"""


async def _gated_mirrors(stack: Stack, want: str) -> bool:
    """Whether Envoy mirrors the gated route's requests to the cluster ``want`` alone."""
    dump = await stack.envoy.config_dump("dynamic_route_configs")
    return {want} == {
        p["cluster"]
        for cfg in dump.get("configs", [])
        for vh in cfg.get("route_config", {}).get("virtual_hosts", [])
        for r in vh.get("routes", [])
        if r.get("name", "").startswith("httproute/server/gated/")
        for p in r.get("route", {}).get("request_mirror_policies", [])
    }


async def test_a_request_served_across_a_mirror_backend_change_is_paired_with_its_old_mirror(
    tmp_path: Path,
) -> None:
    """The tag table changes when a version is installed; a request Envoy routed under the old
    one is logged later. Here its primary answers only once Envoy holds the new mirror backend:
    the receiver reads it with the table it superseded, whose mirror logged the request's other
    leg, so the pair is compared, not its mirror leg counted `unexpected` (docs/shadow-testing.md,
    "The tag table")."""
    stack = await shadow_stack(tmp_path)
    try:
        release = asyncio.Event()

        async def held(request: web.Request) -> web.Response:
            await request.read()
            await release.wait()
            return web.Response(text="x")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", held)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stack.exits.push_async_callback(runner.cleanup)
        second = await stack.add_echo("pipy-mirror-2")
        stack.write("gated.yaml", service_yaml("gated", port) + service_yaml("pipy-mirror-2", second.port))
        stack.write("gated-route.yaml", GATED_ROUTE.replace("MIRROR_SERVICE", "pipy-mirror"))
        await wait_until(lambda: _gated_mirrors(stack, MIRROR), timeout=15, message="/g/ mirrored to pipy-mirror")

        client = httpx.AsyncClient(timeout=None)  # the request lasts as long as the change takes
        stack.exits.push_async_callback(client.aclose)
        request = asyncio.create_task(client.post(f"{stack.url}/g/across", content=b"x"))
        mirror_log = stack.echos["pipy-mirror"].log
        await wait_until(
            lambda: any(h["path"] == "/g/across" for h in mirror_log.heads()), timeout=15, message="mirrored"
        )
        new_mirror = "mirror/server/pipy-mirror-2/8080"
        stack.write("gated-route.yaml", GATED_ROUTE.replace("MIRROR_SERVICE", "pipy-mirror-2"))
        await wait_until(lambda: _gated_mirrors(stack, new_mirror), timeout=15, message="the new mirror served")
        release.set()
        assert (await request).status_code == 200

        comparisons = stack.plane.comparisons
        key = (GATEWAY, "HTTPRoute server/gated", "held", MIRROR)
        await wait_until(lambda: key in comparisons.rules, timeout=15, message="the request compared")
        assert sum(comparisons.rules[key].results.values()) == 1
        assert comparisons.entries["unexpected"] == 0 and len(comparisons.pairer) == 0
    finally:
        await stack.exits.aclose()


async def test_collect_pairs_when_the_tags_are_in_the_routes(tmp_path: Path) -> None:
    """`mirrorplane collect` runs without the controller's table: with --shadow-tags-in-routes
    (XdsOptions.shadow_tags_in_routes) each mirrored route carries its tag, and the entries
    bring it to collect."""
    from support import free_port

    grpc_port, http_port = free_port(), free_port()
    collect = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controlplane.cli", "collect", "--port", str(grpc_port), "--http-port", str(http_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    metrics = f"http://127.0.0.1:{http_port}/metrics"

    async def answers(url: str) -> bool:
        async with httpx.AsyncClient() as client:
            return (await client.get(url)).status_code == 200

    try:
        # Up before Envoy logs its first entry (the stack's readiness probe).
        await wait_until(lambda: answers(f"http://127.0.0.1:{http_port}/healthz"), timeout=30, message="collect up")
        stack = await start_stack(
            tmp_path,
            xds_options={"shadow_tags_in_routes": True},
            envoy_options={"als_address": ("127.0.0.1", grpc_port)},
        )
        try:
            stack.write("shadow.yaml", SHADOW_ROUTE)
            await wait_until(lambda: _routed(stack), timeout=15, message="the /t/ route served")
            metadata = await _route_metadata(stack)
            assert metadata and all({"below", "tag"} == set(m) for m in metadata), metadata
            for i in range(3):
                assert (await stack.request(f"/t/collected/{i}", data=b"x"))[0] == 200
            same = (
                'mirrorplane_mirror_comparisons_total{gateway="server/simple-gateway",mirror="mirror/server/pipy-mirror/8080",'
                'result="same",route="HTTPRoute server/shadow",rule="compared"} 3.0'
            )

            async def counted() -> bool:
                async with httpx.AsyncClient() as client:
                    return same in (await client.get(metrics)).text

            await wait_until(counted, timeout=30, message="3 pairs compared by collect")
            assert stack.plane.comparisons.entries["received"] == 0  # the logs went to collect alone
        finally:
            await stack.exits.aclose()
    finally:
        collect.terminate()
        await collect.wait()


SHADOW_API = "mirrorplane.shadow.v1.Shadow"


async def _run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_diff_cli_and_grpcurl_show_counts_and_differing_pairs(tmp_path: Path) -> None:
    from admin_support import grpcurl, grpcurl_argv, target

    stack = await shadow_stack(tmp_path, status=500)
    try:
        assert (await stack.request("/t/v2-only", data=b"x"))[0] == 200
        assert await compared(stack, 1) == {"status_differs": 1}
        server = target(stack)
        code, out, err = await _run(
            sys.executable, "-m", "controlplane.cli", "diff", "--server", server, "--route", "server/shadow"
        )
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:5] == ["GATEWAY", "ROUTE", "RULE", "MIRROR", "PAIRS"]
        assert lines[1].split()[:13] == [
            GATEWAY,
            "HTTPRoute",
            "server/shadow",
            "compared",
            MIRROR,
            "1",
            "0",
            "1",
            "0",
            "0",
            "0",
            "0",
            "100%",
        ]
        assert "status_differs" in out and "POST /t/v2-only" in out and "status 200 != 500" in out
        # -o json is the value grpcurl prints for the same call (through reflection, no .proto file).
        code, as_json, err = await _run(
            sys.executable,
            "-m",
            "controlplane.cli",
            "diff",
            "--server",
            server,
            "--route",
            "server/shadow",
            "-o",
            "json",
        )
        assert code == 0, err
        code, by_grpcurl, err = await grpcurl(server, f"{SHADOW_API}/GetComparisons", data={"route": "server/shadow"})
        assert code == 0, err
        assert json.loads(as_json)["rules"] == json.loads(by_grpcurl)["rules"]
        [rule] = json.loads(by_grpcurl)["rules"]
        [pair] = rule["recent"]
        assert (pair["primary"]["status"], pair["mirror_leg"]["status"], pair["method"], pair["path"]) == (
            200,
            500,
            "POST",
            "/t/v2-only",
        )

        # The streaming method: each differing pair as it is found.
        watch = await asyncio.create_subprocess_exec(
            *grpcurl_argv(server, f"{SHADOW_API}/WatchDiffs", data={"gateway": GATEWAY}), stdout=asyncio.subprocess.PIPE
        )
        try:
            await wait_until(lambda: len(stack.plane.comparisons.watchers) == 1, timeout=15, message="grpcurl watching")
            assert (await stack.request("/t/watched", data=b"x"))[0] == 200
            text = ""
            assert watch.stdout is not None  # stdout=PIPE
            while not text.rstrip().endswith("}") or text.count("{") != text.count("}"):
                text += (await asyncio.wait_for(watch.stdout.readline(), 30)).decode()
            watched = json.loads(text)
            assert (watched["path"], watched["result"], watched["mirror_leg"]["status"]) == (
                "/t/watched",
                "status_differs",
                500,
            )
        finally:
            watch.kill()
            await watch.wait()
    finally:
        await stack.exits.aclose()


GRPC_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: grpc, namespace: server}
spec:
  parentRefs: [{name: simple-gateway, port: 8000}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: grpc-mirror, port: 8080}}
    backendRefs: [{name: grpc-primary, port: 8080}]
"""


async def test_grpc_status_different_is_status_differs(stack: Stack) -> None:
    """gRPC through an HTTPRoute to h2c backends (GRPCRoute is another branch's): both legs answer
    HTTP 200, the mirror with grpc-status 13 (INTERNAL) in its trailers."""
    from controlplane.echo import run_echo
    from e2e import service_yaml

    ports: dict[str, int] = {}
    tasks = []
    for name, status in (("grpc-primary", None), ("grpc-mirror", 500)):
        log = EchoLog()
        tasks.append(asyncio.create_task(run_echo(0, name, grpc_port=0, out=log, status=status)))
        await wait_until(functools.partial(_listening, log), timeout=15, message=f"{name} up")
        grpc_port = re.search(r"listening grpc on \S+:(\d+)", log._buf)
        assert grpc_port is not None, log._buf
        ports[name] = int(grpc_port.group(1))
    try:
        stack.write(
            "grpc.yaml",
            service_yaml("grpc-primary", ports["grpc-primary"], app_protocol="kubernetes.io/h2c")
            + service_yaml("grpc-mirror", ports["grpc-mirror"], app_protocol="kubernetes.io/h2c")
            + "---\n"
            + GRPC_ROUTE,
        )
        await wait_until(lambda: _mirrors(stack, 2), timeout=15, message="the gRPC route served")
        # The policy can arrive while the mirror's cluster still warms; a copy sent then finds no host.
        await wait_until(
            lambda: _cluster_has_healthy_host(stack, "mirror/server/grpc-mirror/8080"),
            timeout=30,
            message="the mirror cluster warmed",
        )
        # A request of unknown length is not mirrored (docs/mirroring.md: the mirror body bound)
        # and gRPC libraries send none, so this unary call is made by hand, with its length: one
        # gRPC frame (5 bytes of header) holding an empty EchoRequest.
        grpc = [("content-type", "application/grpc"), ("te", "trailers"), ("content-length", "5")]
        path = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo"
        assert await h2_status(stack.port, "POST", path, grpc, b"\x00" * 5) == 200
        route = "HTTPRoute server/grpc"
        await wait_until(
            lambda: (GATEWAY, route, "0", "mirror/server/grpc-mirror/8080") in stack.plane.comparisons.rules, timeout=30
        )
        stats = stack.plane.comparisons.rules[(GATEWAY, route, "0", "mirror/server/grpc-mirror/8080")]
        assert dict(stats.results) == {"status_differs": 1}, [
            (d.result, d.detail, d.mirror_leg and (d.mirror_leg.status, d.mirror_leg.latency, d.mirror_leg.size))
            for d in stats.recent
        ]
        d = stats.recent[-1]
        primary, mirror_leg = legs(d)
        assert (primary.status, mirror_leg.status) == (200, 200)
        assert (primary.grpc_status, mirror_leg.grpc_status, d.detail) == ("0", "13", "grpc-status 0 != 13")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _cluster_has_healthy_host(stack: Stack, cluster: str) -> bool:
    """The cluster has a healthy host and no cluster is warming: a cluster that is being replaced
    (its metadata or filters changed) may reset a copy sent meanwhile, seen as mirror_failed."""
    if (await stack.envoy.config_dump("dynamic_warming_clusters")).get("configs"):
        return False
    clusters = await stack.envoy.admin_get("/clusters")
    return any(
        line.startswith(f"{cluster}::") and line.endswith("::health_flags::healthy") for line in clusters.splitlines()
    )


async def _mirrors(stack: Stack, n: int) -> bool:
    return len(await stack.mirror_policies()) == n


# --- body comparison (MirrorPolicy comparison.body): Envoy's Lua upstream filter sends bodies ---

BODY_ROUTE = "HTTPRoute server/bodies"
BODY_MIRROR = "mirror/server/body-mirror/8080"
BODIES = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bodies, namespace: server}
spec:
  parentRefs: [{name: simple-gateway, port: 8000}]
  rules:
  - name: bodies
    matches: [{path: {type: PathPrefix, value: /b/}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: body-mirror, port: 8080}}
    backendRefs: [{name: body-primary, port: 8080}]
"""
BODY_POLICY = """apiVersion: mirrorplane.io/v1alpha1
kind: MirrorPolicy
metadata: {name: bodies, namespace: server}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: bodies}]
  comparison: {samplePercent: SAMPLE, body: {enabled: true, maxBytes: 64}, ignoreJSONPaths: ["$.timestamp"]}
"""


async def body_backends(stack: Stack) -> dict[str, list[str]]:
    """Two backends answering the request's body (or path): /b/reversed/ reversed on the mirror (same size,
    other bytes), /b/json/ as JSON with a timestamp field that differs (in size too). Returns the
    request ids each saw."""
    from aiohttp import web

    from controlplane.ports import free_port
    from e2e import service_yaml

    seen: dict[str, list[str]] = {}
    text = ""
    for name in ("body-primary", "body-mirror"):
        ids = seen[name] = []

        async def answer(
            request: web.Request, mirror: bool = name == "body-mirror", ids: list[str] = ids
        ) -> web.Response:
            ids.append(request.headers.get("x-request-id", ""))
            body = await request.read() or request.path.encode()  # a GET's answer: its path
            kind = request.path.split("/")[2]
            if kind == "json":
                stamp = f"{'mirror' if mirror else 'primary'}-{asyncio.get_running_loop().time()}"
                return web.json_response({"echo": body.decode(), "timestamp": stamp})
            return web.Response(body=body[::-1] if mirror and kind == "reversed" else body)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stack.exits.push_async_callback(runner.cleanup)
        text += service_yaml(name, port)
    stack.write("bodies.yaml", text + "---\n" + BODIES)
    await wait_until(lambda: _mirrors(stack, 2), timeout=15, message="the /b/ route served")
    await wait_until(lambda: _cluster_has_healthy_host(stack, BODY_MIRROR), timeout=30, message="mirror cluster up")
    return seen


async def apply_body_policy(stack: Stack, sample: int) -> None:
    stack.write("body-policy.yaml", BODY_POLICY.replace("SAMPLE", str(sample)))
    # The clusters change (the filter is added), so Envoy re-creates and warms them.
    await wait_until(lambda: _body_capture_served(stack), timeout=30, message="the body filter served")
    await wait_until(lambda: _cluster_has_healthy_host(stack, BODY_MIRROR), timeout=30, message="mirror cluster up")
    await wait_until(
        lambda: _cluster_has_healthy_host(stack, "server/body-primary/8080"), timeout=30, message="primary up"
    )


async def _body_capture_served(stack: Stack) -> bool:
    """The routes enable the filter, and both clusters in use (active, none warming) have it: a
    request sent while a new cluster warms would go to the old one, which sends no body."""
    routes = json.dumps(await stack.envoy.config_dump("dynamic_route_configs"))
    warming = (await stack.envoy.config_dump("dynamic_warming_clusters")).get("configs", [])
    active = (await stack.envoy.config_dump("dynamic_active_clusters")).get("configs", [])
    with_filter = {c["cluster"]["name"] for c in active if "mirrorplane.body" in json.dumps(c)}
    return "LuaPerRoute" in routes and not warming and {BODY_MIRROR, "server/body-primary/8080"} <= with_filter


def body_results(stack: Stack) -> dict[str, int]:
    stats = stack.plane.comparisons.rules.get((GATEWAY, BODY_ROUTE, "bodies", BODY_MIRROR))
    return dict(stats.results) if stats else {}


async def body_compared(stack: Stack, n: int) -> dict[str, int]:
    await wait_until(lambda: sum(body_results(stack).values()) >= n, timeout=30, message=f"{n} comparisons")
    return body_results(stack)


async def test_body_comparison_tells_same_size_bodies_apart(stack: Stack) -> None:
    """A mirror answering other bytes of the same size: `same` by size alone, `body_differs` once
    the rule compares bodies; identical bodies are `same`; JSON differing only in an ignored path
    is `same` (though the sizes differ); a body over maxBytes is compared by size only."""
    await body_backends(stack)
    assert (await stack.request("/b/reversed/0", data=b"hello 0"))[0] == 200
    assert await body_compared(stack, 1) == {"same": 1}

    await apply_body_policy(stack, 100)
    status, answer = await stack.request("/b/reversed/1", data=b"hello 1")
    assert (status, answer) == (200, b"hello 1")  # the client gets the primary's answer, as ever
    got = await body_compared(stack, 2)
    assert got == {"same": 1, "body_differs": 1}, stack.plane.comparisons.entries  # body_missing, if any
    d = stack.plane.comparisons.rules[(GATEWAY, BODY_ROUTE, "bodies", BODY_MIRROR)].recent[-1]
    primary, mirror_leg = legs(d)
    assert (primary.excerpt, mirror_leg.excerpt) == ("hello 1", "1 olleh")
    assert primary.digest == hashlib.sha256(b"hello 1").hexdigest() != mirror_leg.digest
    assert d.detail.startswith("digest ") and primary.size == mirror_leg.size == 7

    assert (await stack.request("/b/same/2", data=b"hello 2"))[0] == 200
    assert (await stack.request("/b/json/3", data=b"hello 3"))[0] == 200
    assert (await stack.request("/b/reversed/4", data=b"x" * 50 + b"y" * 50))[0] == 200  # 100 bytes > 64
    assert await body_compared(stack, 5) == {"same": 4, "body_differs": 1}
    entries = stack.plane.comparisons.entries
    assert entries["body_received"] == 8 and entries["body_over_limit"] == 2
    assert entries["body_missing"] == 0


async def test_bodies_of_unsampled_requests_are_neither_sent_nor_compared(stack: Stack) -> None:
    seen = await body_backends(stack)
    await apply_body_policy(stack, 50)
    before = len(seen["body-mirror"])
    assert set(await fire(stack, ["/b/reversed/s"] * 30)) == {200}
    await wait_until(lambda: len(seen["body-mirror"]) >= before + 30, timeout=15, message="30 mirrored")
    ids = seen["body-mirror"][before:]
    kept = [i for i in ids if sampled(i, 50)]
    assert 0 < len(kept) < 30
    assert await body_compared(stack, len(kept)) == {"body_differs": len(kept)}
    # Only the sampled requests' bodies came, two legs each, and all were used.
    await wait_until(lambda: stack.plane.comparisons.entries["body_received"] >= 2 * len(kept), timeout=15)
    assert stack.plane.comparisons.entries["body_received"] == 2 * len(kept)
    assert len(stack.plane.comparisons.pairer) == 0
