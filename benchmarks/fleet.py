"""A simulated fleet against one control plane, on loopback: push latency and memory.

    python -m benchmarks.fleet latency [--clients 1000] [--gateways 10] [--rounds 20] [--delta]
    python -m benchmarks.fleet latency --file 100 [--clients 1000] [--rounds 20] [--delta]
    python -m benchmarks.fleet memory [--streams 1000 5000] [--delta]

The server (SnapshotCache + ADS server) runs in this process; the clients
(benchmarks.simfleet) run in child processes, one per 1,000 clients, each stream on its own
TCP connection.

latency: each round publishes a new generation of every Gateway (``cache.set``: snapshot build
included) in which every ClusterLoadAssignment changed and nothing else (the most frequent change
in a fleet), and times until each stream has received the new endpoints version (the client's receive time, on the system-wide monotonic clock). It
prints the time until *every* stream had it (median and p99 over rounds) and the per-stream
times (median and p99 over all streams of all rounds). With ``--file ROUTES`` the server is a
whole control plane serving a folder (one Gateway, ROUTES mirrored HTTPRoutes), and each round
saves an EndpointSlice file instead: the time then includes the file watcher, validation,
translation and the snapshot build.

memory: RSS of this process (the server; the driver only waits) with no stream, then with each
number of open, fully served streams.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from controlplane.ports import free_port
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.resources import ENDPOINT
from controlplane.xds.server import build_server
from controlplane.xds.tracking import NodeRegistry

from . import workload
from .procstat import rss_mib
from .simfleet import fleet_resources, gateway_name

PER_PROCESS = 1000
FILE_GATEWAY = f"{workload.NAMESPACE}/gw"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Server:
    def __init__(self, gateways: int, services: int) -> None:
        self.gateways, self.services = gateways, services
        self.cache, self.registry = SnapshotCache(), NodeRegistry()
        self.port = free_port()
        self.server = build_server(self.cache, self.registry, address=f"127.0.0.1:{self.port}")
        self.generation = 0

    def publish(self) -> dict[str, str]:
        """The next generation of every Gateway; returns Gateway → its new endpoints version."""
        self.generation += 1
        resources = fleet_resources(self.generation, services=self.services, cluster_generation=0)
        return {
            g: self.cache.set(g, resources).version_of(ENDPOINT)
            for g in (gateway_name(i) for i in range(self.gateways))
        }


class Clients:
    """Child processes running the simulated clients; their output lines go to ``on_line``."""

    def __init__(
        self, port: int, count: int, gateways: int, delta: bool, first: int = 0, gateway: str | None = None
    ) -> None:
        self.args = (port, count, gateways, delta, first)
        self.gateway = gateway
        self.procs: list[asyncio.subprocess.Process] = []
        self.readers: list[asyncio.Task] = []
        self.ready = 0
        self.on_line = lambda line: None

    async def start(self) -> None:
        port, count, gateways, delta, first = self.args
        for start in range(first, first + count, PER_PROCESS):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.simfleet",
                "--port",
                str(port),
                "--clients",
                str(min(PER_PROCESS, first + count - start)),
                "--gateways",
                str(gateways),
                "--first",
                str(start),
                *(["--delta"] if delta else []),
                *(["--gateway", self.gateway] if self.gateway else []),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.procs.append(proc)
            self.readers.append(asyncio.ensure_future(self._read(proc)))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            if line.startswith(b'{"ready"'):
                self.ready += 1
            else:
                self.on_line(line)

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.ready < len(self.procs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.ready}/{len(self.procs)} client processes served")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in self.readers:
            reader.cancel()


async def measure_round(
    fleet: Clients, registry: NodeRegistry, clients: int, change: Callable[[], object], is_new: Callable[[dict], bool]
) -> list[float]:
    """Make one change; return each stream's time from the change until it received the new
    endpoints (``is_new`` tells them apart), once every stream has also ACKed them."""
    received: dict[int, float] = {}

    def on_line(line: bytes) -> None:
        if b'"endpoints"' in line:
            event = json.loads(line)
            if is_new(event):
                received[event["c"]] = event["at"]

    fleet.on_line = on_line
    started = time.monotonic()
    change()
    while len(received) < clients:
        if time.monotonic() - started > 60:
            raise TimeoutError(f"only {len(received)}/{clients} streams got the new version in 60 s")
        await asyncio.sleep(0.005)
    # Start the next round once every ACK is in, so that rounds do not overlap.
    while any(s.types[ENDPOINT].in_flight for s in registry.streams()):
        await asyncio.sleep(0.005)
    return [at - started for at in received.values()]


def report(what: str, rounds: list[list[float]]) -> None:
    every = [max(times) for times in rounds]
    per_stream = [t for times in rounds for t in times]
    print(
        f"{what} every stream has the new endpoints: median {statistics.median(every) * 1e3:.0f} ms,"
        f" p99 {percentile(every, 99) * 1e3:.0f} ms | per stream: median"
        f" {statistics.median(per_stream) * 1e3:.0f} ms, p99 {percentile(per_stream, 99) * 1e3:.0f} ms"
    )


async def latency(clients: int, gateways: int, rounds: int, delta: bool, services: int) -> None:
    server = Server(gateways, services)
    server.publish()
    await server.server.start()
    fleet = Clients(server.port, clients, gateways, delta)
    try:
        await fleet.start()
        await fleet.wait_ready(120)
        results = []
        expected: dict[str, str] = {}  # what this round published, per Gateway
        for _ in range(rounds):
            expected.clear()
            results.append(
                await measure_round(
                    fleet,
                    server.registry,
                    clients,
                    lambda: expected.update(server.publish()),
                    lambda e: e["v"] == expected.get(gateway_name(e["c"] % gateways)),
                )
            )
        mode = "delta" if delta else "sotw"
        report(
            f"fleet push latency ({mode}, {clients} streams, {gateways} gateways, {services + 1} clusters each,"
            f" {rounds} rounds): cache.set →",
            results,
        )
    finally:
        await fleet.stop()
        await server.server.stop(None)


async def file_latency(clients: int, rounds: int, delta: bool, routes: int) -> None:
    """The whole path: an EndpointSlice file saved → FileProvider → translation → cache → ADS."""
    xds_port = free_port()
    base = [o for o in workload.objects(routes) if o["metadata"]["name"] != "svc-0-1"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "base.yaml").write_text(yaml.safe_dump_all(base))

        def save_slice(port: int) -> None:
            tmp_file = folder / ".slice.tmp"
            tmp_file.write_text(yaml.safe_dump(endpoint_slice(port)))
            tmp_file.replace(folder / "slice.yaml")

        save_slice(1000)
        plane = ControlPlane(FileProvider(folder), xds_host="127.0.0.1", xds_port=xds_port, http_port=None)
        await plane.start()
        fleet = Clients(xds_port, clients, 1, delta, gateway=FILE_GATEWAY)
        try:
            await fleet.start()
            await fleet.wait_ready(120)
            results = []
            for i in range(rounds):
                old = plane.cache[FILE_GATEWAY].version_of(ENDPOINT)

                def is_new(e: dict[str, Any], old: str = old) -> bool:
                    return e["v"] != old

                results.append(
                    await measure_round(fleet, plane.registry, clients, functools.partial(save_slice, 1001 + i), is_new)
                )
            mode = "delta" if delta else "sotw"
            report(
                f"fleet push latency ({mode}, {clients} streams, 1 gateway with {routes} mirrored routes,"
                f" {rounds} rounds): EndpointSlice file saved →",
                results,
            )
        finally:
            await fleet.stop()
            await plane.stop()


def endpoint_slice(port: int) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "svc-0-1",
            "namespace": workload.NAMESPACE,
            "labels": {"kubernetes.io/service-name": "svc-0"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"]}],
        "ports": [{"port": port}],
    }


async def memory(streams: list[int], gateways: int, delta: bool, services: int) -> None:
    server = Server(gateways, services)
    server.publish()
    await server.server.start()
    fleets: list[Clients] = []
    mode = "delta" if delta else "sotw"
    try:
        print(f"server RSS ({mode}), no stream: {rss_mib():.0f} MiB")
        opened = 0
        for total in sorted(streams):
            fleet = Clients(server.port, total - opened, gateways, delta, first=opened)
            fleets.append(fleet)
            await fleet.start()
            await fleet.wait_ready(300)
            opened = total
            while len(server.registry) < total:
                await asyncio.sleep(0.05)
            print(f"server RSS ({mode}), {len(server.registry)} open streams: {rss_mib():.0f} MiB")
    finally:
        for fleet in fleets:
            await fleet.stop()
        await server.server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--clients", type=int, default=1000)
    lat.add_argument("--rounds", type=int, default=20)
    lat.add_argument(
        "--file",
        type=int,
        metavar="ROUTES",
        help="the whole path instead of cache.set: a control plane serving a folder of ROUTES mirrored"
        " routes (one Gateway), where each round saves an EndpointSlice file",
    )
    mem = sub.add_parser("memory")
    mem.add_argument("--streams", type=int, nargs="+", default=[1000, 5000])
    for p in (lat, mem):
        p.add_argument("--gateways", type=int, default=10)
        p.add_argument("--services", type=int, default=20, help="clusters (with endpoints) per Gateway")
        p.add_argument("--delta", action="store_true", help="Delta ADS instead of State of the World")
    args = parser.parse_args()
    if args.command == "latency" and args.file:
        asyncio.run(file_latency(args.clients, args.rounds, args.delta, args.file))
    elif args.command == "latency":
        asyncio.run(latency(args.clients, args.gateways, args.rounds, args.delta, args.services))
    else:
        asyncio.run(memory(args.streams, args.gateways, args.delta, args.services))


if __name__ == "__main__":
    main()
