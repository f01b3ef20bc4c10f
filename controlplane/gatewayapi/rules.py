"""HTTPRoute rules → resolved rules: matches, weighted backends, filters, timeouts.

A rule is resolved once per route and shared by every listener the route attaches to; only
what depends on the listener (a redirect's default port and scheme) is finished later.
"""

from __future__ import annotations

import marshal
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from .envoy_limits import cors_problems, header_mods_problems, match_problems, path_problem
from .filters import PREFIX, RuleFilters, rule_filters
from .matches import route_match
from .model import HTTPRoute, K8sObject
from .refs import BackendResolver, RefProblem, Uses
from .store import NsName, RouteKey

# Deprecated HTTPRoute annotation (MirrorPolicy keepShadowHostSuffix replaces it, and wins over
# it): "true" keeps Envoy's default of appending "-shadow" to the mirrored request's Host. The
# default (absent/"false") sends the real Host to the mirror.
SHADOW_HOST_SUFFIX_ANNOTATION = "mirrorplane.io/mirror-shadow-host-suffix"


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    name: str | None  # HTTPRouteRule.name
    matches: tuple[ir.Match, ...]
    backends: tuple[ir.WeightedBackend, ...]
    filters: RuleFilters
    timeout_ms: int | None
    backend_timeout_ms: int | None
    direct_status: int | None
    # GRPCRoute only: each match's (service characters, method characters, header matches),
    # which order it among other gRPC matches (grpcroutes.py).
    ranks: tuple[tuple[int, int, int], ...] = ()


Compiled = tuple[list[Rule], list[RefProblem], dict[int, str]]
_make_rule = ir.positional(Rule)  # every field in order: a cold translation makes one per rule
_MATCH_ALL: tuple[dict[str, Any], ...] = ({},)  # a rule without matches matches every request (route_match's defaults)


@dataclass
class RouteMemo:
    """The compiled rules of each HTTPRoute and GRPCRoute, kept from one translation to the next.

    A route's rules depend only on the route and on what its references resolve to (Services,
    EndpointSlices, ReferenceGrants). So while those are unchanged, a route seen before (the
    same object, or an equal one) is not compiled again: a change to one route recompiles that
    route only. The caller calls :meth:`invalidate` when ReferenceGrants change, and
    :meth:`services_changed` when Services or their EndpointSlices do (or, when only endpoints
    changed and nothing is translated, :meth:`refresh_backends`). Routes are keyed by (kind,
    namespace, name): an HTTPRoute and a GRPCRoute may share a name.
    """

    entries: dict[RouteKey, tuple[K8sObject[Any], Compiled, Uses]] = field(default_factory=dict)
    # Service → the routes in ``entries`` whose compilation looked it up (Uses.services).
    by_service: dict[NsName, set[RouteKey]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    # What the translator made of each route last time (where it attached, its status, its IR
    # routes), valid while ``context`` (the Gateways, classes and options attachment depends on)
    # compares equal, and the state of the last translation (translator._State). Reusing these
    # objects is what lets the xDS translator reuse the bytes of unchanged virtual hosts
    # (xds.encoded.EncodedMemo).
    attached: dict[RouteKey, Any] = field(default_factory=dict)
    context: Any = None
    last: Any = field(default=None, repr=False)

    # The routes that differ from the previous translation's input, when the caller knows
    # (Store.changed): every other route is unchanged without comparing it again. With
    # ``routes_only``, nothing but these routes differs from that input.
    changed: set[RouteKey] | None = None
    routes_only: bool = False
    # Routes (in ``changed`` too) unchanged themselves whose Services changed: attached (and
    # compiled) again all the same, once: a translation that falls back to the full path
    # replays what its first attempt made of them.
    stale: set[RouteKey] = field(default_factory=set)

    def same(self, key: RouteKey, old: K8sObject[Any], new: K8sObject[Any]) -> bool:
        """Whether ``new`` is the route ``old`` was (the same object, or known or found equal),
        and nothing it looked up changed since."""
        if self.stale and key in self.stale:
            return False
        return old is new or (self.changed is not None and key not in self.changed) or old == new

    def services_changed(self, services: set[NsName]) -> set[RouteKey]:
        """Forget the compiled rules of the routes that looked up any of ``services`` (a route
        that attaches nowhere now is not compiled now, and must not get them back later), and
        mark them ``stale``; returns them."""
        self.stale = {key for service in services for key in self.by_service.get(service, ())}
        for key in self.stale:
            self.forget(key)
        return set(self.stale)

    def refresh_backends(self, services: set[NsName], current: Callable[[ir.Backend], ir.Backend]) -> None:
        """Give the backends of ``services`` kept here (with the routes that looked them up, and in
        ``last``) what ``current`` makes of them: their endpoints as they are now, when only
        those changed and the caller updated the last translation without translating. The
        compiled rules themselves name clusters and hold no endpoints: they stay."""
        for service in services:
            for key in self.by_service.get(service, ()):
                backends = self.entries[key][2].backends
                for name, backend in backends.items():
                    backends[name] = current(backend)
        if self.last is not None:
            backends = self.last.backends
            for name, backend in backends.items():
                backends[name] = current(backend)

    def invalidate(self) -> None:
        self.entries.clear()
        self.by_service.clear()
        self.attached.clear()
        self.stale.clear()
        self.last = None

    def set_context(self, context: Any) -> None:
        """Forget attachments made against another set of Gateways (or options)."""
        if context != self.context:
            self.attached.clear()
            self.last = None
        self.context = context

    def compile(
        self,
        resolver: BackendResolver,
        route: K8sObject[Any],
        compiler: Callable[[BackendResolver, Any], Compiled] | None = None,
    ) -> Compiled:
        key = route.key
        hit = self.entries.get(key)
        if hit is not None and self.same(key, hit[0], route):
            # Equal but not the same object: a provider that rebuilt an unchanged object.
            self.entries[key] = (route, *hit[1:])
            self.hits += 1
            resolver.backends.update(hit[2].backends)
            return hit[1]
        self.misses += 1
        self.stale.discard(key)
        bodies: list[Uses] = []
        resolver.bodies = bodies
        try:
            compiled = (compiler or route_rules)(resolver, route)
        finally:
            resolver.bodies = None
        uses = resolver.uses_of(bodies)
        if hit is not None:  # (nothing to forget for a route compiled the first time)
            self.forget(key)
        self.entries[key] = (route, compiled, uses)
        by_service = self.by_service
        for service in uses.services:  # (setdefault made an empty set per call: 10,000 routes at a cold start)
            users = by_service.get(service)
            if users is None:
                by_service[service] = {key}
            else:
                users.add(key)
        return compiled

    def forget(self, key: RouteKey) -> None:
        """Drop a route's compiled rules (and its place in ``by_service``)."""
        entry = self.entries.pop(key, None)
        for service in entry[2].services if entry is not None else ():
            users = self.by_service[service]
            users.discard(key)
            if not users:
                del self.by_service[service]

    def keep_only(self, keys: set[RouteKey]) -> None:
        """Forget routes that are gone."""
        for key in self.entries.keys() - keys:
            self.forget(key)
        for key in self.attached.keys() - keys:
            del self.attached[key]


def backends_of(vh: ir.VirtualHost) -> frozenset[str]:
    """Every cluster a virtual host's routes send to or mirror to."""
    used = {b.backend for r in vh.routes for b in r.backends if b.backend}
    used.update(m.backend for r in vh.routes for m in r.mirrors)
    return frozenset(used)


def route_rules(resolver: BackendResolver, route: HTTPRoute) -> Compiled:
    """Every rule of a route, the reference problems found, and the rules dropped (index → why)."""
    rules: list[Rule] = []
    problems: list[RefProblem] = []
    dropped: dict[int, str] = {}
    shadow_suffix = route.metadata.annotations.get(SHADOW_HOST_SUFFIX_ANNOTATION, "").lower() == "true"
    # The loop runs once per rule of every route (10,000 and more at a cold start): what depends
    # on the rule's filters and backends alone is its body's, worked out once (rule_body), and
    # the lists here are made only when a rule has something to say.
    # A known rule body is found here, without a call of rule_body (10,000 rules, 50 bodies).
    bodies, known, kind, namespace = resolver.bodies, resolver.rules, route.kind, route.namespace
    for index, rule in enumerate(route.spec.get("rules") or ()):
        key = body_key(kind, namespace, shadow_suffix, rule)
        body = known.get(key)
        if body is None:
            body = rule_body(resolver, route, rule, shadow_suffix, key)
        elif bodies is not None:
            bodies.append(body.touched)
        filters = body.filters
        if body.reported:
            problems += body.reported
        matches = tuple(map(route_match, rule.get("matches") or _MATCH_ALL))
        if body.plain and not rule.get("timeouts") and not any(map(match_problems, matches)):
            # Most rules: nothing refused or timed, a backend to serve (what the rest comes to then).
            rules.append(_make_rule(index, rule.get("name"), matches, body.weighted, filters, None, None, None, ()))
            continue
        unsupported = filters.unsupported
        if body.replaces_prefix and any(m.path_type != "PathPrefix" for m in matches):
            unsupported = [*unsupported, "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"]
        # What Envoy would refuse must not reach it: one refused value NACKs the whole Gateway's
        # RouteConfiguration. A refused match is left out; the rest of the rule answers 500.
        refused = body.refused
        if any(map(match_problems, matches)):
            refused_matches = {mi: p for mi, m in enumerate(matches) if (p := match_problems(m))}
            refused = [f"matches[{mi}] {p}" for mi, ps in refused_matches.items() for p in ps] + refused
            matches = tuple(m for mi, m in enumerate(matches) if mi not in refused_matches)
        if refused:
            unsupported = [*unsupported, *refused]
            filters = RuleFilters()

        weighted = body.weighted
        timeouts = rule.get("timeouts")
        request_ms = backend_ms = None
        if timeouts:
            request_ms, backend_ms = _duration_ms(timeouts.get("request")), _duration_ms(timeouts.get("backendRequest"))
        direct = None
        if unsupported:
            outcome = "its requests get a 500" if matches else "it is not served"
            dropped[index] = f"Dropped Rule {index}: " + "; ".join(unsupported) + f" ({outcome})"
            direct = 500
        elif filters.redirect is None and not body.serves:
            direct = 500  # no usable backend: the spec asks for a 500
        rules.append(
            _make_rule(
                index,
                rule.get("name"),
                matches,
                weighted if direct is None else (),
                filters,
                # The request timeout bounds everything; with only backendRequest set, it bounds
                # the single attempt Envoy makes, i.e. the route too.
                request_ms if request_ms is not None else backend_ms,  # timeout_ms
                backend_ms if request_ms is not None and backend_ms else None,  # backend_timeout_ms
                direct,
                (),  # ranks
            )
        )
    return rules, problems, dropped


@dataclass(frozen=True)
class RuleBody:
    """What a rule's filters and backendRefs compile to, apart from its matches."""

    filters: RuleFilters
    refused: list[str]  # refused_filters(filters)
    # The backends with their own header filters. A rule refused for its matches is served a
    # 500 instead: its backends are resolved all the same (their problems are reported).
    weighted: tuple[ir.WeightedBackend, ...]
    problems: list[RefProblem]  # the backendRefs' (the filters' own are in ``filters``)
    reported: list[RefProblem]  # the filters' problems, then the backendRefs': the route's status reports them
    touched: Uses  # the references resolved
    replaces_prefix: bool  # a redirect or rewrite replaces the prefix match: every match must be one
    serves: bool  # some backend has a cluster (else a rule that redirects nowhere answers 500)
    # Nothing refused or unsupported, no prefix replaced, something to serve: a rule with this
    # body is served as it is unless its matches or timeouts say otherwise (route_rules).
    plain: bool


def rule_body(
    resolver: BackendResolver,
    route: K8sObject[Any],
    rule: Mapping[str, Any],
    shadow: bool,
    key: tuple[Any, ...] | None = None,
) -> RuleBody:
    """A rule's filters and backends, compiled once per translation for every rule that has the
    same ones (manifests repeat them: at 10,000 rules this was a third of the Gateway API
    translation). They read nothing but the route's kind and namespace (references resolve
    from there), the shadow-suffix annotation, and the rule's ``filters`` and ``backendRefs``:
    the key (``key``, when the caller made it already)."""
    if key is None:
        key = body_key(route.kind, route.namespace, shadow, rule)
    hit = resolver.rules.get(key)
    if hit is None:
        outer, resolver.touched = resolver.touched, Uses()
        try:
            filters = rule_filters(resolver, route, rule, shadow)
            problems: list[RefProblem] = []
            weighted = tuple(weighted_backends(resolver, route, rule, filters, problems))
            refused, replaces, serves = (
                refused_filters(filters),
                _replaces_prefix(filters),
                any(w.backend for w in weighted),
            )
            hit = resolver.rules[key] = RuleBody(
                filters,
                refused,
                weighted,
                problems,
                filters.problems + problems,
                resolver.touched,
                replaces,
                serves,
                not (filters.unsupported or refused or replaces) and (serves or filters.redirect is not None),
            )
        finally:
            resolver.touched = outer
    if resolver.bodies is not None:
        resolver.bodies.append(hit.touched)
    return hit


def body_key(kind: str, namespace: str, shadow: bool, rule: Mapping[str, Any]) -> tuple[Any, ...]:
    """What rule_body's result for ``rule`` depends on, as its key in ``BackendResolver.rules``."""
    return kind, namespace, shadow, content_key((rule.get("filters"), rule.get("backendRefs")))


def content_key(value: Any) -> bytes | str:
    """A key equal for equal YAML or JSON values of equal types, and only for them.

    ``marshal`` writes a value's type and content (``1``, ``True`` and ``1.0`` apart), in a
    third of the time ``repr`` takes (0.6 against 1.7 µs for a rule's filters and backendRefs).
    Version 2 writes no back-references, which would depend on which equal values are one
    object; a string's interned flag still shows, which can cost a second compilation, never a
    wrong hit. A value marshal cannot write (a date from YAML, a subclass) is keyed by its
    ``repr``, as before, which for those types names what they are; a ``str`` key never equals
    a ``bytes`` one."""
    try:
        return marshal.dumps(value, 2)
    except ValueError:
        return repr(value)


def weighted_backends(
    resolver: BackendResolver,
    route: K8sObject[Any],
    rule: Mapping[str, Any],
    filters: RuleFilters,
    problems: list[RefProblem],
) -> list[ir.WeightedBackend]:
    """A rule's backendRefs with their weights and own header filters (HTTPRoute and GRPCRoute
    alike); an unresolvable one stays, without a cluster, for its share of 500s."""
    weighted = []
    for bi, bref in enumerate(rule.get("backendRefs") or []):
        weight = bref.get("weight", 1)
        if weight <= 0:
            continue
        backend, problem = resolver.resolve(route, bref)
        if problem:
            problems.append(problem)
            weighted.append(ir.WeightedBackend(None, weight))
        elif backend:
            weighted.append(ir.WeightedBackend(backend.name, weight, *filters.backend_headers.get(bi, ())))
    return weighted


def refused_filters(filters: RuleFilters) -> list[str]:
    out = header_mods_problems(filters.request_headers, "RequestHeaderModifier")
    out += header_mods_problems(filters.response_headers, "ResponseHeaderModifier")
    for bi, (request, response) in sorted(filters.backend_headers.items()):
        out += header_mods_problems(request, f"backendRefs[{bi}] RequestHeaderModifier")
        out += header_mods_problems(response, f"backendRefs[{bi}] ResponseHeaderModifier")
    if filters.cors is not None:
        out += cors_problems(filters.cors)
    for where, spec in (("RequestRedirect", filters.redirect), ("URLRewrite", filters.rewrite)):
        if spec is not None and spec.path is not None and (p := path_problem(where, spec.path.value)):
            out.append(p)
    return out


def _replaces_prefix(filters: RuleFilters) -> bool:
    return any(
        f is not None and f.path is not None and f.path.type == PREFIX for f in (filters.redirect, filters.rewrite)
    )


_DURATION_PART = re.compile(r"([0-9]+)(h|ms|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def _duration_ms(value: str | None) -> int | None:
    """A GEP-2257 duration ("1h30m", "500ms", "0s"; the CRD pattern has validated it)."""
    if value is None:
        return None
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(value))
