"""TLS for the xDS port (ADS, admin API, reflection and health share it).

With a certificate and key the port speaks TLS only; adding a client CA makes it mutual TLS: an
Envoy (or grpcurl) must present a certificate signed by that CA, so only the fleet can fetch
config — config that can include TLS private keys of Gateway listeners.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from .errors import UsageError


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


def read_pem(path: Path, what: str) -> bytes:
    """The PEM file given by flag ``what``; a UsageError names it when it is missing or not PEM."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise UsageError(f"{what} {path} is not PEM (no -----BEGIN line)")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """gRPC server credentials; a UsageError names the file that is missing or not PEM."""
    cert = read_pem(files.cert, "--tls-cert")
    key = read_pem(files.key, "--tls-key")
    ca = read_pem(files.client_ca, "--client-ca") if files.client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
