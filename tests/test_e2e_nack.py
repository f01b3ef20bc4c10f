"""One bad HTTPRoute or GRPCRoute never freezes its Gateway, with a real Envoy.

Envoy validates a RouteConfiguration as a whole: a route it refuses makes it NACK the Gateway's
entire route table and ignore every later change. The first test shows the translator refusing
such a route itself; the others switch that check off to stand for a refusal nobody foresaw, and
show the NACK quarantine finding the culprit, reporting Envoy's error in its status, and keeping
every other route served and updated.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlplane import ir
from controlplane.gatewayapi import grpcroutes, rules
from controlplane.xds import translator
from e2e import Stack, service_yaml, start_stack
from support import wait_until

ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: server}}
spec:
  parentRefs: [{{name: simple-gateway}}]
  hostnames: {hostnames}
  rules:
  - matches: [{{path: {{type: {path_type}, value: '{path}'}}}}]
    filters: [{{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: x-edit, value: '{edit}'}}]}}}}]
    backendRefs: [{{name: {backend}, port: 8080}}]
"""
# A GRPCRoute on the same listener: its hostname must not be an HTTPRoute's (the spec lets only
# one kind have it).
GRPC_ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: server}}
spec:
  parentRefs: [{{name: simple-gateway}}]
  hostnames: [grpc.example]
  rules:
  - matches: [{{method: {{service: echo.Echo}}, headers: [{{type: {header_type}, name: x-tenant, value: '{value}'}}]}}]
    backendRefs: [{{name: {backend}, port: 8080}}]
"""


@pytest.fixture(params=["GRPC", "DELTA_GRPC"])
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """The seed stack, its Envoy on State-of-the-World or Delta ADS."""
    s = await start_stack(tmp_path, envoy_options={"ads_api_type": request.param})
    try:
        yield s
    finally:
        await s.exits.aclose()


def route(
    name: str, path: str, edit: str = "1", path_type: str = "PathPrefix", backend: str = "pipy", hostnames: str = "[]"
) -> str:
    return ROUTE.format(name=name, path=path, edit=edit, path_type=path_type, backend=backend, hostnames=hostnames)


def grpc_route(name: str, header_type: str, value: str, backend: str = "pipy") -> str:
    return GRPC_ROUTE.format(name=name, header_type=header_type, value=value, backend=backend)


async def edit_seen(stack: Stack, path: str, edit: str, host: str | None = None) -> bool:
    """Envoy serves ``path`` with this version of its route (its x-edit response header)."""
    async with stack.session.get(stack.url + path, headers={"Host": host} if host else None) as resp:
        return resp.status == 200 and resp.headers.get("x-edit") == edit


def accepted(stack: Stack, name: str, kind: str = "HTTPRoute") -> tuple[str, str, str] | None:
    status: dict[str, Any] = stack.plane.controller.statuses.get((kind, "server", name)) or {}
    for parent in status.get("parents", []):
        for c in parent["conditions"]:
            if c["type"] == "Accepted":
                return c["status"], c["reason"], c["message"]
    return None


def accepted_now(stack: Stack, name: str, kind: str = "HTTPRoute") -> tuple[str, str, str]:
    """The Accepted condition, which the route must have by now."""
    got = accepted(stack, name, kind)
    assert got is not None, f"{kind} server/{name} has no Accepted condition"
    return got


async def test_a_route_with_a_regex_envoy_refuses_is_rejected_and_the_good_route_keeps_updating(stack: Stack) -> None:
    stack.write("good.yaml", route("good", "/good"))
    stack.write("bad.yaml", route("bad", "/(a+)\\1", path_type="RegularExpression"))  # a backreference
    await wait_until(lambda: accepted(stack, "bad") is not None, message="the bad route's status")
    status, reason, message = accepted_now(stack, "bad")
    assert (status, reason) == ("False", "UnsupportedValue")
    assert "is not valid RE2" in message and "invalid escape sequence" in message
    await wait_until(lambda: edit_seen(stack, "/good", "1"), message="the good route served")
    stack.write("good.yaml", route("good", "/good", edit="2"))
    await wait_until(lambda: edit_seen(stack, "/good", "2"), message="an edit of the good route reaching Envoy")
    # A "%" is literal in Gateway API; unescaped, Envoy would NACK "100%" and expand "%REQ(...)%".
    stack.write("good.yaml", route("good", "/good", edit="100% %REQ(:path)%"))
    await wait_until(lambda: edit_seen(stack, "/good", "100% %REQ(:path)%"), message="a value with % sent literally")
    assert all(ts.nacks == 0 for s in stack.plane.registry.streams() for ts in s.types.values())


@pytest.fixture
def unchecked_regexes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy's regex limits unchecked: a refused regex reaches Envoy, as an unforeseen case would."""
    monkeypatch.setattr(rules, "match_problems", lambda match: [])


async def test_an_unforeseen_nack_rejects_the_culprit_and_later_edits_still_apply(stack: Stack, unchecked_regexes: None) -> None:
    stack.write("good.yaml", route("good", "/good"))
    await wait_until(lambda: edit_seen(stack, "/good", "1"), message="the good route served")
    stack.write("bad.yaml", route("bad", "/(?=look)ahead", path_type="RegularExpression"))
    await wait_until(lambda: (accepted(stack, "bad") or ("",))[0] == "False", message="the culprit rejected")
    status, reason, message = accepted_now(stack, "bad")
    assert (status, reason) == ("False", "UnsupportedValue")
    assert "Envoy rejected" in message and "invalid perl operator: (?=" in message, message
    assert accepted(stack, "good") == ("True", "Accepted", "Route is accepted")
    assert any(ts.nacks for s in stack.plane.registry.streams() for ts in s.types.values()), "Envoy did NACK"

    stack.write("good.yaml", route("good", "/good", edit="2"))
    await wait_until(lambda: edit_seen(stack, "/good", "2"), message="an edit of the good route reaching Envoy")

    # Fixing the culprit lifts the quarantine: it is translated and served again.
    stack.write("bad.yaml", route("bad", "/fixed", edit="fixed"))
    await wait_until(lambda: edit_seen(stack, "/fixed", "fixed"), message="the fixed route served")
    assert accepted(stack, "bad") == ("True", "Accepted", "Route is accepted")


async def test_an_unforeseen_nack_among_several_new_routes_is_found_by_bisection(stack: Stack, unchecked_regexes: None) -> None:
    good = [f"good-{i}" for i in range(5)]
    stack.write(
        "many.yaml",
        "---\n".join([route(n, f"/{n}") for n in good[:2]] + [route("bad", "/(?<=x)y", path_type="RegularExpression")] + [route(n, f"/{n}") for n in good[2:]]),
    )
    await wait_until(lambda: (accepted(stack, "bad") or ("", "Pending"))[1] == "UnsupportedValue", timeout=30, message="the culprit found")
    assert "invalid perl operator: (?<=" in accepted_now(stack, "bad")[2]
    for name in good:
        await wait_until(functools.partial(edit_seen, stack, f"/{name}", "1"), message=f"{name} served")
        assert accepted(stack, name) == ("True", "Accepted", "Route is accepted")
    assert not [k for k, h in stack.plane.controller.held.items() if not h.confirmed], "nothing left held back"


@pytest.mark.parametrize("kind", ["HTTPRoute", "GRPCRoute"])
async def test_an_unforeseen_cluster_nack_rejects_the_route_that_brought_the_cluster(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A cluster Envoy refuses (here a negative connect timeout, which no input can produce) is
    traced to the routes that send to it (a GRPCRoute's: ``grpc/server/doomed/8080``)."""
    build_cluster = translator._cluster

    def refused_cluster(backend: ir.Backend, options: translator.XdsOptions) -> Any:
        cluster = build_cluster(backend, options)
        if "doomed" in backend.name:
            cluster.connect_timeout.seconds = -1
        return cluster

    monkeypatch.setattr(translator, "_cluster", refused_cluster)
    # The seed HTTPRoute (every hostname) is replaced: it would take grpc.example from a GRPCRoute.
    stack.write("route.yaml", route("good", "/good", hostnames="[web.example]"))
    await wait_until(lambda: edit_seen(stack, "/good", "1", host="web.example"), message="the good route served")
    bad = route("bad", "/bad", backend="doomed") if kind == "HTTPRoute" else grpc_route("bad", "Exact", "x", backend="doomed")
    stack.write("doomed.yaml", service_yaml("doomed", stack.echos["pipy"].port) + "---\n" + bad)
    await wait_until(lambda: (accepted(stack, "bad", kind) or ("",))[0] == "False", message="the culprit rejected")
    status, reason, message = accepted_now(stack, "bad", kind)
    assert (status, reason) == ("False", "UnsupportedValue")
    assert "Envoy rejected" in message and "Expected positive duration" in message, message
    stack.write("route.yaml", route("good", "/good", edit="2", hostnames="[web.example]"))
    await wait_until(lambda: edit_seen(stack, "/good", "2", host="web.example"), message="an edit of the good route reaching Envoy")


async def envoy_route_names(stack: Stack) -> set[str]:
    """The names of the routes Envoy holds right now, from its own config dump."""
    dump = await stack.envoy.config_dump("dynamic_route_configs")
    return {
        r.get("name", "")
        for cfg in dump.get("configs", [])
        for vh in cfg.get("route_config", {}).get("virtual_hosts", [])
        for r in vh.get("routes", [])
    }


async def test_an_unforeseen_nack_caused_by_a_grpcroute_rejects_it_and_later_edits_still_apply(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpcroutes, "match_problems", lambda match: [])  # as unchecked_regexes, for GRPCRoutes
    # The seed HTTPRoute (every hostname) is replaced: it would take grpc.example from the GRPCRoute.
    stack.write("route.yaml", route("good", "/good", hostnames="[web.example]"))
    await wait_until(lambda: edit_seen(stack, "/good", "1", host="web.example"), message="the good route served")
    stack.write("bad-grpc.yaml", grpc_route("bad", "RegularExpression", "(?=look)ahead"))
    await wait_until(lambda: (accepted(stack, "bad", "GRPCRoute") or ("",))[0] == "False", message="the GRPCRoute rejected")
    status, reason, message = accepted_now(stack, "bad", "GRPCRoute")
    assert (status, reason) == ("False", "UnsupportedValue")
    assert "Envoy rejected" in message and "invalid perl operator: (?=" in message, message
    assert list(stack.plane.controller.held) == [("GRPCRoute", "server", "bad")]
    assert any(ts.nacks for s in stack.plane.registry.streams() for ts in s.types.values()), "Envoy did NACK"

    stack.write("route.yaml", route("good", "/good", edit="2", hostnames="[web.example]"))
    await wait_until(lambda: edit_seen(stack, "/good", "2", host="web.example"), message="an edit of the HTTPRoute reaching Envoy")

    # Fixing the GRPCRoute lifts the quarantine: it is translated, accepted and in Envoy's config.
    stack.write("bad-grpc.yaml", grpc_route("bad", "Exact", "look"))

    async def served() -> bool:
        return any(n.startswith("grpcroute/server/bad/rule/") for n in await envoy_route_names(stack))

    await wait_until(served, message="the fixed GRPCRoute in Envoy's config")
    assert accepted(stack, "bad", "GRPCRoute") == ("True", "Accepted", "Route is accepted")
    assert not stack.plane.controller.held
