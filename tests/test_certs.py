"""`mirrorplane certs`: the CA and certificates it issues carry a real mTLS setup (a real Envoy
fetches config with them, the admin client talks with them), and it never reissues over
existing material, in a folder or as Kubernetes Secrets."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import pytest

from controlplane import certs
from controlplane.localenvoy import XdsTls
from controlplane.tls import TlsFiles
from e2e import start_stack
from fakeapi import FakeApiServer

MIRRORPLANE = [sys.executable, "-m", "controlplane.cli"]


async def run(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *MIRRORPLANE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_issued_certificates_carry_envoy_and_the_admin_client_over_mutual_tls(tmp_path: Path) -> None:
    code, out = await run("certs", "--server-name", "mirrorplane", "--server-name", "127.0.0.1", "--out", str(tmp_path / "pki"))
    assert code == 0 and out.startswith("issued"), out
    server, envoy = tmp_path / "pki" / "server", tmp_path / "pki" / "envoy"
    stack = await start_stack(
        tmp_path,
        plane_options={"tls": TlsFiles(server / "tls.crt", server / "tls.key", server / "ca.crt")},
        envoy_options={"xds_tls": XdsTls(str(envoy / "ca.crt"), str(envoy / "tls.crt"), str(envoy / "tls.key"), "mirrorplane")},
    )
    try:
        assert await stack.request("/", data=b"pki") == (200, b"pki")
        target = stack.plane.xds_address.replace("0.0.0.0", "127.0.0.1")
        code, out = await run(
            "nodes", "--server", target, "--cacert", str(envoy / "ca.crt"), "--cert", str(envoy / "tls.crt"), "--key", str(envoy / "tls.key")
        )
        assert code == 0 and "e2e" in out, out
        code, out = await run("nodes", "--server", target)  # plaintext: refused
        assert code == 1 and out.startswith("mirrorplane nodes: UNAVAILABLE") and out.count("\n") == 1, out
    finally:
        await stack.exits.aclose()


async def test_folder_and_keys_are_kept_on_a_second_run(tmp_path: Path) -> None:
    first = certs.ensure_folder(tmp_path, ["cp"])
    key = (first[0] / "tls.key").read_bytes()
    assert first[2] is True and oct((first[0] / "tls.key").stat().st_mode & 0o777) == "0o600"
    second = certs.ensure_folder(tmp_path, ["cp"])
    assert second[2] is False and (second[0] / "tls.key").read_bytes() == key


async def test_kubernetes_secrets_are_created_once_and_half_pairs_are_refused(tmp_path: Path) -> None:
    with FakeApiServer() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        fake.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mirrorplane-system"}})
        args = ("certs", "--kubernetes", "--kubeconfig", kubeconfig, "--server-name", "mirrorplane.mirrorplane-system.svc")
        code, out = await run(*args)
        assert code == 0 and out.startswith("created"), out
        server = fake.get("Secret", "mirrorplane-xds-server", "mirrorplane-system")
        client = fake.get("Secret", "mirrorplane-xds-envoy", "mirrorplane-system")
        assert server["type"] == "kubernetes.io/tls"
        assert server["data"]["ca.crt"] == client["data"]["ca.crt"], "one CA signs both"
        assert b"BEGIN CERTIFICATE" in base64.b64decode(server["data"]["tls.crt"])

        code, out = await run(*args)
        assert code == 0 and out.startswith("kept existing"), out
        assert fake.get("Secret", "mirrorplane-xds-server", "mirrorplane-system")["data"] == server["data"]

        fake.delete("Secret", "mirrorplane-xds-envoy", "mirrorplane-system")
        code, out = await run(*args)
        assert code == 1 and "exists without its pair" in out, out


def test_no_server_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="--server-name"):
        certs.generate([])


async def test_an_unreachable_api_is_a_one_line_error(tmp_path: Path) -> None:
    with FakeApiServer() as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    code, out = await run("certs", "--kubernetes", "--kubeconfig", kubeconfig, "--server-name", "x")
    assert code == 1 and out.startswith("mirrorplane: error:") and "Traceback" not in out, out
