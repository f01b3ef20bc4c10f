"""The page follows the HTTP port's exposure rules and shows no secrets (docs/web.md, docs/security.md).

Real control planes serving real folders, asked over real HTTP; no browser needed here."""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
import yaml

from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.shadow.entries import Leg
from controlplane.shadow.hub import Diff
from controlplane.web import pages
from controlplane.web.access import refusal
from controlplane.web.model import scrub
from e2e import LOCAL
from features_stack import GATEWAY as HTTPS_GATEWAY
from features_stack import GATEWAY_YAML, NS, tls_secret_yaml
from support import free_port, other_address

TOKEN = "Bearer s3cret-t0ken-for-backends"
MIRRORED_HTTPS_ROUTE = f"""---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: {NS}}}
spec: {{ports: [{{port: 8080}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secured, namespace: {NS}}}
spec:
  parentRefs: [{{name: features, sectionName: https}}]
  hostnames: [example.org]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: Authorization, value: "{TOKEN}"}}]}}
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: app, port: 8080}}}}
    backendRefs: [{{name: app, port: 8080}}]
"""


async def _get(url: str, host: str | None = None) -> tuple[int, str]:
    headers = {"Host": host} if host else {}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, await r.text()


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with ControlPlane(FileProvider(LOCAL), xds_port=free_port(), http_port=free_port()) as p:
        yield p


async def test_served_on_loopback_with_its_script_and_no_inline_code(plane: ControlPlane) -> None:
    base = f"http://127.0.0.1:{plane.http_port}"
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            page = await r.text()
            generation = r.headers["X-Generation"]
        assert '<script src="/static/web.js"' in page and "<script>" not in page and " style=" not in page
        async with s.get(base + "/static/web.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript" and "setInterval" in await r.text()
        # Nothing changed since: a poll costs no rendering; another browser's first view reuses it.
        renders = plane.web.renders
        async with s.get(base + "/", params={"fragment": "1", "since": generation}) as r:
            assert r.status == 204
        async with s.get(base + "/", params={"fragment": "1"}) as r:
            assert r.status == 200 and r.headers["X-Generation"] == generation
        assert plane.web.renders == renders
        async with s.get(
            base + "/rule",
            params={"gateway": "server/simple-gateway", "route": "HTTPRoute server/http-route-sample", "rule": "0"},
        ) as r:
            assert r.status == 200 and "mirror/server/pipy-mirror/8080" in await r.text()
        async with s.get(base + "/rule", params={"gateway": "x", "route": "y", "rule": "0"}) as r:
            assert r.status == 404 and "no mirrored route rule" in await r.text()


async def test_a_foreign_host_name_is_refused_but_metrics_are_not(plane: ControlPlane) -> None:
    """DNS rebinding: a site whose name resolves to 127.0.0.1 must not read the page."""
    base = f"http://127.0.0.1:{plane.http_port}"
    status, text = await _get(base + "/", host=f"attacker.example:{plane.http_port}")
    assert status == 403 and "is not a loopback name" in text
    assert (await _get(base + "/static/web.js", host="attacker.example"))[0] == 403
    assert (await _get(base + "/metrics", host="attacker.example"))[0] == 200
    assert (await _get(base + "/", host=f"localhost:{plane.http_port}"))[0] == 200


@pytest.mark.parametrize("insecure", [False, True])
async def test_exposed_port_serves_the_page_to_loopback_only_unless_insecure(insecure: bool) -> None:
    other = other_address()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address to reach the port from")
    port = free_port()
    plane = ControlPlane(
        FileProvider(LOCAL), xds_port=free_port(), http_host="0.0.0.0", http_port=port, insecure=insecure
    )
    async with plane:
        status, text = await _get(f"http://{other}:{port}/")
        if insecure:
            assert status == 200 and "server/simple-gateway" in text
        else:
            assert status == 403 and "served only to this machine" in text and "--insecure" in text
        assert (await _get(f"http://{other}:{port}/metrics"))[0] == 200
        assert (await _get(f"http://127.0.0.1:{port}/"))[0] == 200  # e.g. through an SSH tunnel


def test_refusal_rules() -> None:
    assert refusal("127.0.0.1", "127.0.0.1:19001", open_to_all=False) is None
    assert refusal("::1", "[::1]:19001", open_to_all=False) is None
    assert refusal("127.0.0.1", "localhost", open_to_all=False) is None
    assert refusal("10.1.2.3", "127.0.0.1:19001", open_to_all=False)
    assert refusal("127.0.0.1", "mirrorplane.example:19001", open_to_all=False)
    assert refusal("127.0.0.1", None, open_to_all=False)
    assert refusal("10.1.2.3", "mirrorplane.example", open_to_all=True) is None


async def test_no_private_key_or_authorization_value_on_any_page(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    shutil.copytree(LOCAL, folder)
    ca = trustme.CA()
    (folder / "https.yaml").write_text(
        GATEWAY_YAML.split("---\n", 1)[1] + "---\n" + tls_secret_yaml(ca) + MIRRORED_HTTPS_ROUTE
    )
    secret = next(d for d in yaml.safe_load_all((folder / "https.yaml").read_text()) if d and d["kind"] == "Secret")
    key_pem = base64.b64decode(secret["data"]["tls.key"]).decode()
    port = free_port()
    async with ControlPlane(FileProvider(folder), xds_port=free_port(), http_port=port) as plane:
        assert HTTPS_GATEWAY in plane.cache.gateways()
        base = f"http://127.0.0.1:{port}"
        status, overview = await _get(base + "/")
        assert status == 200 and f"HTTPRoute {NS}/secured · rule 0" in overview
        rule = f"/rule?gateway={HTTPS_GATEWAY}&route=HTTPRoute+{NS}/secured&rule=0"
        status, rule_page = await _get(base + rule)
        assert status == 200 and "example.org" in rule_page
    key_line = key_pem.splitlines()[1]
    for name, text in {"overview": overview, "rule": rule_page}.items():
        assert "PRIVATE KEY" not in text and key_line not in text, name
        assert "s3cret-t0ken" not in text, name


def test_sensitive_response_headers_and_keys_in_messages_are_not_shown() -> None:
    def leg(primary: bool, cookie: str) -> Leg:
        return Leg(
            request_id="rid", cluster="c", primary=primary, tag="", cluster_min="", status=200, grpc_status="", size=10,
            latency=0.001, failure="", method="GET", path="/",
            headers={"set-cookie": cookie, "content-type": "text/plain"},
        )  # fmt: skip

    html = pages.pair(
        Diff(
            "g", "r", "0", "m", "headers_differ", "set-cookie differs", leg(True, "sid=AAA"), leg(False, "sid=BBB"), 0.0
        )
    )
    assert "sid=AAA" not in html and "sid=BBB" not in html
    assert "[redacted: differs between legs]" in html and "text/plain" in html
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"
    assert scrub(f"Failed to load private key {pem} (bad)") == "Failed to load private key [private key redacted] (bad)"
