"""Route match precedence (gatewayapi/matches.py, applied by the translator across every route of a
listener): the order of the Gateway API spec, HTTPRouteRule: exact path, longest prefix, method,
most headers, most query params, then the oldest route, then namespace/name, then rule and match
order. Read from the IR the translator produces, where Envoy's first-match-wins order is decided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controlplane.gatewayapi import schema
from controlplane.gatewayapi.matches import route_match
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate

LOCAL = Path(__file__).resolve().parent.parent / "manifests" / "local"


def route(name: str, matches: list[dict[str, Any]], *, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "server", "creationTimestamp": created},
        "spec": {
            "parentRefs": [{"name": "simple-gateway", "namespace": "server"}],
            "rules": [{"matches": matches, "backendRefs": [{"name": "pipy", "namespace": "server", "port": 8080}]}],
        },
    }


def order(*routes: dict[str, Any]) -> list[str]:
    """The routes' names in the order Envoy tries them (one match per Envoy route)."""
    docs = [d for f in ("gateway.yaml", "services.yaml") for d in yaml.safe_load_all((LOCAL / f).read_text()) if d]
    store = Store.from_objects(from_dict(schema.validate(d)) for d in [*docs, *routes])
    [gateway] = translate(store).gateways.values()
    [vhost] = gateway.listeners[0].chains[0].virtual_hosts
    return [r.name.split("/")[2] + "/" + "/".join(r.name.split("/")[4::2]) for r in vhost.routes]


def path(kind: str, value: str) -> dict[str, Any]:
    return {"path": {"type": kind, "value": value}}


def test_exact_before_prefix_and_longest_prefix_first() -> None:
    assert order(
        route("short", [path("PathPrefix", "/a")]),
        route("long", [path("PathPrefix", "/a/b")]),
        route("exact", [path("Exact", "/a/b")]),
        route("regex", [path("RegularExpression", "/a/.*/z")]),
    ) == ["exact/0/0", "long/0/0", "short/0/0", "regex/0/0"]


def test_then_method_then_most_headers_then_most_query_params() -> None:
    hdr = [{"name": "x-a", "value": "1"}, {"name": "x-b", "value": "2"}]
    assert order(
        route("plain", [path("PathPrefix", "/p")]),
        route("query", [{**path("PathPrefix", "/p"), "queryParams": [{"name": "q", "value": "1"}]}]),
        route("one-header", [{**path("PathPrefix", "/p"), "headers": hdr[:1]}]),
        route("two-headers", [{**path("PathPrefix", "/p"), "headers": hdr}]),
        route("method", [{**path("PathPrefix", "/p"), "method": "GET"}]),
    ) == ["method/0/0", "two-headers/0/0", "one-header/0/0", "query/0/0", "plain/0/0"]


def test_ties_go_to_the_oldest_route_then_by_name_then_rule_and_match_order() -> None:
    same = [path("PathPrefix", "/t")]
    two_rules = route("rules", same, created="2026-02-15T00:00:00Z")
    two_rules["spec"]["rules"].append(two_rules["spec"]["rules"][0])
    assert order(
        route("b-new", same, created="2026-03-01T00:00:00Z"),
        route("c-old", same, created="2026-01-01T00:00:00Z"),
        route("a-new", same, created="2026-03-01T00:00:00Z"),
        two_rules,
        route("matches", [*same, *same], created="2026-02-01T00:00:00Z"),
    ) == ["c-old/0/0", "matches/0/0", "matches/0/1", "rules/0/0", "rules/1/0", "a-new/0/0", "b-new/0/0"]


def test_match_defaults() -> None:
    """An empty match is PathPrefix "/"; header names fold case (the first of one name wins),
    query parameter names do not."""
    m = route_match({"headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}],
                     "queryParams": [{"name": "Q", "value": "1"}, {"name": "q", "value": "2"}]})  # fmt: skip
    assert (m.path_type, m.path) == ("PathPrefix", "/")
    assert [(h.name.lower(), h.value) for h in m.headers] == [("x-a", "1")]
    assert [(q.name, q.value) for q in m.query_params] == [("Q", "1"), ("q", "2")]
