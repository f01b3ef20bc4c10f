"""The intermediate representation: where Gateway API semantics end and Envoy begins.

Everything here is already resolved and validated: backends are named clusters with endpoints,
route matches are sorted by Gateway API precedence, invalid references are gone (or turned into
an explicit 500). The xDS translator maps it one-to-one onto Envoy messages, so tests that read
the IR read the decisions, not the protobuf plumbing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Endpoint:
    host: str  # an IPv4/IPv6 address, or a DNS name for DNS backends
    port: int


@dataclass(frozen=True)
class Backend:
    """One upstream cluster. ``discovery`` says how Envoy learns its endpoints."""

    name: str
    endpoints: tuple[Endpoint, ...]
    discovery: Literal["eds", "dns"] = "eds"


@dataclass(frozen=True)
class Mirror:
    """A copy of each request (with probability numerator/denominator) to ``backend``.

    The fraction is kept exactly as the user wrote it; only the xDS translator turns it into one
    of Envoy's three denominators.
    """

    backend: str
    numerator: int = 100
    denominator: int = 100
    shadow_host_suffix: bool = False


@dataclass(frozen=True)
class WeightedBackend:
    backend: str | None  # None: the reference is invalid and its share of requests gets a 500
    weight: int


@dataclass(frozen=True)
class StringMatch:
    name: str
    value: str
    regex: bool = False


@dataclass(frozen=True)
class Match:
    path_type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    path: str = "/"
    headers: tuple[StringMatch, ...] = ()
    query_params: tuple[StringMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True)
class HeaderMods:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True)
class Route:
    """One Envoy route: one match of one HTTPRoute rule.

    ``direct_status`` set means no upstream is called at all (e.g. every backend invalid → 500).
    """

    name: str
    match: Match
    backends: tuple[WeightedBackend, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    request_headers: HeaderMods = field(default_factory=HeaderMods)
    response_headers: HeaderMods = field(default_factory=HeaderMods)
    direct_status: int | None = None


@dataclass(frozen=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class HTTPListener:
    """One Envoy listener: every Gateway listener sharing a port is merged into it."""

    name: str
    port: int
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True)
class GatewayIR:
    name: str  # "namespace/name", what an Envoy's node.cluster names
    listeners: tuple[HTTPListener, ...]
    backends: tuple[Backend, ...]
