"""Shadow testing's costs (docs/shadow-testing.md), printed, never asserted:

    python -m benchmarks.shadow [--requests 2000] [--concurrency 8] [--pairs 100000]

1. The primary's client latency through a real Envoy with comparison off, on, and on with body
   comparison (a MirrorPolicy's comparison.body: Envoy's Lua upstream filter sends both legs'
   bodies to the control plane), p50/p99 ratios in one run, same Envoy, backends and load.
2. How many access log entries one receiver process (`mirrorplane collect`) handles: a client
   process streams --pairs primary+mirror entry pairs over gRPC ALS as fast as gRPC flow control
   lets it; entries/s and CPU time per compared pair are read from the receiver.
3. Memory when only one leg's entries come: 3x the pending limit of primaries with no mirror leg;
   the receiver's RSS before and after, and what it counted as dropped.
4. How many bodies one receiver process digests: a client sends --bodies body reports (what
   Envoy's Lua filter sends, 1 KiB each, 64 calls in flight); bodies/s and CPU per body.
5. Pairing alone, per entry, with tags read from a 10,000-rule tag table (what `serve` does):
   while no change is recent, and within a window after one rule's mirror changed (the
   superseded table held for late entries), in one process, best of 5 each.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from benchmarks.mirror_cost import GATEWAY, LOCAL, _load, _spawn, _until_ok, latency_line, served
from benchmarks.procstat import cpu_seconds, rss_mib
from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port
from controlplane.shadow.entries import Leg
from controlplane.shadow.hub import BODY_WAIT, Comparisons
from controlplane.shadow.pairing import DEFAULT_LIMIT
from controlplane.shadow.tagging import TAG, MirrorTag, RouteTag, body_settings
from controlplane.shadow.v1 import shadow_pb2, shadow_pb2_grpc

BATCH = 100
RATE = 200  # requests per second of the open-loop runs: a tenth of what this stack serves flat out
BODY_POLICY = """apiVersion: mirrorplane.io/v1alpha1
kind: MirrorPolicy
metadata: {name: bench-bodies, namespace: server}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: http-route-sample}]
  comparison: {body: {enabled: true}}
"""


async def primary_latency(requests: int, concurrency: int) -> None:
    ports = {n: free_port() for n in ("gw", "pipy", "mirror", "xds")}
    backends = [
        await _spawn("-m", "controlplane.echo", "--port", str(ports["pipy"]), "--name", "pipy"),
        await _spawn("-m", "controlplane.echo", "--port", str(ports["mirror"]), "--name", "pipy-mirror"),
    ]
    url = f"http://127.0.0.1:{ports['gw']}/"
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for f in ("gateway.yaml", "services.yaml", "route.yaml"):
                text = (LOCAL / f).read_text().replace("8081", str(ports["pipy"])).replace("8082", str(ports["mirror"]))
                (folder / f).write_text(text)
            async with served(folder, ports, 8000) as (plane, envoy):
                await _until_ok(url)
                for name, on in (("comparison off", False), ("comparison on", True)):
                    plane.controller.xds_options = dataclasses.replace(plane.controller.xds_options, shadow=on)
                    plane.controller._resources.clear()  # the IR is the same: rebuild anyway
                    plane.controller.refresh()
                    await _until_logging(envoy, on)
                    await _load(url, requests // 5, concurrency)  # warm-up
                    results[name] = await _load(url, requests, concurrency)
                    results[f"{name} @{RATE}/s"] = await _load(url, requests // 2, concurrency, "--rate", str(RATE))
                (folder / "policy.yaml").write_text(BODY_POLICY)
                await _until_bodies(envoy)
                await _load(url, requests // 5, concurrency)  # warm-up
                bodies0 = plane.comparisons.entries["body_received"]
                results["+ bodies"] = await _load(url, requests, concurrency)
                results[f"+ bodies @{RATE}/s"] = await _load(url, requests // 2, concurrency, "--rate", str(RATE))
                await asyncio.sleep(BODY_WAIT + 1)  # the last bodies and pairs
                compared = sum(sum(s.results.values()) for s in plane.comparisons.rules.values())
                bodies = plane.comparisons.entries["body_received"] - bodies0
                missing = plane.comparisons.entries["body_missing"]
                als = {
                    k: await envoy.stat(f"cluster.mirrorplane_als.{k}")
                    for k in (
                        "upstream_rq_timeout",
                        "upstream_rq_pending_overflow",
                        "upstream_rq_503",
                        "upstream_rq_200",
                    )
                }
    finally:
        for proc in backends:
            proc.terminate()
            await proc.wait()
    print(
        f"1. primary latency through Envoy (1 worker), {requests} POSTs of 64 bytes, {concurrency} at a time, mirror on;"
        f" then {requests // 2} started at {RATE}/s (open loop: one request's own path, not the machine saturated)"
    )
    for name, r in results.items():
        base = results["comparison off" + (f" @{RATE}/s" if name.endswith("/s") else "")]
        print("   " + latency_line(name, r, base, 24))
    print(f"   pairs compared by the control plane meanwhile: {compared}")
    print(f"   '+ bodies': {bodies} bodies received, {missing} missing after the wait; Envoy's calls: {als}")


async def _until_bodies(envoy: LocalEnvoy) -> None:
    """The body filter served, and the re-created clusters warm again."""
    for _ in range(1000):
        dump = json.dumps(await envoy.config_dump())
        clusters = await envoy.admin_get("/clusters")
        healthy = {
            line.partition("::")[0] for line in clusters.splitlines() if line.endswith("::health_flags::healthy")
        }
        if "LuaPerRoute" in dump and {"server/pipy/8080", "mirror/server/pipy-mirror/8080"} <= healthy:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("Envoy never got the body filter")


async def _until_logging(envoy: LocalEnvoy, present: bool) -> None:
    for _ in range(1000):
        if ("upstream_log" in json.dumps(await envoy.config_dump())) == present:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("Envoy never got the listener change")


def _entry_pair(i: int, tag: str, primary_only: bool) -> list:
    from envoy.data.accesslog.v3 import accesslog_pb2

    rid = f"{i:08x}-0000-4000-8000-000000000000"
    out = []
    for primary in (True,) if primary_only else (True, False):
        e = accesslog_pb2.HTTPAccessLogEntry()
        e.request.request_id = rid
        e.request.path = f"/bench/{i}"
        e.common_properties.upstream_cluster = "server/pipy/8080" if primary else "mirror/server/pipy-mirror/8080"
        e.common_properties.time_to_last_upstream_rx_byte.nanos = 1_000_000
        if primary:
            e.common_properties.route_name = "httproute/server/bench/rule/0/match/0"
            e.common_properties.custom_tags[TAG] = tag
        e.response.response_code.value = 200
        e.response.response_headers["content-type"] = "application/json"
        e.response.response_headers["content-length"] = "500"
        out.append(e)
    return out


async def _send(address: str, pairs: int, primary_only: bool, offset: int) -> float:
    tag = RouteTag(
        "HTTPRoute server/bench", "0", (MirrorTag("mirror/server/pipy-mirror/8080", 100, True, ("content-type",)),)
    ).encode()

    def messages():
        for start in range(offset, offset + pairs, BATCH // 2):
            msg = als_pb2.StreamAccessLogsMessage()
            if start == offset:
                msg.identifier.node.cluster = GATEWAY
                msg.identifier.node.id = "bench"
            for i in range(start, min(start + BATCH // 2, offset + pairs)):
                msg.http_logs.log_entry.extend(_entry_pair(i, tag, primary_only))
            yield msg

    started = time.perf_counter()
    async with grpc.aio.insecure_channel(address) as ch:
        await als_pb2_grpc.AccessLogServiceStub(ch).StreamAccessLogs(messages())
    return time.perf_counter() - started


async def _receiver(address: str) -> shadow_pb2.GetComparisonsResponse:
    async with grpc.aio.insecure_channel(address) as ch:
        return await shadow_pb2_grpc.ShadowStub(ch).GetComparisons(shadow_pb2.GetComparisonsRequest(), timeout=30)


async def receiver(pairs: int) -> None:
    port, http = free_port(), free_port()
    limit = DEFAULT_LIMIT
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controlplane.cli", "collect", "--port", str(port), "--http-port", str(http),
        "--pending-limit", str(limit), "--log-level", "warning",
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        await _until_ok(f"http://127.0.0.1:{http}/healthz")
        rss0, cpu0 = rss_mib(proc.pid), cpu_seconds(proc.pid)
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.shadow", "--send", address, str(pairs), "0"
        )
        started = time.perf_counter()
        await sender.wait()
        while True:
            got = await _receiver(address)
            if got.receiver.entries.get("paired", 0) >= 2 * pairs:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(proc.pid) - cpu0
        print(
            f"2. one receiver process (`mirrorplane collect`), {pairs} pairs streamed over gRPC ALS"
            f" in messages of {BATCH} entries"
        )
        print(f"   {2 * pairs / elapsed:9.0f} entries/s  ({pairs / elapsed:.0f} pairs/s; {elapsed:.1f} s wall)")
        print(
            f"   {cpu / pairs * 1e6:9.1f} us receiver CPU per compared pair ({cpu:.1f} s CPU)"
            f"  RSS {rss0:.0f} -> {rss_mib(proc.pid):.0f} MiB"
        )
        rss1 = rss_mib(proc.pid)
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.shadow", "--send-primaries", address, str(3 * limit), str(10 * pairs)
        )
        await sender.wait()
        got = await _receiver(address)
        print(f"3. only primaries: {3 * limit} entries with no mirror leg, pending limit {limit}")
        print(
            f"   pending {got.receiver.pending}"
            f"  dropped_window_full {got.receiver.entries.get('dropped_window_full', 0)}"
            f"  RSS {rss1:.0f} -> {rss_mib(proc.pid):.0f} MiB"
        )
    finally:
        proc.terminate()
        await proc.wait()


async def _send_bodies(address: str, n: int) -> None:
    body = bytes(range(256)) * 4
    settings = "[" + body_settings(65536, ()) + "]"
    async with grpc.aio.insecure_channel(address) as ch:
        stub = shadow_pb2_grpc.BodiesStub(ch)

        async def one(worker: int) -> None:
            for i in range(worker, n, 64):
                report = shadow_pb2.BodyReport(
                    gateway=GATEWAY, request_id=f"{i:08x}", cluster="server/pipy/8080", body=body, settings=settings
                )
                await stub.Report(report)

        await asyncio.gather(*(one(w) for w in range(64)))


async def bodies(n: int) -> None:
    port, http = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controlplane.cli", "collect", "--port", str(port), "--http-port", str(http),
        "--log-level", "warning",
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        await _until_ok(f"http://127.0.0.1:{http}/healthz")
        rss0, cpu0 = rss_mib(proc.pid), cpu_seconds(proc.pid)
        started = time.perf_counter()
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.shadow", "--send-bodies", address, str(n), "0"
        )
        await sender.wait()
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(proc.pid) - cpu0
        got = (await _receiver(address)).receiver.entries
        print(f"4. one receiver process, {n} body reports of 1 KiB (unary gRPC calls, 64 in flight)")
        print(
            f"   {got.get('body_received', 0) / elapsed:9.0f} bodies/s ({elapsed:.1f} s wall)"
            f"  {cpu / n * 1e6:7.1f} us receiver CPU per body  RSS {rss0:.0f} -> {rss_mib(proc.pid):.0f} MiB"
            f"  (kept at most {DEFAULT_LIMIT} legs' digests)"
        )
    finally:
        proc.terminate()
        await proc.wait()


PAIRING_RULES = 10_000


def pairing(requests: int) -> None:
    import gc
    import uuid

    def tags(mirror: str) -> dict[str, RouteTag]:
        return {
            f"r{i}": RouteTag(f"HTTPRoute ns/r{i}", "0", (MirrorTag(mirror if i == 0 else "m", 100, True, ()),))
            for i in range(PAIRING_RULES)
        }

    before, after = tags("m"), tags("m")
    after["r0"] = tags("m-new")["r0"]
    ids = [str(uuid.uuid4()) for _ in range(requests)]

    def run(changed: bool) -> float:
        c = Comparisons()
        c.pairer.emit = lambda pair: None  # what is measured is pairing, not comparing
        c.set_tags({"ns/gw": before})
        if changed:
            c.set_tags({"ns/gw": after})
        legs: list[Leg] = []
        for i, rid in enumerate(ids):
            legs.append(Leg(rid, "p", True, "", "", 200, "", 10, 0.01, "", route=f"r{1 + i % (PAIRING_RULES - 1)}"))
            legs.append(Leg(rid, "m", False, "", "", 200, "", 10, 0.01, ""))
        gc.collect()
        gc.disable()
        started = time.perf_counter()
        for leg in legs:
            c.pairer.add("ns/gw", leg)
        elapsed = time.perf_counter() - started
        gc.enable()
        assert len(c.pairer) == 0 and not c.entries, c.entries
        return elapsed / len(legs) * 1e6

    steady = min(run(False) for _ in range(5))
    recent = min(run(True) for _ in range(5))
    print(f"5. pairing alone, {requests} requests (2 entries each), tags from a {PAIRING_RULES}-rule table")
    print(f"   {steady:6.2f} us per entry while no change is recent")
    print(f"   {recent:6.2f} us per entry within a window after a change ({recent / steady:.2f}x)")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] in ("--send", "--send-primaries", "--send-bodies"):  # a sender process
        _, mode, address, n, offset = sys.argv
        if mode == "--send-bodies":
            asyncio.run(_send_bodies(address, int(n)))
            return
        asyncio.run(_send(address, int(n), mode == "--send-primaries", int(offset)))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--pairs", type=int, default=100_000)
    p.add_argument("--bodies", type=int, default=20_000)
    p.add_argument("--only", choices=("latency", "receiver", "bodies", "pairing"), help="run one part only")
    args = p.parse_args()
    if args.only in (None, "latency"):
        asyncio.run(primary_latency(args.requests, args.concurrency))
    if args.only in (None, "receiver"):
        asyncio.run(receiver(args.pairs))
    if args.only in (None, "bodies"):
        asyncio.run(bodies(args.bodies))
    if args.only in (None, "pairing"):
        pairing(args.pairs)


if __name__ == "__main__":
    main()
