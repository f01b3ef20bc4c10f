"""Certificates for mutual TLS on the xDS port: a private CA, the control plane's server
certificate and one client certificate the Envoy fleet presents.

Peers ship a "certgen" step for the same reason (Envoy Gateway runs one as a Job): the xDS
stream carries listener private keys, so it should be mTLS from the first install, without
asking users to run a PKI first. Generation is idempotent: existing material is kept, so
re-running the step never invalidates certificates Envoys already hold.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from .providers.kubeapi import KubeApi

VALID_DAYS = 3650
# File names (folder mode) and Secret keys (Kubernetes mode, the kubernetes.io/tls convention).
FILES = {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}
SERVER, CLIENT = "server", "envoy"


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, with the CA that signed it (all PEM)."""

    ca: bytes
    cert: bytes
    key: bytes

    def as_files(self) -> dict[str, bytes]:
        return {FILES["ca"]: self.ca, FILES["cert"]: self.cert, FILES["key"]: self.key}


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mirrorplane"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def generate(server_names: list[str]) -> tuple[Pair, Pair]:
    """A fresh CA, then (server pair for ``server_names``, Envoy client pair) signed by it.

    ``server_names`` are DNS names or IP addresses the control plane is reached by (they become
    subjectAltNames; Envoy checks the one it asks for with --xds-sni).
    """
    if not server_names:
        raise ValueError("give at least one --server-name (the name Envoys reach the control plane by)")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("mirrorplane xDS CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)

    def leaf(common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(_name(common_name), ca_name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return Pair(ca_pem, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    sans: list[x509.GeneralName] = []
    for name in server_names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return (
        leaf(server_names[0], ExtendedKeyUsageOID.SERVER_AUTH, sans),
        leaf("mirrorplane-envoy", ExtendedKeyUsageOID.CLIENT_AUTH, []),
    )


def ensure_folder(folder: Path, server_names: list[str]) -> tuple[Path, Path, bool]:
    """``folder/server`` and ``folder/envoy`` (ca.crt, tls.crt, tls.key each); True if created now."""
    server_dir, client_dir = folder / SERVER, folder / CLIENT
    if all((d / f).exists() for d in (server_dir, client_dir) for f in FILES.values()):
        return server_dir, client_dir, False
    server, client = generate(server_names)
    for directory, pair in ((server_dir, server), (client_dir, client)):
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in pair.as_files().items():
            path = directory / name
            path.write_bytes(data)
            if name == FILES["key"]:
                path.chmod(0o600)
    return server_dir, client_dir, True


def secret(namespace: str, name: str, pair: Pair) -> dict[str, object]:
    """A kubernetes.io/tls Secret holding a pair and its CA."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "mirrorplane"}},
        "data": {k: base64.b64encode(v).decode() for k, v in pair.as_files().items()},
    }


async def ensure_secrets(api: "KubeApi", namespace: str, server_names: list[str], server_secret: str, client_secret: str) -> bool:
    """Create the two Secrets unless both exist; True if created now. Half a pair (one Secret
    without the other) is an error: the two must share a CA."""
    from .providers.kubeapi import ApiError

    path = f"/api/v1/namespaces/{namespace}/secrets"
    present = []
    for name in (server_secret, client_secret):
        try:
            await api.request("GET", f"{path}/{name}")
            present.append(name)
        except ApiError as exc:
            if exc.status != 404:
                raise
    if len(present) == 2:
        return False
    if present:
        raise ValueError(
            f"Secret {namespace}/{present[0]} exists without its pair; delete it so both can be issued by one CA"
        )
    server, client = generate(server_names)
    for name, pair in ((server_secret, server), (client_secret, client)):
        try:
            await api.request("POST", path, body=secret(namespace, name, pair))
        except ApiError as exc:
            if exc.status != 409:  # another replica of this Job won the race: keep its pair
                raise
            return False
    return True

