"""The intermediate representation: where Gateway API semantics end and Envoy begins.

Everything here is already resolved and validated: backends are named clusters with endpoints,
route matches are sorted by Gateway API precedence, invalid references are gone (or turned into
an explicit 500). The xDS translator maps it one-to-one onto Envoy messages, so tests that read
the IR read the decisions, not the protobuf plumbing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal, TypeVar

_T = TypeVar("_T")


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
    # "h2c": HTTP/2 over cleartext to the upstream (Service appProtocol kubernetes.io/h2c).
    protocol: Literal["http1", "h2c"] = "http1"
    # (namespace, name, port) of the Service whose EndpointSlices feed it; None when none do
    # (ExternalName). Lets an EndpointSlice change update just this backend's endpoints.
    service: tuple[str, str, int] | None = None


@dataclass(frozen=True)
class HeaderMods:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


NO_HEADER_MODS = HeaderMods()


@dataclass(frozen=True)
class Comparison:
    """Shadow testing settings of one mirror (issue 15); MirrorPolicy.spec.comparison sets them (issue 14)."""

    sample_percent: int = 100  # share of mirrored requests compared (both legs sampled together)
    body: bool = False  # compare response bodies by digest (opt-in)
    body_limit_bytes: int = 65536  # bodies larger than this are compared by size only
    headers: tuple[str, ...] = ("content-type",)  # response headers compared (lower-case names)
    ignore_json_paths: tuple[str, ...] = ()  # JSON paths ignored in body comparison, e.g. "$.timestamp"


DEFAULT_COMPARISON = Comparison()


@dataclass(frozen=True)
class Mirror:
    """A copy of each request (with probability numerator/denominator) to ``backend``.

    The fraction is kept exactly as the user wrote it; only the xDS translator turns it into one
    of Envoy's three denominators. The fields after it are what a MirrorPolicy sets on the mirror
    leg alone (docs/mirror-policy.md).
    """

    backend: str
    numerator: int = 100
    denominator: int = 100
    shadow_host_suffix: bool = False
    request_headers: HeaderMods = NO_HEADER_MODS  # MirrorPolicy requestHeaderModifier: mirror leg only
    hostname: str | None = None  # MirrorPolicy hostname: Host/:authority the mirror sees
    trace_sampled: bool | None = None  # MirrorPolicy tracing: None = Envoy's default
    comparison: Comparison = DEFAULT_COMPARISON  # shadow testing of this mirror
    policy: str | None = None  # "namespace/name" of the MirrorPolicy applied, for display


@dataclass(frozen=True)
class WeightedBackend:
    backend: str | None  # None: the reference is invalid and its share of requests gets a 500
    weight: int
    # A backendRef's own filters (HTTPBackendRef.filters), applied only to requests sent to it.
    request_headers: HeaderMods = NO_HEADER_MODS
    response_headers: HeaderMods = NO_HEADER_MODS


@dataclass(frozen=True)
class StringMatch:
    name: str
    value: str
    regex: bool = False


PathType = Literal["Exact", "PathPrefix", "RegularExpression"]


@dataclass(frozen=True, slots=True)
class Match:
    path_type: PathType = "PathPrefix"
    path: str = "/"
    headers: tuple[StringMatch, ...] = ()
    query_params: tuple[StringMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True)
class Redirect:
    """A RequestRedirect, resolved against its listener and match.

    ``port`` None: the Location carries no port (the scheme's well-known one). ``hostname`` or
    ``scheme`` None: the request's. The path is either replaced whole (``full_path``) or
    rewritten by an RE2 ``(pattern, substitution)`` on the path without its query.
    """

    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    full_path: str | None = None
    path_regex: tuple[str, str] | None = None
    status_code: int = 302


@dataclass(frozen=True)
class Rewrite:
    """A URLRewrite: the Host and/or path the backend sees (path as in Redirect)."""

    hostname: str | None = None
    full_path: str | None = None
    path_regex: tuple[str, str] | None = None


@dataclass(frozen=True)
class Cors:
    allow_origins: tuple[str, ...] = ()  # exact origins or patterns with "*" wildcards
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int | None = None


def origin_regex(origin: str) -> str | None:
    """A CORS origin pattern as the RE2 regex Envoy matches it with ("*" stands for any run of
    characters); None for an exact origin. Shared by the xDS translator and the check of Envoy's
    regex limits."""
    if "*" not in origin:
        return None
    return ".*".join(re.escape(part) for part in origin.split("*"))


@dataclass(frozen=True, slots=True)
class Route:
    """One Envoy route: one match of one HTTPRoute or GRPCRoute rule.

    ``direct_status`` set means no upstream is called at all (e.g. every backend invalid → 500).
    """

    name: str
    match: Match
    backends: tuple[WeightedBackend, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    request_headers: HeaderMods = NO_HEADER_MODS
    response_headers: HeaderMods = NO_HEADER_MODS
    direct_status: int | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    cors: Cors | None = None
    # Milliseconds; 0 disables the timeout, None keeps Envoy's default.
    timeout_ms: int | None = None
    backend_timeout_ms: int | None = None
    stat_prefix: str = ""  # set for named rules: Envoy then keeps per-route stats under it
    kind: Literal["HTTPRoute", "GRPCRoute"] = "HTTPRoute"
    source: str = ""  # "Kind namespace/name" of the route object, e.g. "HTTPRoute server/http-route-sample"
    rule: str = ""  # the rule's name, or its index as a string when unnamed


def positional(cls: type[_T]) -> Callable[..., _T]:
    """A maker of ``cls`` (a frozen dataclass with slots, on ``object``) taking every field's
    value, in order, as positional arguments: the dataclass's own instance (same fields,
    equality, hash, immutability, memory), in a third of the time of its ``__init__``. A cold
    translation makes one ``Route``, ``Match`` and ``Rule`` per match (10,000 and more), and a
    frozen ``__init__`` sets each field through ``object.__setattr__``, which looks the slot up
    by name, after matching keywords to parameters: 1.3 µs for ``Route``'s 16 fields. Calling
    each slot's own setter took 0.7 µs; the interpreter's own store into a slot (an attribute
    store specialized for slots) is what a plain class with the same slots gets, so the maker
    fills an instance of such a twin and then makes it a ``cls``: 0.25 µs. Setting
    ``__class__`` is allowed between classes whose instances are laid out alike (the same
    slots, in order, on the same base), which is checked here once. The maker is written out
    as dataclasses writes ``__init__`` (one line per field). No default applies: every field is
    a parameter, so none can be left unset; tests/test_ir.py compares what it makes with the
    constructor's."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    slots = cls.__dict__.get("__slots__")
    if slots is None or cls.__bases__ != (object,) or list(slots) != names:
        raise TypeError(f"{cls.__name__}: positional makes dataclasses with slots on object only")
    twin = type(f"{cls.__name__}Unfrozen", (), {"__slots__": tuple(slots), "__module__": cls.__module__})
    probe: Any = object.__new__(twin)
    probe.__class__ = cls  # raises TypeError if the layouts differ
    scope: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    body = "".join(f"    self.{n} = {n}\n" for n in names)
    exec(  # noqa: S102
        f"def make({', '.join(names)}):\n    self = _new(_twin)\n{body}    self.__class__ = _cls\n    return self\n",
        scope,
    )
    make: Callable[..., _T] = scope["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__.lower()}"
    make.__doc__ = f"A {cls.__name__} from every field's value, in order (ir.positional)."
    return make


if TYPE_CHECKING:

    def make_route(
        name: str,
        match: Match,
        backends: tuple[WeightedBackend, ...],
        mirrors: tuple[Mirror, ...],
        request_headers: HeaderMods,
        response_headers: HeaderMods,
        direct_status: int | None,
        redirect: Redirect | None,
        rewrite: Rewrite | None,
        cors: Cors | None,
        timeout_ms: int | None,
        backend_timeout_ms: int | None,
        stat_prefix: str,
        kind: Literal["HTTPRoute", "GRPCRoute"],
        source: str,
        rule: str,
    ) -> Route: ...

    def make_match(
        path_type: PathType,
        path: str,
        headers: tuple[StringMatch, ...],
        query_params: tuple[StringMatch, ...],
        method: str | None,
    ) -> Match: ...

else:
    make_route, make_match = positional(Route), positional(Match)


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


def by_backends_and_mirrors(of: Callable[[VirtualHost], _T]) -> Callable[[VirtualHost], _T]:
    """``of`` (a function reading nothing of a virtual host but its routes' ``backends`` and
    ``mirrors``), computed once per distinct sequence of those objects among the virtual hosts
    of one pass over many (a cold build has 10,000 virtual hosts, and the routes of one rule, or
    of rules alike, hold the very same tuples: 10,000 one-rule routes hold 250 pairs, 625 routes
    of 16 rules 25 sequences). Keyed by identity, for the pass only (C loops over the routes);
    each entry keeps its virtual host, so the ids stay theirs meanwhile."""
    seen: dict[tuple[int, ...], tuple[_T, VirtualHost]] = {}

    def cached(vh: VirtualHost) -> _T:
        routes = vh.routes
        if len(routes) == 1:  # (10,000 one-route virtual hosts: no maps)
            route = routes[0]
            key: tuple[int, ...] = (id(route.backends), id(route.mirrors))
        else:
            key = (*map(id, map(_BACKENDS, routes)), *map(id, map(_MIRRORS, routes)))
        hit = seen.get(key)
        if hit is None:
            hit = seen[key] = (of(vh), vh)
        return hit[0]

    return cached


_BACKENDS, _MIRRORS = attrgetter("backends"), attrgetter("mirrors")


@dataclass(frozen=True)
class Certificate:
    """A PEM certificate chain and its private key, from a kubernetes.io/tls Secret."""

    name: str  # "namespace/secret"
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class FilterChain:
    """One HTTP connection manager with its own route table.

    A plain HTTP port has one chain. An HTTPS port has one chain per Gateway listener, chosen by
    SNI (``server_names``; none = the default chain); its route table serves only that listener's
    hostnames and answers 421 for hostnames that belong to another listener on the port
    (``misdirected``), so a connection cannot be reused for a host its certificate does not cover.
    """

    name: str  # also the RouteConfiguration's name
    virtual_hosts: tuple[VirtualHost, ...]
    server_names: tuple[str, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    misdirected: tuple[str, ...] = ()


@dataclass(frozen=True)
class HTTPListener:
    """One Envoy listener: every Gateway listener sharing a port is merged into it."""

    name: str
    port: int
    chains: tuple[FilterChain, ...]
    tls: bool = False


@dataclass(frozen=True)
class GatewayIR:
    name: str  # "namespace/name", what an Envoy's node.cluster names
    listeners: tuple[HTTPListener, ...]
    backends: tuple[Backend, ...]
