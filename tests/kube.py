"""A cluster for the Kubernetes tests: the fake API server, or a real cluster when
MIRRORPLANE_TEST_KUBECONFIG names its kubeconfig (the same contract tests then run against it;
the ones that need the fake's controls, restart() and compact(), say so and skip).

Also: kubectl, the control plane serving that cluster, and the README's kubectl flow as a stack.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from controlplane.echo import build_app
from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER
from controlplane.localenvoy import LocalEnvoy
from controlplane.providers.k8s_status import KubernetesStatus
from controlplane.providers.kubernetes import KubernetesProvider, WatchOptions
from controlplane.providers.leader import LeaseOptions
from controlplane.serve import ControlPlane
from controlplane.xds.translator import XdsOptions
from e2e import EchoLog, mirror_policies
from fakeapi import FakeApiServer
from support import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "manifests" / "install.yaml"
EXAMPLES = ROOT / "manifests" / "examples"
GATEWAY = "server/simple-gateway"
SYSTEM = "mirrorplane-system"
# Short timings: watches reopen and leases expire within a test's patience.
FAST = WatchOptions(timeout_seconds=(5, 10), backoff_initial=0.05, backoff_max=0.5)


@dataclass
class Cluster:
    kubeconfig: Path
    fake: FakeApiServer | None

    def need_fake(self, what: str) -> FakeApiServer:
        if self.fake is None:
            pytest.skip(
                f"{what} needs the fake API server's test controls (MIRRORPLANE_TEST_KUBECONFIG is a real cluster)"
            )
        return self.fake

    async def kubectl(self, *args: str, input: str | None = None) -> str:
        """Run kubectl (without blocking the loop the control plane runs on); raise on failure."""
        proc = await asyncio.create_subprocess_exec(
            "kubectl",
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(input.encode() if input is not None else None)
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode()}")
        return out.decode()

    async def apply(self, text_or_path: str | Path) -> str:
        if isinstance(text_or_path, Path):
            return await self.kubectl("apply", "--validate=false", "-f", str(text_or_path))
        return await self.kubectl("apply", "--validate=false", "-f", "-", input=text_or_path)

    async def install(self) -> None:
        """manifests/install.yaml. On a real cluster the installed control plane and Envoys are
        scaled to zero: the control plane under test must be the only status writer."""
        await self.apply(INSTALL)
        if self.fake is None:
            await self.kubectl("scale", "deployment", "mirrorplane", "envoy", "-n", SYSTEM, "--replicas=0")

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        return yaml.safe_load(await self.kubectl("get", kind, name, *ns, "-o", "yaml"))


@asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    real = os.environ.get("MIRRORPLANE_TEST_KUBECONFIG")
    if real:
        c = Cluster(Path(real), None)
        try:
            yield c
        finally:
            await c.kubectl("delete", "namespace", "server", "--ignore-not-found", "--wait=false")
        return
    with FakeApiServer(bookmark_interval=0.5) as api:
        yield Cluster(Path(api.write_kubeconfig(tmp_path / "kubeconfig")), api)


async def seed(c: Cluster) -> None:
    """install.yaml and the examples, with EndpointSlices (to ports nothing listens on)."""
    await c.install()
    await c.apply(EXAMPLES)
    await c.apply(endpoint_slice("pipy", 9001))
    await c.apply(endpoint_slice("pipy-mirror", 9002))


def endpoint_slice(
    service: str, port: int, *, name: str | None = None, addresses: tuple[str, ...] = ("127.0.0.1",)
) -> str:
    """What the EndpointSlice controller writes for a Service's ready pods (here: local echo servers)."""
    return yaml.safe_dump(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name or f"{service}-test",
                "namespace": "server",
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        }
    )


def control_plane(
    c: Cluster,
    *,
    gateway_port: int | None = None,
    lease: LeaseOptions | None = None,
    options: WatchOptions = FAST,
    port_map: dict[int, int] | None = None,
) -> tuple[ControlPlane, KubernetesProvider, KubernetesStatus]:
    """A control plane replica serving the cluster, as `serve --kubernetes` builds it."""
    provider = KubernetesProvider(c.kubeconfig, options=options)
    status = KubernetesStatus(
        provider, controller_name=DEFAULT_CONTROLLER, lease=lease, gateway_service=(SYSTEM, "envoy")
    )
    plane = ControlPlane(
        provider,
        xds_host="127.0.0.1",
        xds_port=free_port(),
        http_port=None,
        # 8001: the example Gateway's gRPC listener, never on its fixed port in tests.
        xds_options=XdsOptions(
            bind_address="127.0.0.1",
            port_map={8000: gateway_port or free_port(), 8001: free_port(), **(port_map or {})},
        ),
        extensions=[status],
    )
    return plane, provider, status


def local_envoy(plane: ControlPlane, node_id: str) -> LocalEnvoy:
    """A real Envoy for the example Gateway, on the plane's xDS port (not started)."""
    return LocalEnvoy(
        node_id=node_id,
        gateway=GATEWAY,
        xds_port=int(plane.xds_address.rsplit(":", 1)[1]),
        admin_port=0,
        log_sink=lambda _: None,
    )


def lease(identity: str, duration: float = 2.0) -> LeaseOptions:
    return LeaseOptions(
        namespace=SYSTEM,
        identity=identity,
        lease_duration=duration,
        renew_deadline=duration * 2 / 3,
        retry_period=duration / 8,
    )


@dataclass
class KubeStack:
    """The README's flow: install.yaml and the examples applied with kubectl, echo backends behind
    the example Services, the control plane watching the cluster, and a real Envoy."""

    cluster: Cluster
    plane: ControlPlane
    provider: KubernetesProvider
    status: KubernetesStatus
    envoy: LocalEnvoy
    port: int
    logs: dict[str, EchoLog]
    session: aiohttp.ClientSession
    exits: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def request(self, path: str = "/", data: bytes | None = None) -> tuple[int, bytes]:
        method = "POST" if data is not None else "GET"
        async with self.session.request(method, f"http://127.0.0.1:{self.port}{path}", data=data) as resp:
            return resp.status, await resp.read()

    async def mirror_policies(self) -> list[dict[str, Any]]:
        """The HTTP seed's mirror policies (the example GRPCRoute's, to mirror/grpc/..., left out)."""
        return [p for p in await mirror_policies(self.envoy) if not p["cluster"].startswith("mirror/grpc/")]


async def start_echo(exits: AsyncExitStack, name: str) -> tuple[int, EchoLog]:
    log = EchoLog()
    runner = web.AppRunner(build_app(name=name, out=log), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    exits.push_async_callback(runner.cleanup)
    return port, log


async def start_kube_stack(c: Cluster) -> KubeStack:
    exits = AsyncExitStack()
    try:
        await c.install()
        await c.apply(EXAMPLES)
        logs = {}
        for name in ("pipy", "pipy-mirror"):
            port, logs[name] = await start_echo(exits, name)
            await c.apply(endpoint_slice(name, port))
        gateway_port = free_port()
        plane, provider, status = control_plane(c, gateway_port=gateway_port)
        await plane.start()
        exits.push_async_callback(plane.stop)
        envoy = local_envoy(plane, "kube-e2e")
        await envoy.start()
        exits.push_async_callback(envoy.stop)
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        exits.push_async_callback(session.close)
        stack = KubeStack(c, plane, provider, status, envoy, gateway_port, logs, session, exits)

        async def serves() -> bool:
            try:
                return (await stack.request("/"))[0] == 200
            except aiohttp.ClientError:
                return False

        await wait_until(serves, timeout=15, message="Envoy serving the example route from the cluster")
        return stack
    except BaseException:
        await exits.aclose()
        raise
