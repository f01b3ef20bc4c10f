"""The xDS port gives nothing away: loopback by default, no exposure without mutual TLS, and with
it each certificate's identity decides what it may read (over real gRPC, with the certificates
`mirrorplane certs` issues)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controlplane import certs
from controlplane.admin.v1 import admin_pb2, admin_pb2_grpc
from controlplane.localenvoy import LocalEnvoy, XdsTls
from controlplane.providers.files import FileProvider
from controlplane.serve import ControlPlane
from controlplane.tls import TlsFiles
from controlplane.xds.resources import LISTENER
from e2e import LOCAL
from features_stack import GATEWAY as HTTPS_GATEWAY
from features_stack import GATEWAY_YAML, tls_secret_yaml
from support import free_port, other_address, wait_until

HTTP_GATEWAY = "server/simple-gateway"  # manifests/local
MIRRORPLANE = [sys.executable, "-m", "controlplane.cli"]


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False


async def test_both_ports_bind_loopback_by_default() -> None:
    xds_port, http_port = free_port(), free_port()
    plane = ControlPlane(FileProvider(LOCAL), xds_port=xds_port, http_port=http_port)
    async with plane:
        assert plane.xds_address == f"127.0.0.1:{xds_port}" and plane.http_host == "127.0.0.1"
        assert _connects("127.0.0.1", xds_port) and _connects("127.0.0.1", http_port)
        other = other_address()
        if other is not None:
            assert not _connects(other, xds_port), f"the xDS port answers on {other}"
            assert not _connects(other, http_port), f"the HTTP port answers on {other}"


def test_serve_refuses_a_non_loopback_address_without_mutual_tls(tmp_path: Path) -> None:
    out = subprocess.run(
        [*MIRRORPLANE, "serve", str(LOCAL), "--xds-address", "0.0.0.0", "--xds-port", str(free_port()), "--http-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out
    assert (
        out.stderr.startswith("mirrorplane: error: --xds-address 0.0.0.0 is not loopback")
        and out.stderr.count("\n") == 1
    ), out.stderr
    assert "--client-ca" in out.stderr and "--insecure" in out.stderr
    # Server-only TLS authenticates no client: refused too. --insecure is the explicit way out.
    pem = trustme.CA().cert_pem
    pem.write_to_path(str(tmp_path / "x.pem"))
    with pytest.raises(ValueError, match="not loopback"):
        ControlPlane(FileProvider(LOCAL), xds_host="::", tls=TlsFiles(tmp_path / "x.pem", tmp_path / "x.pem"))
    ControlPlane(FileProvider(LOCAL), xds_host="0.0.0.0", insecure=True)
    ControlPlane(
        FileProvider(LOCAL), xds_host="::", tls=TlsFiles(tmp_path / "x.pem", tmp_path / "x.pem", tmp_path / "x.pem")
    )


# -- identities over mutual TLS ----------------------------------------------------------------


class Plane:
    def __init__(self, plane: ControlPlane, pki: Path, key_pem: bytes, cert_pem: bytes) -> None:
        self.plane, self.pki, self.key_pem, self.cert_pem = plane, pki, key_pem, cert_pem

    def channel(self, role: str) -> grpc.aio.Channel:
        """A channel presenting the certificate of ``role``: "operator" or a Gateway NS/NAME."""
        d = certs.folder_of(self.pki, role)
        creds = grpc.ssl_channel_credentials(
            (d / "ca.crt").read_bytes(), (d / "tls.key").read_bytes(), (d / "tls.crt").read_bytes()
        )
        return grpc.aio.secure_channel(self.plane.xds_address, creds)


@pytest.fixture(name="mtls")
async def mtls_fixture(tmp_path: Path) -> AsyncIterator[Plane]:
    """Two Gateways served over mutual TLS: HTTPS (a listener private key) and plain HTTP."""
    folder = tmp_path / "config"
    shutil.copytree(LOCAL, folder)
    (folder / "grpc.yaml").unlink()  # the gRPC seed's Gateway: these tests want exactly two
    ca = trustme.CA()
    (folder / "https.yaml").write_text(GATEWAY_YAML.split("---\n", 1)[1] + "---\n" + tls_secret_yaml(ca))
    secret = next(d for d in yaml.safe_load_all((folder / "https.yaml").read_text()) if d["kind"] == "Secret")
    key_pem, cert_pem = (base64.b64decode(secret["data"][k]) for k in ("tls.key", "tls.crt"))
    pki = tmp_path / "pki"
    certs.ensure_folder(pki, ["127.0.0.1"], [HTTPS_GATEWAY, HTTP_GATEWAY])
    server = pki / "server"
    plane = ControlPlane(
        FileProvider(folder),
        xds_host="127.0.0.1",
        xds_port=free_port(),
        http_port=None,
        tls=TlsFiles(server / "tls.crt", server / "tls.key", server / "ca.crt"),
    )
    async with plane:
        assert sorted(plane.cache.gateways()) == sorted([HTTPS_GATEWAY, HTTP_GATEWAY])
        yield Plane(plane, pki, key_pem, cert_pem)


def _sotw(gateway: str) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="n1", cluster=gateway), type_url=LISTENER)


def _delta(gateway: str) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(
        node=base_pb2.Node(id="n1", cluster=gateway), type_url=LISTENER, resource_names_subscribe=["*"]
    )


async def _first_response(channel: grpc.aio.Channel, delta: bool, gateway: str):
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    call = stub.DeltaAggregatedResources() if delta else stub.StreamAggregatedResources()
    await call.write(_delta(gateway) if delta else _sotw(gateway))
    response = await asyncio.wait_for(call.read(), 10)
    return call, response


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_gateway_certificate_streams_its_own_gateway_only(
    mtls: Plane, delta: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with mtls.channel(HTTPS_GATEWAY) as channel:
        call, response = await _first_response(channel, delta, HTTPS_GATEWAY)
        assert response.resources and mtls.key_pem in response.SerializeToString(), "its Envoys need their key"
        call.cancel()

    caplog.set_level(logging.WARNING, logger="mirrorplane.xds")
    for role in (HTTP_GATEWAY, "operator"):
        async with mtls.channel(role) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _first_response(channel, delta, HTTPS_GATEWAY)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
            assert HTTPS_GATEWAY in err.value.details()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("xds.stream_rejected")]
    assert len(lines) == 2 and all("code=PERMISSION_DENIED" in line for line in lines), lines
    assert "spiffe://mirrorplane/ns/server/gateway/simple-gateway is for Gateway server/simple-gateway" in lines[0]
    assert (
        "spiffe://mirrorplane/operator is not a Gateway's" in lines[1] and "node=n1 gateway=infra/features" in lines[1]
    )
    assert mtls.plane.registry.streams() == []  # refused streams were never registered


async def _admin_calls(channel: grpc.aio.Channel) -> dict[str, object]:
    """Every admin and CSDS method, called once; the exception if it failed."""
    admin = admin_pb2_grpc.AdminStub(channel)
    csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)

    async def watch() -> object:
        call = admin.WatchNodes(admin_pb2.WatchNodesRequest())
        try:
            async for _ in call:
                break
            return "ok"
        finally:
            call.cancel()

    async def stream_status() -> object:
        call = csds.StreamClientStatus()
        await call.write(csds_pb2.ClientStatusRequest())
        try:
            return await call.read()
        finally:
            call.cancel()

    calls = {
        "ListNodes": lambda: admin.ListNodes(admin_pb2.ListNodesRequest(), timeout=10),
        "GetSnapshot": lambda: admin.GetSnapshot(admin_pb2.GetSnapshotRequest(gateway=HTTPS_GATEWAY), timeout=10),
        "GetStatus": lambda: admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10),
        "WatchNodes": watch,
        "FetchClientStatus": lambda: csds.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10),
        "StreamClientStatus": stream_status,
    }
    out: dict[str, object] = {}
    for name, call in calls.items():
        try:
            out[name] = await asyncio.wait_for(call(), 10)
        except grpc.aio.AioRpcError as e:
            out[name] = e
    return out


async def test_admin_and_csds_answer_the_operator_only(mtls: Plane, caplog: pytest.LogCaptureFixture) -> None:
    async with mtls.channel(HTTPS_GATEWAY) as channel:
        ads, _ = await _first_response(channel, False, HTTPS_GATEWAY)  # a node for WatchNodes to show
        # An Envoy keeps health (and reflection): they show no config.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await reflection.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = await asyncio.wait_for(reflection.read(), 10)
        assert "mirrorplane.admin.v1.Admin" in [sv.name for sv in listed.list_services_response.service]
        reflection.cancel()
        caplog.set_level(logging.WARNING, logger="mirrorplane.identity")
        refused = await _admin_calls(channel)
        async with mtls.channel("operator") as operator:
            allowed = await _admin_calls(operator)
        ads.cancel()
    for name, result in refused.items():
        assert isinstance(result, grpc.aio.AioRpcError) and result.code() == grpc.StatusCode.PERMISSION_DENIED, (
            name,
            result,
        )
        assert "spiffe://mirrorplane/operator" in result.details()
    denied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("authz.denied")]
    assert len(denied) == len(refused)
    assert (
        "identity=spiffe://mirrorplane/ns/infra/gateway/features" in denied[0]
        and "rpc=/mirrorplane.admin.v1.Admin/ListNodes" in denied[0]
    )
    for name, result in allowed.items():
        assert not isinstance(result, Exception), (name, result)
    nodes = allowed["ListNodes"]
    assert isinstance(nodes, admin_pb2.ListNodesResponse)
    assert [n.gateway for n in nodes.nodes] == [HTTPS_GATEWAY]


def _forms(blob: bytes) -> dict[str, bytes]:
    return {"raw": blob, "base64": base64.b64encode(blob)}


async def test_admin_and_csds_never_show_private_key_bytes(mtls: Plane) -> None:
    key = serialization.load_pem_private_key(mtls.key_pem, password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    secrets = {f"PEM {k}": v for k, v in _forms(mtls.key_pem).items()} | {f"DER {k}": v for k, v in _forms(der).items()}
    body = mtls.key_pem.split(b"\n")[1]  # one line of the PEM body, in case of re-wrapping

    async with mtls.channel(HTTPS_GATEWAY) as envoy:  # an Envoy holding the listeners, for CSDS
        call, _ = await _first_response(envoy, False, HTTPS_GATEWAY)
        async with mtls.channel("operator") as channel:
            snapshot = await admin_pb2_grpc.AdminStub(channel).GetSnapshot(
                admin_pb2.GetSnapshotRequest(gateway=HTTPS_GATEWAY), timeout=10
            )
            status = await csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
                csds_pb2.ClientStatusRequest(), timeout=10
            )
        call.cancel()
    assert [c.node.cluster for c in status.config] == [HTTPS_GATEWAY]
    for what, message in {"GetSnapshot": snapshot, "CSDS": status}.items():
        shown = {"proto": message.SerializeToString(), "json": json_format.MessageToJson(message).encode()}
        for form, data in shown.items():
            for name, secret in secrets.items():
                assert secret not in data, f"{what} {form} holds the private key ({name})"
            assert body not in data and base64.b64encode(mtls.key_pem)[:40] not in data, (what, form)
        # What is shown is still the config: the certificate stays, the key says why it is absent.
        assert b"[redacted]" in shown["proto"], what
    assert mtls.cert_pem.split(b"\n")[1] in status.SerializeToString()


async def test_a_real_envoy_with_another_gateways_certificate_gets_nothing(
    mtls: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    """A real Envoy whose bootstrap claims the HTTPS Gateway but presents the HTTP Gateway's
    certificate: refused on every (re)connect, it never holds a listener (nor its key)."""
    caplog.set_level(logging.WARNING, logger="mirrorplane.xds")
    stolen = certs.folder_of(mtls.pki, HTTP_GATEWAY)
    envoy = LocalEnvoy(
        node_id="thief",
        gateway=HTTPS_GATEWAY,
        xds_port=int(mtls.plane.xds_address.rsplit(":", 1)[1]),
        admin_port=0,
        log_sink=lambda line: None,
        xds_tls=XdsTls(str(stolen / "ca.crt"), str(stolen / "tls.crt"), str(stolen / "tls.key")),
    )
    async with envoy:
        await wait_until(
            lambda: any(
                "node=thief" in r.getMessage() and "PERMISSION_DENIED" in r.getMessage() for r in caplog.records
            )
        )
        dump = await envoy.config_dump()
    listeners = [lst for cfg in dump["configs"] for lst in cfg.get("dynamic_listeners", [])]
    clusters = [c["cluster"]["name"] for cfg in dump["configs"] for c in cfg.get("static_clusters", [])]
    assert listeners == [] and clusters == ["mirrorplane_als", "xds_cluster"], (listeners, clusters)  # static ones only
    assert base64.b64encode(mtls.key_pem).decode()[:40] not in json.dumps(dump)
    assert mtls.plane.registry.streams() == []
