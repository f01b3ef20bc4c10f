"""manifests/: install.yaml is current, every object is valid against its real schema, and the
pieces agree with each other and with the code (RBAC covers what the provider does, the
Deployments' arguments parse, names and ports line up)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from controlplane.certs import gateway_secret
from controlplane.cli import build_parser
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import GATEWAY_GROUP, MIRRORPLANE_GROUP, K8sObject
from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER, translate
from controlplane.providers.files import parse_text
from controlplane.providers.kubernetes import CORE_RESOURCES, GATEWAY_RESOURCES, POLICY_RESOURCES, STATUS_KINDS
from controlplane.providers.leader import LEASE, LeaseOptions
from controlplane.exposure import exposure_error
from controlplane.gatewayapi.store import Store
from controlplane.tls import TlsFiles
from controlplane.xds.jsonview import resources_to_json
from controlplane.xds.translator import XdsOptions, build_resources

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))
UPSTREAM_SUMS = ROOT / "tests" / "upstream-crds.sha256"  # upstream's config/crd/standard/, hashed
KUBERNETES_VERSION = "1.32.0"  # the preinstalled kubectl's


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate", MANIFESTS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


INSTALL = _docs(MANIFESTS / "install.yaml")


def test_install_yaml_is_generated_from_its_pieces() -> None:
    assert (MANIFESTS / "install.yaml").read_text() == _generator().render(), (
        "manifests/install.yaml is stale: run `python manifests/generate.py` (make manifests)"
    )


def test_crds_are_the_standard_channel_and_match_the_validation_copies() -> None:
    crds = {d["metadata"]["name"] for d in INSTALL if d["kind"] == "CustomResourceDefinition"}
    for kind in ("gatewayclasses", "gateways", "httproutes", "referencegrants", "grpcroutes", "backendtlspolicies"):
        assert f"{kind}.{GATEWAY_GROUP}" in crds
    for doc in INSTALL:
        if doc["kind"] == "CustomResourceDefinition" and doc["spec"]["group"] == GATEWAY_GROUP:
            assert doc["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == "v1.6.1"
            assert doc["metadata"]["annotations"]["gateway.networking.k8s.io/channel"] == "standard"
    for copy in (ROOT / "controlplane" / "gatewayapi" / "crds").glob("*.yaml"):
        assert copy.read_bytes() == (MANIFESTS / "src" / "crds" / copy.name).read_bytes(), copy.name


def test_crds_are_byte_copies_of_upstream() -> None:
    upstream = {}
    for line in UPSTREAM_SUMS.read_text().splitlines():
        if line and not line.startswith("#"):
            digest, path = line.split()
            upstream[Path(path).name] = digest
    assert len(upstream) == 11
    # mirrorplane's own CRD (mirrorplane.io_mirrorpolicies.yaml) sits beside them and is not upstream's.
    copies = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (MANIFESTS / "src" / "crds").glob(f"{GATEWAY_GROUP}_*.yaml")
    }
    assert copies == upstream


@pytest.mark.parametrize(
    "path", [MANIFESTS / "install.yaml", *EXAMPLES], ids=lambda p: str(p.relative_to(MANIFESTS))
)
def test_every_object_is_valid_against_its_schema(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        if doc["apiVersion"].partition("/")[0] in (GATEWAY_GROUP, MIRRORPLANE_GROUP):
            schema.validate(doc)  # the CRD's openAPIV3Schema and CEL rules, as the API server checks them
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_mistake() -> None:
    bad = _find(INSTALL, "Deployment", "mirrorplane")
    bad = {**bad, "spec": {**bad["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def _rules(kind: str, name: str) -> list[dict[str, Any]]:
    return _find(INSTALL, kind, name)["rules"]


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    return any(
        group in r["apiGroups"]
        and resource in r["resources"]
        and verb in r["verbs"]
        and (name is None or not r.get("resourceNames") or name in r["resourceNames"])
        for r in rules
    )


def test_rbac_allows_what_the_provider_does_and_no_more() -> None:
    cluster = _rules("ClusterRole", "mirrorplane")
    watched = [(GATEWAY_GROUP, plural) for _, plural, _, _ in GATEWAY_RESOURCES]
    watched += [(r.group, r.plural) for r in CORE_RESOURCES]
    for group, plural in watched:
        for verb in ("list", "watch"):
            assert _allowed(cluster, group, plural, verb), (group, plural, verb)
    for _, plural, _, _ in GATEWAY_RESOURCES:
        kind_writes_status = any(p == plural for k, p, _, _ in GATEWAY_RESOURCES if k in STATUS_KINDS)
        assert _allowed(cluster, GATEWAY_GROUP, f"{plural}/status", "patch") == kind_writes_status
    for r in POLICY_RESOURCES:
        for verb in ("list", "watch"):
            assert _allowed(cluster, r.group, r.plural, verb), (r.plural, verb)
        assert _allowed(cluster, r.group, f"{r.plural}/status", "patch") == (r.kind in STATUS_KINDS)
    every_verb = {v for r in cluster for v in r["verbs"]}
    assert every_verb == {"list", "watch", "patch"}, "the control plane never creates, updates or deletes"

    lease = LeaseOptions(namespace="mirrorplane-system")
    role = _find(INSTALL, "Role", "mirrorplane-leader-election")
    assert role["metadata"]["namespace"] == lease.namespace
    assert _allowed(role["rules"], LEASE.group, LEASE.plural, "create")
    for verb in ("get", "update"):
        assert _allowed(role["rules"], LEASE.group, LEASE.plural, verb, lease.name)
        assert not _allowed(role["rules"], LEASE.group, LEASE.plural, verb, "another-lease")


def _container(deployment: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["initContainers" if init else "containers"] if c["name"] == name)


def test_control_plane_deployment_runs_serve_kubernetes_with_probes() -> None:
    deployment = _find(INSTALL, "Deployment", "mirrorplane")
    assert deployment["spec"]["replicas"] == 2
    container = _container(deployment, "mirrorplane")
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve" and args.kubernetes and args.dir is None
    assert (args.xds_port, args.http_port) == (18000, 19001)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ports[container["readinessProbe"]["httpGet"]["port"]] == args.http_port
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # --gateway-service names the Envoy fleet's Service of the same file.
    ns, name = args.gateway_service.split("/")
    envoy_service = _find(INSTALL, "Service", name)
    assert envoy_service["metadata"]["namespace"] == ns
    service = _find(INSTALL, "Service", "mirrorplane")
    assert {p["port"] for p in service["spec"]["ports"]} == {args.xds_port, args.http_port}
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "mirrorplane"


def test_envoy_fleet_bootstraps_for_the_example_gateway_from_the_control_plane_service() -> None:
    deployment = _find(INSTALL, "Deployment", "envoy")
    init = _container(deployment, "bootstrap", init=True)
    args = build_parser().parse_args(init["args"])
    assert args.command == "bootstrap"
    assert args.node_id == "$(POD_NAME)"  # expanded by the kubelet from the downward API env
    assert any(e["name"] == "POD_NAME" for e in init["env"])
    assert args.xds_host == "mirrorplane.mirrorplane-system.svc.cluster.local"
    assert args.xds_port == 18000
    gateway = next(d for p in EXAMPLES for d in _docs(p) if d["kind"] == "Gateway")
    assert args.gateway == f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}"
    envoy = _container(deployment, "envoy")
    assert f"--config-path={args.output}" in envoy["args"]
    assert "--disable-hot-restart" in envoy["args"]
    listener_port = gateway["spec"]["listeners"][0]["port"]
    assert any(p["containerPort"] == listener_port for p in envoy["ports"])
    service = _find(INSTALL, "Service", "envoy")
    assert service["spec"]["ports"][0]["port"] == listener_port


def test_examples_translate_to_a_mirrored_route_under_the_installed_gateway_class() -> None:
    gateway_class = _find(INSTALL, "GatewayClass", "mirrorplane")
    assert gateway_class["spec"]["controllerName"] == DEFAULT_CONTROLLER
    objects: list[K8sObject[Any]] = []
    for path in [MANIFESTS / "install.yaml", *EXAMPLES]:
        parsed, errors = parse_text(path.read_text(), str(path))
        assert not errors
        objects += parsed.values()
    result = translate(Store.from_objects(objects))
    assert list(result.gateways) == ["server/simple-gateway"]
    route = result.statuses[("HTTPRoute", "server", "http-route-sample")]
    conditions = {c["type"]: c["status"] for c in route["parents"][0]["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}
    envoy = json.dumps(resources_to_json(build_resources(result.gateways["server/simple-gateway"], XdsOptions())))
    assert "request_mirror_policies" in envoy and "pipy-mirror" in envoy


def _mounted_secret(deployment: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """The Secret behind the volume under which ``path`` is mounted in ``container``."""
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    mount = max(mounts, key=lambda m: len(m["mountPath"]))  # the innermost mount holds the file
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    return volumes[mount["name"]]["secret"]["secretName"]


def test_xds_is_mutual_tls_with_the_certificates_the_certgen_job_issues() -> None:
    job = _find(INSTALL, "Job", "mirrorplane-certgen")
    certgen = build_parser().parse_args(job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert certgen.command == "certs" and certgen.kubernetes and certgen.namespace == "mirrorplane-system"

    plane = _find(INSTALL, "Deployment", "mirrorplane")
    serve_container = _container(plane, "mirrorplane")
    serve = build_parser().parse_args(serve_container["args"])
    for path in (serve.tls_cert, serve.tls_key, serve.client_ca):
        assert _mounted_secret(plane, serve_container, str(path)) == certgen.server_secret
    # Bound beyond loopback (Envoys and probes reach the pod IP), which serve allows only with mTLS.
    assert serve.xds_address == serve.http_address == "0.0.0.0" and not serve.insecure
    assert exposure_error(serve.xds_address, TlsFiles(serve.tls_cert, serve.tls_key, serve.client_ca), serve.insecure) is None
    # The operator certificate is there for `kubectl exec ... mirrorplane nodes`.
    assert _mounted_secret(plane, serve_container, "/etc/mirrorplane/operator/tls.crt") == certgen.operator_secret

    fleet = _find(INSTALL, "Deployment", "envoy")
    boot = build_parser().parse_args(_container(fleet, "bootstrap", init=True)["args"])
    envoy = _container(fleet, "envoy")
    assert boot.gateway in certgen.gateway
    for path in (boot.xds_ca, boot.xds_cert, boot.xds_key):
        # Its own Gateway's certificate, read by Envoy, not the init step.
        assert _mounted_secret(fleet, envoy, path) == gateway_secret(boot.gateway)
    assert boot.xds_sni in certgen.server_name and boot.xds_host in certgen.server_name

    # The CA key is read by the Job alone: no pod mounts its Secret.
    mounted = {
        v["secret"]["secretName"]
        for d in INSTALL
        if d["kind"] == "Deployment"
        for v in d["spec"]["template"]["spec"].get("volumes", [])
        if "secret" in v
    }
    assert certgen.ca_secret not in mounted

    role = _find(INSTALL, "Role", "mirrorplane-certgen")["rules"]
    issued = [certgen.ca_secret, certgen.server_secret, certgen.operator_secret, *map(gateway_secret, certgen.gateway)]
    for name in issued:
        assert _allowed(role, "", "secrets", "get", name)
    assert _allowed(role, "", "secrets", "create")
    assert not _allowed(role, "", "secrets", "get", "another-secret")
    assert {v for r in role for v in r["verbs"]} == {"get", "create"}
