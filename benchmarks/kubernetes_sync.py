"""The Kubernetes provider against the fake API server (tests/fakeapi): initial sync of N
HTTPRoutes (list + wrap, then the first translation), and the time from `kubectl apply` of a new
route to a real Envoy serving it.

    python -m benchmarks.kubernetes_sync [--routes 1000 10000] [--rounds 10]

The objects go into the fake server defaulted by the CRD schemas, as a real API server stores
them. The fake runs in a process of its own (``python -m fakeapi``), so its work is not counted
as the control plane's. Printed, not asserted: it still runs on the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from controlplane.echo import build_app
from controlplane.localenvoy import LocalEnvoy
from controlplane.ports import free_port
from controlplane.providers.kubernetes import KubernetesProvider
from controlplane.serve import ControlPlane
from controlplane.xds.resources import ROUTE
from controlplane.xds.translator import XdsOptions

from .fakeapi_process import FakeApiProcess, write_seed
from .push_latency import GATEWAY
from .served import until_served
from .workload import NAMESPACE, objects, route


def _seed(tmp: str, docs: list[dict[str, Any]]) -> tuple[Path, Path]:
    """The seed file (the fake validates and defaults it, as the API server would) and where the
    kubeconfig goes."""
    seed = Path(tmp) / "seed.jsonl"
    write_seed(seed, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, *docs])
    return seed, Path(tmp) / "kubeconfig"


async def initial_sync(n_routes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        seed, kubeconfig = _seed(tmp, objects(n_routes))
        async with FakeApiProcess(seed, kubeconfig):
            await _initial_sync(n_routes, kubeconfig)


async def _initial_sync(n_routes: int, kubeconfig: Path) -> None:
    provider = KubernetesProvider(kubeconfig)
    plane = ControlPlane(provider, xds_host="127.0.0.1", xds_port=free_port(), http_port=None)
    started = time.perf_counter()
    store = await provider.start()
    listed = time.perf_counter()
    plane.controller.update(store)
    done = time.perf_counter()
    await provider.close()
    routes = len(plane.cache[GATEWAY][ROUTE])
    print(
        f"routes={n_routes} | initial sync: list+wrap {(listed - started) * 1e3:.0f} ms, "
        f"first translation {(done - listed) * 1e3:.0f} ms, total {(done - started) * 1e3:.0f} ms "
        f"({len(store.httproutes)} routes in the store, {routes} route configurations)"
    )


async def apply_to_served(n_routes: int, rounds: int) -> None:
    echo_port, gw_port, xds_port = free_port(), free_port(), free_port()
    runner = web.AppRunner(build_app(name="backend", out=open("/dev/null", "w")), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", echo_port).start()
    with tempfile.TemporaryDirectory() as tmp:
        seed, kubeconfig = _seed(tmp, objects(n_routes, endpoint_port=echo_port))
        async with FakeApiProcess(seed, kubeconfig):
            plane = ControlPlane(
                KubernetesProvider(kubeconfig),
                xds_host="127.0.0.1",
                xds_port=xds_port,
                http_port=None,
                xds_options=XdsOptions(bind_address="127.0.0.1", port_map={8000: gw_port}),
            )
            await plane.start()
            envoy = LocalEnvoy(
                node_id="bench", gateway=GATEWAY, xds_port=xds_port, admin_port=0, log_sink=lambda _: None
            )
            await envoy.start()
            url = f"http://127.0.0.1:{gw_port}"
            total, kubectl_only = [], []
            async with aiohttp.ClientSession() as session:
                await until_served(session, f"{url}/r0", "host-0.example.com", time.perf_counter())
                for i in range(rounds):
                    probe = route(n_routes + 1, tag=f"-k8s-{i}")
                    probe["metadata"]["name"] = f"probe-{i}"
                    started = time.perf_counter()
                    proc = await asyncio.create_subprocess_exec(
                        "kubectl",
                        f"--kubeconfig={kubeconfig}",
                        "apply",
                        "--validate=false",
                        "-f",
                        "-",
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.DEVNULL,
                    )
                    await proc.communicate(yaml.safe_dump(probe).encode())
                    applied = time.perf_counter()
                    total.append(
                        await until_served(
                            session, f"{url}/r{n_routes + 1}-k8s-{i}", f"host-{n_routes + 1}.example.com", started
                        )
                    )
                    kubectl_only.append(applied - started)
            await envoy.stop()
            await plane.stop()
    await runner.cleanup()
    tm, km = statistics.median(total), statistics.median(kubectl_only)
    print(
        f"routes={n_routes} rounds={rounds} | kubectl apply → Envoy serving: median {tm * 1e3:.0f} ms "
        f"(max {max(total) * 1e3:.0f}), of which the kubectl process {km * 1e3:.0f} ms; "
        f"API write → served ≈ {(tm - km) * 1e3:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for n in args.routes:
        asyncio.run(initial_sync(n))
    asyncio.run(apply_to_served(args.routes[0], args.rounds))


if __name__ == "__main__":
    main()
