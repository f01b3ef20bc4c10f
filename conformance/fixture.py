"""The upstream YAML, and what a cluster would add to it at run time.

Upstream's Applier substitutes ``{GATEWAY_CLASS_NAME}`` style placeholders while applying; we do
the same into a temporary folder (the upstream files stay byte for byte). A cluster would also
run the Deployments, write EndpointSlices for Services with a selector, and the suite creates
self-signed TLS Secrets before any test: those objects are produced here as plain YAML, so the
file provider sees exactly what a Kubernetes provider would list.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER

UPSTREAM = Path(__file__).resolve().parent / "upstream"
BASE_MANIFESTS = UPSTREAM / "base" / "manifests.yaml"
GATEWAY_CLASS = "mirrorplane-conformance"
PLACEHOLDERS = {"GATEWAY_CLASS_NAME": GATEWAY_CLASS, "GATEWAY_CONTROLLER_NAME": DEFAULT_CONTROLLER}

# The Secrets upstream's suite Setup creates programmatically (namespace, name, hosts).
RUNTIME_SECRETS = (
    ("gateway-conformance-web-backend", "certificate", ("*",)),
    ("gateway-conformance-infra", "tls-validity-checks-certificate", ("*", "*.org")),
    ("gateway-conformance-infra", "tls-passthrough-checks-certificate", ("abc.example.com",)),
    ("gateway-conformance-app-backend", "tls-passthrough-checks-certificate", ("abc.example.com",)),
)

# echo-basic's container ports: HTTP_PORT and H2C_PORT defaults.
HTTP_PORT, H2C_PORT = 3000, 3001
# Modes the local echo does not implement: those pods are reported as not run.
_OTHER_MODES = ("TCP_ECHO_SERVER", "UDP_ECHO_SERVER", "TLS_SERVER_CERT")
# GRPC_ECHO_SERVER: echo-basic serves plaintext gRPC on HTTP_PORT instead of HTTP; the local echo
# does the same with --grpc-port (its HTTP port then moves to SPARE_PORT, which no Service names).
GRPC_MODE, SPARE_PORT = "GRPC_ECHO_SERVER", 3002


def render(text: str) -> str:
    for key, value in PLACEHOLDERS.items():
        text = text.replace("{" + key + "}", value)
    return text


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(path.read_text())) if isinstance(d, dict)]


@dataclass(frozen=True)
class PodSpec:
    """One replica of an echo Deployment, as the local echo process will run it."""

    namespace: str
    deployment: str
    name: str
    container: str
    labels: tuple[tuple[str, str], ...]
    ip: str
    grpc: bool = False  # GRPC_ECHO_SERVER: gRPC on HTTP_PORT


@dataclass
class Deployments:
    """Which pods the fixture asks for, and which Deployments we cannot run (and why)."""

    pods: list[PodSpec] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)


def echo_pods(docs: list[dict[str, Any]], subnet: tuple[int, int]) -> Deployments:
    """Every echo-basic replica gets a loopback "pod IP" 127.A.B.N in the run's random subnet."""
    out = Deployments()
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        meta, spec = doc["metadata"], doc["spec"]
        key = f"{meta['namespace']}/{meta['name']}"
        container = spec["template"]["spec"]["containers"][0]
        env = {e["name"] for e in container.get("env") or []}
        if "echo-basic" not in container.get("image", ""):
            out.not_run[key] = f"image {container.get('image')} is not echo-basic"
            continue
        modes = sorted(env & set(_OTHER_MODES))
        if modes:
            out.not_run[key] = f"echo-basic mode {', '.join(modes)} is not implemented by mirrorplane echo"
            continue
        labels = tuple(sorted((spec["template"]["metadata"].get("labels") or {}).items()))
        template_hash = hashlib.sha256(key.encode()).hexdigest()[:10]
        for replica in range(spec.get("replicas", 1)):
            suffix = hashlib.sha256(f"{key}/{replica}".encode()).hexdigest()[:5]
            n = len(out.pods) + 2
            out.pods.append(
                PodSpec(
                    namespace=meta["namespace"],
                    deployment=meta["name"],
                    name=f"{meta['name']}-{template_hash}-{suffix}",
                    container=container["name"],
                    labels=labels,
                    ip=f"127.{subnet[0]}.{subnet[1]}.{n}",
                    grpc=GRPC_MODE in env,
                )
            )
    return out


def _selects(selector: dict[str, str], labels: tuple[tuple[str, str], ...]) -> bool:
    have = dict(labels)
    return bool(selector) and all(have.get(k) == v for k, v in selector.items())


def endpoint_slices(docs: list[dict[str, Any]], pods: list[PodSpec], ready: set[str]) -> list[dict[str, Any]]:
    """What the EndpointSlice controller writes for each Service with a selector (ready pods only)."""
    slices = []
    for doc in docs:
        if doc.get("kind") != "Service" or not (doc["spec"].get("selector")):
            continue
        meta = doc["metadata"]
        members = [p for p in pods if p.namespace == meta["namespace"] and _selects(doc["spec"]["selector"], p.labels)]
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{meta['name']}-local",
                    "namespace": meta["namespace"],
                    "labels": {"kubernetes.io/service-name": meta["name"]},
                },
                "addressType": "IPv4",
                "endpoints": [
                    {
                        "addresses": [p.ip],
                        "conditions": {"ready": p.name in ready},
                        "targetRef": {"kind": "Pod", "name": p.name},
                    }
                    for p in members
                ],
                "ports": [
                    {"name": port.get("name", ""), "port": port.get("targetPort", port["port"]), "protocol": "TCP"}
                    for port in doc["spec"].get("ports") or []
                ],
            }
        )
    return slices


@dataclass(frozen=True)
class Certificate:
    cert_pem: bytes
    key_pem: bytes


def self_signed(hosts: tuple[str, ...]) -> Certificate:
    """Like upstream's MustCreateSelfSignedCertSecret: one RSA key, the hosts as SANs."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Certificate(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
    )


def tls_secret(namespace: str, name: str, cert: Certificate) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "tls.crt": base64.b64encode(cert.cert_pem).decode(),
            "tls.key": base64.b64encode(cert.key_pem).decode(),
        },
    }


def gateway_class() -> dict[str, Any]:
    """The GatewayClass an implementation installs before running the suite."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {"controllerName": DEFAULT_CONTROLLER},
    }


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
