"""controlplane.localenvoy and the shared bootstrap template, against a real Envoy."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml

from controlplane import localenvoy
from controlplane.localenvoy import EnvoyStartError, LocalEnvoy, envoy_binary, render_bootstrap
from support import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "controlplane" / "bootstrap.yaml"
PLACEHOLDERS = {"NODE_ID", "NODE_CLUSTER", "XDS_HOST", "XDS_PORT", "ADMIN_PORT"}


def _alive(pid: int | None) -> bool:
    """True while ``pid`` exists and is not a zombie (no pid: never started)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _bootstrap_dump(dump: dict) -> dict:
    for config in dump["configs"]:
        if config["@type"].endswith("BootstrapConfigDump"):
            return config["bootstrap"]
    raise AssertionError("no BootstrapConfigDump in /config_dump")


# -- the template and render_bootstrap -----------------------------------------


def test_render_bootstrap_fills_every_placeholder():
    text = render_bootstrap(
        node_id="envoy-1", node_cluster="default/gw", xds_host="127.0.0.1", xds_port=18001, admin_port=19001
    )
    assert "${" not in text
    doc = yaml.safe_load(text)
    assert doc["node"] == {"id": "envoy-1", "cluster": "default/gw"}
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19001}
    ads = doc["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "DELTA_GRPC"
    assert ads["transport_api_version"] == "V3"
    assert ads["set_node_on_first_message_only"] is True
    assert ads["grpc_services"][0]["envoy_grpc"]["cluster_name"] == "xds_cluster"
    for key in ("cds_config", "lds_config"):
        assert doc["dynamic_resources"][key] == {"ads": {}, "resource_api_version": "V3"}
    # xDS, and shadow testing's access log (to the same port unless --als-address says otherwise).
    clusters = doc["static_resources"]["clusters"]
    assert [c["name"] for c in clusters] == ["xds_cluster", "mirrorplane_als"]
    for cluster in clusters:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18001}
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in options["explicit_http_config"]
    collect = yaml.safe_load(
        render_bootstrap(node_id="e", node_cluster="default/gw", xds_port=18001, als_address=("10.0.0.9", 18090))
    )
    [als] = [c for c in collect["static_resources"]["clusters"] if c["name"] == "mirrorplane_als"]
    endpoint = als["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "10.0.0.9", "port_value": 18090}


def test_render_bootstrap_can_choose_state_of_the_world():
    doc = yaml.safe_load(render_bootstrap(node_id="n", node_cluster="ns/gw", ads_api_type="GRPC"))
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"


def test_render_bootstrap_quotes_awkward_strings():
    doc = yaml.safe_load(render_bootstrap(node_id='a"b\\c: d', node_cluster="ns/gw # x"))
    assert doc["node"] == {"id": 'a"b\\c: d', "cluster": "ns/gw # x"}


@pytest.mark.parametrize(
    "kwargs", [{"xds_port": 0}, {"admin_port": 70000}, {"xds_port": "18000"}, {"node_id": ""}, {"ads_api_type": "REST"}]
)
def test_render_bootstrap_rejects_bad_arguments(kwargs):
    args = {"node_id": "n", "node_cluster": "ns/gw", **kwargs}
    with pytest.raises((ValueError, TypeError)):
        render_bootstrap(**args)


def test_template_uses_only_envsubst_placeholders():
    text = TEMPLATE.read_text()
    assert set(re.findall(r"\$\{([A-Z_]+)\}", text)) == PLACEHOLDERS
    # No other "$" anywhere, so envsubst and string.Template render it the same.
    assert text.count("$") == len(re.findall(r"\$\{[A-Z_]+\}", text))


@pytest.mark.skipif(shutil.which("envsubst") is None, reason="envsubst (gettext-base) not installed")
def test_envsubst_renders_the_same_bootstrap():
    env = {
        "NODE_ID": "n1",
        "NODE_CLUSTER": "ns/gw",
        "XDS_HOST": "xds.example",
        "XDS_PORT": "18000",
        "ADMIN_PORT": "19000",
    }
    out = subprocess.run(["envsubst"], input=TEMPLATE.read_text(), capture_output=True, text=True, check=True, env=env)
    ours = render_bootstrap(
        node_id="n1", node_cluster="ns/gw", xds_host="xds.example", xds_port=18000, admin_port=19000
    )
    assert yaml.safe_load(out.stdout) == yaml.safe_load(ours)


def test_rendered_bootstrap_passes_envoy_validate(tmp_path):
    path = tmp_path / "bootstrap.yaml"
    path.write_text(render_bootstrap(node_id="n1", node_cluster="ns/gw", xds_port=free_port(), admin_port=free_port()))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_envoy_binary_is_executable():
    path = envoy_binary()
    assert os.path.isfile(path) and os.access(path, os.X_OK)


# -- the template as package data ----------------------------------------------


def test_bootstrap_template_is_the_repo_file():
    assert localenvoy.bootstrap_template() == TEMPLATE.read_text()


def test_packaged_template_resolves_via_importlib_resources(tmp_path):
    """Build a real wheel from a copy of the tree and read the template from it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "controlplane", src / "controlplane", ignore=ignore)
    dist = tmp_path / "dist"
    dist.mkdir()
    # The real thing: pip's isolated PEP 517 build, as `pip install .` does.
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)]
    result = subprocess.run(build, cwd=src, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = dist.glob("mirrorplane-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("controlplane/bootstrap.yaml").decode() == TEMPLATE.read_text()
        modules = {p.relative_to(REPO).as_posix() for p in (REPO / "controlplane").rglob("*.py")}
        assert modules - set(zf.namelist()) == set(), "a module is missing from the wheel (no __init__.py?)"
        site = tmp_path / "site"
        zf.extractall(site)  # a pure-Python wheel installs by unpacking
    probe = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from controlplane import localenvoy
        print(localenvoy.__file__)
        print(localenvoy.bootstrap_template(), end="")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(site)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    where, text = result.stdout.split("\n", 1)
    assert Path(where) == site / "controlplane" / "localenvoy.py"  # the wheel's, not the checkout's
    assert text == TEMPLATE.read_text()


# -- a real Envoy --------------------------------------------------------------


async def test_local_envoy_starts_serves_admin_and_stops():
    lines: list[str] = []
    envoy = LocalEnvoy(
        node_id="test-node-1",
        gateway="default/mirror-gw",
        xds_port=free_port(),  # nothing listens there
        admin_port=free_port(),
        log_level="info",
        log_sink=lines.append,
    )
    async with envoy:
        assert envoy.returncode is None and _alive(envoy.pid)
        assert envoy.admin_url == f"http://127.0.0.1:{envoy.admin_port}"
        info = await envoy.server_info()
        assert info["hot_restart_version"] == "disabled"
        assert info["command_line_options"]["concurrency"] == 1

        bootstrap = _bootstrap_dump(await envoy.config_dump())
        assert bootstrap["node"]["id"] == "test-node-1"
        assert bootstrap["node"]["cluster"] == "default/mirror-gw"
        ads = bootstrap["dynamic_resources"]["ads_config"]
        assert ads["api_type"] == "DELTA_GRPC"
        assert ads["set_node_on_first_message_only"] is True
        assert ads["grpc_services"][0]["envoy_grpc"]["cluster_name"] == "xds_cluster"
        assert bootstrap["dynamic_resources"]["cds_config"]["ads"] == {}
        assert bootstrap["dynamic_resources"]["lds_config"]["ads"] == {}
        static = await envoy.config_dump("static_clusters")
        assert [c["cluster"]["name"] for c in static["configs"]] == ["mirrorplane_als", "xds_cluster"]

        # ADS points at a closed port: Envoy keeps trying to connect.
        async def connect_failed() -> bool:
            return (await envoy.stat("cluster.xds_cluster.upstream_cx_connect_fail") or 0) >= 1

        await envoy.wait_for(connect_failed, timeout=15)
        assert await envoy.stat("cluster.xds_cluster.membership_total") == 1
        assert await envoy.stat("no.such.stat") is None
        assert "cluster.xds_cluster.upstream_cx_total" in await envoy.admin_get("/stats?filter=xds_cluster")
        await wait_until(lambda: any("starting main dispatch loop" in line for line in lines), timeout=10)
        assert not any("unlimited" in line.lower() for line in lines), lines
        pid, workdir = envoy.pid, envoy.workdir
    assert envoy.returncode is not None
    assert not _alive(pid)
    assert not workdir.exists()
    await envoy.stop()  # idempotent
    assert envoy.returncode is not None


async def test_admin_port_in_use_fails_start_with_envoys_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        envoy = LocalEnvoy(node_id="n", gateway="ns/gw", xds_port=free_port(), admin_port=port, log_sink=lambda _: None)
        with pytest.raises(EnvoyStartError) as err:
            await envoy.start()
    message = str(err.value)
    assert "exited with code" in message
    assert f"cannot bind '127.0.0.1:{port}': Address already in use" in message
    assert envoy.returncode not in (None, 0)
    await envoy.stop()


async def test_two_envoys_run_at_once():
    xds_port = free_port()
    a = LocalEnvoy(node_id="a", gateway="ns/gw", xds_port=xds_port, admin_port=free_port(), log_sink=lambda _: None)
    b = LocalEnvoy(node_id="b", gateway="ns/gw", xds_port=xds_port, admin_port=free_port(), log_sink=lambda _: None)
    async with a, b:
        assert a.pid != b.pid and _alive(a.pid) and _alive(b.pid)
        assert _bootstrap_dump(await a.config_dump())["node"]["id"] == "a"
        assert _bootstrap_dump(await b.config_dump())["node"]["id"] == "b"
    assert not _alive(a.pid) and not _alive(b.pid)


@pytest.mark.envoy
async def test_admin_port_zero_picks_a_free_port():
    async with LocalEnvoy(
        node_id="z", gateway="ns/gw", xds_port=free_port(), admin_port=0, log_sink=lambda _: None
    ) as envoy:
        assert envoy.admin_port > 0
        assert (await envoy.server_info())["state"] in {"PRE_INITIALIZING", "INITIALIZING", "LIVE"}


@pytest.mark.envoy
async def test_wait_for_times_out_with_the_reason():
    async with LocalEnvoy(
        node_id="w", gateway="ns/gw", xds_port=free_port(), admin_port=0, log_sink=lambda _: None
    ) as envoy:

        async def never() -> bool:
            return False

        with pytest.raises(TimeoutError, match="within 0.2s"):
            await envoy.wait_for(never, timeout=0.2)


def test_envoy_dies_with_its_parent(tmp_path):
    """SIGKILL the Python process that started Envoy: Envoy must not outlive it."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(REPO)!r})
        from controlplane.localenvoy import LocalEnvoy

        async def main():
            envoy = LocalEnvoy(node_id="orphan", gateway="ns/gw", xds_port={free_port()}, admin_port=0,
                               log_sink=lambda _: None, workdir=__import__("pathlib").Path({str(tmp_path)!r}))
            await envoy.start()
            print(envoy.pid, flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None  # stdout=PIPE
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"no pid from the parent (exit {parent.poll()})"
        envoy_pid = int(line)
        assert _alive(envoy_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    try:
        asyncio.run(wait_until(lambda: not _alive(envoy_pid), timeout=10, message=f"envoy pid {envoy_pid} gone"))
    finally:
        if _alive(envoy_pid):  # do not leave a stray Envoy behind a failed test
            os.kill(envoy_pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent death signal is Linux only")
def test_the_parent_death_signal_is_set_up_without_running_a_program(monkeypatch):
    """Envoy is started on the event loop: finding libc with find_library ran `ldconfig -p` there
    (5 ms) at every start."""

    def no_program(argv, *args, **kwargs):
        raise AssertionError(f"ran {argv!r}")

    monkeypatch.setattr(subprocess, "Popen", no_program)
    assert localenvoy._pdeathsig_preexec() is not None
    assert localenvoy._dying_with_parent(["envoy"])[0][-1] == "envoy"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux's setpriv sets the parent death signal")
async def test_envoy_is_started_without_a_preexec_fn_so_by_vfork(tmp_path, monkeypatch):
    """A preexec_fn makes subprocess fork in full: copying the page tables of a 220 MB control
    plane held the event loop 15 ms at each Envoy start (the Kubernetes cold start). setpriv sets
    the parent death signal instead and execs Envoy, so the pid is Envoy's (that it still dies
    with its parent: test_envoy_dies_with_its_parent)."""
    seen: list[dict] = []
    real = asyncio.create_subprocess_exec

    async def recording(*argv, **kwargs):
        seen.append(kwargs)
        return await real(*argv, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    envoy = LocalEnvoy(
        node_id="vfork", gateway="ns/gw", xds_port=free_port(), admin_port=0, log_sink=lambda _: None, workdir=tmp_path
    )
    await envoy.start()
    try:
        assert [k.get("preexec_fn") for k in seen] == [None]
        assert Path(f"/proc/{envoy.pid}/exe").resolve().name == "envoy"  # setpriv exec'd it
    finally:
        await envoy.stop()
