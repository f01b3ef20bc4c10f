"""A mirror never stalls the primary, whatever its body size (docs/mirroring.md).

Since Envoy 1.33 the mirror's copy streams alongside the request and shares its flow control, so
a mirror that reads slowly or not at all used to hold the client's upload, and the primary never
answered an 8 MiB POST. Each test here runs a real Envoy against a misbehaving mirror backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from controlplane import cli
from controlplane.echo import serve_stalled
from controlplane.metrics import Metrics
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.tracking import NodeRegistry
from e2e import Stack, digest, start_stack
from support import free_port, wait_until

MiB = 1024 * 1024
ROUTE = "httproute/server/http-route-sample/rule/0/match/0"
# Counted by the listener's stats access log, per unmirrored twin (xds/translator.py).
NOT_MIRRORED = f"mirrorplane.not_mirrored.route.{ROUTE}/not-mirrored"
# Far below the 90 s a client gave up after while the primary waited on a stuck mirror.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)


class BadMirror:
    """A mirror backend that misbehaves in one way."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.mode == "down":
            return  # nothing listens on the port
        if self.mode == "stuck":
            self._server = await serve_stalled("127.0.0.1", self.port)
            return
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.mode == "reset":
                await reader.read(4096)
                # Linger 0: close() sends a RST instead of a FIN.
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:  # slow: reads 4 KiB every 50 ms (≈80 KiB/s) and never answers
                while await reader.read(4 * 1024):
                    await asyncio.sleep(0.05)
        finally:
            writer.close()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()


async def _use_mirror(stack: Stack, port: int) -> None:
    """Point the pipy-mirror Service at ``port`` and wait until Envoy's mirror cluster uses it."""
    services = stack.dir / "services.yaml"
    stack.write(
        "services.yaml", services.read_text().replace(f"port: {stack.echos['pipy-mirror'].port}", f"port: {port}")
    )

    async def envoy_uses_it() -> bool:
        dump = await stack.envoy.config_dump("dynamic_endpoint_configs", include_eds=True)
        for cfg in dump.get("configs", []):
            cla = cfg.get("endpoint_config", {})
            if cla.get("cluster_name", "").startswith("mirror/"):
                ports = [
                    e["endpoint"]["address"]["socket_address"]["port_value"]
                    for group in cla.get("endpoints", [])
                    for e in group.get("lb_endpoints", [])
                ]
                return ports == [port]
        return False

    await wait_until(envoy_uses_it, timeout=15, message=f"Envoy's mirror cluster pointing at port {port}")


async def _not_mirrored(stack: Stack) -> int:
    return await stack.envoy.stat(NOT_MIRRORED) or 0


async def _counted_not_mirrored(stack: Stack, count: int) -> None:
    """Envoy counts a request when its stream ends, which can be just after the client has the answer."""

    async def counted() -> bool:
        return await _not_mirrored(stack) == count

    await wait_until(counted, message=f"{NOT_MIRRORED} at {count}")


async def _mirror_connections(stack: Stack) -> int:
    return await stack.envoy.stat("cluster.mirror/server/pipy-mirror/8080.upstream_cx_total") or 0


async def _more_mirror_connections(stack: Stack, than: int) -> bool:
    return await _mirror_connections(stack) > than


async def _post(url: str, body: bytes | AsyncIterator[bytes]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        async with session.post(url, data=body) as resp:
            return resp.status, await resp.read()


def _body(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"{size}/{seed}".encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize("mode", ["stuck", "slow", "reset", "down"])
async def test_large_posts_get_the_primary_answer_whatever_the_mirror_does(stack: Stack, mode: str) -> None:
    mirror = BadMirror(mode)
    await mirror.start()
    stack.exits.push_async_callback(mirror.stop)
    await _use_mirror(stack, mirror.port)
    for size in (8 * MiB, 64 * MiB):
        body = _body(size)
        assert await _post(stack.url + f"/{mode}/{size}", body) == (200, body)
    await _counted_not_mirrored(stack, 2)  # the requests over the mirror bound
    # Small requests are still mirrored (Envoy tries the mirror) and still get the primary's answer.
    tried = await _mirror_connections(stack)
    assert await _post(stack.url + "/small", b"small") == (200, b"small")
    await wait_until(
        lambda: _more_mirror_connections(stack, tried), message=f"Envoy sending the small request to the {mode} mirror"
    )


async def test_body_up_to_the_bound_is_mirrored_byte_for_byte_and_a_larger_one_is_counted(stack: Stack) -> None:
    mirror = stack.echos["pipy-mirror"].log
    at_bound, over = _body(MiB, 1), _body(MiB + 1, 2)
    assert await _post(stack.url + "/at-bound", at_bound) == (200, at_bound)
    await wait_until(lambda: any(h.get("body") == digest(at_bound) for h in mirror.heads()), message="the 1 MiB copy")

    assert await _post(stack.url + "/over-bound", over) == (200, over)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: size unknown up front
        for _ in range(4):
            yield _body(64 * 1024, 3)

    status, answer = await _post(stack.url + "/chunked", chunked())
    assert (status, answer) == (200, _body(64 * 1024, 3) * 4)
    await _counted_not_mirrored(stack, 2)
    # A later mirrored request reaching the mirror shows the two before it were not sent there.
    assert await _post(stack.url + "/marker", b"marker") == (200, b"marker")
    await wait_until(lambda: any(h["path"] == "/marker" for h in mirror.heads()), message="the marker copy")
    assert not {"/over-bound", "/chunked"} & {h["path"] for h in mirror.heads()}


async def test_raised_bound_mirrors_large_bodies_and_a_stuck_mirror_still_cannot_stall(tmp_path: Path) -> None:
    s = await start_stack(tmp_path, xds_options={"mirror_body_limit": 8 * MiB})
    try:
        mirror = BadMirror("stuck")
        await mirror.start()
        s.exits.push_async_callback(mirror.stop)
        await _use_mirror(s, mirror.port)
        body = _body(8 * MiB)
        # More copies than the mirror has connections ready: some wait for a connection while
        # their bodies arrive, which is what the route's request_body_buffer_limit is for.
        answers = await asyncio.gather(*(_post(s.url + f"/big/{i}", body) for i in range(8)))
        assert answers == [(200, body)] * 8
        assert await _not_mirrored(s) == 0
    finally:
        await s.exits.aclose()


def test_translate_and_metrics_show_the_bound_and_a_bad_one_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    local = Path(__file__).resolve().parent.parent / "manifests" / "local"
    assert cli.main(["translate", str(local), "--mirror-body-limit", "8Mi"]) == 0
    out = json.loads(capsys.readouterr().out)["gateways"]["server/simple-gateway"]
    (mirror_cluster,) = [c for c in out["clusters"] if c["name"].startswith("mirror/")]
    assert mirror_cluster["per_connection_buffer_limit_bytes"] == 8 * MiB + 64 * 1024
    routes = out["routes"][0]["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes] == [f"{ROUTE}/mirrored", f"{ROUTE}/not-mirrored"]
    # The mirrored route matches the verdict each listener writes, with the bound in it.
    assert routes[0]["match"]["headers"] == [{"name": "x-mirrorplane-body", "string_match": {"exact": "true"}}]
    (listener,) = out["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (verdict,) = manager["early_header_mutation_extensions"][0]["typed_config"]["mutations"][1:]
    assert f"<= {8 * MiB} :" in verdict["append"]["header"]["value"]
    assert "request_mirror_policies" not in routes[1]["route"]

    metrics = Metrics(NodeRegistry(), SnapshotCache(), mirror_body_limit=8 * MiB).render().decode()
    assert "\nmirrorplane_mirror_body_limit_bytes 8.388608e+06\n" in metrics

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["translate", str(local), "--mirror-body-limit", "2Gi"])
    assert exit_info.value.code == 2
    assert "--mirror-body-limit: '2Gi': at most 1Gi" in capsys.readouterr().err


async def test_stuck_http2_mirror_cannot_stall_concurrent_requests_within_the_bound(stack: Stack) -> None:
    mirror = BadMirror("stuck")
    await mirror.start()
    stack.exits.push_async_callback(mirror.stop)
    services = stack.dir / "services.yaml"
    # appProtocol h2c: Envoy speaks HTTP/2 to the mirror, which could multiplex every copy on one
    # connection whose buffer they would then share.
    text = services.read_text().replace(
        "    targetPort: 8082", "    targetPort: 8082\n    appProtocol: kubernetes.io/h2c"
    )
    assert text != services.read_text()
    stack.write("services.yaml", text)
    await _use_mirror(stack, mirror.port)
    body = _body(MiB)
    answers = await asyncio.gather(*(_post(stack.url + f"/h2/{i}", body) for i in range(16)))
    assert answers == [(200, body)] * 16
    assert await _not_mirrored(stack) == 0
