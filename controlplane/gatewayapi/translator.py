"""Gateway API objects → IR per Gateway, plus the status of every object we own.

A pure function of the store: no I/O, no clocks, no grpc or kubernetes. It never raises on bad
user input; whatever cannot be served is dropped alone and explained in a condition, and every
other valid object keeps being served.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal

from .. import ir
from . import hostnames
from .filters import redirect_for, rewrite_for
from .grpcroutes import grpc_precedence, grpc_route_rules
from .listeners import GatewayListener, gateway_listeners, gateway_status
from .matches import precedence
from .model import GATEWAY_GROUP, K8sObject
from .policies import Policies
from .policies import resolve as resolve_policies
from .refs import BackendResolver, with_current_endpoints
from .rules import SHADOW_HOST_SUFFIX_ANNOTATION, Compiled, RouteMemo, Rule, content_key, route_rules
from .status import Condition, StatusKey, conditions
from .store import ROUTE_FIELDS, NsName, Store
from .tables import Tables, table_of

DEFAULT_CONTROLLER = "mirrorplane.io/gateway-controller"

__all__ = [
    "DEFAULT_CONTROLLER",
    "SHADOW_HOST_SUFFIX_ANNOTATION",
    "SUPPORTED_FEATURES",
    "Options",
    "Translation",
    "translate",
    "with_endpoints",
]

# Only features proven end to end with a real Envoy (tests/test_e2e_*.py and the conformance
# harness, which reports which of them pass the upstream tests).
SUPPORTED_FEATURES = (
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
)


@dataclass(frozen=True)
class Options:
    controller_name: str = DEFAULT_CONTROLLER
    # What Gateway status.addresses reports (the conformance suite needs a typed address).
    addresses: tuple[tuple[str, str], ...] = (("IPAddress", "127.0.0.1"),)


@dataclass(frozen=True)
class Translation:
    gateways: dict[str, ir.GatewayIR]
    statuses: dict[StatusKey, dict[str, Any]]
    # The statuses that may differ from the previous translation's (gone ones included), when
    # only routes changed; None: any of them.
    changed: frozenset[StatusKey] | None = None


@dataclass(slots=True)
class _Attachment:
    route: K8sObject[Any]  # an HTTPRoute or a GRPCRoute
    listener: GatewayListener
    hostnames: list[str]
    rules: list[Rule]
    # (name, precedence, route) of every match of every rule: the same on each hostname.
    routes: list[tuple[str, tuple[Any, ...], ir.Route]]


@dataclass(frozen=True, slots=True)
class _Attached:
    """What attaching one route gave (RouteMemo.attached): replayed while nothing it read changed."""

    route: K8sObject[Any]
    status: dict[str, Any] | None
    found: tuple[tuple[str, str, list[str], list[tuple[str, tuple[Any, ...], ir.Route]]], ...]
    policies: Any = None  # the MirrorPolicies that applied (Policies.for_route): a change replays nothing


_make_attached = ir.positional(_Attached)  # one per route at a cold start


@dataclass
class _State:
    """What the last translation with a memo made (RouteMemo.last): where a one-route change starts."""

    gateways: dict[str, ir.GatewayIR]
    statuses: dict[StatusKey, dict[str, Any]]
    listeners: dict[str, list[GatewayListener]]
    tables: dict[str, Tables]
    backends: dict[str, ir.Backend]
    # (Gateway, listener) → how many routes of each kind attach to it, before kind conflicts
    kinds: dict[tuple[str, str], Counter[str]]


def translate(store: Store, options: Options = Options(), memo: RouteMemo | None = None) -> Translation:
    """Everything the store becomes. With ``memo`` (see RouteMemo), routes unchanged since the
    last translation are not compiled again, and when only routes changed, nothing but what they
    touch is looked at (:func:`_translate_changes`); the result is the same either way."""
    if memo is not None:
        memo.set_context((options, tuple(store.gateways.items()), tuple(store.gatewayclasses.items())))
        if memo.routes_only and (changes := _translate_changes(store, options, memo)) is not None:
            return changes
    statuses: dict[StatusKey, dict[str, Any]] = {}
    ours = _gateway_classes(store, options, statuses)
    listeners: dict[str, list[GatewayListener]] = {}
    for (ns, name), gw in sorted(store.gateways.items()):
        if gw.spec.get("gatewayClassName") in ours:
            listeners[f"{ns}/{name}"] = gateway_listeners(store, gw)

    resolver = BackendResolver(store)
    policies = resolve_policies(store, options.controller_name, statuses)
    found: list[_Attachment] = []
    # A memo that holds nothing yet (a cold start, or after invalidate) holds only the routes
    # of this store afterwards: nothing to forget.
    stale = memo is not None and bool(memo.entries or memo.attached)
    route_kinds: tuple[Mapping[NsName, K8sObject[Any]], ...] = (store.httproutes, store.grpcroutes)
    shared = _Shared()
    previous: dict[str, Tables] = memo.last.tables if memo is not None and memo.last is not None else {}
    tables = {key: Tables(gw_listeners, previous.get(key)) for key, gw_listeners in listeners.items()}
    for routes in route_kinds:
        for ns_name in sorted(routes):  # (the keys alone: sorting (key, route) pairs took twice as long)
            attached = _attach_route(
                store, routes[ns_name], listeners, resolver, policies, options, statuses, memo, shared
            )
            found += attached
            # Into the route tables at once, while the route's objects are still in the CPU's
            # caches: a later pass over 10,000 routes waited on memory for each.
            for a in attached:
                tables[a.listener.gateway].add(a.listener, a.hostnames, a.routes)
    kinds = {
        (lst.gateway, lst.name): Counter(map(itemgetter(0), lst.attached))
        for lsts in listeners.values()
        for lst in lsts
    }
    # Only a listener holding both kinds can have a conflict: none (the usual case) spares a
    # pass grouping every attachment by listener, and the tables filled above stand.
    if any(len(counts) > 1 for counts in kinds.values()):
        attachments: dict[str, list[_Attachment]] = defaultdict(list)
        for a in _reject_kind_conflicts(found, statuses):
            attachments[a.listener.gateway].append(a)
        tables = {key: Tables(gw_listeners, previous.get(key)) for key, gw_listeners in listeners.items()}
        for key, t in tables.items():
            for a in attachments[key]:
                t.add(a.listener, a.hostnames, a.routes)
    if memo is not None and stale:
        # From the stores' keys, (namespace, name) as _translate_changes reads them: not a read of
        # each of 10,000 route objects again.
        memo.keep_only({("HTTPRoute", *k) for k in store.httproutes} | {("GRPCRoute", *k) for k in store.grpcroutes})

    gateways: dict[str, ir.GatewayIR] = {}
    for key, gw_listeners in listeners.items():
        namespace, name = key.split("/", 1)
        gw = store.gateways[(namespace, name)]
        gateways[key] = _gateway_ir(key, gw_listeners, tables[key], resolver.backends)
        statuses[("Gateway", gw.namespace, gw.name)] = gateway_status(gw, gw_listeners, options.addresses)
    if memo is not None:
        memo.last = _State(gateways, statuses, listeners, tables, resolver.backends, kinds)
    return Translation(gateways, statuses)


def _translate_changes(store: Store, options: Options, memo: RouteMemo) -> Translation | None:
    """The translation when only the routes in ``memo.changed`` differ from the last one: each is
    taken out and attached again, and only the virtual hosts, Gateways and statuses it touched
    are made again. Every other route is not even looked at, so the cost is that of the change.

    None (translate whole) when an HTTPRoute and a GRPCRoute share a listener the change touches:
    which one wins there depends on both (_reject_kind_conflicts)."""
    state: _State | None = memo.last
    if state is None or memo.changed is None:
        return None
    statuses = dict(state.statuses)
    policy_statuses: dict[StatusKey, dict[str, Any]] = {}
    policies = resolve_policies(store, options.controller_name, policy_statuses)
    statuses.update(policy_statuses)
    resolver = BackendResolver(store)
    resolver.backends = state.backends
    touched: set[tuple[str, str]] = set()
    found: list[_Attachment] = []
    shared = _Shared()
    for key in sorted(memo.changed):
        old = memo.attached.pop(key, None)
        statuses.pop(key, None)
        for gateway, name, names, routes in old.found if old is not None else ():
            lst = next(lst for lst in state.listeners[gateway] if lst.name == name)
            lst.attached.discard(key)
            state.kinds[(gateway, name)][key[0]] -= 1
            state.tables[gateway].remove(lst, names, routes)
            touched.add((gateway, name))
        route = getattr(store, ROUTE_FIELDS[key[0]]).get(key[1:])
        if route is None:
            memo.forget(key)
            continue
        for a in _attach_route(store, route, state.listeners, resolver, policies, options, statuses, memo, shared):
            state.kinds.setdefault((a.listener.gateway, a.listener.name), Counter())[key[0]] += 1
            touched.add((a.listener.gateway, a.listener.name))
            found.append(a)
    if any(sum(1 for n in state.kinds[t].values() if n > 0) > 1 for t in touched):
        return None  # (the full path still reuses the virtual host objects of state.tables)
    for a in found:
        state.tables[a.listener.gateway].add(a.listener, a.hostnames, a.routes)
    gateways = dict(state.gateways)
    changed: set[StatusKey] = {*memo.changed, *policy_statuses}
    for gateway in sorted({gateway for gateway, _ in touched}):
        namespace, name = gateway.split("/", 1)
        gw, gw_listeners = store.gateways[(namespace, name)], state.listeners[gateway]
        gateways[gateway] = _gateway_ir(gateway, gw_listeners, state.tables[gateway], resolver.backends)
        statuses[("Gateway", gw.namespace, gw.name)] = gateway_status(gw, gw_listeners, options.addresses)
        changed.add(("Gateway", gw.namespace, gw.name))
    memo.last = replace(state, gateways=gateways, statuses=statuses)
    return Translation(gateways, statuses, frozenset(changed))


def with_endpoints(
    store: Store, last: Translation, services: set[NsName], memo: RouteMemo | None = None
) -> Translation | None:
    """What :func:`translate` gives for ``store`` when nothing but the EndpointSlices of
    ``services`` changed since ``last``: ``last`` with the endpoints of those Services' backends
    as ``store`` has them. Routes, listeners and every condition are the same as a full
    translation would give (nothing there depends on endpoints), so nothing is translated.

    None (translate) when a backend served is or becomes a DNS cluster, which carries its
    endpoints inside the cluster. ``memo``, the one ``last`` was made with, gets them too (its
    backends and its last state), so that the next translation starting from it is not stale.
    """
    fresh: dict[str, ir.Backend] = {}

    def current(backend: ir.Backend) -> ir.Backend:
        if backend.service is None or backend.service[:2] not in services:
            return backend
        new = fresh.get(backend.name)
        if new is None:
            new = fresh[backend.name] = with_current_endpoints(store, backend)
        return new

    gateways = dict(last.gateways)
    for key, gateway in last.gateways.items():
        backends = tuple(map(current, gateway.backends))
        for old, new in zip(gateway.backends, backends, strict=True):
            if old is not new and (old.discovery != "eds" or new.discovery != "eds"):
                return None
        if backends != gateway.backends:
            gateways[key] = replace(gateway, backends=backends)
    if memo is not None:
        memo.refresh_backends(services, current)
        state: _State | None = memo.last
        if state is not None:
            # The controller's last translation is the memo's (the same dict), unless a test or
            # tool made it apart: then the next translation starts afresh.
            memo.last = replace(state, gateways=gateways) if state.gateways is last.gateways else None
    return Translation(gateways, last.statuses)


# --- GatewayClass ------------------------------------------------------------------------------


def _gateway_classes(store: Store, options: Options, statuses: dict[StatusKey, dict[str, Any]]) -> set[str]:
    ours = set()
    for name, gc in store.gatewayclasses.items():
        if gc.spec.get("controllerName") != options.controller_name:
            continue
        ours.add(name)
        statuses[("GatewayClass", "", name)] = {
            "conditions": conditions(Condition("Accepted", True, "Accepted", "Handled by mirrorplane", gc.generation)),
            "supportedFeatures": [{"name": f} for f in sorted(SUPPORTED_FEATURES)],
        }
    return ours


# --- route attachment (HTTPRoute and GRPCRoute) -------------------------------------------------


def _compiler(route: K8sObject[Any]) -> Callable[[BackendResolver, Any], Compiled]:
    return grpc_route_rules if route.kind == "GRPCRoute" else route_rules


def _attach_route(
    store: Store,
    route: K8sObject[Any],
    listeners: dict[str, list[GatewayListener]],
    resolver: BackendResolver,
    policies: Policies,
    options: Options,
    statuses: dict[StatusKey, dict[str, Any]],
    memo: RouteMemo | None,
    shared: _Shared,
) -> list[_Attachment]:
    """Attach one route to the listeners of its parentRefs. ``shared``: what the translation
    works out once for every route alike (_Shared)."""
    key = route.key
    applied = policies.for_route(key)
    if memo is not None:
        hit = memo.attached.get(key)
        if hit is not None and hit.policies == applied and memo.same(key, hit.route, route):
            return _replay(route, hit, listeners, resolver, policies, memo, statuses)
    gen = route.generation
    ours = _parents(store, route, listeners, shared)
    if not ours:
        if memo is not None:
            memo.attached[key] = _Attached(route, None, (), applied)
        return []

    compiler = _compiler(route)
    rules, problems, dropped = (
        memo.compile(resolver, route, compiler) if memo is not None else compiler(resolver, route)
    )
    rules = policies.apply(route.kind, route, rules)  # after the memo: a policy change is never stale
    resolved = _resolved(gen)
    if problems:
        messages = dict.fromkeys(p.message for p in problems)  # each distinct problem once, in order
        resolved = Condition("ResolvedRefs", False, problems[0].reason, "; ".join(messages), gen)
    usable = [r for r in rules if r.index not in dropped] if dropped else rules

    parents, attachments = [], []
    for ref, refused, allowed in ours:
        accepted, found = _accept(route, refused, allowed)
        if accepted.status is True and not usable:
            accepted = Condition(
                "Accepted", False, "UnsupportedValue", "No rule can be served: " + "; ".join(dropped.values()), gen
            )
        if accepted.status is True:
            for lst, names in found:
                lst.attached.add(key)
                attachments.append(_Attachment(route, lst, names, rules, _ir_routes(route, rules, lst)))
        conds = [accepted, resolved]
        if dropped and usable:
            conds.append(Condition("PartiallyInvalid", True, "UnsupportedValue", "; ".join(dropped.values()), gen))
        parents.append(
            {"parentRef": dict(ref), "controllerName": options.controller_name, "conditions": shared.conditions(conds)}
        )
    status = statuses[key] = {"parents": parents}
    if memo is not None:
        found_ = tuple((a.listener.gateway, a.listener.name, a.hostnames, a.routes) for a in attachments)
        memo.attached[key] = _make_attached(route, status, found_, applied)
    return attachments


def _replay(
    route: K8sObject[Any],
    hit: _Attached,
    listeners: dict[str, list[GatewayListener]],
    resolver: BackendResolver,
    policies: Policies,
    memo: RouteMemo,
    statuses: dict[StatusKey, dict[str, Any]],
) -> list[_Attachment]:
    """_attach_route's result for a route, Gateways, references and policies all unchanged since it ran."""
    rules = policies.apply(route.kind, route, memo.compile(resolver, route, _compiler(route))[0])
    if hit.route is not route:
        memo.attached[route.key] = replace(hit, route=route)
    if hit.status is not None:
        statuses[route.key] = hit.status
    out = []
    for gateway, name, names, routes in hit.found:
        lst = next(lst for lst in listeners[gateway] if lst.name == name)
        lst.attached.add(route.key)
        out.append(_Attachment(route, lst, names, rules, routes))
    return out


def _ir_routes(
    route: K8sObject[Any], rules: list[Rule], lst: GatewayListener
) -> list[tuple[str, tuple[Any, ...], ir.Route]]:
    grpc = route.kind == "GRPCRoute"
    kind: Literal["HTTPRoute", "GRPCRoute"] = "GRPCRoute" if grpc else "HTTPRoute"
    prefix, source = f"{route.kind.lower()}/{route.namespace}/{route.name}/rule/", route.describe()
    meta = route.metadata
    created, namespace, route_name = meta.creation_timestamp, meta.namespace, meta.name  # for precedence
    protocol, port = lst.protocol, lst.port
    out = []
    for rule in rules:
        rule_name = rule.name or str(rule.index)
        head = f"{prefix}{rule_name}/match/"
        f = rule.filters
        named = bool(rule.name)
        for mi, match in enumerate(rule.matches):
            name = head + str(mi)
            order = (
                grpc_precedence(route, rule, mi)
                if grpc
                else precedence(match, created, namespace, route_name, rule.index, mi)
            )
            if rule.direct_status is not None:
                out.append((name, order, _direct(name, match, rule, rule_name, kind, source)))
                continue
            # Read from the rule here rather than in a function per match: 10,000 at a cold start.
            made = ir.make_route(
                name,
                match,
                rule.backends,
                f.mirrors,
                f.request_headers,
                f.response_headers,
                None,  # direct_status
                redirect_for(f.redirect, protocol, port, match.path) if f.redirect else None,
                rewrite_for(f.rewrite, match.path) if f.rewrite else None,
                f.cors,
                rule.timeout_ms,
                rule.backend_timeout_ms,
                name if named else "",  # stat_prefix
                kind,
                source,
                rule_name,
            )
            out.append((name, order, made))
    return out


def _reject_kind_conflicts(found: list[_Attachment], statuses: dict[StatusKey, dict[str, Any]]) -> list[_Attachment]:
    """An HTTPRoute and a GRPCRoute on one listener with intersecting hostnames: the spec accepts
    exactly one, the older, then the first by namespace/name. The other loses that listener; a
    route left with no listener of a Gateway is not Accepted by it.

    Done after attachment, over its results, so that each route's own attachment stays a
    function of that route alone (RouteMemo replays it) and only listeners holding both kinds
    cost anything here."""
    by_listener: dict[int, list[_Attachment]] = defaultdict(list)
    for a in found:
        by_listener[id(a.listener)].append(a)
    lost: dict[int, _Attachment] = {}  # id(loser) → the attachment that won
    for group in by_listener.values():
        if len({a.route.kind for a in group}) < 2:
            continue
        winners: list[_Attachment] = []
        for a in sorted(
            group, key=lambda a: (a.route.metadata.creation_timestamp, a.route.namespace, a.route.name, a.route.kind)
        ):
            rival = next(
                (w for w in winners if w.route.kind != a.route.kind and _overlap(a.hostnames, w.hostnames)), None
            )
            if rival is None:
                winners.append(a)
            else:
                lost[id(a)] = rival
    if not lost:
        return found
    kept = [a for a in found if id(a) not in lost]
    for a in found:
        rival = lost.get(id(a))
        if rival is None:
            continue
        route, lst = a.route, a.listener
        if not any(k.route is route and k.listener is lst for k in kept):
            lst.attached.discard(route.key)
        if not any(k.route is route and k.listener.gateway == lst.gateway for k in kept):
            why = (
                f"hostnames intersect those of {rival.route.describe()} on listener {lst.name}, which was accepted "
                "first (the older route, then by namespace/name); an HTTPRoute and a GRPCRoute cannot share a hostname"
            )
            statuses[route.key] = _not_accepted(statuses[route.key], route, lst.gateway, why)
    return kept


def _overlap(a: list[str], b: list[str]) -> bool:
    return any(
        x == hostnames.CATCH_ALL or y == hostnames.CATCH_ALL or hostnames.intersect(x, [y]) for x in a for y in b
    )


def _not_accepted(status: dict[str, Any], route: K8sObject[Any], gateway: str, why: str) -> dict[str, Any]:
    """A copy of a route's status (the memo may hold the original) with Accepted=False on the
    parents naming ``gateway``."""
    cond = Condition("Accepted", False, "NotAllowedByListeners", why, route.generation).to_dict()
    parents = []
    for parent in status["parents"]:
        ref = parent["parentRef"]
        if f"{ref.get('namespace') or route.namespace}/{ref['name']}" == gateway:
            parent = {**parent, "conditions": [cond if c["type"] == "Accepted" else c for c in parent["conditions"]]}
        parents.append(parent)
    return {**status, "parents": parents}


def _accept(
    route: K8sObject[Any], refused: tuple[str, str] | None, allowed: list[GatewayListener]
) -> tuple[Condition, list[tuple[GatewayListener, list[str]]]]:
    """Which of the listeners a parentRef may attach to (_allowed) take this route, and the
    Accepted condition saying so: the hostnames are the route's own."""
    gen = route.generation
    if refused is not None:
        return Condition("Accepted", False, *refused, gen), []
    found = []
    for lst in allowed:
        names = hostnames.intersect(lst.hostname, route.spec.get("hostnames") or [])
        if names:
            found.append((lst, names))
    if not found:
        return (
            Condition(
                "Accepted",
                False,
                "NoMatchingListenerHostname",
                "No hostname of this route intersects a listener hostname",
                gen,
            ),
            [],
        )
    return _route_accepted(gen), found


# One parentRef of ours: the ref, and why no listener takes it (reason, message) or the
# listeners that may, before hostnames (_allowed).
Parent = tuple[dict[str, Any], tuple[str, str] | None, list[GatewayListener]]


class _Shared:
    """What one translation works out once for every route alike, rather than per route (10,000
    routes name the same Gateway with the same parentRefs, and nearly all are well). It lives
    as long as one call of translate (or _translate_changes): the Gateways, their listeners,
    the store's namespaces and the options are fixed meanwhile, so none of them needs to be in
    a key."""

    def __init__(self) -> None:
        self.allowed: dict[Any, Allowed] = {}  # _allowed
        self.parents: dict[tuple[str, str, bytes | str], list[Parent]] = {}  # _parents
        self.parent_ids: dict[tuple[str, str, int], tuple[list[Parent], Any]] = {}  # _parents, by identity
        # The conditions of a parent status, by the identity of its Condition objects (each
        # entry keeps them, so their ids stay theirs): their dicts, copied for each route.
        self._conditions: dict[tuple[int, ...], tuple[tuple[Condition, ...], list[dict[str, Any]]]] = {}

    def conditions(self, conds: list[Condition]) -> list[dict[str, Any]]:
        """status.conditions(*conds): each route's own dicts, made by copying those of the first
        route with the same Condition objects (the well ones are one object per generation,
        _route_accepted and _resolved) instead of hashing each Condition again."""
        key = tuple(map(id, conds))
        hit = self._conditions.get(key)
        if hit is None:
            hit = self._conditions[key] = (tuple(conds), conditions(*conds))
        return [c.copy() for c in hit[1]]


def _parents(
    store: Store, route: K8sObject[Any], listeners: dict[str, list[GatewayListener]], shared: _Shared
) -> list[Parent]:
    """The route's parentRefs that name a Gateway we translate, each with the listeners it may
    attach to. What it reads of the route is its kind, its namespace and its parentRefs (the
    key, by content as rules.content_key makes it); of the rest, only what ``shared`` lives
    no longer than."""
    refs = route.spec.get("parentRefs") or []
    kind, namespace = route.kind, route.namespace
    # First by the identity of the list: the Kubernetes provider holds equal parts once
    # (jsonshare), so 10,000 routes hold a few lists, and reading each by content is skipped.
    # The entry keeps the list, so its id stays its own for the translation.
    same = (kind, namespace, id(refs))
    known = shared.parent_ids.get(same)
    if known is not None:
        return known[0]
    key = (kind, namespace, content_key(refs))
    hit = shared.parents.get(key)
    if hit is None:
        hit = shared.parents[key] = []
        for ref in refs:
            if ref.get("group", GATEWAY_GROUP) != GATEWAY_GROUP or ref.get("kind", "Gateway") != "Gateway":
                continue
            gw_listeners = listeners.get(f"{ref.get('namespace') or route.namespace}/{ref['name']}")
            if gw_listeners is not None:
                hit.append((ref, *_allowed(store, route, ref, gw_listeners, shared.allowed)))
    shared.parent_ids[same] = (hit, refs)
    return hit


# The listeners a parentRef may attach to, or why none (reason, message).
Allowed = tuple[tuple[str, str] | None, list[GatewayListener]]
_ABSENT = object()


def _allowed(
    store: Store,
    route: K8sObject[Any],
    ref: dict[str, Any],
    gw_listeners: list[GatewayListener],
    memo: dict[Any, Allowed],
) -> Allowed:
    """The listeners of a Gateway this parentRef selects and that allow the route, before
    hostnames. They read nothing of the route but its kind and namespace, and nothing of the
    parentRef but its sectionName and port: one translation works them out once per distinct
    key (10,000 routes name the same few), ``memo``, which lives as long as ``gw_listeners``."""
    section, port = ref.get("sectionName", _ABSENT), ref.get("port", _ABSENT)
    # The types too: a port of True would equal 1 and name itself otherwise in the message.
    key = (id(gw_listeners), route.kind, route.namespace, section, type(section), port, type(port))
    try:
        hit, kept = memo.get(key), True
    except TypeError:  # an unhashable sectionName or port (unvalidated input): no memo
        hit, kept = None, False
    if hit is not None:
        return hit
    candidates = [
        lst
        for lst in gw_listeners
        if (section is _ABSENT or section == lst.name) and (port is _ABSENT or port == lst.port)
    ]
    if not candidates:
        what = " and ".join(f"{field} {ref[field]!r}" for field in ("sectionName", "port") if field in ref)
        hit = (("NoMatchingParent", f"Gateway has no listener with {what}"), [])
    else:
        allowed = [lst for lst in candidates if lst.accepts_routes and _allows(store, lst, route)]
        hit = (
            (None, allowed)
            if allowed
            else (("NotAllowedByListeners", "No listener of this Gateway allows this route"), [])
        )
    if kept:
        memo[key] = hit
    return hit


# The conditions of a route that is well (10,000 of them at a cold start), made once per generation.
@lru_cache(maxsize=64)
def _resolved(generation: int) -> Condition:
    return Condition("ResolvedRefs", True, "ResolvedRefs", "All references resolved", generation)


@lru_cache(maxsize=64)
def _route_accepted(generation: int) -> Condition:
    return Condition("Accepted", True, "Accepted", "Route is accepted", generation)


def _allows(store: Store, lst: GatewayListener, route: K8sObject[Any]) -> bool:
    if {"group": GATEWAY_GROUP, "kind": route.kind} not in lst.kinds:
        return False
    gw_namespace = lst.gateway.split("/", 1)[0]
    mode = lst.allowed_namespaces.get("from", "Same")
    if mode == "All":
        return True
    if mode == "Same":
        return route.namespace == gw_namespace
    if mode == "Selector":
        return _selects(lst.allowed_namespaces.get("selector") or {}, store.namespace_labels(route.namespace))
    return False


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels AND matchExpressions)."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# --- IR assembly -------------------------------------------------------------------------------


def _gateway_ir(
    key: str, listeners: list[GatewayListener], tables: Tables, backends: Mapping[str, ir.Backend]
) -> ir.GatewayIR:
    programmed = [lst for lst in listeners if lst.programmed]
    out_listeners: list[ir.HTTPListener] = []
    for port in sorted({lst.port for lst in programmed}):
        on_port = [lst for lst in programmed if lst.port == port]
        tls = on_port[0].protocol == "HTTPS"
        if tls:
            siblings = [lst.hostname for lst in on_port]
            chains = tuple(_tls_chain(port, lst, tables, siblings) for lst in on_port)
        else:
            chains = (ir.FilterChain(f"http-{port}", tables.ordered(str(port))),)
        out_listeners.append(ir.HTTPListener(f"{'https' if tls else 'http'}-{port}", port, chains, tls))
    return ir.GatewayIR(
        name=key,
        listeners=tuple(out_listeners),
        backends=tuple(backends[n] for n in tables.backends()),
    )


def _tls_chain(port: int, lst: GatewayListener, tables: Tables, siblings: list[str | None]) -> ir.FilterChain:
    """One HTTPS listener's chain: picked by SNI, serving only its own hostnames.

    A request whose Host belongs to another listener on the port, or (on a listener with a
    hostname) to no listener at all, was sent on the wrong connection: 421 Misdirected Request.
    """
    name = table_of(lst)
    vhosts, hosts = tables.ordered(name), tables.hosts(name)
    misdirected = [h for h in siblings if h is not None and h != lst.hostname]
    served = set(hosts)
    if lst.hostname is not None:
        if lst.hostname not in served:
            vhosts += (ir.VirtualHost(f"{name}/{lst.hostname}", (lst.hostname,), ()),)
            served.add(lst.hostname)
        misdirected.append(hostnames.CATCH_ALL)
    return ir.FilterChain(
        name=name,
        virtual_hosts=vhosts,
        server_names=(lst.hostname,) if lst.hostname else (),
        certificates=lst.certificates,
        misdirected=tuple(h for h in misdirected if h not in served),
    )


def _direct(
    name: str, match: ir.Match, rule: Rule, rule_name: str, kind: Literal["HTTPRoute", "GRPCRoute"], source: str
) -> ir.Route:
    """One match of a rule answered by Envoy itself (``rule.direct_status``) as an IR route;
    ``rule_name`` is the rule's name or its index, ``source`` the route object's "Kind namespace/name"."""
    f = rule.filters
    return ir.Route(
        name=name,
        match=match,
        request_headers=f.request_headers,
        response_headers=f.response_headers,
        direct_status=rule.direct_status,
        kind=kind,
        source=source,
        rule=rule_name,
    )
