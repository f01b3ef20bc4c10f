"""Gateway listener certificates: certificateRefs → PEM pairs Envoy can serve, or why not.

A bad certificate must never reach Envoy: one unparsable PEM makes Envoy reject the whole
listener update, taking every other hostname on the port down with it. So each pair is parsed
here (and the key checked against the certificate) before it is used.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from typing import Any

from ..ir import Certificate
from .refs import RefProblem, kind_and_grant_problem
from .store import Store

TLS_SECRET_TYPE = "kubernetes.io/tls"


def resolve_certificate(
    store: Store, gateway_namespace: str, ref: dict[str, Any]
) -> tuple[Certificate | None, RefProblem | None]:
    """One certificateRef of a Gateway listener; problems carry listener ResolvedRefs reasons."""
    name, namespace = ref["name"], ref.get("namespace") or gateway_namespace
    problem = kind_and_grant_problem(
        store, what="certificateRef", ref=ref, namespace=namespace, expected_kind="Secret",
        from_kind="Gateway", from_namespace=gateway_namespace, invalid_kind_reason="InvalidCertificateRef",
    )  # fmt: skip
    if problem:
        return None, problem
    secret = store.secrets.get((namespace, name))
    if secret is None:
        return None, RefProblem("InvalidCertificateRef", f"certificateRef: Secret {namespace}/{name} not found")
    body: dict[str, Any] = secret.spec
    if body.get("type", TLS_SECRET_TYPE) != TLS_SECRET_TYPE:
        return None, RefProblem(
            "InvalidCertificateRef", f"Secret {namespace}/{name} has type {body.get('type')}, not {TLS_SECRET_TYPE}"
        )
    cert, key = _field(body, "tls.crt"), _field(body, "tls.key")
    if not cert or not key:
        return None, RefProblem("InvalidCertificateRef", f"Secret {namespace}/{name} needs both tls.crt and tls.key")
    mismatch = _check_pair(cert, key)
    if mismatch:
        return None, RefProblem("InvalidCertificateRef", f"Secret {namespace}/{name}: {mismatch}")
    return Certificate(f"{namespace}/{name}", cert, key), None


def _field(body: dict[str, Any], key: str) -> bytes | None:
    """stringData wins over data, as the API server merges it on write."""
    string_data = body.get("stringData") or {}
    if key in string_data:
        return str(string_data[key]).encode()
    value = (body.get("data") or {}).get(key)
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@lru_cache(maxsize=256)
def _check_pair(cert_pem: bytes, key_pem: bytes) -> str | None:
    # Imported here, where a Gateway first terminates TLS: cryptography costs a serving process
    # 9 MB of RSS that a Gateway without TLS listeners never needs.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        return "tls.crt is not a PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return "tls.key is not an unencrypted PEM private key"
    if certs[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        return "tls.key does not match the certificate in tls.crt"
    return None
