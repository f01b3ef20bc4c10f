"""Gateway listeners: validity, conflicts, certificates, and the Gateway's status.

Two questions are kept apart because the spec keeps them apart: whether a listener *accepts
routes* (it is Accepted, not Conflicted, and allows HTTPRoutes or GRPCRoutes; routes attached to it count in
attachedRoutes) and whether it is *programmed* into Envoy (it also has every reference it needs,
e.g. a usable certificate for HTTPS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..ir import Certificate
from .certificates import resolve_certificate
from .model import GATEWAY_GROUP, Gateway
from .status import Condition, conditions
from .store import Store

HTTPROUTE_KIND = {"group": GATEWAY_GROUP, "kind": "HTTPRoute"}
GRPCROUTE_KIND = {"group": GATEWAY_GROUP, "kind": "GRPCRoute"}
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")  # both served on HTTP (h2c prior knowledge) and HTTPS listeners
PROTOCOLS = ("HTTP", "HTTPS")


@dataclass
class GatewayListener:
    gateway: str  # "namespace/name"
    name: str
    port: int
    protocol: str
    hostname: str | None
    allowed_namespaces: dict[str, Any]
    kinds: list[dict[str, str]]
    conds: dict[str, Condition]
    accepts_routes: bool
    programmed: bool
    certificates: tuple[Certificate, ...] = ()
    attached: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, namespace, name)


def gateway_listeners(store: Store, gw: Gateway) -> list[GatewayListener]:
    gen = gw.generation
    specs = gw.spec.get("listeners", [])
    out = []
    for spec in specs:
        port, protocol, hostname = spec["port"], spec["protocol"], spec.get("hostname")
        same_port = [s for s in specs if s["port"] == port]
        accepted = Condition("Accepted", True, "Accepted", "Listener is valid", gen)
        if protocol not in PROTOCOLS:
            accepted = Condition(
                "Accepted", False, "UnsupportedProtocol", f"protocol {protocol} is not supported; use HTTP or HTTPS", gen
            )
        elif protocol == "HTTPS" and (spec.get("tls") or {}).get("mode", "Terminate") != "Terminate":
            accepted = Condition(
                "Accepted", False, "UnsupportedValue", "HTTPS listeners support only tls.mode Terminate", gen
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
        certificates: list[Certificate] = []
        if bad_kinds:
            resolved = Condition(
                "ResolvedRefs",
                False,
                "InvalidRouteKinds",
                f"route kinds {', '.join(bad_kinds)} are not supported; only HTTPRoute and GRPCRoute are",
                gen,
            )
        elif protocol == "HTTPS" and accepted.status is True:
            problems = []
            for ref in (spec.get("tls") or {}).get("certificateRefs") or []:
                cert, problem = resolve_certificate(store, gw.namespace, ref)
                if problem:
                    problems.append(problem)
                elif cert:
                    certificates.append(cert)
            if problems:
                resolved = Condition(
                    "ResolvedRefs", False, problems[0].reason, "; ".join(p.message for p in problems), gen
                )
            elif not certificates:
                resolved = Condition("ResolvedRefs", False, "InvalidCertificateRef", "HTTPS needs a certificateRef", gen)
        accepts = accepted.status is True and conflicted.status is False and bool(kinds)
        programmed_ok = accepts and (protocol == "HTTP" or bool(certificates))
        programmed = (
            Condition("Programmed", True, "Programmed", "Listener is programmed in Envoy", gen)
            if programmed_ok
            else Condition("Programmed", False, "Invalid", "Listener is invalid, see its other conditions", gen)
        )
        out.append(
            GatewayListener(
                gateway=f"{gw.namespace}/{gw.name}",
                name=spec["name"],
                port=port,
                protocol=protocol,
                hostname=hostname,
                allowed_namespaces=(spec.get("allowedRoutes") or {}).get("namespaces") or {"from": "Same"},
                kinds=kinds,
                conds={c.type: c for c in (accepted, programmed, resolved, conflicted)},
                accepts_routes=accepts,
                programmed=programmed_ok,
                certificates=tuple(certificates),
            )
        )
    return out


def _route_kinds(spec: Mapping[str, Any], protocol: str) -> tuple[list[dict[str, str]], list[str]]:
    serves_http = protocol in PROTOCOLS
    given = (spec.get("allowedRoutes") or {}).get("kinds")
    if given is None:
        return ([dict(HTTPROUTE_KIND), dict(GRPCROUTE_KIND)] if serves_http else []), []
    good, bad = [], []
    for k in given:
        if k.get("group", GATEWAY_GROUP) == GATEWAY_GROUP and k["kind"] in ROUTE_KINDS and serves_http:
            kind = {"group": GATEWAY_GROUP, "kind": k["kind"]}
            if kind not in good:
                good.append(kind)
        else:
            bad.append(f"{k.get('group', GATEWAY_GROUP)}/{k['kind']}")
    return good, bad


def gateway_status(gw: Gateway, listeners: list[GatewayListener], addresses: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    gen = gw.generation
    valid = [lst for lst in listeners if lst.programmed]
    if len(valid) == len(listeners):
        accepted = Condition("Accepted", True, "Accepted", "Gateway is accepted", gen)
    else:
        accepted = Condition(
            "Accepted", bool(valid), "ListenersNotValid", f"{len(listeners) - len(valid)} listener(s) are invalid", gen
        )
    params = (gw.spec.get("infrastructure") or {}).get("parametersRef")
    if params:  # conformance GatewayInvalidParametersRef: mirrorplane reads no parameters kind
        what = f"{params.get('group')}/{params.get('kind')} {params.get('name')}"
        accepted = Condition("Accepted", False, "InvalidParameters", f"infrastructure.parametersRef {what} is not supported", gen)
    programmed = (
        Condition("Programmed", True, "Programmed", "Gateway is programmed in Envoy", gen)
        if valid
        else Condition("Programmed", False, "Invalid", "No valid listeners", gen)
    )
    return {
        "addresses": [{"type": t, "value": v} for t, v in addresses],
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
