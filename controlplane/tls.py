"""TLS for the xDS port (ADS, admin API, reflection and health share it).

With a certificate and key the port speaks TLS only; adding a client CA makes it mutual TLS: an
Envoy (or grpcurl) must present a certificate signed by that CA, so only the fleet can fetch
config — config that can include TLS private keys of Gateway listeners.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None


def _read(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise ValueError(f"{what} {path} is not PEM (no -----BEGIN line)")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """gRPC server credentials; a ValueError names the file that is missing or not PEM."""
    cert = _read(files.cert, "--tls-cert")
    key = _read(files.key, "--tls-key")
    ca = _read(files.client_ca, "--client-ca") if files.client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
