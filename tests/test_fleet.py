"""A simulated fleet on loopback: 1,000 ADS streams across 10 Gateways against one server.

The clients run in a child process (benchmarks.simfleet) so that they do not share the
server's event loop; convergence is read from the server's registry (an ACK of a version means
the client received it)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from benchmarks.simfleet import fleet_resources, gateway_name
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.xds.server import build_server
from controlplane.xds.tracking import NodeRegistry, StreamState
from support import free_port, wait_until

CLIENTS, GATEWAYS = 1000, 10
# Generous for a busy 2-core CI machine; benchmarks/fleet.py measures the real figure.
CONVERGE_WITHIN = 10.0


@dataclass
class Fleet:
    cache: SnapshotCache
    registry: NodeRegistry
    services: int
    endpoints: int
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once every reading client has a response of every type."""

    def publish(self, generation: int) -> None:
        for g in range(GATEWAYS):
            self.cache.set(gateway_name(g), fleet_resources(generation, services=self.services, endpoints=self.endpoints))

    def reading(self) -> list[StreamState]:
        return [s for s in self.registry.streams() if not s.node_id.endswith("-stuck")]

    def stuck(self) -> list[StreamState]:
        return [s for s in self.registry.streams() if s.node_id.endswith("-stuck")]

    def converged(self, expected: int) -> bool:
        """``expected`` reading streams, each having ACKed its Gateway's current version of every type."""
        streams = self.reading()
        if len(streams) != expected:
            return False
        for s in streams:
            versions = self.cache[s.gateway].versions()
            for type_url, version in versions.items():
                ts = s.types.get(type_url)
                if ts is None or ts.acked_version != version:
                    return False
        return True


@asynccontextmanager
async def fleet(*, delta: bool, stuck_every: int = 0, services: int = 20, endpoints: int = 1) -> AsyncIterator[Fleet]:
    cache, registry = SnapshotCache(), NodeRegistry()
    port = free_port()
    server = build_server(cache, registry, address=f"127.0.0.1:{port}")
    await server.start()
    proc = None
    drain = None
    try:
        f = Fleet(cache, registry, services, endpoints)
        f.publish(0)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.simfleet",
            "--port", str(port), "--clients", str(CLIENTS), "--gateways", str(GATEWAYS),
            "--stuck-every", str(stuck_every), *(["--delta"] if delta else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )

        async def read_lines() -> None:
            assert proc is not None and proc.stdout is not None
            async for line in proc.stdout:
                if line.startswith(b'{"ready"'):
                    f.ready.set()

        drain = asyncio.ensure_future(read_lines())
        yield f
    finally:
        if proc is not None:
            if proc.returncode is None:
                assert proc.stdin is not None  # started with stdin=PIPE
                proc.stdin.close()  # the fleet closes its streams and exits
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
        if drain is not None:
            drain.cancel()
        await server.stop(None)


async def converge(f: Fleet, expected: int) -> None:
    await wait_until(lambda: f.converged(expected), timeout=CONVERGE_WITHIN, message="fleet converged")


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_every_client_converges_on_every_version(delta):
    async with fleet(delta=delta) as f:
        await wait_until(f.ready.is_set, timeout=60, message="every client connected and served")
        await converge(f, CLIENTS)
        assert {s.gateway for s in f.registry.streams()} == {gateway_name(g) for g in range(GATEWAYS)}
        # Endpoints only; then a cluster replaced with its route (make-before-break); then
        # endpoints only again.
        for generation in (1, 2, 3):
            f.publish(generation)
            await converge(f, CLIENTS)
            assert all(s.held_clusters == frozenset() for s in f.registry.streams())
        for s in f.registry.streams():
            assert all(ts.nacks == 0 and not ts.in_flight for ts in s.types.values())
            # Listeners never changed: sent once.
            assert s.types[LISTENER].responses == 1


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_stuck_clients_do_not_hold_back_the_others(delta):
    """Every 10th client never reads (nor ACKs). Each of their streams holds at most one
    unanswered response per type (here ~100 kB of endpoints, more than a stream's HTTP/2
    window), and nothing more is queued for them however many versions follow, while every other
    client still converges on each new version."""
    async with fleet(delta=delta, stuck_every=10, endpoints=200) as f:
        reading = CLIENTS - CLIENTS // 10
        await wait_until(f.ready.is_set, timeout=60, message="every reading client served")
        await converge(f, reading)
        await wait_until(lambda: len(f.stuck()) == CLIENTS // 10, message="stuck clients connected")
        for generation in (1, 2):
            f.publish(generation)
            await converge(f, reading)
        stuck = f.stuck()
        assert len(stuck) == CLIENTS // 10  # they still hold their streams
        for s in stuck:
            # Clusters and endpoints sent (never ACKed), so routes and listeners wait.
            assert all(ts.acks == 0 for ts in s.types.values())
            assert s.types[CLUSTER].in_flight and s.types[ENDPOINT].in_flight
            assert s.types[CLUSTER].responses == s.types[ENDPOINT].responses == 1
            assert s.types[ROUTE].responses == 0
