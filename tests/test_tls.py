"""Mutual TLS on the xDS port: a real Envoy fetches config over mTLS; clients without the right
certificate get nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.certs import Authority
from controlplane.identity import gateway_id
from controlplane.localenvoy import XdsTls
from controlplane.tls import TlsFiles, server_credentials
from e2e import GATEWAY, Stack, start_stack
from support import wait_until
from test_e2e_shadow import apply_body_policy, body_backends, body_compared


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # signed by a CA the server does not trust
    other_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, rogue = Authority.new(), Authority.new()
    server = ca.server(["127.0.0.1", "localhost", "mirrorplane"])
    client = ca.client(gateway_id(GATEWAY))  # this Envoy's Gateway: it may fetch that config
    other = rogue.client(gateway_id(GATEWAY))
    paths = {}
    for name, blob in {
        "ca": ca.cert,
        "server_cert": server.cert,
        "server_key": server.key,
        "client_cert": client.cert,
        "client_key": client.key,
        "other_cert": other.cert,
        "other_key": other.key,
    }.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(blob)
        paths[name] = path
    return Pki(**paths)


@pytest.fixture
async def mtls_stack(tmp_path: Path, pki: Pki) -> AsyncIterator[Stack]:
    s = await start_stack(
        tmp_path,
        plane_options={"tls": TlsFiles(pki.server_cert, pki.server_key, pki.ca)},
        envoy_options={
            "xds_tls": XdsTls(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key), sni="mirrorplane")
        },
    )
    try:
        yield s
    finally:
        await s.exits.aclose()


async def test_envoy_gets_config_over_mutual_tls_and_mirrors(mtls_stack: Stack) -> None:
    status, body = await mtls_stack.request("/", data=b"over mTLS")
    assert (status, body) == (200, b"over mTLS")
    await wait_until(lambda: any(h.get("method") == "POST" for h in mtls_stack.echos["pipy-mirror"].log.heads()))
    assert [s.node_id for s in mtls_stack.plane.registry.streams()] == ["e2e"]


async def test_bodies_reach_the_receiver_over_mutual_tls(mtls_stack: Stack) -> None:
    """The Lua filter's report rides the access-log cluster, and so its mutual TLS: with the
    Gateway's certificate the bodies arrive and decide the pair (same size, other bytes)."""
    await body_backends(mtls_stack)
    await apply_body_policy(mtls_stack, 100)
    assert (await mtls_stack.request("/b/reversed/1", data=b"hello 1")) == (200, b"hello 1")
    assert await body_compared(mtls_stack, 1) == {"body_differs": 1}
    entries = mtls_stack.plane.comparisons.entries
    assert entries["body_received"] == 2 and entries["body_denied"] == 0


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    return reply.status


def _target(stack: Stack) -> str:
    return stack.plane.xds_address.replace("0.0.0.0", "127.0.0.1")


async def test_clients_without_a_trusted_certificate_are_refused(mtls_stack: Stack, pki: Pki) -> None:
    ca = pki.ca.read_bytes()
    good = grpc.ssl_channel_credentials(ca, pki.client_key.read_bytes(), pki.client_cert.read_bytes())
    async with grpc.aio.secure_channel(_target(mtls_stack), good) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING

    refused = {
        "plaintext": grpc.aio.insecure_channel(_target(mtls_stack)),
        "TLS without a client certificate": grpc.aio.secure_channel(
            _target(mtls_stack), grpc.ssl_channel_credentials(ca)
        ),
        "a certificate from another CA": grpc.aio.secure_channel(
            _target(mtls_stack),
            grpc.ssl_channel_credentials(ca, pki.other_key.read_bytes(), pki.other_cert.read_bytes()),
        ),
    }
    for what, channel in refused.items():
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _health(channel)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, what


def test_unreadable_or_non_pem_files_get_a_clear_error(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValueError, match=r"cannot read --tls-cert .*missing\.pem"):
        server_credentials(TlsFiles(tmp_path / "missing.pem", pki.server_key))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match=r"--client-ca .*junk\.pem is not PEM"):
        server_credentials(TlsFiles(pki.server_cert, pki.server_key, junk))
