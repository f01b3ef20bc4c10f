"""Where the ports bind, and when that would expose config unauthenticated.

The xDS port shows every Gateway's config, private keys included (ADS, the admin API, CSDS), so
beyond loopback it must be mutual TLS; ``--insecure`` is the explicit way to accept otherwise.
docs/security.md has the rules.
"""

from __future__ import annotations

import ipaddress

from .tls import TlsFiles


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a port on this machine (a name other than localhost counts
    as exposed: what it resolves to is not ours to trust)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_port(host: str, port: int) -> str:
    """``host:port`` as gRPC and people write it (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def exposure_error(xds_host: str, tls: TlsFiles | None, insecure: bool) -> str | None:
    """Why serving would expose config unauthenticated, or None. The xDS port shows every
    Gateway's config (ADS, the admin API, CSDS): beyond loopback it must be mutual TLS."""
    if insecure or is_loopback(xds_host) or (tls is not None and tls.mutual):
        return None
    return (
        f"--xds-address {xds_host} is not loopback, and without mutual TLS anyone who reaches it reads every "
        "Gateway's config and keys: add --tls-cert, --tls-key and --client-ca (see `mirrorplane certs`), or --insecure"
    )
