"""`mirrorplane certs`: the CA and certificates it issues carry a real mTLS setup (a real Envoy
fetches config with them, the admin client talks with them), and it never reissues over
existing material, in a folder or as Kubernetes Secrets."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import pytest
from cryptography import x509

from controlplane import certs
from controlplane.localenvoy import XdsTls, render_bootstrap
from controlplane.tls import TlsFiles
from e2e import GATEWAY, start_stack
from fakeapi import FakeApiServer

MIRRORPLANE = [sys.executable, "-m", "controlplane.cli"]


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *MIRRORPLANE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.parametrize("embed", [False, True], ids=["paths", "embedded"])
async def test_issued_certificates_carry_envoy_and_the_admin_client_over_mutual_tls(
    tmp_path: Path, embed: bool
) -> None:
    pki = tmp_path / "pki"
    code, out = await run(
        "certs", "--server-name", "mirrorplane", "--server-name", "127.0.0.1", "--gateway", GATEWAY, "--out", str(pki)
    )
    assert code == 0 and out.startswith(f"issued {pki}/server/"), out
    server, envoy, operator = pki / "server", pki / "gateways" / GATEWAY, pki / "operator"
    xds_tls = XdsTls(str(envoy / "ca.crt"), str(envoy / "tls.crt"), str(envoy / "tls.key"), "mirrorplane", embed)
    # Embedded (docker compose): the bootstrap names none of the files, so Envoy never reads them.
    assert (str(pki) in render_bootstrap(node_id="e2e", node_cluster=GATEWAY, xds_tls=xds_tls)) is not embed
    stack = await start_stack(
        tmp_path,
        plane_options={"tls": TlsFiles(server / "tls.crt", server / "tls.key", server / "ca.crt")},
        envoy_options={"xds_tls": xds_tls},
    )
    try:
        # A real Envoy with its Gateway's certificate gets that Gateway's config.
        assert await stack.request("/", data=b"pki") == (200, b"pki")
        target = stack.plane.xds_address

        def client(d: Path) -> list[str]:
            return [
                "--server",
                target,
                "--cacert",
                str(d / "ca.crt"),
                "--cert",
                str(d / "tls.crt"),
                "--key",
                str(d / "tls.key"),
            ]

        code, out = await run("nodes", *client(operator))
        assert code == 0 and "e2e" in out, out
        code, out = await run("nodes", *client(envoy))  # an Envoy's certificate: not the operator
        assert code == 1 and out.startswith("mirrorplane nodes: PERMISSION_DENIED") and out.count("\n") == 1, out
        code, out = await run("nodes", "--server", target)  # plaintext: refused
        assert code == 1 and out.startswith("mirrorplane nodes: UNAVAILABLE") and out.count("\n") == 1, out
    finally:
        await stack.exits.aclose()


def _uri_sans(pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )


async def test_folder_and_keys_are_kept_and_a_new_gateway_joins_the_same_ca(tmp_path: Path) -> None:
    issued, kept = certs.ensure_folder(tmp_path, ["cp"], ["ns-a/gw"])
    assert issued == [tmp_path / "server", tmp_path / "operator", tmp_path / "gateways" / "ns-a" / "gw"] and kept == []
    key = (tmp_path / "server" / "tls.key").read_bytes()
    for secret in ("ca/ca.key", "server/tls.key", "operator/tls.key", "gateways/ns-a/gw/tls.key"):
        assert oct((tmp_path / secret).stat().st_mode & 0o777) == "0o600", secret
    assert _uri_sans((tmp_path / "gateways/ns-a/gw/tls.crt").read_bytes()) == [
        "spiffe://mirrorplane/ns/ns-a/gateway/gw"
    ]
    assert _uri_sans((tmp_path / "operator/tls.crt").read_bytes()) == ["spiffe://mirrorplane/operator"]

    issued, kept = certs.ensure_folder(tmp_path, ["cp"], ["ns-a/gw", "ns-b/other"])
    assert issued == [tmp_path / "gateways" / "ns-b" / "other"] and len(kept) == 3
    assert (tmp_path / "server" / "tls.key").read_bytes() == key
    assert (tmp_path / "gateways/ns-b/other/ca.crt").read_bytes() == (tmp_path / "server/ca.crt").read_bytes()


@pytest.mark.parametrize("gateway", ["../escape", "ns/a/b", "NS/x", "ns/", "x"])
def test_a_bad_gateway_is_refused_before_anything_is_written(tmp_path: Path, gateway: str) -> None:
    with pytest.raises(ValueError, match="--gateway"):
        certs.ensure_folder(tmp_path / "pki", ["cp"], [gateway])
    assert not (tmp_path / "pki").exists()


def test_a_folder_from_before_per_gateway_certificates_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    with pytest.raises(ValueError, match="exists without the CA that issued it"):
        certs.ensure_folder(tmp_path, ["cp"])


@pytest.mark.kubernetes
async def test_kubernetes_secrets_are_created_once_and_orphans_are_refused(tmp_path: Path) -> None:
    with FakeApiServer() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mirrorplane-system"}})
        args = (
            "certs",
            "--kubernetes",
            "--kubeconfig",
            kubeconfig,
            "--server-name",
            "mirrorplane.mirrorplane-system.svc",
        )
        code, out = await run(*args, "--gateway", GATEWAY)
        assert code == 0 and out.startswith("created Secret mirrorplane-system/mirrorplane-xds-ca"), out
        envoy_secret = "mirrorplane-xds-envoy.server.simple-gateway"
        server = fake.get("Secret", "mirrorplane-xds-server", "mirrorplane-system")
        client = fake.get("Secret", envoy_secret, "mirrorplane-system")
        operator = fake.get("Secret", "mirrorplane-xds-operator", "mirrorplane-system")
        assert server["type"] == "kubernetes.io/tls"
        assert server["data"]["ca.crt"] == client["data"]["ca.crt"] == operator["data"]["ca.crt"], "one CA signs all"
        assert b"BEGIN CERTIFICATE" in base64.b64decode(server["data"]["tls.crt"])
        assert _uri_sans(base64.b64decode(client["data"]["tls.crt"])) == [
            "spiffe://mirrorplane/ns/server/gateway/simple-gateway"
        ]

        code, out = await run(*args, "--gateway", GATEWAY, "--gateway", "other/gw")
        assert (
            code == 0 and out.splitlines()[0] == "created Secret mirrorplane-system/mirrorplane-xds-envoy.other.gw"
        ), out
        assert fake.get("Secret", "mirrorplane-xds-server", "mirrorplane-system")["data"] == server["data"]
        assert (
            fake.get("Secret", "mirrorplane-xds-envoy.other.gw", "mirrorplane-system")["data"]["ca.crt"]
            == server["data"]["ca.crt"]
        )

        fake.delete("Secret", "mirrorplane-xds-ca", "mirrorplane-system")
        code, out = await run(*args)
        assert code == 1 and "exists without the CA Secret" in out, out


def test_no_server_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="--server-name"):
        certs.Authority.new().server([])


@pytest.mark.kubernetes
async def test_an_unreachable_api_is_a_one_line_error(tmp_path: Path) -> None:
    with FakeApiServer() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    code, out = await run("certs", "--kubernetes", "--kubeconfig", kubeconfig, "--server-name", "x")
    assert code == 1 and out.startswith("mirrorplane: error:") and "Traceback" not in out, out
