"""What the page costs the control plane (docs/web.md), printed, never asserted:

    python -m benchmarks.web [--seconds 20] [--browsers 10] [--pairs-per-second 200]

One control plane process (`mirrorplane serve`) serving 1,000 mirrored route rules
(benchmarks/workload.py) to 100 simulated Envoys (real ADS streams), while a sender process
streams shadow-testing log entries for one busy rule over gRPC ALS at a steady rate (every 4th
pair differs: the mirror answers 500). Phases of --seconds each, in one run:

  0. idle: no log entries, no browser
  0b. idle, --browsers browsers on the overview (their polls find nothing new)
  1. busy rule, no browser
  2. busy rule, --browsers browsers on the busy rule's page
  3. busy rule, --browsers browsers on the overview (1,000 rules, 100 Envoys)

A "browser" does what web.js does: loads the page, then every 2 s asks for the live fragment with
the generation it has (answered 204 when nothing changed). The browsers and the sender run in
their own processes; the control plane's CPU is read from /proc for its process alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import grpc
import yaml
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from controlplane.ports import free_port
from controlplane.shadow.tagging import TAG, MirrorTag, RouteTag

from . import workload
from .mirror_cost import _until_ok
from .procstat import cpu_seconds

GATEWAY = f"{workload.NAMESPACE}/gw"
ROUTE = f"HTTPRoute {workload.NAMESPACE}/route-0"
PRIMARY, MIRROR = f"{workload.NAMESPACE}/svc-0/8080", f"mirror/{workload.NAMESPACE}/mirror-0/8080"
POLL_SECONDS = 2.0
RULE_PAGE = "/rule?" + urlencode({"gateway": GATEWAY, "route": ROUTE, "rule": "0"})


# -- the sender process -------------------------------------------------------------------------


def _pair(i: int, tag: str) -> list[accesslog_pb2.HTTPAccessLogEntry]:
    differs = i % 4 == 0
    out = []
    for primary in (True, False):
        e = accesslog_pb2.HTTPAccessLogEntry()
        e.request.request_id = f"{i:08x}-0000-4000-8000-000000000000"
        e.request.path = "/v2-only" if differs else f"/r0/{i}"
        e.request.request_method = 1  # GET
        e.common_properties.upstream_cluster = PRIMARY if primary else MIRROR
        e.common_properties.time_to_last_upstream_rx_byte.nanos = (1_000_000 if primary else 1_500_000) + (
            i % 7
        ) * 100_000
        if primary:
            e.common_properties.route_name = f"httproute/{workload.NAMESPACE}/route-0/rule/0/match/0"
            e.common_properties.custom_tags[TAG] = tag
        e.response.response_code.value = 500 if differs and not primary else 200
        e.response.response_headers["content-type"] = "application/json"
        e.response.response_headers["content-length"] = "500"
        out.append(e)
    return out


async def send(address: str, rate: int) -> None:
    """Stream ``rate`` pairs per second until stdin closes."""
    tag = RouteTag(ROUTE, "0", (MirrorTag(MIRROR, 100, True, ("content-type",)),)).encode()
    per_tick, tick = max(1, rate // 10), 0.1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 1) else None)

    async def messages():  # type: ignore[no-untyped-def]
        i, first, next_at = 0, True, time.monotonic()
        while not stop.is_set():
            msg = als_pb2.StreamAccessLogsMessage()
            if first:
                msg.identifier.node.cluster, msg.identifier.node.id, first = GATEWAY, "bench-sender", False
            for _ in range(per_tick):
                msg.http_logs.log_entry.extend(_pair(i, tag))
                i += 1
            yield msg
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async with grpc.aio.insecure_channel(address) as ch:
        await als_pb2_grpc.AccessLogServiceStub(ch).StreamAccessLogs(messages())


# -- the browsers process -----------------------------------------------------------------------


async def browse(base: str, path: str, browsers: int, seconds: float) -> None:
    """``browsers`` pollers like web.js for ``seconds``; prints one line: 200s, 204s, latencies."""
    got: dict[int, int] = {}
    latencies: list[float] = []

    async def one(session: aiohttp.ClientSession, offset: float) -> None:
        await asyncio.sleep(offset)  # browsers opened at different moments
        async with session.get(base + path) as r:
            await r.read()
            generation = r.headers.get("X-Generation", "")
        end = time.monotonic() + seconds - offset
        sep = "&" if "?" in path else "?"
        while time.monotonic() < end:
            await asyncio.sleep(POLL_SECONDS)
            started = time.perf_counter()
            async with session.get(f"{base}{path}{sep}fragment=1&since={generation}") as r:
                await r.read()
                latencies.append(time.perf_counter() - started)
                got[r.status] = got.get(r.status, 0) + 1
                generation = r.headers.get("X-Generation", generation)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, POLL_SECONDS * i / browsers) for i in range(browsers)))
    latencies.sort()
    p50 = statistics.median(latencies) * 1000 if latencies else 0.0
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else 0.0
    print(f"{got.get(200, 0)} {got.get(204, 0)} {p50:.1f} {p99:.1f}", flush=True)


# -- the driver ---------------------------------------------------------------------------------


async def _child(*args: str, stdout: int | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, stdin=asyncio.subprocess.PIPE, stdout=stdout
    )


async def _phase(
    name: str, pid: int, seconds: float, base: str, path: str | None, browsers: int
) -> tuple[str, float, str]:
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    polls = ""
    if path is None:
        await asyncio.sleep(seconds)
    else:
        proc = await _child(
            "benchmarks.web", "--browse", base, path, str(browsers), str(seconds), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        ok, same, p50, p99 = out.decode().split()
        polls = f"polls answered 200: {ok:>4}, 204 (nothing new): {same:>4}; poll latency p50 {p50} ms p99 {p99} ms"
    cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0)
    return name, cpu, polls


async def run(seconds: float, browsers: int, rate: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "all.yaml").write_text(yaml.safe_dump_all(workload.objects(1000)))
        xds, http = free_port(), free_port()
        plane = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controlplane.cli", "serve", str(folder),
            "--xds-port", str(xds), "--http-port", str(http),
            "--log-level", "warning",
        )  # fmt: skip
        children: list[asyncio.subprocess.Process] = []
        base = f"http://127.0.0.1:{http}"
        try:
            await _until_ok(base + "/readyz")
            children.append(
                await _child(
                    "benchmarks.simfleet",
                    "--port",
                    str(xds),
                    "--clients",
                    "100",
                    "--gateway",
                    GATEWAY,
                    stdout=asyncio.subprocess.DEVNULL,
                )
            )
            await asyncio.sleep(5)  # the streams served
            rows = [await _phase("0. idle: no log entries, no browser", plane.pid, seconds, base, None, 0)]
            rows.append(
                await _phase(f"0b. idle, {browsers} browsers on the overview", plane.pid, seconds, base, "/", browsers)
            )
            children.append(await _child("benchmarks.web", "--send", f"127.0.0.1:{xds}", str(rate)))
            await asyncio.sleep(2)
            rows.append(await _phase(f"1. busy rule ({rate} pairs/s), no browser", plane.pid, seconds, base, None, 0))
            rows.append(
                await _phase(
                    f"2. busy rule, {browsers} browsers on its page", plane.pid, seconds, base, RULE_PAGE, browsers
                )
            )
            rows.append(
                await _phase(
                    f"3. busy rule, {browsers} browsers on the overview", plane.pid, seconds, base, "/", browsers
                )
            )
        finally:
            for child in children:
                if child.stdin is not None:
                    child.stdin.close()
            for child in children:
                try:
                    await asyncio.wait_for(child.wait(), 15)
                except TimeoutError:
                    child.kill()
            plane.terminate()
            await plane.wait()
    print(f"control plane CPU (1,000 mirrored rules, 100 ADS streams), {seconds:g} s per phase, one run:")
    floors = {"0b": ("0", rows[0][1]), "2": ("1", rows[2][1]), "3": ("1", rows[2][1])}  # the same load, no browser
    for name, cpu, polls in rows:
        phase = name.split(".")[0]
        floor_name, floor = floors.get(phase, ("", 0.0))
        ratio = f"{cpu / floor:5.2f}x phase {floor_name}" if floor else ""
        print(f"  {name:<48} {cpu * 100:6.1f}% of a core  {ratio}")
        if polls:
            print(f"  {'':<48} {polls}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--send":
        asyncio.run(send(sys.argv[2], int(sys.argv[3])))
        return
    if len(sys.argv) == 6 and sys.argv[1] == "--browse":
        asyncio.run(browse(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--browsers", type=int, default=10)
    p.add_argument("--pairs-per-second", type=int, default=200)
    args = p.parse_args()
    asyncio.run(run(args.seconds, args.browsers, args.pairs_per_second))


if __name__ == "__main__":
    main()
