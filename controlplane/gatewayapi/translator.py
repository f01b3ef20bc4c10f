"""Gateway API objects → IR per Gateway, plus the status of every object we own.

A pure function of the store: no I/O, no clocks, no grpc or kubernetes. It never raises on bad
user input; whatever cannot be served is dropped alone and explained in a condition, and every
other valid object keeps being served.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from ..store import Store
from . import hostnames
from .model import GATEWAY_GROUP, Gateway, HTTPRoute
from .refs import BackendResolver, RefProblem
from .status import Condition, StatusKey, conditions

DEFAULT_CONTROLLER = "mirrorplane.io/gateway-controller"

# An HTTPRoute annotation: "true" keeps Envoy's default of appending "-shadow" to the mirrored
# request's Host. The default (absent/"false") sends the real Host to the mirror.
SHADOW_HOST_SUFFIX_ANNOTATION = "mirrorplane.io/mirror-shadow-host-suffix"

SUPPORTED_FEATURES = (
    "Gateway",
    "HTTPRoute",
    "HTTPRouteMethodMatching",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteResponseHeaderModification",
    "ReferenceGrant",
)

_HTTPROUTE_KIND = {"group": GATEWAY_GROUP, "kind": "HTTPRoute"}


@dataclass(frozen=True)
class Options:
    controller_name: str = DEFAULT_CONTROLLER
    # What Gateway status.addresses reports (the conformance suite needs a typed address).
    addresses: tuple[tuple[str, str], ...] = (("IPAddress", "127.0.0.1"),)


@dataclass(frozen=True)
class Translation:
    gateways: dict[str, ir.GatewayIR]
    statuses: dict[StatusKey, dict[str, Any]]


@dataclass
class _Listener:
    gateway: str
    name: str
    port: int
    hostname: str | None
    allowed_namespaces: dict[str, Any]
    kinds: list[dict[str, str]]
    conds: dict[str, Condition]
    valid: bool
    attached: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class _Rule:
    index: int
    matches: tuple[ir.Match, ...]
    backends: tuple[ir.WeightedBackend, ...]
    mirrors: tuple[ir.Mirror, ...]
    request_headers: ir.HeaderMods
    response_headers: ir.HeaderMods
    direct_status: int | None


@dataclass
class _Attachment:
    route: HTTPRoute
    listener: _Listener
    hostnames: list[str]
    rules: list[_Rule]


def translate(store: Store, options: Options = Options()) -> Translation:
    statuses: dict[StatusKey, dict[str, Any]] = {}
    ours = _gateway_classes(store, options, statuses)
    listeners: dict[str, list[_Listener]] = {}
    for (ns, name), gw in sorted(store.gateways.items()):
        if gw.spec.get("gatewayClassName") in ours:
            listeners[f"{ns}/{name}"] = _listeners(gw)

    resolver = BackendResolver(store)
    attachments: dict[str, list[_Attachment]] = defaultdict(list)
    for _, route in sorted(store.httproutes.items()):
        for a in _attach_route(store, route, listeners, resolver, options, statuses):
            attachments[a.listener.gateway].append(a)

    gateways: dict[str, ir.GatewayIR] = {}
    for key, gw_listeners in listeners.items():
        gw = store.gateways[tuple(key.split("/", 1))]  # type: ignore[index]
        gateways[key] = _gateway_ir(key, gw_listeners, attachments[key], resolver.backends)
        statuses[("Gateway", gw.namespace, gw.name)] = _gateway_status(gw, gw_listeners, options)
    return Translation(gateways, statuses)


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


# --- Gateway and listeners ---------------------------------------------------------------------


def _listeners(gw: Gateway) -> list[_Listener]:
    gen = gw.generation
    specs = gw.spec.get("listeners", [])
    out = []
    for spec in specs:
        port, protocol, hostname = spec["port"], spec["protocol"], spec.get("hostname")
        same_port = [s for s in specs if s["port"] == port]
        accepted = Condition("Accepted", True, "Accepted", "Listener is valid", gen)
        if protocol != "HTTP":
            accepted = Condition(
                "Accepted", False, "UnsupportedProtocol", f"protocol {protocol} is not supported; use HTTP", gen
            )
        conflicted = Condition("Conflicted", False, "NoConflicts", "No conflicts", gen)
        if any(s["protocol"] != protocol for s in same_port):
            conflicted = Condition(
                "Conflicted", True, "ProtocolConflict", f"another listener on port {port} uses a different protocol", gen
            )
        elif sum(1 for s in same_port if s.get("hostname") == hostname) > 1:
            conflicted = Condition(
                "Conflicted",
                True,
                "HostnameConflict",
                f"another listener on port {port} has the same hostname {hostname or '(none)'}",
                gen,
            )
        kinds, bad_kinds = _route_kinds(spec, protocol)
        resolved = Condition("ResolvedRefs", True, "ResolvedRefs", "All references resolved", gen)
        if bad_kinds:
            resolved = Condition(
                "ResolvedRefs",
                False,
                "InvalidRouteKinds",
                f"route kinds {', '.join(bad_kinds)} are not supported; only HTTPRoute is",
                gen,
            )
        valid = accepted.status is True and conflicted.status is False and bool(kinds)
        programmed = (
            Condition("Programmed", True, "Programmed", "Listener is programmed in Envoy", gen)
            if valid
            else Condition("Programmed", False, "Invalid", "Listener is invalid, see its other conditions", gen)
        )
        out.append(
            _Listener(
                gateway=f"{gw.namespace}/{gw.name}",
                name=spec["name"],
                port=port,
                hostname=hostname,
                allowed_namespaces=(spec.get("allowedRoutes") or {}).get("namespaces") or {"from": "Same"},
                kinds=kinds,
                conds={c.type: c for c in (accepted, programmed, resolved, conflicted)},
                valid=valid,
            )
        )
    return out


def _route_kinds(spec: dict[str, Any], protocol: str) -> tuple[list[dict[str, str]], list[str]]:
    given = (spec.get("allowedRoutes") or {}).get("kinds")
    if given is None:
        return ([dict(_HTTPROUTE_KIND)] if protocol == "HTTP" else []), []
    good, bad = [], []
    for k in given:
        if k.get("group", GATEWAY_GROUP) == GATEWAY_GROUP and k["kind"] == "HTTPRoute" and protocol == "HTTP":
            if dict(_HTTPROUTE_KIND) not in good:
                good.append(dict(_HTTPROUTE_KIND))
        else:
            bad.append(f"{k.get('group', GATEWAY_GROUP)}/{k['kind']}")
    return good, bad


def _gateway_status(gw: Gateway, listeners: list[_Listener], options: Options) -> dict[str, Any]:
    gen = gw.generation
    valid = [lst for lst in listeners if lst.valid]
    if len(valid) == len(listeners):
        accepted = Condition("Accepted", True, "Accepted", "Gateway is accepted", gen)
    else:
        accepted = Condition(
            "Accepted", bool(valid), "ListenersNotValid", f"{len(listeners) - len(valid)} listener(s) are invalid", gen
        )
    programmed = (
        Condition("Programmed", True, "Programmed", "Gateway is programmed in Envoy", gen)
        if valid
        else Condition("Programmed", False, "Invalid", "No valid listeners", gen)
    )
    return {
        "addresses": [{"type": t, "value": v} for t, v in options.addresses],
        "conditions": conditions(accepted, programmed),
        "listeners": [
            {
                "name": lst.name,
                "supportedKinds": lst.kinds,
                "attachedRoutes": len(lst.attached),
                "conditions": conditions(*lst.conds.values()),
            }
            for lst in listeners
        ],
    }


# --- HTTPRoute attachment ----------------------------------------------------------------------


def _attach_route(
    store: Store,
    route: HTTPRoute,
    listeners: dict[str, list[_Listener]],
    resolver: BackendResolver,
    options: Options,
    statuses: dict[StatusKey, dict[str, Any]],
) -> list[_Attachment]:
    gen = route.generation
    ours = [
        (ref, f"{ref.get('namespace') or route.namespace}/{ref['name']}")
        for ref in route.spec.get("parentRefs") or []
        if ref.get("group", GATEWAY_GROUP) == GATEWAY_GROUP and ref.get("kind", "Gateway") == "Gateway"
    ]
    ours = [(ref, key) for ref, key in ours if key in listeners]
    if not ours:
        return []

    rules, problems, dropped = _rules(resolver, route)
    resolved = Condition("ResolvedRefs", True, "ResolvedRefs", "All references resolved", gen)
    if problems:
        messages = dict.fromkeys(p.message for p in problems)  # each distinct problem once, in order
        resolved = Condition("ResolvedRefs", False, problems[0].reason, "; ".join(messages), gen)
    usable = [r for r in rules if r.index not in dropped]

    parents, attachments = [], []
    for ref, key in ours:
        accepted, found = _accept(store, route, ref, listeners[key])
        if accepted.status is True and not usable:
            accepted = Condition(
                "Accepted", False, "UnsupportedValue", "No rule can be served: " + "; ".join(dropped.values()), gen
            )
        if accepted.status is True:
            for lst, names in found:
                lst.attached.add((route.namespace, route.name))
                attachments.append(_Attachment(route, lst, names, rules))
        conds = [accepted, resolved]
        if dropped and usable:
            conds.append(
                Condition("PartiallyInvalid", True, "UnsupportedValue", "; ".join(dropped.values()), gen)
            )
        parents.append(
            {"parentRef": dict(ref), "controllerName": options.controller_name, "conditions": conditions(*conds)}
        )
    statuses[("HTTPRoute", route.namespace, route.name)] = {"parents": parents}
    return attachments


def _accept(
    store: Store, route: HTTPRoute, ref: dict[str, Any], gw_listeners: list[_Listener]
) -> tuple[Condition, list[tuple[_Listener, list[str]]]]:
    """Which listeners of a Gateway take this parentRef, and the Accepted condition saying so."""
    gen = route.generation
    candidates = [
        lst
        for lst in gw_listeners
        if ("sectionName" not in ref or ref["sectionName"] == lst.name) and ("port" not in ref or ref["port"] == lst.port)
    ]
    if not candidates:
        what = f"sectionName {ref['sectionName']!r}" if "sectionName" in ref else f"port {ref.get('port')}"
        return Condition("Accepted", False, "NoMatchingParent", f"Gateway has no listener with {what}", gen), []
    allowed = [lst for lst in candidates if lst.valid and _allows(store, lst, route)]
    if not allowed:
        return (
            Condition("Accepted", False, "NotAllowedByListeners", "No listener of this Gateway allows this route", gen),
            [],
        )
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
    return Condition("Accepted", True, "Accepted", "Route is accepted", gen), found


def _allows(store: Store, lst: _Listener, route: HTTPRoute) -> bool:
    if _HTTPROUTE_KIND not in lst.kinds:
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


# --- rules, filters, backends ------------------------------------------------------------------


def _rules(resolver: BackendResolver, route: HTTPRoute) -> tuple[list[_Rule], list[RefProblem], dict[int, str]]:
    """Every rule of a route, the reference problems found, and the rules dropped (index → why)."""
    rules, problems, dropped = [], [], {}
    shadow_suffix = route.metadata.annotations.get(SHADOW_HOST_SUFFIX_ANNOTATION, "").lower() == "true"
    for index, rule in enumerate(route.spec.get("rules") or []):
        unsupported: list[str] = []
        mirrors: list[ir.Mirror] = []
        request_headers = response_headers = ir.HeaderMods()
        backend_refs = rule.get("backendRefs") or []
        rule_filters = [(f, "filters") for f in rule.get("filters") or []]
        for bi, bref in enumerate(backend_refs):
            rule_filters += [(f, f"backendRefs[{bi}].filters") for f in bref.get("filters") or []]
        for f, where in rule_filters:
            kind = f["type"]
            if kind == "RequestMirror":
                if where != "filters" and len(backend_refs) > 1:
                    unsupported.append(
                        f"RequestMirror in {where} is supported only when the rule has a single backendRef "
                        "(Envoy mirrors per route, not per weighted backend); move it to the rule's filters"
                    )
                    continue
                mirror, problem = _mirror(resolver, route, f["requestMirror"], shadow_suffix)
                if problem:
                    problems.append(problem)
                elif mirror:
                    mirrors.append(mirror)
            elif kind == "RequestHeaderModifier" and where == "filters":
                request_headers = _header_mods(f["requestHeaderModifier"])
            elif kind == "ResponseHeaderModifier" and where == "filters":
                response_headers = _header_mods(f["responseHeaderModifier"])
            else:
                unsupported.append(f"filter {kind} in {where} is not supported")

        weighted = []
        for bref in backend_refs:
            backend, problem = resolver.resolve(route, bref)
            if problem:
                problems.append(problem)
                weighted.append(ir.WeightedBackend(None, bref.get("weight", 1)))
            elif backend:
                weighted.append(ir.WeightedBackend(backend.name, bref.get("weight", 1)))
        weighted = [w for w in weighted if w.weight > 0]

        direct = None
        if unsupported:
            dropped[index] = f"Dropped Rule {index}: " + "; ".join(unsupported) + " (its requests get a 500)"
            direct = 500
        elif not any(w.backend for w in weighted):
            direct = 500  # no usable backend: the spec asks for a 500
        rules.append(
            _Rule(
                index=index,
                matches=tuple(_match(m) for m in rule.get("matches") or [{}]),
                backends=tuple(weighted) if direct is None else (),
                mirrors=tuple(mirrors) if direct is None else (),
                request_headers=request_headers,
                response_headers=response_headers,
                direct_status=direct,
            )
        )
    return rules, problems, dropped


def _mirror(
    resolver: BackendResolver, route: HTTPRoute, spec: dict[str, Any], shadow_suffix: bool
) -> tuple[ir.Mirror | None, RefProblem | None]:
    """A RequestMirror filter; (None, None) when it mirrors nothing (percent 0 / numerator 0)."""
    if "percent" in spec:
        numerator, denominator = spec["percent"], 100
    elif "fraction" in spec:
        numerator, denominator = spec["fraction"]["numerator"], spec["fraction"].get("denominator", 100)
    else:
        numerator, denominator = 100, 100
    if numerator <= 0:
        return None, None
    backend, problem = resolver.resolve(route, spec["backendRef"], mirror=True)
    if problem or backend is None:
        return None, problem
    return ir.Mirror(backend.name, numerator, denominator, shadow_suffix), None


def _header_mods(spec: dict[str, Any]) -> ir.HeaderMods:
    return ir.HeaderMods(
        set=tuple((h["name"], h["value"]) for h in spec.get("set") or []),
        add=tuple((h["name"], h["value"]) for h in spec.get("add") or []),
        remove=tuple(spec.get("remove") or []),
    )


def _match(m: dict[str, Any]) -> ir.Match:
    path = m.get("path") or {"type": "PathPrefix", "value": "/"}
    return ir.Match(
        path_type=path.get("type", "PathPrefix"),
        path=path.get("value", "/"),
        headers=_first_by_name(m.get("headers") or [], fold_case=True),
        query_params=_first_by_name(m.get("queryParams") or [], fold_case=False),
        method=m.get("method"),
    )


def _first_by_name(items: list[dict[str, Any]], *, fold_case: bool) -> tuple[ir.StringMatch, ...]:
    """The spec: when several matches name the same header/param, only the first counts."""
    seen, out = set(), []
    for item in items:
        key = item["name"].lower() if fold_case else item["name"]
        if key in seen:
            continue
        seen.add(key)
        out.append(ir.StringMatch(item["name"], item["value"], item.get("type", "Exact") == "RegularExpression"))
    return tuple(out)


# --- IR assembly -------------------------------------------------------------------------------


def _precedence(a: _Attachment, rule: _Rule, mi: int, match: ir.Match) -> tuple[Any, ...]:
    """Gateway API route precedence: exact path, longest prefix, method, most headers, most query
    params, then the oldest route, then namespace/name, then rule and match order."""
    kind = {"Exact": 0, "PathPrefix": 1}.get(match.path_type, 2)
    meta = a.route.metadata
    return (
        kind,
        -len(match.path),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
        meta.creation_timestamp,
        meta.namespace,
        meta.name,
        rule.index,
        mi,
    )


def _gateway_ir(
    key: str, listeners: list[_Listener], attachments: list[_Attachment], backends: dict[str, ir.Backend]
) -> ir.GatewayIR:
    ports = sorted({lst.port for lst in listeners if lst.valid})
    out_listeners, used = [], set()
    for port in ports:
        siblings = [lst.hostname for lst in listeners if lst.valid and lst.port == port]
        vhosts: dict[str, dict[str, tuple[tuple[Any, ...], ir.Route]]] = defaultdict(dict)
        for a in attachments:
            if a.listener.port != port:
                continue
            for host in a.hostnames:
                if not hostnames.owned_by(host, a.listener.hostname, siblings):
                    continue
                for rule in a.rules:
                    for mi, match in enumerate(rule.matches):
                        name = f"httproute/{a.route.namespace}/{a.route.name}/rule/{rule.index}/match/{mi}"
                        vhosts[host][name] = (_precedence(a, rule, mi, match), _route(name, match, rule))
        vhost_list = []
        for host in sorted(vhosts):
            routes = tuple(r for _, r in sorted(vhosts[host].values(), key=lambda kv: kv[0]))
            for r in routes:
                for b in r.backends:
                    if b.backend:
                        used.add(b.backend)
                for m in r.mirrors:
                    used.add(m.backend)
            vhost_list.append(ir.VirtualHost(name=f"{port}/{host}", domains=(host,), routes=routes))
        out_listeners.append(ir.HTTPListener(name=f"http-{port}", port=port, virtual_hosts=tuple(vhost_list)))
    return ir.GatewayIR(
        name=key,
        listeners=tuple(out_listeners),
        backends=tuple(backends[n] for n in sorted(used)),
    )


def _route(name: str, match: ir.Match, rule: _Rule) -> ir.Route:
    return ir.Route(
        name=name,
        match=match,
        backends=rule.backends,
        mirrors=rule.mirrors,
        request_headers=rule.request_headers,
        response_headers=rule.response_headers,
        direct_status=rule.direct_status,
    )
