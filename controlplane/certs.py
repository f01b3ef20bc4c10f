"""Certificates for mutual TLS on the xDS port: a private CA, the control plane's server
certificate, and client certificates that each carry one identity (:mod:`.identity`):

* one per Gateway, ``spiffe://mirrorplane/ns/NS/gateway/NAME``, for the Envoys of that Gateway
  only (an ADS stream gets the config of its certificate's Gateway, nothing else);
* one operator certificate, ``spiffe://mirrorplane/operator``, for the admin API and CSDS.

Peers ship a "certgen" step for the same reason (Envoy Gateway runs one as a Job): the xDS
stream carries listener private keys, so it should be mTLS from the first install, without
asking users to run a PKI first. Generation is idempotent: existing material is kept, so
re-running the step never invalidates certificates Envoys already hold, and the CA is kept (its
key readable only by whoever runs this step) so that a Gateway added later gets its certificate
from the same CA by running the step again with one more ``--gateway``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConflictError, UsageError
from .identity import OPERATOR, gateway_id

if TYPE_CHECKING:
    from .providers.kubeapi import KubeApi

VALID_DAYS = 3650
# File names (folder mode) and Secret keys (Kubernetes mode, the kubernetes.io/tls convention).
FILES = {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}
CA, SERVER, OPERATOR_DIR, GATEWAYS = "ca", "server", "operator", "gateways"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAMESPACE = re.compile(_LABEL)
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def parse_gateway(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` checked as Kubernetes names (they become paths and Secret names)."""
    ns, sep, name = text.partition("/")
    if not sep or not _NAMESPACE.fullmatch(ns) or len(ns) > 63 or not _NAME.fullmatch(name) or len(name) > 253:
        raise UsageError(f"--gateway {text!r}: expected NAMESPACE/NAME (lowercase Kubernetes names)")
    return ns, name


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, with the CA that signed it (all PEM)."""

    ca: bytes
    cert: bytes
    key: bytes

    def as_files(self) -> dict[str, bytes]:
        return {FILES["ca"]: self.ca, FILES["cert"]: self.cert, FILES["key"]: self.key}


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mirrorplane"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


@dataclass(frozen=True)
class Authority:
    """The private CA: its certificate and key (PEM)."""

    cert: bytes
    key: bytes

    @classmethod
    def new(cls) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name("mirrorplane xDS CA")
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def _leaf(self, common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> Pair:
        ca_cert = x509.load_pem_x509_certificate(self.cert)
        ca_key = serialization.load_pem_private_key(self.key, password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(_name(common_name), ca_cert.subject, key.public_key())
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return Pair(self.cert, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def server(self, server_names: list[str]) -> Pair:
        """The control plane's certificate: ``server_names`` are the DNS names or IPs Envoys
        reach it by (Envoy checks the one it asks for with --xds-sni)."""
        if not server_names:
            raise UsageError("give at least one --server-name (the name Envoys reach the control plane by)")
        sans: list[x509.GeneralName] = []
        for name in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        return self._leaf(server_names[0], ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def client(self, spiffe_id: str) -> Pair:
        """A client certificate whose only URI SAN is ``spiffe_id`` (the identity gRPC reports)."""
        return self._leaf(
            spiffe_id.rsplit("/", 1)[-1], ExtendedKeyUsageOID.CLIENT_AUTH, [x509.UniformResourceIdentifier(spiffe_id)]
        )


def _issue(ca: Authority, what: str, server_names: list[str]) -> Pair:
    """``what`` is "server", "operator" or a Gateway ``NAMESPACE/NAME``."""
    if what == SERVER:
        return ca.server(server_names)
    return ca.client(OPERATOR if what == OPERATOR_DIR else gateway_id(what))


# -- a folder ----------------------------------------------------------------------------------


def folder_of(folder: Path, what: str) -> Path:
    """Where ``what`` ("server", "operator" or a Gateway) lives: DIR/server, DIR/operator,
    DIR/gateways/NAMESPACE/NAME."""
    if what in (SERVER, OPERATOR_DIR):
        return folder / what
    ns, name = parse_gateway(what)
    return folder / GATEWAYS / ns / name


def _write(directory: Path, files: dict[str, bytes]) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            path = directory / name
            path.write_bytes(data)
            if name.endswith(".key"):
                path.chmod(0o600)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or directory}: {exc.strerror or exc}") from exc


def ensure_folder(folder: Path, server_names: list[str], gateways: Sequence[str] = ()) -> tuple[list[Path], list[Path]]:
    """DIR/ca (the CA, its key 0600), DIR/server, DIR/operator and DIR/gateways/NS/NAME for
    each Gateway (ca.crt, tls.crt, tls.key each); (issued now, kept) folders."""
    wanted = [SERVER, OPERATOR_DIR, *gateways]
    targets = {what: folder_of(folder, what) for what in wanted}  # checks every --gateway first
    ca_dir = folder / CA
    ca_files = (ca_dir / FILES["ca"], ca_dir / "ca.key")
    if all(p.exists() for p in ca_files):
        ca = Authority(ca_files[0].read_bytes(), ca_files[1].read_bytes())
    else:
        existing = [d for d in targets.values() if d.exists()]
        if existing:
            raise ConflictError(
                f"{existing[0]} exists without the CA that issued it ({ca_dir}): delete {folder} to issue everything from one CA"
            )
        ca = Authority.new()
        _write(ca_dir, {FILES["ca"]: ca.cert, "ca.key": ca.key})
    issued, kept = [], []
    for what, directory in targets.items():
        if all((directory / f).exists() for f in FILES.values()):
            kept.append(directory)
            continue
        _write(directory, _issue(ca, what, server_names).as_files())
        issued.append(directory)
    return issued, kept


# -- Kubernetes Secrets ------------------------------------------------------------------------


def gateway_secret(gateway: str) -> str:
    """The Secret of a Gateway's Envoy certificate: ``mirrorplane-xds-envoy.NAMESPACE.NAME``
    (a namespace has no dots, so the name is unambiguous)."""
    ns, name = parse_gateway(gateway)
    secret_name = f"mirrorplane-xds-envoy.{ns}.{name}"
    if len(secret_name) > 253:
        raise UsageError(f"--gateway {gateway!r}: the Secret name {secret_name!r} is longer than 253 characters")
    return secret_name


def secret(namespace: str, name: str, files: dict[str, bytes]) -> dict[str, object]:
    """A kubernetes.io/tls Secret holding ``files`` (ca.crt, tls.crt, tls.key)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "mirrorplane"}},
        "data": {k: base64.b64encode(v).decode() for k, v in files.items()},
    }


async def ensure_secrets(
    api: KubeApi,
    namespace: str,
    server_names: list[str],
    gateways: Sequence[str] = (),
    *,
    ca_secret: str = "mirrorplane-xds-ca",
    server_secret: str = "mirrorplane-xds-server",
    operator_secret: str = "mirrorplane-xds-operator",
) -> tuple[list[str], list[str]]:
    """The CA Secret, then one Secret each for the server, the operator and every Gateway,
    unless it exists; (created now, kept) Secret names. Certificates without the CA Secret that
    issued them are an error: new ones could not share their CA."""
    from .providers.kubeapi import ApiError

    path = f"/api/v1/namespaces/{namespace}/secrets"
    wanted = {server_secret: SERVER, operator_secret: OPERATOR_DIR, **{gateway_secret(g): g for g in gateways}}

    async def get(name: str) -> dict[str, Any] | None:
        try:
            return await api.request("GET", f"{path}/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None

    async def create(name: str, files: dict[str, bytes]) -> bool:
        """False if another replica of this Job created it first (its content is kept)."""
        try:
            await api.request("POST", path, body=secret(namespace, name, files))
            return True
        except ApiError as exc:
            if exc.status != 409:
                raise
            return False

    existing = {name: await get(name) for name in wanted}
    created: list[str] = []
    body = await get(ca_secret)
    if body is None:
        orphan = next((name for name, found in existing.items() if found), None)
        if orphan:
            raise ConflictError(
                f"Secret {namespace}/{orphan} exists without the CA Secret {namespace}/{ca_secret}; "
                "delete it so that one CA issues every certificate"
            )
        fresh = Authority.new()
        if await create(ca_secret, {FILES["ca"]: fresh.cert, FILES["cert"]: fresh.cert, FILES["key"]: fresh.key}):
            created.append(ca_secret)
        body = await get(ca_secret)
        if body is None:
            raise ConflictError(f"Secret {namespace}/{ca_secret} vanished while it was being created")
    data = body.get("data") or {}
    ca = Authority(base64.b64decode(data.get(FILES["cert"], "")), base64.b64decode(data.get(FILES["key"], "")))
    kept = [ca_secret] if ca_secret not in created else []
    for name, what in wanted.items():
        if existing[name] is None and await create(name, _issue(ca, what, server_names).as_files()):
            created.append(name)
        else:
            kept.append(name)
    return created, kept
