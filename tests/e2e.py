"""An end-to-end stack for tests: echo backends, the control plane serving a folder, and a real
Envoy, all on free loopback ports. The folder starts as a copy of manifests/local (the README's
quick start) with the echo ports substituted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import h2.config
import h2.connection
import h2.events
from aiohttp import web

from controlplane.echo import build_app
from controlplane.gatewayapi.translator import Options
from controlplane.localenvoy import LocalEnvoy
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.shadow.tagging import MIRRORED_SUFFIX
from controlplane.xds.translator import XdsOptions
from support import free_port, wait_until

LOCAL = Path(__file__).resolve().parent.parent / "manifests" / "local"
GATEWAY = "server/simple-gateway"


class EchoLog:
    """Collects an echo server's log lines (it writes whole lines and flushes)."""

    def __init__(self) -> None:
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        return len(text)

    def flush(self) -> None:
        pass

    def heads(self) -> list[dict[str, Any]]:
        out = []
        for line in self._buf.splitlines():
            _, _, rest = line.partition("] ")
            if rest.startswith("{"):
                out.append(json.loads(rest))
        return out

    def paths(self) -> list[str]:
        return [h["path"] for h in self.heads()]

    def echoed(self, uri: str) -> bool:
        return re.search(f"Echoing back request made to {re.escape(uri)} to client", self._buf) is not None


@dataclass
class Echo:
    name: str
    port: int
    log: EchoLog
    runner: web.AppRunner


@dataclass
class Stack:
    dir: Path
    plane: ControlPlane
    envoy: LocalEnvoy
    port: int  # where Envoy serves the Gateway's port 8000
    echos: dict[str, Echo]
    session: aiohttp.ClientSession
    exits: AsyncExitStack = field(default_factory=AsyncExitStack)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, name: str, text: str) -> None:
        """Replace a file atomically, as editors and `kubectl apply` users expect."""
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(self.dir / name)

    async def request(self, path: str = "/", data: bytes | None = None, **kw: Any) -> tuple[int, bytes]:
        method = "POST" if data is not None else "GET"
        async with self.session.request(method, self.url + path, data=data, **kw) as resp:
            return resp.status, await resp.read()

    def file_errors(self, name: str) -> list[str]:
        """What the file provider reports about one file of the stack's folder."""
        provider = self.plane.provider
        assert isinstance(provider, FileProvider)
        return [str(e) for e in provider.errors.get(self.dir / name, [])]

    async def mirror_policies(self) -> list[dict[str, Any]]:
        return await mirror_policies(self.envoy)

    async def add_echo(self, name: str, **options: Any) -> Echo:
        log = EchoLog()
        runner = web.AppRunner(build_app(name=name, out=log, **options), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.exits.push_async_callback(runner.cleanup)
        self.echos[name] = Echo(name, port, log, runner)
        return self.echos[name]


def copy_local(folder: Path, *, gateway_port: int, pipy_port: int, mirror_port: int) -> Path:
    """manifests/local (the quick start) copied with its fixed ports moved to the given ones."""
    shutil.copytree(LOCAL, folder)
    grpc_port = free_port()  # the gRPC seed's Gateway (grpc.yaml) gets its own Envoy under `run`
    for name in ("gateway.yaml", "route.yaml", "grpc.yaml"):
        f = folder / name
        f.write_text(
            f.read_text().replace("port: 8000", f"port: {gateway_port}").replace("port: 8001", f"port: {grpc_port}")
        )
    svc = folder / "services.yaml"
    svc.write_text(svc.read_text().replace("8081", str(pipy_port)).replace("8082", str(mirror_port)))
    return folder


async def mirror_policies(envoy: LocalEnvoy) -> list[dict[str, Any]]:
    """The request_mirror_policies Envoy holds right now, from its own config dump."""
    dump = await envoy.config_dump()
    found = []
    for cfg in dump.get("configs", []):
        for rc in cfg.get("dynamic_route_configs", []):
            for vh in rc.get("route_config", {}).get("virtual_hosts", []):
                for r in vh.get("routes", []):
                    # A GRPCRoute's mirrored route has a twin for gRPC calls with the same
                    # policies (docs/grpc.md): count them once.
                    if not r.get("name", "").endswith("/grpc" + MIRRORED_SUFFIX):
                        found += r.get("route", {}).get("request_mirror_policies", [])
    return found


def service_yaml(name: str, port: int, namespace: str = "server", app_protocol: str | None = None) -> str:
    """A Service on port 8080 (with an optional appProtocol) whose EndpointSlice points at 127.0.0.1:port."""
    extra = f", appProtocol: {app_protocol}" if app_protocol else ""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{port: 8080, targetPort: {port}{extra}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-local
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {port}}}]
"""


def digest(body: bytes) -> dict[str, Any]:
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


async def start_stack(
    tmp: Path,
    *,
    mirror_options: dict[str, Any] | None = None,
    plane_options: dict[str, Any] | None = None,
    envoy_options: dict[str, Any] | None = None,
    xds_options: dict[str, Any] | None = None,
) -> Stack:
    """The seed scenario, live: `pipy` primary, `pipy-mirror` mirror, Envoy on a free port.

    ``plane_options``, ``envoy_options`` and ``xds_options`` go to ControlPlane, LocalEnvoy and
    XdsOptions (e.g. TLS, the mirror body limit)."""
    folder = tmp / "config"
    folder.mkdir()
    for f in LOCAL.glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    exits = AsyncExitStack()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    exits.push_async_callback(session.close)
    gateway_port, xds_port = free_port(), free_port()
    # The plane and the Envoy come once the echo ports are known (below); a Stack is never seen without them.
    stack = Stack(folder, None, None, gateway_port, {}, session, exits)  # type: ignore[arg-type]
    primary = await stack.add_echo("pipy")
    mirror = await stack.add_echo("pipy-mirror", **(mirror_options or {}))
    text = (folder / "services.yaml").read_text()
    text = text.replace("port: 8081", f"port: {primary.port}").replace("port: 8082", f"port: {mirror.port}")
    (folder / "services.yaml").write_text(text)

    stack.plane = ControlPlane(
        FileProvider(folder),
        xds_host="127.0.0.1",
        xds_port=xds_port,
        options=Options(),
        xds_options=XdsOptions(bind_address="127.0.0.1", port_map={8000: gateway_port}, **(xds_options or {})),
        **{"http_port": None, **(plane_options or {})},
    )
    await stack.plane.start()
    exits.push_async_callback(stack.plane.stop)
    lines: list[str] = []
    stack.envoy = LocalEnvoy(
        node_id="e2e",
        gateway=GATEWAY,
        xds_port=xds_port,
        admin_port=0,
        log_sink=lines.append,
        log_level="warning",
        **(envoy_options or {}),
    )
    await stack.envoy.start()
    exits.push_async_callback(stack.envoy.stop)
    await wait_until(lambda: _serves(stack), timeout=15, message="Envoy serving the seed route")
    return stack


async def _serves(stack: Stack) -> bool:
    try:
        status, _ = await stack.request("/")
    except aiohttp.ClientError:
        return False
    return status == 200


async def fire(stack: Stack, paths: list[str], concurrency: int = 10) -> list[int]:
    """Send GETs with bounded concurrency; return the status codes."""
    sem = asyncio.Semaphore(concurrency)

    async def one(p: str) -> int:
        async with sem:
            status, _ = await stack.request(p)
            return status

    return await asyncio.gather(*(one(p) for p in paths))


async def h2_status(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> int:
    """One HTTP/2 request (h2c, prior knowledge) with exactly these headers, its stream ended on
    the body's own frame (as gRPC libraries send a unary call; httpx ends it with an empty frame
    after, docs/shadow-testing.md); the response status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
    conn.initiate_connection()
    pseudo = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "localhost")]
    conn.send_headers(1, pseudo + headers, end_stream=not body)
    if body:
        conn.send_data(1, body, end_stream=True)
    try:
        writer.write(conn.data_to_send())
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data, "Envoy closed the connection without an answer"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
            writer.write(conn.data_to_send())
    finally:
        writer.close()
