"""HTTPRoute filters (rule-level and backendRef-level) → IR pieces.

Unsupported filters are reported, never ignored: the rule they are in is dropped (its requests
get a 500) and the route says so in a PartiallyInvalid condition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from .model import K8sObject
from .refs import BackendResolver, RefProblem

# RequestRedirect and URLRewrite path modifiers.
FULL, PREFIX = "ReplaceFullPath", "ReplacePrefixMatch"


@dataclass(slots=True)
class RuleFilters:
    """What a rule's filters (including those on its backendRefs) ask for."""

    # A tuple: every IR route of the rule holds this one object (the xDS encoder keys by it).
    mirrors: tuple[ir.Mirror, ...] = ()
    request_headers: ir.HeaderMods = ir.NO_HEADER_MODS
    response_headers: ir.HeaderMods = ir.NO_HEADER_MODS
    redirect: RedirectSpec | None = None
    rewrite: RewriteSpec | None = None
    cors: ir.Cors | None = None
    # backendRef index → its own (request, response) header modifiers
    backend_headers: dict[int, tuple[ir.HeaderMods, ir.HeaderMods]] = field(default_factory=dict)
    problems: list[RefProblem] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


def rule_filters(
    resolver: BackendResolver, route: K8sObject[Any], rule: Mapping[str, Any], shadow_suffix: bool
) -> RuleFilters:
    out = RuleFilters()
    backend_refs = rule.get("backendRefs") or []
    for f in rule.get("filters") or []:
        kind = f["type"]
        if kind == "RequestMirror":
            _add_mirror(out, resolver, route, f["requestMirror"], shadow_suffix)
        elif kind == "RequestHeaderModifier":
            out.request_headers = header_mods(f["requestHeaderModifier"])
        elif kind == "ResponseHeaderModifier":
            out.response_headers = header_mods(f["responseHeaderModifier"])
        elif kind == "RequestRedirect":
            out.redirect = _redirect(f["requestRedirect"])
        elif kind == "URLRewrite":
            out.rewrite = _rewrite(f["urlRewrite"])
        elif kind == "CORS":
            out.cors = _cors(f["cors"])
        else:
            out.unsupported.append(f"filter {kind} is not supported")
    for bi, bref in enumerate(backend_refs):
        where = f"backendRefs[{bi}].filters"
        request = response = ir.NO_HEADER_MODS
        for f in bref.get("filters") or []:
            kind = f["type"]
            if kind == "RequestHeaderModifier":
                request = header_mods(f["requestHeaderModifier"])
            elif kind == "ResponseHeaderModifier":
                response = header_mods(f["responseHeaderModifier"])
            elif kind == "RequestMirror" and len(backend_refs) == 1:
                # One backend: mirroring "the requests sent to it" is mirroring the rule.
                _add_mirror(out, resolver, route, f["requestMirror"], shadow_suffix)
            elif kind == "RequestMirror":
                out.unsupported.append(
                    f"RequestMirror in {where} is supported only when the rule has a single backendRef "
                    "(Envoy mirrors per route, not per weighted backend); move it to the rule's filters"
                )
            else:
                out.unsupported.append(f"filter {kind} in {where} is not supported")
        if request or response:
            out.backend_headers[bi] = (request, response)
    return out


def _add_mirror(
    out: RuleFilters, resolver: BackendResolver, route: K8sObject[Any], spec: dict[str, Any], shadow_suffix: bool
) -> None:
    """A RequestMirror filter; nothing when it mirrors nothing (percent 0 / numerator 0)."""
    if "percent" in spec:
        numerator, denominator = spec["percent"], 100
    elif "fraction" in spec:
        numerator, denominator = spec["fraction"]["numerator"], spec["fraction"].get("denominator", 100)
    else:
        numerator, denominator = 100, 100
    if numerator <= 0:
        return
    backend, problem = resolver.resolve(route, spec["backendRef"], mirror=True)
    if problem:
        out.problems.append(problem)
    elif backend is not None:
        out.mirrors += (ir.Mirror(backend.name, numerator, denominator, shadow_suffix),)


def header_mods(spec: dict[str, Any]) -> ir.HeaderMods:
    return ir.HeaderMods(
        set=tuple((h["name"], h["value"]) for h in spec.get("set") or []),
        add=tuple((h["name"], h["value"]) for h in spec.get("add") or []),
        remove=tuple(spec.get("remove") or []),
    )


@dataclass(frozen=True)
class PathModifier:
    type: str  # FULL or PREFIX
    value: str


@dataclass(frozen=True)
class RedirectSpec:
    """A RequestRedirect as written; ``redirect_for`` finishes it per listener and match."""

    scheme: str | None
    hostname: str | None
    port: int | None
    path: PathModifier | None
    status_code: int


@dataclass(frozen=True)
class RewriteSpec:
    hostname: str | None
    path: PathModifier | None


def _path_modifier(spec: dict[str, Any] | None) -> PathModifier | None:
    if not spec:
        return None
    kind = spec["type"]
    return PathModifier(kind, spec.get("replaceFullPath" if kind == FULL else "replacePrefixMatch", ""))


def _redirect(spec: dict[str, Any]) -> RedirectSpec:
    return RedirectSpec(
        scheme=spec.get("scheme"),
        hostname=spec.get("hostname"),
        port=spec.get("port"),
        path=_path_modifier(spec.get("path")),
        status_code=spec.get("statusCode", 302),
    )


def _rewrite(spec: dict[str, Any]) -> RewriteSpec:
    return RewriteSpec(hostname=spec.get("hostname"), path=_path_modifier(spec.get("path")))


def _cors(spec: dict[str, Any]) -> ir.Cors:
    return ir.Cors(
        allow_origins=tuple(spec.get("allowOrigins") or ()),
        allow_methods=tuple(spec.get("allowMethods") or ()),
        allow_headers=tuple(spec.get("allowHeaders") or ()),
        expose_headers=tuple(spec.get("exposeHeaders") or ()),
        allow_credentials=bool(spec.get("allowCredentials")),
        max_age=spec.get("maxAge"),
    )


_WELL_KNOWN_PORTS = {"http": 80, "https": 443}


def redirect_for(spec: RedirectSpec, listener_protocol: str, listener_port: int, match_path: str) -> ir.Redirect:
    """The spec's port rules, against the listener the request arrived on.

    No port: the scheme's well-known port when the redirect sets a scheme, else the listener's
    port. The Location then omits the port when it is the scheme's default (http:80, https:443),
    which the IR says with ``port=None``.
    """
    scheme = spec.scheme or ("https" if listener_protocol == "HTTPS" else "http")
    port = spec.port
    if port is None:
        port = _WELL_KNOWN_PORTS[spec.scheme] if spec.scheme else listener_port
    if _WELL_KNOWN_PORTS.get(scheme) == port:
        port = None
    full, regex = _path(spec.path, match_path)
    return ir.Redirect(spec.scheme, spec.hostname, port, full, regex, spec.status_code)


def rewrite_for(spec: RewriteSpec, match_path: str) -> ir.Rewrite:
    full, regex = _path(spec.path, match_path)
    return ir.Rewrite(spec.hostname, full, regex)


def _path(modifier: PathModifier | None, match_path: str) -> tuple[str | None, tuple[str, str] | None]:
    if modifier is None:
        return None, None
    if modifier.type == FULL:
        return modifier.value, None
    return None, prefix_rewrite_regex(match_path, modifier.value)


def prefix_rewrite_regex(match_prefix: str, replacement: str) -> tuple[str, str]:
    """ReplacePrefixMatch as an RE2 (pattern, substitution) on the path without its query.

    The matched prefix covers whole segments, so the rest of the path is empty or starts with
    "/". A replacement ending in "/" swallows the rest's leading slashes (/strip-prefix/three
    with "/" → /three, never //three); one without keeps them (/prefix/one/two with /one →
    /one/two).
    """
    prefix = re.escape(match_prefix.rstrip("/"))
    if replacement.endswith("/"):
        return f"^{prefix}/*", replacement
    return f"^{prefix}", replacement
