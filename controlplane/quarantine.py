"""A NACK never freezes a Gateway: the routes Envoy rejected are left out until they change.

The Gateway API translator already refuses what Envoy is known to refuse (gatewayapi/envoy_limits.py).
This is the net for what nobody foresaw. Envoy validates a RouteConfiguration (or a Cluster) as a
whole, so without it one bad value would make Envoy ignore every later change to any route of
the Gateway until someone removes it.

On a NACK of a Gateway's routes or clusters, the culprit is looked for among the routes
(HTTPRoutes and GRPCRoutes alike, keyed by kind, namespace and name) whose part of the config
changed between what that Envoy last ACKed and what it NACKed:

1. narrowed by Envoy's error text when it names an Envoy route (``httproute/ns/name/...``,
   ``grpcroute/ns/name/...``) or
   quotes a value ("regex '/a{97}' RE2 program size ...") found in only some of them;
2. one left: it is *rejected*: translated as if absent, with ``Accepted=False`` reason
   ``UnsupportedValue`` and Envoy's message in its status;
3. several left: a bisection. The first half is pushed while the rest is *held* (left out, with a
   condition saying so); a NACK then has only the first half as candidates, an ACK clears it and
   releases half of the held ones, and so on: log2(n) pushes find each culprit, and the other
   routes of the Gateway keep being served and updated meanwhile.

A rejected or held route is served again as soon as its object changes (any edit: the user
fixing it). A NACK of listeners or endpoints does not come from a route: it is logged as
unattributed (``nack.unattributed``) and the Gateway keeps the previous config for that type.

Process wiring, not translation: the translators stay pure; this module watches the registry's
NACK/ACK events and asks the controller to translate again with the culprits left out.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from envoy.config.route.v3 import route_pb2

from .gatewayapi.model import GATEWAY_GROUP, K8sObject
from .gatewayapi.status import Condition, StatusKey, conditions
from .gatewayapi.store import ROUTE_FIELDS, RouteKey, Store
from .xds.cache import serialize
from .xds.resources import CLUSTER, ROUTE
from .xds.tracking import Event, EventKind, NodeRegistry

if TYPE_CHECKING:
    from .controller import Controller
    from .xds.cache import Entry

log = logging.getLogger("mirrorplane.quarantine")

# An Envoy route's name starts with the kind, lowercased, of the route it comes from
# (gatewayapi/translator.py): "grpcroute/ns/name/rule/...".
_KINDS = {kind.lower(): kind for kind in ROUTE_FIELDS}
_ROUTE_NAME = re.compile(rf"({'|'.join(_KINDS)})/([^/]+)/([^/]+)/rule/")
_QUOTED = re.compile(r"'([^']{2,})'")


@dataclass(frozen=True)
class Held:
    """A route left out of translation, as it was when left out."""

    route: K8sObject[Any]
    message: str
    confirmed: bool
    """Envoy rejected this route (True), or it waits while a bisection tests others (False)."""
    gateway: str
    type_url: str
    """The xDS type whose NACK put it here: an ACK of that type releases held routes."""


def _key_of(envoy_route: str) -> RouteKey | None:
    """The route an Envoy route came from."""
    m = _ROUTE_NAME.match(envoy_route)
    return _key(m) if m else None


def _key(m: re.Match[str]) -> RouteKey:
    return (_KINDS[m[1]], m[2], m[3])


def without_held(store: Store, held: dict[RouteKey, Held]) -> Store:
    """``store`` without the held routes; a held route that changed is lifted (removed from
    ``held``) and translated again."""
    for key in list(held):
        if store.routes.get(key) != held[key].route:
            log.info("quarantine.lifted kind=%s route=%s/%s reason=changed", *key)
            del held[key]
    fields = {
        f: MappingProxyType({k: r for k, r in getattr(store, f).items() if (kind, *k) not in held})
        for kind, f in ROUTE_FIELDS.items()
        if any(key[0] == kind for key in held)
    }
    return replace(store, **fields) if fields else store


def held_statuses(held: Mapping[RouteKey, Held], gateways: Mapping[str, Any], controller_name: str) -> dict[StatusKey, dict[str, Any]]:
    """The status of each held route: not Accepted by the Gateways it names, and why."""
    out: dict[StatusKey, dict[str, Any]] = {}
    for (kind, ns, name), h in held.items():
        route = h.route
        # Held while a bisection runs: not known yet (Gateway API's Unknown/Pending).
        accepted = Condition("Accepted", False, "UnsupportedValue", h.message, route.generation)
        if not h.confirmed:
            accepted = Condition("Accepted", "Unknown", "Pending", h.message, route.generation)
        parents = [
            {"parentRef": dict(ref), "controllerName": controller_name, "conditions": conditions(accepted)}
            for ref in route.spec.get("parentRefs") or []
            if ref.get("group", GATEWAY_GROUP) == GATEWAY_GROUP
            and ref.get("kind", "Gateway") == "Gateway"
            and f"{ref.get('namespace') or ns}/{ref['name']}" in gateways
        ]
        if parents:
            out[(kind, ns, name)] = {"parents": parents}
    return out


def _routes_of(configs: Iterable[route_pb2.RouteConfiguration]) -> dict[RouteKey, set[bytes]]:
    """Route → the serialized Envoy routes it became in these RouteConfigurations, each with
    the domains it serves (from the route's hostnames). A set: a route whose Envoy routes and
    domains are all the same did not change, whatever else moved around it."""
    out: dict[RouteKey, set[bytes]] = {}
    for config in configs:
        for vh in config.virtual_hosts:
            domains = "\0".join(vh.domains).encode()
            for r in vh.routes:
                if key := _key_of(r.name):
                    out.setdefault(key, set()).add(domains + b"\0" + r.SerializeToString(deterministic=True))
    return out


def _decoded(entries: Mapping[str, "Entry"] | None) -> list[route_pb2.RouteConfiguration]:
    return [route_pb2.RouteConfiguration.FromString(e.data) for e in (entries or {}).values()]


class Quarantine:
    """Watches NACKs and ACKs and keeps the controller's held routes."""

    def __init__(
        self, controller: "Controller", registry: NodeRegistry, refresh: "Callable[[], None] | None" = None
    ) -> None:
        self.controller = controller
        # How to translate again once the held routes changed; the server passes one that queues
        # behind any update in flight (updates must never overlap).
        self._refresh = refresh or controller.refresh
        # (gateway, type, version) of the NACKs acted on, the latest few: every Envoy of a
        # Gateway NACKs the same version, and one is enough.
        self._handled: deque[tuple[str, str, str]] = deque(maxlen=256)
        registry.add_observer(self._on_event)

    def _on_event(self, event: Event) -> None:
        """Runs inside the ADS server's loop: decide, then translate outside the stream's turn."""
        type_url = event.type_url
        if type_url is None:  # a connect or disconnect: no type, nothing to decide
            return
        if type_url not in (ROUTE, CLUSTER):
            if event.kind is EventKind.NACK:
                log.warning(
                    "nack.unattributed gateway=%s type=%s version=%s error=%r",
                    event.stream.gateway, event.stream.types[type_url].short_name, event.version, event.message,
                )
            return
        changed = False
        if event.kind is EventKind.NACK:
            changed = self._on_nack(event, type_url)
        elif event.kind is EventKind.ACK:
            changed = self._release_half(event.stream.gateway, type_url)
        if changed:
            asyncio.get_running_loop().call_soon(self._refresh)

    def _on_nack(self, event: Event, type_url: str) -> bool:
        gateway, ts = event.stream.gateway, event.stream.types[type_url]
        seen = (gateway, type_url, event.version or "")
        if seen in self._handled:
            return False  # another Envoy of the Gateway NACKing the same version
        self._handled.append(seen)
        message = event.message or ""
        suspects = self._suspects(gateway, type_url, ts.sent_entries, ts.acked_entries)
        held = self.controller.held
        suspects = {k: v for k, v in suspects.items() if k not in held and k in self.controller.routes}
        if not suspects:
            log.warning("nack.unattributed gateway=%s type=%s version=%s error=%r", gateway, ts.short_name, event.version, message)
            return False
        narrowed = _narrow(suspects, message)
        keys = sorted(narrowed)
        if len(keys) == 1:
            key = keys[0]
            held[key] = Held(
                self.controller.routes[key],
                f"Envoy rejected the configuration this route became; it is left out until the route changes. Envoy said: {message}",
                True,
                gateway,
                type_url,
            )
            log.warning("quarantine.rejected kind=%s route=%s/%s gateway=%s error=%r", *key, gateway, message)
            return True
        for key in keys[len(keys) // 2 :]:
            held[key] = Held(
                self.controller.routes[key],
                f"Held back: Envoy rejected a configuration holding this route and {len(keys) - 1} other(s) "
                f"while they are tested one half at a time. Envoy said: {message}",
                False,
                gateway,
                type_url,
            )
        log.warning(
            "quarantine.bisecting gateway=%s suspects=%d served=%d held=%d error=%r",
            gateway, len(keys), len(keys) // 2, len(keys) - len(keys) // 2, message,
        )
        return True

    def _suspects(
        self, gateway: str, type_url: str, sent: Mapping[str, "Entry"] | None, acked: Mapping[str, "Entry"] | None
    ) -> dict[RouteKey, bytes]:
        """Routes whose config changed between ``acked`` and ``sent`` and is still what the
        controller translates them to (one that changed again since is no suspect any more)."""
        current = self.controller.resources(gateway)
        if current is None:
            return {}
        if type_url == ROUTE:
            new, old, now = _routes_of(_decoded(sent)), _routes_of(_decoded(acked)), _routes_of(current.routes.values())
            return {k: b"".join(sorted(v)) for k, v in new.items() if old.get(k) != v and now.get(k) == v}
        # A cluster: the routes whose rules send (or mirror) to a cluster Envoy did not have.
        # A cluster that only changed comes from its Service, not from the routes using it:
        # leaving them out would stop traffic Envoy still serves with the cluster's old version.
        sent_entries = sent or {}
        clusters = {
            n
            for n, e in sent_entries.items()
            if n not in (acked or {}) and n in current.clusters and serialize(current.clusters[n]) == e.data
        }
        ir = self.controller.gateways.get(gateway)
        out: dict[RouteKey, bytes] = {}
        for listener in ir.listeners if ir else ():
            for chain in listener.chains:
                for vh in chain.virtual_hosts:
                    for r in vh.routes:
                        used = {b.backend for b in r.backends} | {m.backend for m in r.mirrors}
                        hit = clusters & used  # set[str]: an invalid backendRef's None is never a cluster
                        if (key := _key_of(r.name)) and hit:
                            out[key] = b"".join(sent_entries[c].data for c in sorted(hit))
        return out

    def _release_half(self, gateway: str, type_url: str) -> bool:
        """An ACK: what is served is fine, so half of the routes held for this Gateway go back."""
        held = self.controller.held
        waiting = sorted(k for k, h in held.items() if not h.confirmed and (h.gateway, h.type_url) == (gateway, type_url))
        if not waiting:
            return False
        released = waiting[: max(1, len(waiting) // 2)]
        for key in released:
            del held[key]
        log.info("quarantine.released gateway=%s routes=%d still_held=%d", gateway, len(released), len(waiting) - len(released))
        return True


def _narrow(suspects: dict[RouteKey, bytes], message: str) -> dict[RouteKey, bytes]:
    """The suspects Envoy's message points at (a route name, or a quoted value); all if none."""
    named = {_key(m) for m in _ROUTE_NAME.finditer(message)} & suspects.keys()
    if named:
        return {k: suspects[k] for k in named}
    for quoted in _QUOTED.findall(message):
        hits = {k: v for k, v in suspects.items() if quoted.encode() in v}
        if hits and len(hits) < len(suspects):
            return hits
    return suspects
