"""What mirroring costs the client, in the data plane: a real Envoy under load, client p50 and p99
with the mirror off, on at 100 %, and on with the mirror backend down, as ratios measured in one
run against the same Envoy, backends and load generator.

    python -m benchmarks.mirror_cost [--requests 5000] [--concurrency 16]

Echo backends and the load generator are separate processes; the control plane runs here. Each
configuration gets a warm-up run that is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.xds.translator import XdsOptions

GATEWAY = "server/simple-gateway"
LOCAL = Path(__file__).resolve().parent.parent / "manifests" / "local"


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def _until_ok(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(500):
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)
    raise RuntimeError(f"{url} never answered 200")


async def _load(url: str, requests: int, concurrency: int, *options: str) -> dict[str, float]:
    """``options``: more benchmarks.loadgen flags (--body-bytes, --timeout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.loadgen", url, "--requests", str(requests), "--concurrency", str(concurrency),
        *options, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return json.loads(out)


def latency_line(name: str, r: dict[str, Any], base: dict[str, Any], width: int = 20) -> str:
    """One run's p50/p99 and their ratios to ``base`` (a run of the same benchmark), req/s, statuses."""
    return (
        f"{name:<{width}} p50 {r['p50']:6.2f} ms ({r['p50'] / base['p50']:4.2f}x)  p99 {r['p99']:6.2f} ms"
        f" ({r['p99'] / base['p99']:4.2f}x)  {r['rps']:7.0f} req/s  statuses {r['statuses']}"
    )


def _route(mirror: bool) -> str:
    text = (LOCAL / "route.yaml").read_text()
    return text if mirror else text[: text.index("    filters:")] + text[text.index("    backendRefs:") :]


@asynccontextmanager
async def served(
    folder: Path, ports: dict[str, int], listener: int, *, gateway: str = GATEWAY, node_id: str = "bench"
) -> AsyncIterator[tuple[ControlPlane, LocalEnvoy]]:
    """``folder`` served to one Envoy with one worker: its Gateway's ``listener`` port on
    ``ports["gw"]``, ADS on ``ports["xds"]``; stopped on exit. Every benchmark's stack."""
    options = XdsOptions(bind_address="127.0.0.1", port_map={listener: ports["gw"]})
    plane = ControlPlane(
        FileProvider(folder), xds_host="127.0.0.1", xds_port=ports["xds"], http_port=None, xds_options=options
    )
    await plane.start()
    envoy = LocalEnvoy(
        node_id=node_id, gateway=gateway, xds_port=ports["xds"], admin_port=0, log_sink=lambda _: None, concurrency=1
    )
    try:
        await envoy.start()
        yield plane, envoy
    finally:
        await envoy.stop()
        await plane.stop()


@asynccontextmanager
async def local_gateway(ports: dict[str, int]) -> AsyncIterator[tuple[Path, LocalEnvoy]]:
    """manifests/local on ``ports`` (gw, pipy, mirror, xds) served to one Envoy with one worker,
    the route not mirrored yet: the folder to edit, and the Envoy."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for f in ("gateway.yaml", "services.yaml"):
            text = (LOCAL / f).read_text().replace("8081", str(ports["pipy"])).replace("8082", str(ports["mirror"]))
            (folder / f).write_text(text)
        (folder / "route.yaml").write_text(_route(mirror=False))
        async with served(folder, ports, 8000) as (_, envoy):
            await _until_ok(f"http://127.0.0.1:{ports['gw']}/")
            yield folder, envoy


async def run(requests: int, concurrency: int) -> None:
    ports = {n: free_port() for n in ("gw", "pipy", "mirror", "xds")}
    backends = {
        "pipy": await _spawn("-m", "controlplane.echo", "--port", str(ports["pipy"]), "--name", "pipy"),
        "mirror": await _spawn("-m", "controlplane.echo", "--port", str(ports["mirror"]), "--name", "pipy-mirror"),
    }
    url = f"http://127.0.0.1:{ports['gw']}/"
    results: dict[str, dict[str, float]] = {}
    try:
        async with local_gateway(ports) as (folder, envoy):
            for name, mirror, mirror_up in (
                ("mirror off", False, True),
                ("mirror on 100%", True, True),
                ("mirror backend down", True, False),
            ):
                if not mirror_up and backends["mirror"].returncode is None:
                    backends["mirror"].terminate()
                    await backends["mirror"].wait()
                (folder / "route.yaml").write_text(_route(mirror))
                await _until_policy(envoy, mirror)
                await _load(url, requests // 5, concurrency)  # warm-up
                results[name] = await _load(url, requests, concurrency)
    finally:
        for proc in backends.values():
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    base = results["mirror off"]
    for name, r in results.items():
        print(latency_line(name, r, base))


async def _until_policy(envoy: LocalEnvoy, present: bool) -> None:
    for _ in range(500):
        if ("request_mirror_policies" in json.dumps(await envoy.config_dump())) == present:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("Envoy never got the route change")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.concurrency))


if __name__ == "__main__":
    main()
