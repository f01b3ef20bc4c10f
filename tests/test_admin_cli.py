"""`mirrorplane nodes | status | snapshot` as real subprocesses against a running control plane
that serves a real Envoy."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from admin_support import grpcurl, target, wait_all_acked
from controlplane.certs import Authority
from controlplane.identity import OPERATOR
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.tls import TlsFiles
from e2e import GATEWAY, LOCAL, Stack, start_stack
from support import free_port, wait_until


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path)
    try:
        await wait_all_acked(s)
        yield s
    finally:
        await s.exits.aclose()


async def mirrorplane(*args: str, server: str | None = None) -> tuple[int, str, str]:
    """Run the CLI without blocking the event loop the control plane runs on."""
    env = {**os.environ}
    env.pop("MIRRORPLANE_SERVER", None)
    cmd = [sys.executable, "-m", "controlplane.cli", *args]
    if server:
        cmd += ["--server", server]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None  # communicate() waited for the exit
    return proc.returncode, out.decode(), err.decode()


async def grpcurl_json(stack: Stack, method: str, data: dict) -> dict:
    code, out, err = await grpcurl(target(stack), method, data=data)
    assert code == 0, err
    return json.loads(out)


async def test_nodes_text_and_json(stack):
    code, out, err = await mirrorplane("nodes", server=target(stack))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "GATEWAY", "ADDRESS", "AGENT", "CONNECTED", "SNAPSHOT"]
    assert lines[1].split()[:2] == ["e2e", GATEWAY]
    assert lines[2].split() == ["TYPE", "SENT", "ACKED", "STATE"]
    snapshot = stack.plane.cache.get(GATEWAY)
    rows = {line.split()[0]: line.split() for line in lines[3:7]}
    assert set(rows) == {"clusters", "endpoints", "listeners", "routes"}
    for type_url, version in snapshot.versions().items():
        short = {"Cluster": "clusters", "ClusterLoadAssignment": "endpoints", "Listener": "listeners", "RouteConfiguration": "routes"}[type_url.rsplit(".", 1)[1]]
        assert rows[short][1] == rows[short][2] == version
        assert rows[short][3] == "ACKED"

    code, out, _ = await mirrorplane("nodes", "-o", "json", "--gateway", GATEWAY, server=target(stack))
    assert code == 0
    got = json.loads(out)
    # The same JSON value as grpcurl's (layout and key order differ: grpcurl's Go printer indents
    # embedded messages its own way and sorts Struct keys).
    assert got == await grpcurl_json(stack, "mirrorplane.admin.v1.Admin/ListNodes", {"gateway": GATEWAY})
    assert [n["node_id"] for n in got["nodes"]] == ["e2e"]
    assert got["nodes"][0]["types"][0]["acked_version"] == snapshot.versions()[got["nodes"][0]["types"][0]["type_url"]]


async def test_status_text_lists_conditions_and_problems(stack):
    # Break the mirror's backend: the route stays served, its status says why the mirror went.
    text = (stack.dir / "route.yaml").read_text().replace("name: pipy-mirror", "name: no-such-service")
    stack.write("route.yaml", text)
    await wait_until(
        lambda: any(
            c["reason"] == "BackendNotFound"
            for p in stack.plane.controller.statuses[("HTTPRoute", "server", "http-route-sample")]["parents"]
            for c in p["conditions"]
        ),
        message="status BackendNotFound",
    )
    code, out, err = await mirrorplane("status", server=target(stack))
    assert code == 0, err
    assert out.splitlines()[0].split() == ["KIND", "NAMESPACE", "NAME", "WHERE", "CONDITIONS"]
    assert any(line.split()[:3] == ["Gateway", "server", "simple-gateway"] for line in out.splitlines())
    # Columns are padded to the widest cell (the gRPC seed's "parent simple-gateway-grpc" now).
    assert re.search(r"parent simple-gateway +Accepted=True ResolvedRefs=False", out)
    assert any(line.split()[:3] == ["GRPCRoute", "server", "grpc-route-sample"] for line in out.splitlines())
    [problem] = [line for line in out.splitlines() if "ResolvedRefs=False" in line and "BackendNotFound" in line]
    assert problem.startswith("  HTTPRoute server/http-route-sample parent simple-gateway: ResolvedRefs=False BackendNotFound:")
    assert "no-such-service" in problem

    code, out, _ = await mirrorplane("status", "--kind", "HTTPRoute", "-o", "json", server=target(stack))
    assert code == 0
    assert json.loads(out) == await grpcurl_json(stack, "mirrorplane.admin.v1.Admin/GetStatus", {"kind": "HTTPRoute"})


async def test_status_shows_mirror_policies_and_their_targets(stack):
    policy = """apiVersion: mirrorplane.io/v1alpha1
kind: MirrorPolicy
metadata: {name: seed-shadow, namespace: server}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: http-route-sample}
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: gone}
  requestHeaderModifier: {remove: [authorization]}
"""
    stack.write("policy.yaml", policy)
    await wait_until(lambda: ("MirrorPolicy", "server", "seed-shadow") in stack.plane.controller.statuses, message="policy status")
    code, out, err = await mirrorplane("status", server=target(stack))
    assert code == 0, err
    lines = out.splitlines()
    row = next(line for line in lines if line.split()[:3] == ["MirrorPolicy", "server", "seed-shadow"])
    assert row.split()[3:] == ["target", "HTTPRoute", "http-route-sample", "Accepted=True"]
    assert any(line.split() == ["target", "HTTPRoute", "gone", "Accepted=False"] for line in lines)
    assert "  MirrorPolicy server/seed-shadow target HTTPRoute gone: Accepted=False TargetNotFound: HTTPRoute server/gone not found" in lines

    code, out, _ = await mirrorplane("status", "--kind", "MirrorPolicy", "-o", "json", server=target(stack))
    assert code == 0
    assert json.loads(out) == await grpcurl_json(stack, "mirrorplane.admin.v1.Admin/GetStatus", {"kind": "MirrorPolicy"})


async def test_snapshot_text_and_json_match_grpcurl(stack):
    snapshot = stack.plane.cache.get(GATEWAY)
    code, out, err = await mirrorplane("snapshot", "--gateway", GATEWAY, server=target(stack))
    assert code == 0, err
    assert out.startswith(f"Gateway {GATEWAY}  snapshot {snapshot.version}\n")
    for ts in snapshot.types.values():
        assert f"{ts.short_name} (version {ts.version}, {len(ts)} shown)" in out
        for name, entry in ts.entries.items():
            assert f"  {name}" in out and entry.version in out
    assert "  http-8000: mirrors bodies up to 1048576 bytes; larger or unknown-size ones are not mirrored" in out

    args = ["snapshot", "--node", "e2e", "--type", "clusters", "--type", "listeners", "-o", "json"]
    code, out, _ = await mirrorplane(*args, server=target(stack))
    assert code == 0
    expected = await grpcurl_json(
        stack, "mirrorplane.admin.v1.Admin/GetSnapshot", {"node_id": "e2e", "types": ["clusters", "listeners"]}
    )
    assert json.loads(out) == expected
    [listeners] = [t for t in expected["types"] if t["type"] == "listeners"]
    assert listeners["resources"][0]["resource"]["address"]["socket_address"]["port_value"] == stack.port  # an int


async def test_errors_are_one_line_and_exit_1(stack):
    code, out, err = await mirrorplane("snapshot", "--gateway", "nope/nope", server=target(stack))
    assert (code, out) == (1, "")
    assert err == "mirrorplane snapshot: NOT_FOUND: no snapshot for Gateway 'nope/nope' (served: server/simple-gateway, server/simple-gateway-grpc)\n"

    code, _, err = await mirrorplane("nodes", "--timeout", "2", server=f"127.0.0.1:{free_port()}")
    assert code == 1
    assert err.startswith("mirrorplane nodes: UNAVAILABLE: cannot reach mirrorplane at 127.0.0.1:")
    assert len(err.splitlines()) == 1


async def test_clients_speak_mutual_tls_with_grpcurls_flags(tmp_path):
    ca = Authority.new()
    server, client = ca.server(["mirrorplane"]), ca.client(OPERATOR)  # the admin API answers the operator only
    pem = {}
    for name, blob in {"ca": ca.cert, "server": server.key + server.cert, "client": client.key + client.cert}.items():
        pem[name] = tmp_path / f"{name}.pem"
        pem[name].write_bytes(blob)
    port = free_port()
    plane = ControlPlane(
        FileProvider(LOCAL), xds_host="127.0.0.1", xds_port=port, http_port=None, tls=TlsFiles(pem["server"], pem["server"], pem["ca"])
    )
    async with plane:
        target = f"127.0.0.1:{port}"
        tls = ["--cacert", str(pem["ca"]), "--servername", "mirrorplane"]
        code, out, err = await mirrorplane("status", "--kind", "Gateway", *tls, "--cert", str(pem["client"]), "--key", str(pem["client"]), server=target)
        assert code == 0, err
        assert out.splitlines()[1].split()[:3] == ["Gateway", "server", "simple-gateway"]

        code, _, err = await mirrorplane("status", "--timeout", "2", *tls, server=target)  # no client certificate
        assert code == 1 and err.startswith("mirrorplane status: UNAVAILABLE:")
        code, _, err = await mirrorplane("status", "--cert", str(pem["client"]), server=target)
        assert (code, err) == (1, "mirrorplane status: error: --cert and --key need --cacert\n")
