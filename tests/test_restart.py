"""Kill and restart the control plane under a real Envoy: traffic keeps flowing through Envoy's
last config, and Envoy resyncs from the restarted control plane (no restart of Envoy)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from controlplane.localenvoy import LocalEnvoy
from e2e import EchoLog, copy_local
from support import free_port, wait_until
from test_cli import spawn

GATEWAY = "server/simple-gateway"


async def _start_echo(name: str, port: int, log: EchoLog) -> aiohttp.web.AppRunner:
    from aiohttp import web

    from controlplane.echo import build_app

    runner = web.AppRunner(build_app(name=name, out=log), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_envoy_keeps_serving_while_the_control_plane_is_killed_and_resyncs_on_restart(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("gateway", "pipy", "mirror", "xds", "http", "admin")}
    folder = copy_local(tmp_path / "cfg", gateway_port=ports["gateway"], pipy_port=ports["pipy"], mirror_port=ports["mirror"])
    logs = {"pipy": EchoLog(), "pipy-mirror": EchoLog()}
    runners = [
        await _start_echo("pipy", ports["pipy"], logs["pipy"]),
        await _start_echo("pipy-mirror", ports["mirror"], logs["pipy-mirror"]),
    ]
    serve_args = ("serve", str(folder), "--xds-port", str(ports["xds"]), "--http-port", str(ports["http"]))
    plane = await spawn(*serve_args)
    envoy = LocalEnvoy(node_id="restart", gateway=GATEWAY, xds_port=ports["xds"], admin_port=ports["admin"], log_sink=lambda _: None)
    url = f"http://127.0.0.1:{ports['gateway']}"
    try:
        await envoy.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

            async def hello(i: int) -> bool:
                try:
                    async with session.post(f"{url}/n{i}", data=b"hi") as resp:
                        return resp.status == 200 and await resp.read() == b"hi"
                except aiohttp.ClientError:
                    return False

            await wait_until(lambda: hello(0), timeout=20, message="Envoy serving the seed route")

            async def connected() -> int | None:
                return await envoy.stat("control_plane.connected_state")

            assert await connected() == 1
            plane.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(plane.proc.wait(), 10)
            await wait_until(lambda: _equals(connected, 0), message="Envoy noticing the control plane is gone")
            for i in range(1, 21):  # the control plane is down: Envoy serves and mirrors from its last config
                assert await hello(i)
            await wait_until(lambda: logs["pipy-mirror"].echoed("/n20"), message="mirroring while the control plane is down")

            # While it is down, the route loses its mirror; the restarted control plane must resync Envoy.
            route = folder / "route.yaml"
            text = route.read_text()
            route.write_text(text[: text.index("    filters:")] + text[text.index("    backendRefs:") :])
            plane = await spawn(*serve_args)
            await wait_until(lambda: _equals(connected, 1), timeout=15, message="Envoy reconnecting")
            await wait_until(lambda: _no_mirror(envoy), timeout=10, message="Envoy resynced without the mirror")
            assert await hello(99)
            assert envoy.running, "Envoy was never restarted"
    finally:
        await envoy.stop()
        await plane.stop(signal.SIGKILL)
        for runner in runners:
            await runner.cleanup()


async def test_graceful_stop_closes_streams_at_once(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("gateway", "pipy", "mirror", "xds", "http", "admin")}
    folder = copy_local(tmp_path / "cfg", gateway_port=ports["gateway"], pipy_port=ports["pipy"], mirror_port=ports["mirror"])
    plane = await spawn("serve", str(folder), "--xds-port", str(ports["xds"]), "--http-port", str(ports["http"]))
    envoy = LocalEnvoy(node_id="graceful", gateway=GATEWAY, xds_port=ports["xds"], admin_port=ports["admin"], log_sink=lambda _: None)
    try:
        await envoy.start()
        await wait_until(lambda: _equals(lambda: envoy.stat("control_plane.connected_state"), 1), timeout=15)
        # Envoy never ends its ADS stream: a control plane that waited for streams to end would
        # never exit. The exit is the event waited on (generous deadline, the machine may be slow).
        plane.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(plane.proc.wait(), 60) == 0, "SIGTERM must not wait for ADS streams to end"
        assert envoy.running, "Envoy is still there, its stream was closed by the control plane"
        await wait_until(lambda: _equals(lambda: envoy.stat("control_plane.connected_state"), 0), timeout=30)
    finally:
        await envoy.stop()
        await plane.stop(signal.SIGKILL)


async def _equals(read: Callable[[], Awaitable[int | None]], expected: int) -> bool:
    return await read() == expected


async def _no_mirror(envoy: LocalEnvoy) -> bool:
    dump = await envoy.config_dump()
    return "request_mirror_policies" not in str(dump) and "dynamic_route_configs" in str(dump)
