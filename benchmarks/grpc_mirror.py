"""What mirroring a GRPCRoute costs the client: unary gRPC calls through a real Envoy, RPCs per
second and p50/p99 with the mirror off and on at 100 %, as ratios measured in one run against the
same Envoy, gRPC echo backends and load generator.

    python -m benchmarks.grpc_mirror [--calls 3000] [--concurrency 16]

The echo backends (``mirrorplane echo --grpc-port``) and the load generator (this module with
``--load``) are separate processes; the control plane runs here. Each configuration gets a
warm-up run that is not counted. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.mirror_cost import _spawn, _until_policy, served
from controlplane.ports import free_port

GATEWAY = "server/grpc-bench"
ECHO = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo"
CONFIG = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: mirrorplane}}
spec: {{controllerName: mirrorplane.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: grpc-bench, namespace: server}}
spec:
  gatewayClassName: mirrorplane
  listeners: [{{name: grpc, protocol: HTTP, port: 8001}}]
---
apiVersion: v1
kind: Service
metadata: {{name: pipy, namespace: server}}
spec: {{ports: [{{port: 9090}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: pipy, namespace: server, labels: {{kubernetes.io/service-name: pipy}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {pipy}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: pipy-mirror, namespace: server}}
spec: {{ports: [{{port: 9090}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: pipy-mirror, namespace: server, labels: {{kubernetes.io/service-name: pipy-mirror}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {mirror}}}]
"""
MIRROR = """    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: pipy-mirror, port: 9090}
"""


def _route(mirror: bool) -> str:
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: bench, namespace: server}}
spec:
  parentRefs: [{{name: grpc-bench}}]
  rules:
  - matches:
    - method: {{service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho}}
{MIRROR if mirror else ""}    backendRefs:
    - {{name: pipy, port: 9090}}
"""


async def load(target: str, calls: int, concurrency: int) -> dict[str, object]:
    """The load generator (run in its own process): ``calls`` unary Echo calls, ``concurrency``
    at a time, on one HTTP/2 connection per worker."""
    import grpc

    latencies: list[float] = []
    codes: dict[str, int] = {}
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            call = channel.unary_unary(ECHO, request_serializer=None, response_deserializer=None)
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    await call(b"", timeout=10)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                latencies.append((time.perf_counter() - t0) * 1000)
                codes[code] = codes.get(code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "codes": codes,
    }


async def _load(target: str, calls: int, concurrency: int) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.grpc_mirror", "--load", target, "--calls", str(calls), "--concurrency", str(concurrency),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return json.loads(out)


async def run(calls: int, concurrency: int) -> None:
    ports = {n: free_port() for n in ("gw", "pipy", "mirror", "xds", "pipy-http", "mirror-http")}
    backends = [
        await _spawn("-m", "controlplane.echo", "--port", str(ports["pipy-http"]), "--grpc-port", str(ports["pipy"]), "--name", "pipy"),
        await _spawn("-m", "controlplane.echo", "--port", str(ports["mirror-http"]), "--grpc-port", str(ports["mirror"]), "--name", "pipy-mirror"),
    ]  # fmt: skip
    target = f"127.0.0.1:{ports['gw']}"
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "config.yaml").write_text(CONFIG.format(pipy=ports["pipy"], mirror=ports["mirror"]))
            (folder / "route.yaml").write_text(_route(False))
            async with served(folder, ports, 8001, gateway=GATEWAY, node_id="bench-grpc") as (_, envoy):
                for name, mirror in (("mirror off", False), ("mirror on 100%", True)):
                    (folder / "route.yaml").write_text(_route(mirror))
                    await _until_policy(envoy, mirror)
                    await _load(target, max(1, calls // 5), concurrency)  # warm-up (also: Envoy serving)
                    results[name] = await _load(target, calls, concurrency)
    finally:
        for proc in backends:
            proc.terminate()
            await proc.wait()
    base = results["mirror off"]
    print(f"{calls} unary gRPC calls per run, {concurrency} at a time, one Envoy worker")
    for name, r in results.items():
        print(
            f"{name:<16} {r['rps']:7.0f} RPC/s ({r['rps'] / base['rps']:4.2f}x)  p50 {r['p50']:6.2f} ms"
            f" ({r['p50'] / base['p50']:4.2f}x)  p99 {r['p99']:6.2f} ms ({r['p99'] / base['p99']:4.2f}x)  codes {r['codes']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--load", metavar="HOST:PORT", help=argparse.SUPPRESS)  # the load generator's own process
    args = parser.parse_args()
    if args.load:
        print(json.dumps(asyncio.run(load(args.load, args.calls, args.concurrency))))
    else:
        asyncio.run(run(args.calls, args.concurrency))


if __name__ == "__main__":
    main()
