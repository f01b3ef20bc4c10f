"""The `mirrorplane` command as users run it: real processes, real ports, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from controlplane import certs
from controlplane.localenvoy import envoy_binary
from e2e import LOCAL, copy_local
from support import free_port, wait_until

MIRRORPLANE = [sys.executable, "-m", "controlplane.cli"]


class Proc:
    """A subprocess whose combined output is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    async def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 15)
        await self._reader
        return code


async def spawn(*args: str) -> Proc:
    proc = await asyncio.create_subprocess_exec(
        *MIRRORPLANE,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return Proc(proc)


@pytest.fixture
async def quickstart(tmp_path: Path) -> AsyncIterator[tuple[Proc, dict[str, int]]]:
    """`mirrorplane run manifests/local --echo ...`, with every fixed port moved to a free one."""
    ports = {name: free_port() for name in ("gateway", "pipy", "mirror", "xds", "http", "admin")}
    folder = copy_local(
        tmp_path / "local", gateway_port=ports["gateway"], pipy_port=ports["pipy"], mirror_port=ports["mirror"]
    )
    proc = await spawn(
        "run",
        str(folder),
        "--xds-port", str(ports["xds"]),
        "--http-port", str(ports["http"]),
        "--admin-port", str(ports["admin"]),
        "--echo", f"pipy={ports['pipy']}",
        "--echo", f"pipy-mirror={ports['mirror']}",
    )  # fmt: skip
    try:
        yield proc, ports
    finally:
        await proc.stop(signal.SIGKILL)


async def test_run_quickstart_mirrors_and_stops_cleanly(quickstart: tuple[Proc, dict[str, int]]) -> None:
    proc, ports = quickstart
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def hello() -> bool:
            try:
                async with session.post(f"http://127.0.0.1:{ports['gateway']}/", data=b"Hello world") as resp:
                    return resp.status == 200 and await resp.read() == b"Hello world"
            except aiohttp.ClientError:
                return False

        await wait_until(hello, timeout=20, message="curl -d 'Hello world' answered through Envoy")
        await wait_until(lambda: proc.saw("[pipy] {") and proc.saw("[pipy-mirror] {"), message="both echo logs")
        async with session.get(f"http://127.0.0.1:{ports['http']}/readyz") as resp:
            assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{ports['http']}/metrics") as resp:
            assert resp.status == 200 and "process_" in await resp.text()
        # `make run` says where the page is, and the page is there (docs/web.md).
        page = f"http://127.0.0.1:{ports['http']}/"
        await wait_until(lambda: proc.saw(f"mirrorplane run: the page is at {page} "), message="the page's URL printed")
        async with session.get(page) as resp:
            assert resp.status == 200 and "server/simple-gateway" in await resp.text()
        async with session.get(f"http://127.0.0.1:{ports['admin']}/ready") as resp:
            assert resp.status == 200  # Envoy's admin is where the README says
        async with session.get(f"http://127.0.0.1:{ports['admin']}/listeners") as resp:
            # Nothing listens beyond loopback unless told to: the Gateway listener included.
            assert f"127.0.0.1:{ports['gateway']}" in await resp.text()
    assert await proc.stop() == 0
    assert not proc.saw("Traceback"), "\n".join(proc.lines)


async def test_serve_missing_folder_exits_nonzero_with_one_line_cause(tmp_path: Path) -> None:
    proc = await spawn("serve", str(tmp_path / "nope"), "--xds-port", str(free_port()), "--http-port", str(free_port()))
    code = await asyncio.wait_for(proc.proc.wait(), 30)
    await proc._reader
    assert code == 1
    assert proc.lines[-1].startswith("mirrorplane: error:") and "does not exist" in proc.lines[-1]
    assert not proc.saw("Traceback")


async def test_serve_port_in_use_exits_nonzero(tmp_path: Path) -> None:
    port = free_port()
    blocker = await asyncio.start_server(lambda r, w: None, "0.0.0.0", port)
    try:
        proc = await spawn("serve", str(LOCAL), "--xds-port", str(port), "--http-port", str(free_port()))
        code = await asyncio.wait_for(proc.proc.wait(), 30)
        await proc._reader
    finally:
        blocker.close()
    assert code == 1, proc.lines
    assert proc.lines[-1].startswith("mirrorplane: error:"), proc.lines
    assert not proc.saw("Traceback")


async def test_translate_prints_envoy_json_and_fails_on_invalid_input(tmp_path: Path) -> None:
    ok = await asyncio.create_subprocess_exec(
        *MIRRORPLANE, "translate", str(LOCAL), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await ok.communicate()
    assert ok.returncode == 0, err.decode()
    doc = json.loads(out)
    routes = doc["gateways"]["server/simple-gateway"]["routes"]
    policies = routes[0]["virtual_hosts"][0]["routes"][0]["route"]["request_mirror_policies"]
    assert policies == [{"cluster": "mirror/server/pipy-mirror/8080", "disable_shadow_host_suffix_append": True}]

    shutil.copytree(LOCAL, tmp_path / "bad")
    (tmp_path / "bad" / "oops.yaml").write_text("kind: [\n")
    bad = await asyncio.create_subprocess_exec(
        *MIRRORPLANE, "translate", str(tmp_path / "bad"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await bad.communicate()
    assert bad.returncode == 1
    assert "oops.yaml" in err.decode() and "YAML does not parse" in err.decode()
    assert json.loads(out)["gateways"], "the valid files are still translated"


async def _envoy_accepts(bootstrap: Path) -> None:
    validate = await asyncio.create_subprocess_exec(
        envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--disable-hot-restart",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await validate.communicate()
    assert validate.returncode == 0, output.decode()


async def test_bootstrap_renders_a_bootstrap_envoy_accepts(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    proc = await asyncio.create_subprocess_exec(
        *MIRRORPLANE, "bootstrap", "--gateway", "server/simple-gateway", "--node-id", "envoy-0",
        "--xds-host", "controlplane", "--output", str(out),
    )  # fmt: skip
    assert await proc.wait() == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["node"] == {"id": "envoy-0", "cluster": "server/simple-gateway"}
    await _envoy_accepts(out)


async def test_bootstrap_embeds_the_certificates_in_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    """docker compose: the Envoy gets its Gateway's certificate inside its bootstrap and never
    mounts the folder of every certificate (and the CA's key)."""
    pki, out = tmp_path / "pki", tmp_path / "envoy.yaml"
    certs.ensure_folder(pki, ["controlplane"], ["server/simple-gateway"])
    mine = pki / "gateways" / "server" / "simple-gateway"
    out.write_text("an older bootstrap")
    out.chmod(0o644)
    proc = await asyncio.create_subprocess_exec(
        *MIRRORPLANE, "bootstrap", "--gateway", "server/simple-gateway", "--xds-host", "controlplane",
        "--xds-ca", str(mine / "ca.crt"), "--xds-cert", str(mine / "tls.crt"), "--xds-key", str(mine / "tls.key"),
        "--xds-sni", "controlplane", "--embed-certs", "--output", str(out),
    )  # fmt: skip
    assert await proc.wait() == 0
    assert out.stat().st_mode & 0o777 == 0o600  # the private key is in it
    text = out.read_text()
    assert str(pki) not in text
    [cluster] = [c for c in yaml.safe_load(text)["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    common = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["validation_context"]["trusted_ca"] == {"inline_string": (mine / "ca.crt").read_text()}
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"inline_string": (mine / "tls.crt").read_text()},
            "private_key": {"inline_string": (mine / "tls.key").read_text()},
        }
    ]
    await _envoy_accepts(out)


def test_the_cli_loads_the_kubernetes_client_only_when_asked_to() -> None:
    """kubernetes_asyncio costs ~40 MB of RSS; `serve DIR` must not pay for it."""
    code = "import sys, controlplane.cli; print('kubernetes_asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_serving_loads_cryptography_only_for_a_tls_listener() -> None:
    """cryptography costs ~9 MB of RSS; a Gateway without TLS listeners must not pay for it."""
    code = "import sys, controlplane.cli, controlplane.serve; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- errors: the user's are one line, a bug keeps its traceback (controlplane/errors.py) ----------


@pytest.mark.parametrize(
    "flags, cause",
    [
        (["--node-id", ""], "node_id must be a non-empty string"),
        (["--xds-port", "70000"], "xds_port must be in 1..65535"),
        (["--output", "/nonexistent-dir/envoy.yaml"], "--output /nonexistent-dir/envoy.yaml"),
        (["--embed-certs"], "--embed-certs: give the files to embed"),
        (["--xds-ca", "/nonexistent/ca.crt", "--embed-certs"], "--xds-ca /nonexistent/ca.crt: No such file"),
    ],
)
async def test_bad_bootstrap_flags_are_one_line(flags: list[str], cause: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *MIRRORPLANE,
        "bootstrap",
        "--gateway",
        "ns/gw",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert err.decode().startswith(f"mirrorplane: error: {cause}") and err.decode().count("\n") == 1, err.decode()


def test_a_bug_is_not_turned_into_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane import certs, cli
    from controlplane.errors import ConflictError

    def broken(*args: object) -> None:
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr(certs, "ensure_folder", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["certs", "--out", str(tmp_path), "--server-name", "x"])

    def refused(*args: object) -> None:
        raise ConflictError("the user's state")

    monkeypatch.setattr(certs, "ensure_folder", refused)
    assert cli.main(["certs", "--out", str(tmp_path), "--server-name", "x"]) == 1
