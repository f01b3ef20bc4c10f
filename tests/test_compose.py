"""docker-compose.yml and the Dockerfile.

Static checks run everywhere: the Compose Specification (compose_spec), every referenced file,
and every command line parsed by the real ``mirrorplane`` parser and checked against the ports,
names and paths the other services and the manifests use. The live test (`docker compose up`,
then the README's curl) needs a Docker engine and is skipped, with the reason, where there is none.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from controlplane.certs import folder_of
from controlplane.cli import build_parser
from controlplane.localenvoy import envoy_binary
from controlplane.offline import translate_folder
from controlplane.exposure import exposure_error
from controlplane.tls import TlsFiles

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
MANIFESTS = REPO / "manifests" / "compose"
IMAGE = "mirrorplane:local"
MIRRORPLANE = [sys.executable, "-m", "controlplane.cli"]


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the << merge keys as Compose does


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def parsed(service: str):
    return build_parser().parse_args(services()[service]["command"])


def seed_gateway() -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all((MANIFESTS / "gateway.yaml").read_text()) if d["kind"] == "Gateway")


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instruction(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


def mounts(service: str) -> dict[str, str]:
    """Container path → source (a host path or a named volume), for the service's volumes."""
    out = {}
    for spec in services()[service].get("volumes", []):
        source, target, *_ = spec.split(":")
        out[target] = source
    return out


def published(service: str) -> dict[int, int]:
    """Container port → host port (every one bound to the host's loopback only)."""
    out = {}
    for spec in services()[service].get("ports", []):
        host_ip, host, container = str(spec).split(":")
        assert host_ip == "127.0.0.1", f"{service} publishes {spec} beyond the host's loopback"
        out[int(container)] = int(host)
    return out


# -- the Compose file ------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification():
    doc = load_compose()
    spec = PyCompose.from_yaml(yaml.safe_dump({k: v for k, v in doc.items() if not k.startswith("x-")}))
    spec.validate()  # every named volume a service uses is declared
    assert sorted(spec.service_names()) == ["certs", "controlplane", "envoy", "envoy-bootstrap", "pipy", "pipy-mirror"]


def test_compose_spec_check_bites():
    bad = "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_done}\n"
    with pytest.raises(ValueError, match="service_done"):
        PyCompose.from_yaml(bad)


def test_every_referenced_file_exists():
    for name, svc in services().items():
        if "build" in svc:
            assert (REPO / svc["build"] / "Dockerfile").is_file(), name
        for target, source in mounts(name).items():
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"
        for dep in svc.get("depends_on", {}):
            assert dep in services(), f"{name} depends on unknown {dep}"
    named = {s for n in services() for s in mounts(n).values() if not s.startswith((".", "/"))}
    assert named == set(load_compose()["volumes"])


def test_mirrorplane_services_use_the_image_built_here_and_real_flags():
    for name, svc in services().items():
        if svc.get("image") == IMAGE:
            assert svc["build"] == "."
            args = parsed(name)  # argparse exits (SystemExit) on a flag the CLI does not have
            assert args.command in {"serve", "bootstrap", "echo", "certs"}, name


def test_control_plane_serves_the_mounted_manifests_on_its_published_ports():
    args = parsed("controlplane")
    assert args.command == "serve"
    assert mounts("controlplane")[str(args.dir)] == "./manifests/compose"
    assert set(published("controlplane")) == {args.xds_port, args.http_port}
    # Reachable from the Envoy container, hence a non-loopback bind: only because it is mutual TLS.
    assert args.xds_address == "0.0.0.0" and args.client_ca and not args.insecure
    assert exposure_error(args.xds_address, TlsFiles(args.tls_cert, args.tls_key, args.client_ca), args.insecure) is None
    healthcheck = " ".join(services()["controlplane"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{args.http_port}/readyz" in healthcheck


def test_envoy_bootstrap_points_at_the_control_plane_and_envoy_reads_it(tmp_path):
    boot, serve = parsed("envoy-bootstrap"), parsed("controlplane")
    assert boot.command == "bootstrap"
    assert boot.xds_host == "controlplane" and boot.xds_port == serve.xds_port
    gateway = seed_gateway()
    assert boot.gateway == f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}"

    # The bootstrap is written into a named volume that the Envoy mounts, at the path it loads.
    out = PurePosixPath(str(boot.output))
    volume = mounts("envoy-bootstrap")[str(out.parent)]
    envoy_mounts = {source: target for target, source in mounts("envoy").items()}
    envoy = services()["envoy"]
    command = envoy["command"]
    assert command[command.index("-c") + 1] == str(PurePosixPath(envoy_mounts[volume]) / out.name)
    assert "--disable-hot-restart" in command
    assert envoy["depends_on"] == {
        "envoy-bootstrap": {"condition": "service_completed_successfully"},
        "controlplane": {"condition": "service_healthy"},
    }

    # What the init step writes is a bootstrap this Envoy version accepts, with the certificates
    # the certs step issues (issued for real here, into a temp folder standing for the volume).
    certs_args = parsed("certs")
    certs_root = PurePosixPath(str(certs_args.out))
    local = tmp_path / "certs"
    certs_argv = [a.replace(str(certs_root), str(local)) for a in services()["certs"]["command"]]
    subprocess.run([*MIRRORPLANE, *certs_argv], check=True, timeout=30)
    # The Envoy presents its own Gateway's certificate (the only config it can then fetch).
    assert PurePosixPath(str(boot.xds_cert)).parent == PurePosixPath(str(folder_of(Path(str(certs_root)), boot.gateway)))
    assert boot.gateway in certs_args.gateway
    assert serve.tls_cert and serve.client_ca and PurePosixPath(str(serve.tls_cert)).is_relative_to(certs_root)
    for path in (boot.xds_ca, boot.xds_cert, boot.xds_key, serve.tls_cert, serve.tls_key, serve.client_ca):
        assert (local / PurePosixPath(str(path)).relative_to(certs_root)).is_file(), path
    assert boot.xds_sni in certs_args.server_name
    for name in ("controlplane", "envoy"):  # the bootstrap step only writes the paths down
        assert mounts(name).get(str(certs_root)) == mounts("certs")[str(certs_root)], name
    rendered = tmp_path / out.name
    argv = [a.replace(str(certs_root), str(local)) for a in services()["envoy-bootstrap"]["command"]]
    argv[argv.index("--output") + 1] = str(rendered)
    subprocess.run([*MIRRORPLANE, *argv], check=True, timeout=30)
    check = subprocess.run([envoy_binary(), "--mode", "validate", "--disable-hot-restart", "-c", str(rendered)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    node = yaml.safe_load(rendered.read_text())["node"]
    assert node == {"id": "compose-envoy", "cluster": boot.gateway}


def test_envoy_image_matches_the_envoy_the_tests_run():
    image, _, tag = services()["envoy"]["image"].partition(":")
    assert image == "envoyproxy/envoy"
    version = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=30).stdout
    local = re.search(r"/(\d+)\.(\d+)\.(\d+)/", version)
    assert local, version
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), tag
    assert tag.lstrip("v").split(".")[:2] == [local[1], local[2]], f"compose runs Envoy {tag}, the tests run {local[0]}"


def test_envoy_publishes_the_gateway_listener_port():
    [port] = [lst["port"] for lst in seed_gateway()["spec"]["listeners"]]
    assert published("envoy") == {port: 8000}  # the README's curl goes to localhost:8000


def test_echo_services_are_the_dns_endpoints_the_manifests_route_to():
    out = translate_folder(MANIFESTS)
    assert out["errors"] == []
    [resources] = out["gateways"].values()
    served = set()
    for cluster in resources["clusters"]:
        assert cluster["type"] == "STRICT_DNS", cluster["name"]
        for group in cluster["load_assignment"]["endpoints"]:
            for lb in group["lb_endpoints"]:
                addr = lb["endpoint"]["address"]["socket_address"]
                served.add((addr["address"], addr["port_value"]))
    echoes = {}
    for name, svc in services().items():
        if svc.get("image") == IMAGE and svc["command"][0] == "echo":
            args = parsed(name)
            assert args.name == name and args.host == "0.0.0.0", name
            echoes[name] = args.port
    assert served == set(echoes.items()) == {("pipy", 8081), ("pipy-mirror", 8082)}
    statuses = out["status"]["HTTPRoute/server/http-route-sample"]["parents"][0]["conditions"]
    assert {c["type"]: c["status"] for c in statuses} == {"Accepted": "True", "ResolvedRefs": "True"}


def test_compose_manifests_are_the_local_ones_but_for_the_endpoints():
    local = REPO / "manifests" / "local"
    assert sorted(p.name for p in MANIFESTS.iterdir()) == sorted(p.name for p in local.iterdir())
    for name in ("gateway.yaml", "route.yaml"):
        assert (MANIFESTS / name).read_text() == (local / name).read_text(), name


# -- the Dockerfile --------------------------------------------------------------------------


def test_dockerfile_installs_the_package_and_runs_the_cli():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [base] = instruction("FROM")
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim", base)
    assert match and (int(match[1]), int(match[2])) >= (3, 11), base
    assert project["requires-python"] == ">=3.11"
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["mirrorplane"] and "mirrorplane" in project["scripts"]
    cmd = build_parser().parse_args(json.loads(instruction("CMD")[0]))
    assert cmd.command == "serve"
    assert {int(p) for p in instruction("EXPOSE")[0].split()} == {cmd.xds_port, cmd.http_port} == {18000, 19001}
    assert instruction("USER") == ["mirrorplane"]
    assert any("pip install ." in run for run in instruction("RUN"))


def test_dockerfile_copies_exist_and_are_not_docker_ignored():
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is excluded but what is listed
    for copy in instruction("COPY"):
        *sources, _dest = shlex.split(copy)
        for source in sources:
            assert (REPO / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f".dockerignore excludes {source}"
    # Everything pyproject needs to build is copied (the bootstrap template is envoy/).
    copied = {s for copy in instruction("COPY") for s in shlex.split(copy)[:-1]}
    assert {"pyproject.toml", "README.md", "controlplane", "envoy"} <= copied


# -- live, where a Docker engine exists ------------------------------------------------------


def _docker():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # docker.errors.DockerException and connection errors alike
        pytest.skip(f"no Docker engine here ({type(e).__name__}: {e}); the live compose test runs where one exists")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip("the Docker engine is there but the `docker compose` plugin is not")
    return client


def test_docker_compose_up_serves_the_quick_start_curl():
    client = _docker()
    project = f"mirrorplane-test-{uuid.uuid4().hex[:8]}"
    compose = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", project]
    try:
        subprocess.run([*compose, "up", "--build", "--detach", "--wait"], check=True, timeout=900, cwd=REPO)
        body = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and body != b"Hello world":
            try:
                request = urllib.request.Request("http://127.0.0.1:8000/", data=b"Hello world")
                with urllib.request.urlopen(request, timeout=5) as resp:
                    body = resp.read()
            except OSError:
                time.sleep(0.5)
        assert body == b"Hello world"

        def logs(service: str) -> str:
            [container] = client.containers.list(
                filters={"label": [f"com.docker.compose.project={project}", f"com.docker.compose.service={service}"]}
            )
            return container.logs().decode()

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "Echoing back request made to / to client" not in logs("pipy-mirror"):
            time.sleep(0.5)
        for service in ("pipy", "pipy-mirror"):
            text = logs(service)
            assert '"method": "POST"' in text and "Echoing back request made to / to client" in text, service

        # The xDS port is mutual TLS: ask from inside, with the operator certificate the certs step issued.
        nodes = subprocess.run(
            [*compose, "exec", "-T", "controlplane", "mirrorplane", "nodes", "--server", "controlplane:18000",
             "--cacert", "/certs/operator/ca.crt", "--cert", "/certs/operator/tls.crt", "--key", "/certs/operator/tls.key", "-o", "json"],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        [node] = json.loads(nodes.stdout)["nodes"]
        assert node["node_id"] == "compose-envoy" and all(t["acked_version"] == t["sent_version"] for t in node["types"])
    finally:
        subprocess.run([*compose, "down", "--volumes", "--timeout", "5"], timeout=300, cwd=REPO)
