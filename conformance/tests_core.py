"""Core tests: Gateway + HTTPRoute (+ ReferenceGrant), as upstream's conformance/tests/*.go.

Each function replays one upstream test: same manifests, same requests, same expectations.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .env import INFRA, SAME_NAMESPACE, Env, edit_docs
from .http import Case, Redirect, Target
from .status import Cond, ConformanceError, ListenerExpectation, Parent, accepted
from .suite import conformance_test, skipped_test

CORE = ["Gateway", "HTTPRoute"]
GRANTS = ["Gateway", "HTTPRoute", "ReferenceGrant"]
WEB = "gateway-conformance-web-backend"
APP = "gateway-conformance-app-backend"
V1, V2, V3 = "infra-backend-v1", "infra-backend-v2", "infra-backend-v3"
# The header filter upstream pairs with mirrors and rewrites, and what the backend must then see.
MODIFIED: dict[str, Any] = {
    "headers": {"X-Header-Remove": "remove-val", "X-Header-Add-Append": "append-val-1"},
    "expect_headers": {"X-Header-Add": "header-val-1", "X-Header-Add-Append": "append-val-1,header-val-2", "X-Header-Set": "set-overwrites-values"},
    "expect_absent": ("X-Header-Remove",),
}


def ok(path: str = "/", backend: str = V1, namespace: str = INFRA, **kw: Any) -> Case:
    return Case(path=path, backend=backend, namespace=namespace, **kw)


def code(status: int, path: str = "/", **kw: Any) -> Case:
    return Case(path=path, status=status, **kw)


async def accepted_with_refs(env: Env, gw: tuple[str, str], *routes: tuple[str, str], listeners: tuple[str, ...] = ()) -> Target:
    target = await env.gateway_and_routes_accepted(gw, list(routes), *listeners)
    for route in routes:
        await env.resolved_refs_true(route, gw)
    return target


@conformance_test("HTTPRouteSimpleSameNamespace", "A single HTTPRoute attaches to a Gateway in the same namespace", CORE, ["tests/httproute-simple-same-namespace.yaml"])
async def simple_same_namespace(env: Env) -> None:
    target = await env.gateway_and_routes_accepted(SAME_NAMESPACE, [(INFRA, "gateway-conformance-infra-test")])
    await env.expect(target, ok())


@conformance_test("HTTPRouteCrossNamespace", "A route in the web-backend namespace attaches to a Gateway selecting that namespace", CORE, ["tests/httproute-cross-namespace.yaml"])
async def cross_namespace(env: Env) -> None:
    route, gw = (WEB, "cross-namespace"), (INFRA, "backend-namespaces")
    target = await accepted_with_refs(env, gw, route)
    await env.expect(target, ok(backend="web-backend", namespace=WEB))


@conformance_test("HTTPRouteExactPathMatching", "Exact path matching for different backends", CORE, ["tests/httproute-exact-path-matching.yaml"])
async def exact_path_matching(env: Env) -> None:
    target = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "exact-matching"))
    await env.expect(target, ok("/one"), ok("/two", V2), code(404, "/"), code(404, "/one/example"), code(404, "/two/"), code(404, "/Two"))


@conformance_test("HTTPRouteHeaderMatching", "Header matching for different backends", CORE, ["tests/httproute-header-matching.yaml"])
async def header_matching(env: Env) -> None:
    target = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "header-matching"))

    def h(**kw: str) -> dict[str, str]:  # header names with dashes from keyword arguments
        return {k.replace("_", "-"): v for k, v in kw.items()}

    await env.expect(
        target,
        ok(headers=h(Version="one")),
        ok(backend=V2, headers=h(Version="two")),
        ok(headers=h(Version="two", Color="orange")),
        ok(backend=V2, headers=h(Version="two", Color="blue")),
        code(404, headers=h(Color="orange")),
        code(404, headers=h(Some_Other_Header="one")),
        ok(headers=h(Color="blue")),
        ok(headers=h(Color="green")),
        ok(backend=V2, headers=h(Color="red")),
        ok(backend=V2, headers=h(Color="yellow")),
        code(404, headers=h(Color="purple")),
    )


@conformance_test("HTTPRouteMatching", "Path and header matching for different backends", CORE, ["tests/httproute-matching.yaml"])
async def matching(env: Env) -> None:
    target = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "matching"))
    await env.expect(
        target,
        ok("/"), ok("/example"), ok("/", headers={"Version": "one"}),
        ok("/v2", V2), ok("/v2/", V2), ok("/v2/example", V2), ok("/", V2, headers={"Version": "two"}),
        ok("/v2example"), ok("/foo/v2/example"),
    )


@conformance_test("HTTPRouteMatchingAcrossRoutes", "Two HTTPRoutes with path matching for different backends", CORE, ["tests/httproute-matching-across-routes.yaml"])
async def matching_across_routes(env: Env) -> None:
    target = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "matching-part1"), (INFRA, "matching-part2"))
    await env.expect(
        target,
        ok("/", host="example.com"),
        ok("/example", host="example.com"),
        ok("/example", host="example.net"),
        ok("/example", host="example.com", headers={"Version": "one"}),
        ok("/v2", V2, host="example.com"),
        ok("/v2", host="example.net"),
        ok("/v2/example", V2, host="example.com"),
        ok("/", V2, host="example.com", headers={"Version": "two"}),
    )


@conformance_test("HTTPRoutePathMatchOrder", "Multiple matches follow match order precedence", ["HTTPRoute"], ["tests/httproute-path-match-order.yaml"])
async def path_match_order(env: Env) -> None:
    target = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "path-matching-order"))
    await env.expect(
        target,
        ok("/match/exact/one", V3), ok("/match/exact", V2), ok("/match"),
        ok("/match/prefix/one/any", V2), ok("/match/prefix/any"), ok("/match/any", V3),
    )


@conformance_test("HTTPRouteHostnameIntersection", "Routes attach only where hostnames intersect", CORE, ["tests/httproute-hostname-intersection.yaml"])
async def hostname_intersection(env: Env) -> None:
    gw = (INFRA, "httproute-hostname-intersection")
    routes = [
        (INFRA, "specific-host-matches-listener-specific-host"),
        (INFRA, "specific-host-matches-listener-wildcard-host"),
        (INFRA, "wildcard-host-matches-listener-specific-host"),
        (INFRA, "wildcard-host-matches-listener-wildcard-host"),
    ]
    target = await accepted_with_refs(env, gw, *routes)

    def nf(host: str, path: str) -> Case:
        return code(404, path, host=host)

    await env.expect(
        target,
        ok("/s1", host="very.specific.com"), ok("/s1", host="very.specific.com:1234"),
        nf("non.matching.com", "/s1"), nf("foo.nonmatchingwildcard.io", "/s1"), nf("foo.wildcard.io", "/s1"),
        nf("very.specific.com", "/non-matching-prefix"),
        ok("/s2", V2, host="foo.wildcard.io"), ok("/s2", V2, host="bar.wildcard.io"), ok("/s2", V2, host="foo.bar.wildcard.io"),
        nf("non.matching.com", "/s2"), nf("wildcard.io", "/s2"), nf("very.specific.com", "/s2"),
        nf("foo.wildcard.io", "/non-matching-prefix"),
        ok("/s3", V3, host="very.specific.com"),
        nf("non.matching.com", "/s3"), nf("foo.specific.com", "/s3"), nf("foo.wildcard.io", "/s3"),
        nf("very.specific.com", "/non-matching-prefix"),
        ok("/s4", host="foo.anotherwildcard.io"), ok("/s4", host="bar.anotherwildcard.io"),
        ok("/s4", host="foo.bar.anotherwildcard.io"),
        nf("anotherwildcard.io", "/s4"), nf("foo.wildcard.io", "/s4"), nf("very.specific.com", "/s4"),
        nf("foo.anotherwildcard.io", "/non-matching-prefix"),
    )
    await env.route_must_have_parents(
        (INFRA, "no-intersecting-hosts"), [Parent(INFRA, gw[1], (accepted("False", "NoMatchingListenerHostname"),))]
    )
    await env.expect(target, nf("specific.but.wrong.com", "/s5"), nf("wildcard.io", "/s5"))
    ready = (Cond("Accepted", "True"), Cond("ResolvedRefs", "True"))
    await env.gateway_listeners(
        gw,
        [ListenerExpectation("listener-1", 2, ready), ListenerExpectation("listener-2", 1, ready), ListenerExpectation("listener-3", 1, ready)],
    )
    gw_all = (INFRA, "httproute-hostname-intersection-all")
    target = await accepted_with_refs(env, gw_all, (INFRA, "httproute-hostname-intersection-all"))
    await env.expect(
        target,
        ok(host="first.com", backend=V2), ok(host="sub.first.com", backend=V2),
        ok(host="second.com", backend=V2), ok(host="sub.second.com", backend=V2),
        code(404, host="third.com", namespace=INFRA), code(404, host="sub.third.com", namespace=INFRA),
    )


@conformance_test("HTTPRouteListenerHostnameMatching", "Listeners on one port with different hostnames, each with its own route", ["HTTPRoute"], ["tests/httproute-listener-hostname-matching.yaml"])
async def listener_hostname_matching(env: Env) -> None:
    gw = (INFRA, "httproute-listener-hostname-matching")
    await accepted_with_refs(env, gw, (INFRA, "backend-v1"), listeners=("listener-1",))
    await accepted_with_refs(env, gw, (INFRA, "backend-v2"), listeners=("listener-2",))
    target = await accepted_with_refs(env, gw, (INFRA, "backend-v3"), listeners=("listener-3", "listener-4"))
    await env.expect(
        target,
        ok(host="bar.com"), ok(host="foo.bar.com", backend=V2), ok(host="baz.bar.com", backend=V3),
        ok(host="boo.bar.com", backend=V3), ok(host="multiple.prefixes.bar.com", backend=V3),
        ok(host="multiple.prefixes.foo.com", backend=V3), code(404, host="foo.com"), code(404, host="no.matching.host"),
    )


@conformance_test("HTTPRouteMultipleGateways", "One route attached to two Gateways, plus a dedicated route on each", CORE, ["tests/httproute-multiple-gateways.yaml"])
async def multiple_gateways(env: Env) -> None:
    shared = (INFRA, "multiple-gateways-shared-route")
    all_ns = (INFRA, "all-namespaces")
    same = await accepted_with_refs(env, SAME_NAMESPACE, shared, (INFRA, "same-namespace-dedicated-route"))
    other = await accepted_with_refs(env, all_ns, shared, (INFRA, "all-namespaces-dedicated-route"))
    await asyncio.gather(
        env.expect(same, ok("/shared"), ok("/", V2)),
        env.expect(other, ok("/shared"), ok("/", V3)),
    )


@conformance_test("HTTPRouteHTTPSListener", "HTTPRoute attaches to a Gateway's HTTPS listener in the same namespace", CORE, ["tests/httproute-https-listener.yaml"])
async def https_listener(env: Env) -> None:
    gw = (INFRA, "same-namespace-with-https-listener")
    target = await accepted_with_refs(env, gw, (INFRA, "httproute-https-test"), (INFRA, "httproute-https-test-no-hostname"))
    await env.expect(
        target,
        ok(host="example.org", sni="example.org"),
        code(404, host="unknown-example.org", sni="unknown-example.org", namespace=INFRA),
        ok(host="second-example.org", sni="second-example.org", backend=V2),
    )


async def _invalid_backend(env: Env, route: tuple[str, str], reason: str, path: str = "/") -> None:
    await env.gateway_and_routes_accepted(SAME_NAMESPACE, [route])
    await env.route_condition(route, SAME_NAMESPACE, Cond("ResolvedRefs", "False", reason))
    target = await env.target(SAME_NAMESPACE)
    await env.expect(target, code(500, path))


@conformance_test("HTTPRouteInvalidNonExistentBackendRef", "A backendRef to a missing Service: ResolvedRefs False BackendNotFound and a 500", CORE, ["tests/httproute-invalid-nonexistent-backendref.yaml"])
async def invalid_nonexistent_backend(env: Env) -> None:
    await _invalid_backend(env, (INFRA, "invalid-nonexistent-backend-ref"), "BackendNotFound")


@conformance_test("HTTPRouteInvalidBackendRefUnknownKind", "A backendRef of unknown kind: ResolvedRefs False InvalidKind and a 500", CORE, ["tests/httproute-invalid-backendref-unknown-kind.yaml"])
async def invalid_backend_unknown_kind(env: Env) -> None:
    await _invalid_backend(env, (INFRA, "invalid-backend-ref-unknown-kind"), "InvalidKind")


@conformance_test("HTTPRouteInvalidCrossNamespaceParentRef", "A route may not attach to a Gateway that does not allow its namespace", CORE, ["tests/httproute-invalid-cross-namespace-parent-ref.yaml"])
async def invalid_cross_namespace_parent(env: Env) -> None:
    route = (WEB, "invalid-cross-namespace-parent-ref")
    await env.resolved_refs_true(route, SAME_NAMESPACE)
    await env.route_condition(route, SAME_NAMESPACE, Cond("Accepted", "False", "NotAllowedByListeners"))
    await env.route_must_have_parents(route, [Parent(INFRA, SAME_NAMESPACE[1], (Cond("Accepted", "False"),))])
    await env.gateway_zero_routes(SAME_NAMESPACE)


@conformance_test("HTTPRouteInvalidParentRefNotMatchingSectionName", "A parentRef sectionName that matches no listener: Accepted False NoMatchingParent", CORE, ["tests/httproute-invalid-parentref-not-matching-section-name.yaml"])
async def invalid_section_name(env: Env) -> None:
    route = (INFRA, "httproute-listener-not-matching-section-name")
    await env.route_condition(route, SAME_NAMESPACE, Cond("Accepted", "False", "NoMatchingParent"))
    await env.route_must_have_parents(route, [Parent(INFRA, SAME_NAMESPACE[1], (Cond("Accepted", "False"),))])
    await env.gateway_zero_routes(SAME_NAMESPACE)


@conformance_test("HTTPRouteNoBackendRefs", "A rule without backendRefs answers 500", CORE, ["tests/httproute-omitted-backendrefs.yaml"])
async def no_backend_refs(env: Env) -> None:
    target = await env.gateway_and_routes_accepted(SAME_NAMESPACE, [(INFRA, "omitted-backendrefs")])
    await env.expect(target, ok("/forward"), code(500, "/omitted-no-forward"), code(500, "/empty-no-forward"))


@conformance_test("HTTPRouteObservedGenerationBump", "Every condition follows a spec change to the new observedGeneration", CORE, ["tests/httproute-observed-generation-bump.yaml"])
async def observed_generation_bump(env: Env) -> None:
    route = (INFRA, "observed-generation-bump")
    await env.route_condition(route, SAME_NAMESPACE, Cond("Accepted", "True"))
    before = env.generation("HTTPRoute", *route)

    def mutate(doc: dict) -> dict:
        doc["spec"]["rules"][0]["backendRefs"][0]["name"] = V2
        return doc

    edit_docs(env, "HTTPRoute", *route, mutate)
    await env.generation_bumped("HTTPRoute", *route, before)
    await env.route_condition(route, SAME_NAMESPACE, Cond("Accepted", "True"))


@conformance_test("HTTPRouteServiceTypes", "Routes to headless Services and Services with manual EndpointSlices", CORE, ["tests/httproute-service-types.yaml"])
async def service_types(env: Env) -> None:
    route = (INFRA, "service-types")
    target = await accepted_with_refs(env, SAME_NAMESPACE, route)
    # Like upstream, fill the manual EndpointSlices with the infra-backend-v1 pods.
    pods = env.pods.of(INFRA, V1)

    def fill(doc: dict) -> dict:
        doc["endpoints"] = [
            {"addresses": [p.spec.ip], "conditions": {"ready": True, "serving": True, "terminating": False}, "targetRef": {"kind": "Pod", "name": p.spec.name, "namespace": INFRA}}
            for p in pods
        ]
        return doc

    for name in ("manual-endpointslices-ip4", "manual-endpointslices-ip6", "headless-manual-endpointslices-ip4", "headless-manual-endpointslices-ip6"):
        edit_docs(env, "EndpointSlice", INFRA, name, fill)
    await env.expect(target, ok("/headless"), ok("/manual-endpointslices"), ok("/headless-manual-endpointslices"))


@conformance_test("HTTPRouteWeight", "Weights 70/30/0 split 500 requests within 5 %", CORE, ["tests/httproute-weight.yaml"])
async def weight(env: Env) -> None:
    target = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "weighted-backends"))
    await env.expect(target, ok(backend="infra-backend-"))
    want = {V1: 0.7, V2: 0.3, V3: 0.0}
    why = ""
    for _ in range(10):
        seen = await env.distribution(target, Case(), 500)
        total = sum(seen.values())
        why = ", ".join(
            f"{b} got {seen.get(b, 0) / total:.3f}, want {w}"
            for b, w in want.items()
            if abs(seen.get(b, 0) / total - w) > 0.05 or (w == 0 and seen.get(b, 0))
        )
        unexpected = set(seen) - set(want)
        if unexpected:
            why += f" unexpected backends {sorted(unexpected)}"
        if not why:
            return
    raise ConformanceError(f"weighted distribution: {why}")


@conformance_test("HTTPRouteRequestHeaderModifier", "Set, add and remove request headers", CORE, ["tests/httproute-request-header-modifier.yaml"])
async def request_header_modifier(env: Env) -> None:
    target = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "request-header-modifier"))
    await env.expect(target, *request_header_cases())


def request_header_cases(prefix: str = "") -> list[Case]:
    """The cases shared by the rule-level and backendRef-level request header tests."""
    return [
        ok(f"{prefix}/set", headers={"Some-Other-Header": "val"}, expect_headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
        ok(f"{prefix}/set", headers={"Some-Other-Header": "val", "X-Header-Set": "some-other-value"}, expect_headers={"Some-Other-Header": "val", "X-Header-Set": "set-overwrites-values"}),
        ok(f"{prefix}/add", headers={"Some-Other-Header": "val"}, expect_headers={"Some-Other-Header": "val", "X-Header-Add": "add-appends-values"}),
        ok(f"{prefix}/add", headers={"Some-Other-Header": "val", "X-Header-Add": "some-other-value"}, expect_headers={"Some-Other-Header": "val", "X-Header-Add": "some-other-value,add-appends-values"}),
        ok(f"{prefix}/remove", headers={"X-Header-Remove": "val"}, expect_headers={}, expect_absent=("X-Header-Remove",)),
        ok(
            f"{prefix}/multiple",
            headers={"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2", "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val", "X-Header-Remove-1": "remove-val-1", "Last-Header": "last-header-val"},
            expect_headers={"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val", "Last-Header": "last-header-val"},
            expect_absent=("X-Header-Remove-1", "X-Header-Remove-2"),
        ),
        ok(
            f"{prefix}/case-insensitivity",
            headers={"x-header-set": "original-val-set", "x-header-add": "original-val-add", "x-header-remove": "original-val-remove", "Another-Header": "another-header-val"},
            expect_headers={"X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add", "Another-Header": "another-header-val"},
            expect_absent=("x-header-remove", "X-Header-Remove"),
        ),
    ]


@conformance_test("HTTPRouteRedirectHostAndStatus", "RequestRedirect hostname and statusCode", CORE, ["tests/httproute-redirect-host-and-status.yaml"])
async def redirect_host_and_status(env: Env) -> None:
    target = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "redirect-host-and-status"))
    await env.expect(
        target,
        code(302, "/hostname-redirect", redirect=Redirect(host="example.org")),
        code(301, "/host-and-status", redirect=Redirect(host="example.org")),
    )


@conformance_test("GatewayWithAttachedRoutes", "Listener attachedRoutes counts only accepted routes", ["Gateway"], ["tests/gateway-with-attached-routes.yaml"])
async def gateway_with_attached_routes(env: Env) -> None:
    good = (Cond("Accepted", "True"), Cond("ResolvedRefs", "True"))
    await env.gateway_listeners((INFRA, "gateway-with-one-attached-route"), [ListenerExpectation("http", 1, good)])
    await env.gateway_listeners((INFRA, "gateway-with-two-attached-routes"), [ListenerExpectation("http", 2, good)])
    await env.route_condition(
        (INFRA, "http-route-not-accepted"), (INFRA, "gateway-with-two-attached-routes"),
        Cond("Accepted", "False", "NoMatchingListenerHostname"),
    )
    unresolved = (INFRA, "unresolved-gateway-with-one-attached-unresolved-route")
    bad = (Cond("Programmed", "False"), Cond("ResolvedRefs", "False"))
    await env.gateway_listeners(unresolved, [ListenerExpectation("tls", 1, bad)])
    await env.route_condition((INFRA, "http-route-4"), unresolved, Cond("ResolvedRefs", "False"))


@conformance_test("HTTPRouteReferenceGrant", "A ReferenceGrant allows a cross-namespace backendRef; deleting it revokes access", GRANTS, ["tests/httproute-reference-grant.yaml"])
async def reference_grant(env: Env) -> None:
    route = (INFRA, "reference-grant")
    target = await accepted_with_refs(env, SAME_NAMESPACE, route)
    await env.expect(target, ok(backend="web-backend", namespace=WEB))
    edit_docs(env, "ReferenceGrant", WEB, "reference-grant", lambda doc: None)
    await env.expect(target, code(500))


async def _not_permitted(env: Env, route: tuple[str, str]) -> None:
    await env.gateway_and_routes_accepted(SAME_NAMESPACE, [route])
    await env.route_condition(route, SAME_NAMESPACE, Cond("ResolvedRefs", "False", "RefNotPermitted"))
    await env.expect(await env.target(SAME_NAMESPACE), code(500))


@conformance_test("HTTPRouteInvalidCrossNamespaceBackendRef", "A cross-namespace backendRef without a grant: RefNotPermitted and a 500", GRANTS, ["tests/httproute-invalid-cross-namespace-backend-ref.yaml"])
async def invalid_cross_namespace_backend(env: Env) -> None:
    await _not_permitted(env, (INFRA, "invalid-cross-namespace-backend-ref"))


@conformance_test("HTTPRouteInvalidReferenceGrant", "Grants that do not match (wrong from or to) permit nothing", GRANTS, ["tests/httproute-invalid-reference-grant.yaml"])
async def invalid_reference_grant(env: Env) -> None:
    await _not_permitted(env, (INFRA, "reference-grant"))


@conformance_test("HTTPRoutePartiallyInvalidViaInvalidReferenceGrant", "One rule not granted gets a 500; the other keeps serving", GRANTS, ["tests/httproute-partially-invalid-via-invalid-reference-grant.yaml"])
async def partially_invalid(env: Env) -> None:
    route = (INFRA, "invalid-reference-grant")
    target = await env.gateway_and_routes_accepted(SAME_NAMESPACE, [route])
    await env.route_condition(route, SAME_NAMESPACE, Cond("ResolvedRefs", "False", "RefNotPermitted"))
    await env.expect(target, code(500, "/v2"), ok("/", backend="app-backend-v1", namespace=APP))


async def _secret_listener(env: Env, gw: tuple[str, str], listener: str, conds: tuple[Cond, ...]) -> None:
    await env.gateway_listeners(gw, [ListenerExpectation(listener, 0, conds)])


@conformance_test("GatewaySecretMissingReferenceGrant", "A listener certificateRef to another namespace without a grant", GRANTS, ["tests/gateway-secret-missing-reference-grant.yaml"])
async def secret_missing_grant(env: Env) -> None:
    await _secret_listener(
        env, (INFRA, "gateway-secret-missing-reference-grant"), "https",
        (Cond("ResolvedRefs", "False", "RefNotPermitted"), Cond("Programmed", "False")),
    )


@conformance_test("GatewaySecretInvalidReferenceGrant", "A listener certificateRef whose grant does not match", GRANTS, ["tests/gateway-secret-invalid-reference-grant.yaml"])
async def secret_invalid_grant(env: Env) -> None:
    await _secret_listener(
        env, (INFRA, "gateway-secret-invalid-reference-grant"), "https",
        (Cond("ResolvedRefs", "False", "RefNotPermitted"), Cond("Programmed", "False")),
    )


@conformance_test("GatewaySecretReferenceGrantAllInNamespace", "A grant for every Secret of a namespace", GRANTS, ["tests/gateway-secret-reference-grant-all-in-namespace.yaml"])
async def secret_grant_all(env: Env) -> None:
    ready = (Cond("Accepted", "True"), Cond("ResolvedRefs", "True"), Cond("Programmed", "True"))
    await _secret_listener(env, (INFRA, "gateway-secret-reference-grant-all-in-namespace"), "https", ready)


@conformance_test("GatewaySecretReferenceGrantSpecific", "A grant for one named Secret", GRANTS, ["tests/gateway-secret-reference-grant-specific.yaml"])
async def secret_grant_specific(env: Env) -> None:
    ready = (Cond("Accepted", "True"), Cond("ResolvedRefs", "True"), Cond("Programmed", "True"))
    await _secret_listener(env, (INFRA, "gateway-secret-reference-grant-specific"), "https", ready)


skipped_test(
    "HTTPRouteDisallowedKind",
    ["Gateway", "HTTPRoute", "TLSRoute"],
    "needs feature TLSRoute (a tlsroutes-only Gateway): mirrorplane serves HTTPRoute only",
)


# --- Gateway and GatewayClass --------------------------------------------------------------------

READY = (Cond("Accepted", "True"), Cond("Programmed", "True"))


@conformance_test("GatewayObservedGenerationBump", "A Gateway's conditions follow a spec change to the new observedGeneration", ["Gateway"], ["tests/gateway-observed-generation-bump.yaml"])
async def gateway_observed_generation_bump(env: Env) -> None:
    gw = (INFRA, "gateway-observed-generation-bump")
    await env.latest_conditions("Gateway", *gw, *READY)
    before = env.generation("Gateway", *gw)

    def add_listener(doc: dict) -> dict:
        doc["spec"]["listeners"].append(
            {"name": "alternate", "hostname": "foo.com", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
        )
        return doc

    edit_docs(env, "Gateway", *gw, add_listener)
    await env.generation_bumped("Gateway", *gw, before)
    await env.latest_conditions("Gateway", *gw, *READY)


@conformance_test("GatewayClassObservedGenerationBump", "A GatewayClass's conditions follow a spec change to the new observedGeneration", ["Gateway"], ["tests/gatewayclass-observed-generation-bump.yaml"])
async def gatewayclass_observed_generation_bump(env: Env) -> None:
    name = "gatewayclass-observed-generation-bump"
    await env.latest_conditions("GatewayClass", "", name, Cond("Accepted", "True"))
    before = env.generation("GatewayClass", "", name)

    def describe(doc: dict) -> dict:
        doc["spec"]["description"] = "new"
        return doc

    edit_docs(env, "GatewayClass", "", name, describe)
    await env.generation_bumped("GatewayClass", "", name, before)
    await env.latest_conditions("GatewayClass", "", name, Cond("Accepted", "True"))


@conformance_test("GatewayInvalidRouteKind", "A listener allowing only unknown route kinds: ResolvedRefs False InvalidRouteKinds", ["Gateway"], ["tests/gateway-invalid-route-kind.yaml"])
async def gateway_invalid_route_kind(env: Env) -> None:
    invalid = (Cond("ResolvedRefs", "False", "InvalidRouteKinds"),)
    await env.gateway_listeners((INFRA, "gateway-only-invalid-route-kind"), [ListenerExpectation("http", 0, invalid, ())])
    await env.gateway_listeners((INFRA, "gateway-supported-and-invalid-route-kind"), [ListenerExpectation("http", 0, invalid)])


@conformance_test("GatewayInvalidTLSConfiguration", "Listeners with unusable certificateRefs: ResolvedRefs False InvalidCertificateRef", ["Gateway"], ["tests/gateway-invalid-tls-configuration.yaml"])
async def gateway_invalid_tls_configuration(env: Env) -> None:
    invalid = [ListenerExpectation("https", 0, (Cond("ResolvedRefs", "False", "InvalidCertificateRef"),))]
    for name in ("nonexistent-secret", "unsupported-group", "unsupported-kind", "malformed-secret"):
        await env.gateway_listeners((INFRA, f"gateway-certificate-{name}"), invalid)


@conformance_test("GatewayListenerUnsupportedProtocol", "Listeners with an unsupported protocol are not accepted; the Gateway is if one listener is", ["Gateway"], ["tests/gateway-invalid-listeners-unsupported-protocol.yaml"])
async def gateway_listener_unsupported_protocol(env: Env) -> None:
    unsupported = ListenerExpectation("invalid", 0, (Cond("Accepted", "False", "UnsupportedProtocol"),), ())
    only = (INFRA, "gateway-only-unsupported-protocols")
    await env.latest_conditions("Gateway", *only, Cond("Accepted", "False", "ListenersNotValid"))
    await env.gateway_listeners(only, [unsupported])
    mixed = (INFRA, "gateway-supported-and-unsupported-protocols")
    await env.latest_conditions("Gateway", *mixed, Cond("Accepted", "True", "ListenersNotValid"))
    await env.gateway_listeners(mixed, [ListenerExpectation("http", 0, (Cond("Accepted", "True", "Accepted"),)), unsupported])


@conformance_test("GatewayModifyListeners", "Adding and removing listeners is reflected in the Gateway's status", ["Gateway"], ["tests/gateway-modify-listeners.yaml"])
async def gateway_modify_listeners(env: Env) -> None:
    good = (Cond("Accepted", "True"), Cond("ResolvedRefs", "True"))
    added = (INFRA, "gateway-add-listener")
    await env.latest_conditions("Gateway", *added, *READY)
    before = env.generation("Gateway", *added)

    def add(doc: dict) -> dict:
        doc["spec"]["listeners"].append(
            {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "data.test.com", "allowedRoutes": {"namespaces": {"from": "All"}}}
        )
        return doc

    edit_docs(env, "Gateway", *added, add)
    await env.generation_bumped("Gateway", *added, before)
    await env.gateway_listeners(added, [ListenerExpectation("https", 1, good), ListenerExpectation("http", 1, good)])
    await env.latest_conditions("Gateway", *added, *READY)

    removed = (INFRA, "gateway-remove-listener")
    await env.latest_conditions("Gateway", *removed, *READY)
    before = env.generation("Gateway", *removed)

    def remove(doc: dict) -> dict:
        assert len(doc["spec"]["listeners"]) == 2, "the gateway must have 2 listeners"
        doc["spec"]["listeners"] = [lst for lst in doc["spec"]["listeners"] if lst["name"] == "http"]
        return doc

    edit_docs(env, "Gateway", *removed, remove)
    await env.generation_bumped("Gateway", *removed, before)
    await env.gateway_listeners(removed, [ListenerExpectation("http", 1, good)])
    await env.latest_conditions("Gateway", *removed, *READY)


@conformance_test("GatewayInvalidParametersRef", "A Gateway whose infrastructure.parametersRef cannot be used: Accepted False InvalidParameters", ["Gateway"], ["tests/gateway-invalid-parameters-ref.yaml"])
async def gateway_invalid_parameters_ref(env: Env) -> None:
    await env.latest_conditions("Gateway", INFRA, "gateway-invalid-parameters-ref", Cond("Accepted", "False", "InvalidParameters"))


_NOT_CLAIMED = "needs feature {}, which mirrorplane does not claim: {}"
for _name, _features, _why in (
    ("GatewayInfrastructure", ["Gateway", "GatewayInfrastructurePropagation"], "there are no per-Gateway generated resources to label"),
    ("GatewayOptionalAddressValue", ["Gateway", "GatewayAddressEmpty"], "spec.addresses is not read"),
    ("GatewayStaticAddresses", ["Gateway", "GatewayStaticAddresses"], "spec.addresses is not read"),
    ("GatewayFrontendClientCertificateValidation", ["Gateway", "GatewayFrontendClientCertificateValidation"], "listeners do not validate client certificates"),
    ("GatewayFrontendClientCertificateValidationInsecureFallback", ["Gateway", "GatewayFrontendClientCertificateValidationInsecureFallback"], "listeners do not validate client certificates"),
    ("GatewayFrontendInvalidDefaultClientCertificateValidation", ["Gateway", "GatewayFrontendClientCertificateValidation"], "listeners do not validate client certificates"),
    ("GatewayInvalidFrontendClientCertificateValidation", ["Gateway", "GatewayFrontendClientCertificateValidation"], "listeners do not validate client certificates"),
    ("GatewayTLSBackendClientCertificate", ["Gateway", "GatewayBackendClientCertificate"], "no TLS to backends (and no TLS echo pods)"),
    ("GatewayInvalidTLSBackendConfiguration", ["Gateway", "GatewayBackendClientCertificate"], "no TLS to backends (and no TLS echo pods)"),
    ("HTTPRouteRetry", ["Gateway", "HTTPRoute", "HTTPRouteRetry"], "rule.retry is experimental-channel only"),
    ("ListenerSetReferenceGrant", ["Gateway", "ListenerSet"], "ListenerSet is experimental-channel only"),
):
    skipped_test(_name, _features, _NOT_CLAIMED.format(_features[-1], _why))
