"""GRPCRoute rules → resolved rules, and what sets gRPC apart from HTTPRoute.

A gRPC call is an HTTP/2 POST to ``/<service>/<method>``, so a GRPCRoute rule becomes the same
resolved ``Rule`` an HTTPRoute rule does (rules.py): its method match is a path match, its
filters are the HTTPRoute filters it shares (RequestHeaderModifier, ResponseHeaderModifier,
RequestMirror; ExtensionRef is refused), its backends are HTTP/2 clusters (refs.py). What
differs is kept here: the path a method match becomes, and the precedence the spec gives
GRPCRoute rules (apis/v1/grpcroute_types.go: characters of the matching service, then of the
method, then the number of header matches; then the oldest route, namespace/name, rule order).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .. import ir
from .envoy_limits import match_problems
from .filters import RuleFilters
from .matches import first_by_name
from .model import GRPCRoute, K8sObject
from .refs import BackendResolver
from .rules import SHADOW_HOST_SUFFIX_ANNOTATION, Compiled, Rule, rule_body

# A service or method name, when a regex match leaves one of them open.
_ANY_SEGMENT = "[^/]+"


def method_match(spec: dict[str, Any] | None) -> tuple[ir.PathType, str]:
    """A GRPCMethodMatch as an IR (path type, path).

    Exact service and method: the exact path ``/service/method``. Service only: the prefix
    ``/service/`` (every method of it). Method only, or a RegularExpression: an RE2 regex on the
    whole path, an omitted part matching any one segment. No method match: every call.
    """
    if not spec:
        return "PathPrefix", "/"
    service, method = spec.get("service") or "", spec.get("method") or ""
    if spec.get("type", "Exact") == "RegularExpression":
        return "RegularExpression", f"/({service or _ANY_SEGMENT})/({method or _ANY_SEGMENT})"
    if service and method:
        return "Exact", f"/{service}/{method}"
    if service:
        return "PathPrefix", f"/{service}/"
    return "RegularExpression", f"/{_ANY_SEGMENT}/{re.escape(method)}"


def grpc_match(m: Mapping[str, Any]) -> tuple[ir.Match, tuple[int, int, int]]:
    """One GRPCRouteMatch as an IR match, with its precedence: (service characters, method
    characters, header matches), larger first."""
    path_type, path = method_match(m.get("method"))
    headers = first_by_name(m.get("headers") or [], fold_case=True)
    method = m.get("method") or {}
    rank = (len(method.get("service") or ""), len(method.get("method") or ""), len(headers))
    return ir.Match(path_type=path_type, path=path, headers=headers), rank


def grpc_route_rules(resolver: BackendResolver, route: GRPCRoute) -> Compiled:
    """Every rule of a GRPCRoute, the reference problems found, and the rules dropped (index → why)."""
    rules, problems, dropped = [], [], {}
    shadow_suffix = route.metadata.annotations.get(SHADOW_HOST_SUFFIX_ANNOTATION, "").lower() == "true"
    for index, rule in enumerate(route.spec.get("rules") or []):
        body = rule_body(resolver, route, rule, shadow_suffix)
        filters = body.filters
        problems += filters.problems
        compiled = [grpc_match(m) for m in rule.get("matches") or [{}]]
        unsupported = list(filters.unsupported)
        # As for HTTPRoute (rules.py): what Envoy would refuse never reaches it.
        refused_matches = {mi: p for mi, (m, _) in enumerate(compiled) if (p := match_problems(m))}
        refused = [f"matches[{mi}] {p}" for mi, ps in refused_matches.items() for p in ps] + body.refused
        if refused:
            unsupported += refused
            compiled = [c for mi, c in enumerate(compiled) if mi not in refused_matches]
            filters = RuleFilters()
        weighted = body.weighted
        problems += body.problems
        direct = None
        if unsupported:
            outcome = "its calls fail with gRPC status UNKNOWN (HTTP 500)" if compiled else "it is not served"
            dropped[index] = f"Dropped Rule {index}: " + "; ".join(unsupported) + f" ({outcome})"
            direct = 500
        elif not body.serves:
            direct = 500  # no usable backend: the spec asks for a 500, which Envoy turns into a gRPC error
        rules.append(
            Rule(
                index=index,
                name=rule.get("name"),
                matches=tuple(m for m, _ in compiled),
                backends=weighted if direct is None else (),
                filters=filters,
                timeout_ms=None,
                backend_timeout_ms=None,
                direct_status=direct,
                ranks=tuple(r for _, r in compiled),
            )
        )
    return rules, problems, dropped


def grpc_precedence(route: K8sObject[Any], rule: Rule, mi: int) -> tuple[Any, ...]:
    """GRPCRoute precedence within one hostname (Envoy picks the virtual host by hostname, which
    is the spec's first two criteria)."""
    service, method, headers = rule.ranks[mi]
    meta = route.metadata
    return (-service, -method, -headers, meta.creation_timestamp, meta.namespace, meta.name, rule.index, mi)
