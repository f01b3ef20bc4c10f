"""What the page shows, read from the control plane's memory: never from Envoy, a file or the API
server, so a page view costs a walk over dictionaries the control plane already keeps.

* Gateways: the Gateway objects the controller translated (their stamped status: listeners,
  attached route counts, conditions) and the routes whose status says they are accepted by one.
* Envoys: the :class:`~controlplane.xds.tracking.NodeRegistry` (what each stream was sent, ACKed
  and NACKed), as the admin API's ListNodes reads it.
* Mirrored route rules: every IR route with a mirror, one row per (Gateway, route, rule), joined
  with the shadow hub's comparisons of each of its mirrors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from ..gatewayapi.status import StatusKey
from ..gatewayapi.store import Store
from ..shadow.hub import Comparisons, Diff, RuleStats
from ..xds.resources import PUSH_ORDER
from ..xds.tracking import NodeRegistry, StreamState, TypeState
from .history import RuleKey, p50_p99

SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
"""Response header values never shown (a MirrorPolicy may compare them: the page says only
whether both legs had the same value)."""
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)
RESULTS = ("same", "status_differs", "body_differs", "headers_differ", "mirror_failed", "unpaired")


def scrub(text: str) -> str:
    """Envoy's messages with any PEM private key cut out (a NACK can quote the config it rejects)."""
    return _PRIVATE_KEY.sub("[private key redacted]", text)


@dataclass(frozen=True)
class Sources:
    """The control plane state the page reads (ControlPlane fills it; tests may build their own)."""

    gateways: Callable[[], Mapping[str, ir.GatewayIR]]
    statuses: Callable[[], Mapping[StatusKey, dict[str, Any]]]
    store: Callable[[], Store | None]
    registry: NodeRegistry
    comparisons: Comparisons


@dataclass(frozen=True)
class ListenerRow:
    name: str
    port: int | None
    protocol: str
    hostname: str
    attached: int
    problem: str  # "" when Accepted and Programmed, else the first condition that is not


@dataclass(frozen=True)
class GatewayRow:
    name: str
    problem: str
    listeners: tuple[ListenerRow, ...]
    routes: tuple[str, ...]
    envoys: int
    text: str  # lower-case, what the filter box searches


@dataclass(frozen=True)
class TypeRow:
    type: str
    sent: str
    acked: str
    state: str  # "ACKed", "sent" (waiting for Envoy), "NACKed", "-"
    error: str


@dataclass(frozen=True)
class EnvoyRow:
    node_id: str
    gateway: str
    address: str
    user_agent: str
    connected_at: float
    state: str  # "NACKed", "waiting", "ACKed", "connected"
    types: tuple[TypeRow, ...]
    text: str

    @property
    def errors(self) -> list[TypeRow]:
        return [t for t in self.types if t.error]


@dataclass(frozen=True)
class MirrorRow:
    backend: str
    fraction: str
    policy: str
    mirror: ir.Mirror | None
    stats: RuleStats | None


@dataclass
class RuleRow:
    gateway: str
    route: str
    rule: str
    matches: list[str] = field(default_factory=list)
    hostnames: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    mirrors: dict[str, MirrorRow] = field(default_factory=dict)
    in_config: bool = True
    text: str = ""

    def results(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for m in self.mirrors.values():
            if m.stats is not None:
                for result, n in m.stats.results.items():
                    total[result] = total.get(result, 0) + n
        return total

    def differing_share(self) -> float:
        results = self.results()
        pairs = sum(results.values())
        return (pairs - results.get("same", 0)) / pairs if pairs else 0.0

    def keys(self) -> list[RuleKey]:
        return [(self.gateway, self.route, self.rule, backend) for backend in self.mirrors]

    def recent(self) -> list[Diff]:
        diffs = [d for m in self.mirrors.values() if m.stats is not None for d in m.stats.recent]
        return sorted(diffs, key=lambda d: d.at, reverse=True)


@dataclass(frozen=True)
class Overview:
    gateways: list[GatewayRow]
    envoys: list[EnvoyRow]
    rules: list[RuleRow]
    by_rule: dict[tuple[str, str, str], RuleRow]


def _problem(conditions: Iterable[dict[str, Any]]) -> str:
    for c in conditions:
        if c.get("type") in ("Accepted", "Programmed") and c.get("status") != "True":
            return f"{c['type']}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}"
    return ""


def _attached(statuses: Mapping[StatusKey, dict[str, Any]]) -> dict[str, list[str]]:
    """Gateway "ns/name" → the routes ("Kind ns/name") its listeners accepted."""
    out: dict[str, list[str]] = {}
    for (kind, ns, name), body in statuses.items():
        if not kind.endswith("Route"):
            continue
        for parent in body.get("parents") or []:
            ref = parent.get("parentRef", {})
            accepted = any(
                c.get("type") == "Accepted" and c.get("status") == "True" for c in parent.get("conditions", [])
            )
            if accepted and ref.get("kind", "Gateway") == "Gateway":
                gateway = f"{ref.get('namespace', ns)}/{ref.get('name')}"
                route = f"{kind} {ns}/{name}"
                if route not in out.setdefault(gateway, []):
                    out[gateway].append(route)
    return out


def gateway_rows(
    statuses: Mapping[StatusKey, dict[str, Any]], store: Store | None, registry: NodeRegistry
) -> list[GatewayRow]:
    attached = _attached(statuses)
    envoys: dict[str, set[str]] = {}
    for s in registry.streams():
        envoys.setdefault(s.gateway, set()).add(s.node_id)
    rows = []
    for (kind, ns, name), body in sorted(statuses.items()):
        if kind != "Gateway":
            continue
        key = f"{ns}/{name}"
        obj = store.gateways.get((ns, name)) if store is not None else None
        specs: dict[str, Any] = {lst["name"]: lst for lst in obj.spec["listeners"]} if obj is not None else {}
        listeners = []
        for lst in body.get("listeners") or []:
            spec: dict[str, Any] = specs.get(lst["name"], {})
            listeners.append(
                ListenerRow(
                    name=lst["name"],
                    port=spec.get("port"),
                    protocol=spec.get("protocol", ""),
                    hostname=spec.get("hostname", ""),
                    attached=lst.get("attachedRoutes", 0),
                    problem=_problem(lst.get("conditions", [])),
                )
            )
        routes = tuple(sorted(attached.get(key, [])))
        text = " ".join([key, *routes, *(f"{x.name} {x.hostname}" for x in listeners)]).lower()
        rows.append(
            GatewayRow(
                key, _problem(body.get("conditions", [])), tuple(listeners), routes, len(envoys.get(key, ())), text
            )
        )
    return rows


def _type_row(ts: TypeState) -> TypeRow:
    if ts.nacked:
        state = "NACKed"
    elif ts.in_flight:
        state = "sent"
    elif ts.acked_version is not None and ts.acked_version == ts.sent_version:
        state = "ACKed"
    else:
        state = "-"
    error = scrub(ts.last_nack.message) if ts.nacked and ts.last_nack is not None else ""
    return TypeRow(ts.short_name, ts.sent_version or "", ts.acked_version or "", state, error)


def envoy_row(s: StreamState) -> EnvoyRow:
    order = {t: i for i, t in enumerate(PUSH_ORDER)}
    types = tuple(_type_row(ts) for ts in sorted(s.types.values(), key=lambda ts: order.get(ts.type_url, len(order))))
    states = {t.state for t in types}
    if "NACKed" in states:
        state = "NACKed"
    elif "sent" in states:
        state = "waiting"
    elif types and states == {"ACKed"}:
        state = "ACKed"
    else:
        state = "connected"
    text = f"{s.node_id} {s.gateway} {s.peer} {state}".lower()
    return EnvoyRow(s.node_id, s.gateway, s.peer, s.user_agent, s.connected_at, state, types, text)


def envoy_rows(registry: NodeRegistry) -> list[EnvoyRow]:
    return [envoy_row(s) for s in sorted(registry.streams(), key=lambda s: (s.gateway, s.node_id, s.stream_id))]


def _match(m: ir.Match) -> str:
    parts = [f"{m.method} " if m.method else "", f"{m.path_type} {m.path}"]
    parts += [f" header {h.name}{'~' if h.regex else '='}{h.value}" for h in m.headers]
    parts += [f" query {q.name}{'~' if q.regex else '='}{q.value}" for q in m.query_params]
    return "".join(parts)


def fraction(m: ir.Mirror) -> str:
    share = 100 * m.numerator / m.denominator if m.denominator else 0
    return f"{share:g}%"


def rule_rows(gateways: Mapping[str, ir.GatewayIR], comparisons: Comparisons) -> list[RuleRow]:
    rows: dict[tuple[str, str, str], RuleRow] = {}
    for gw_name, gw in gateways.items():
        for lst in gw.listeners:
            for chain in lst.chains:
                for vh in chain.virtual_hosts:
                    for route in vh.routes:
                        if not route.mirrors:
                            continue
                        key = (gw_name, route.source or route.name, route.rule)
                        row = rows.get(key)
                        if row is None:
                            row = rows[key] = RuleRow(*key)
                        match = _match(route.match)
                        if match not in row.matches:
                            row.matches.append(match)
                        for domain in vh.domains:
                            if domain not in row.hostnames:
                                row.hostnames.append(domain)
                        for b in route.backends:
                            name = b.backend or "(invalid reference)"
                            if name not in row.backends:
                                row.backends.append(name)
                        for m in route.mirrors:
                            if m.backend not in row.mirrors:
                                row.mirrors[m.backend] = MirrorRow(m.backend, fraction(m), m.policy or "", m, None)
    for (gateway, source, rule, mirror), stats in comparisons.rules.items():
        row = rows.get((gateway, source, rule))
        if row is None:  # compared, but no longer (or never) in the served config
            row = rows[(gateway, source, rule)] = RuleRow(gateway, source, rule, in_config=False)
        have = row.mirrors.get(mirror)
        row.mirrors[mirror] = MirrorRow(
            mirror, have.fraction if have else "", have.policy if have else "", have.mirror if have else None, stats
        )
    for row in rows.values():
        row.text = " ".join(
            [
                row.gateway,
                row.route,
                f"rule {row.rule}",
                *row.matches,
                *row.hostnames,
                *row.backends,
                *row.mirrors,
                *(m.policy for m in row.mirrors.values()),
            ]
        ).lower()
    return sorted(rows.values(), key=lambda r: (r.gateway, r.route, r.rule))


def build(sources: Sources) -> Overview:
    rules = rule_rows(sources.gateways(), sources.comparisons)
    return Overview(
        gateways=gateway_rows(sources.statuses(), sources.store(), sources.registry),
        envoys=envoy_rows(sources.registry),
        rules=rules,
        by_rule={(r.gateway, r.route, r.rule): r for r in rules},
    )


def shown_headers(primary: Mapping[str, str], mirror: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(name, primary value, mirror value) for the page: sensitive values replaced by whether
    both legs had the same one."""
    out = []
    for name in sorted(set(primary) | set(mirror)):
        a, b = primary.get(name, ""), mirror.get(name, "")
        if name.lower() in SENSITIVE_HEADERS:
            same = "same on both legs" if a == b else "differs between legs"
            a = f"[redacted: {same}]" if a else ""
            b = f"[redacted: {same}]" if b else ""
        out.append((name, a, b))
    return out


Latency = tuple[tuple[float, float], tuple[float, float]]
"""((primary p50, p99), (mirror p50, p99)) in seconds."""


class Latencies:
    """Both legs' p50/p99 over the hub's last 1024 pairs of a rule, sorted once per change of
    the rule's count rather than once per page view (ten browsers share one computation)."""

    def __init__(self, limit: int = 20_000) -> None:
        self._cache: dict[RuleKey, tuple[int, Latency]] = {}
        self._limit = limit

    def get(self, key: RuleKey, stats: RuleStats) -> Latency:
        total = sum(stats.results.values())
        hit = self._cache.get(key)
        if hit is not None and hit[0] == total:
            return hit[1]
        if len(self._cache) >= self._limit:
            self._cache.clear()
        value = (p50_p99(list(stats.primary)), p50_p99(list(stats.mirror)))
        self._cache[key] = (total, value)
        return value
