"""One Gateway with HTTP (80, 8080) and HTTPS (443, three SNI listeners) ports, real echo
backends (HTTP/1.1, h2c, WebSocket), the control plane serving a folder, and a real Envoy.

Shared by tests/test_e2e_features*.py, one stack per module: starting Envoy is the slow part,
and each test only adds or edits its own route file.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import trustme
from aiohttp import web

from controlplane.echo import build_app, run_echo
from controlplane.gatewayapi.translator import Options
from controlplane.localenvoy import LocalEnvoy
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.xds.translator import XdsOptions
from e2e import EchoLog, service_yaml
from support import free_port, wait_until

NS = "infra"
GATEWAY = f"{NS}/features"
CERT_HOSTS = ("example.org", "second-example.org", "*.wildcard.org")

GATEWAY_YAML = f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: mirrorplane}}
spec: {{controllerName: mirrorplane.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: features, namespace: {NS}}}
spec:
  gatewayClassName: mirrorplane
  listeners:
  - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
  - {{name: http-8080, port: 8080, protocol: HTTP}}
  - name: https
    port: 443
    protocol: HTTPS
    tls: {{certificateRefs: [{{name: tls-cert}}]}}
  - name: https-second
    port: 443
    protocol: HTTPS
    hostname: second-example.org
    tls: {{certificateRefs: [{{name: tls-cert}}]}}
  - name: https-wildcard
    port: 443
    protocol: HTTPS
    hostname: "*.wildcard.org"
    tls: {{certificateRefs: [{{name: tls-cert}}]}}
"""


def tls_secret_yaml(ca: trustme.CA, name: str = "tls-cert", namespace: str = NS) -> str:
    cert = ca.issue_cert(*CERT_HOSTS)
    crt = base64.b64encode(b"".join(blob.bytes() for blob in cert.cert_chain_pems)).decode()
    key = base64.b64encode(cert.private_key_pem.bytes()).decode()
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
data:
  tls.crt: {crt}
  tls.key: {key}
"""


@dataclass
class FeatureStack:
    dir: Path
    plane: ControlPlane
    envoy: LocalEnvoy
    ports: dict[int, int]  # Gateway port → local port
    logs: dict[str, EchoLog]
    ca: trustme.CA
    exits: AsyncExitStack = field(default_factory=AsyncExitStack)

    def write(self, name: str, text: str) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(self.dir / name)

    def remove(self, name: str) -> None:
        (self.dir / name).unlink()

    def status(self, kind: str, name: str, namespace: str = NS) -> dict[str, Any]:
        return self.plane.controller.statuses.get((kind, namespace, name)) or {}

    def route_condition(self, name: str, ctype: str, namespace: str = NS) -> tuple[str, str] | None:
        for parent in self.status("HTTPRoute", name, namespace).get("parents", []):
            for c in parent["conditions"]:
                if c["type"] == ctype:
                    return c["status"], c["reason"]
        return None

    async def request(
        self,
        path: str,
        *,
        port: int = 80,
        method: str = "GET",
        host: str | None = None,
        sni: str | None = None,
        headers: dict[str, str] | None = None,
        check_hostname: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection (no pooling across SNI names or hosts).

        ``check_hostname=False`` still verifies the chain, for SNI names the certificate lacks."""
        local = self.ports[port]
        tls = port == 443
        url = f"{'https' if tls else 'http'}://127.0.0.1:{local}{path}"
        hdrs = dict(headers or {})
        if host:
            hdrs["Host"] = host
        kw: dict[str, Any] = {"allow_redirects": False, "headers": hdrs}
        if tls:
            ctx = ssl.create_default_context()
            self.ca.configure_trust(ctx)
            ctx.check_hostname = check_hostname
            kw["ssl"] = ctx
            kw["server_hostname"] = sni or host
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.request(method, url, **kw) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()

    async def until(self, path: str, expect: int, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        """Poll until a request answers ``expect`` (config reaches Envoy asynchronously)."""
        last: list[Any] = []

        async def ok() -> bool:
            try:
                last[:] = [await self.request(path, **kw)]
            except aiohttp.ClientError:
                return False
            return last[0][0] == expect

        await wait_until(ok, timeout=15, message=f"{path} answering {expect} (last: {last[:1]})")
        return last[0]


async def start(tmp: Path) -> FeatureStack:
    folder = tmp / "config"
    folder.mkdir()
    exits = AsyncExitStack()
    logs: dict[str, EchoLog] = {}
    ports: dict[str, int] = {}

    async def echo(name: str, namespace: str = NS) -> None:
        logs[name] = EchoLog()
        runner = web.AppRunner(build_app(name=name, namespace=namespace, out=logs[name]), access_log=None)
        await runner.setup()
        ports[name] = free_port()
        await web.TCPSite(runner, "127.0.0.1", ports[name]).start()
        exits.push_async_callback(runner.cleanup)

    for name in ("v1", "v2", "ws"):
        await echo(name)
    await echo("other", namespace="other")
    # The h2c echo: same answers over HTTP/2 prior knowledge, on a port of its own.
    logs["h2c"] = EchoLog()
    task = asyncio.create_task(run_echo(free_port(), "h2c", h2c_port=0, namespace=NS, out=logs["h2c"]))
    exits.push_async_callback(_cancel, task)
    await wait_until(lambda: "listening h2c on" in logs["h2c"]._buf, message="h2c echo listening")
    ports["h2c"] = int(logs["h2c"]._buf.split("listening h2c on ")[1].split()[0].rsplit(":", 1)[1])

    ca = trustme.CA()
    (folder / "gateway.yaml").write_text(GATEWAY_YAML)
    (folder / "secret.yaml").write_text(tls_secret_yaml(ca))
    (folder / "services.yaml").write_text(
        service_yaml("v1", ports["v1"], NS)
        + service_yaml("v2", ports["v2"], NS)
        + service_yaml("ws", ports["ws"], NS, app_protocol="kubernetes.io/ws")
        + service_yaml("h2c", ports["h2c"], NS, app_protocol="kubernetes.io/h2c")
        + service_yaml("other", ports["other"], "other")
    )
    gateway_ports = {80: free_port(), 8080: free_port(), 443: free_port()}
    xds_port = free_port()
    plane = ControlPlane(
        FileProvider(folder),
        xds_host="127.0.0.1",
        xds_port=xds_port,
        http_port=None,
        options=Options(),
        xds_options=XdsOptions(bind_address="127.0.0.1", port_map=gateway_ports),
    )
    await plane.start()
    exits.push_async_callback(plane.stop)
    envoy = LocalEnvoy(node_id="features", gateway=GATEWAY, xds_port=xds_port, admin_port=0, log_sink=lambda _: None)
    await envoy.start()
    exits.push_async_callback(envoy.stop)
    return FeatureStack(folder, plane, envoy, gateway_ports, logs, ca, exits)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def route_yaml(name: str, rules: str, *, parent: str = "", hostnames: str = "", namespace: str = NS) -> str:
    """An HTTPRoute on the features Gateway; ``parent`` adds sectionName/port lines."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs:
  - name: features
    namespace: {NS}
{parent}{hostnames}  rules:
{rules}"""
