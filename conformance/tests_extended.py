"""Extended-feature tests (matching, header modifiers, redirects, rewrites, timeouts, parentRef
ports, backend protocols, named rules, CORS, listener isolation, misdirected requests)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from .env import INFRA, SAME_NAMESPACE, Env
from .http import H2C_PRIOR_KNOWLEDGE, MAX_TIME_TO_CONSISTENCY, REQUEST_TIMEOUT, REQUIRED_CONSECUTIVE_SUCCESSES, Case, Redirect, Target
from .status import Cond, ConformanceError, ListenerExpectation, Parent
from .suite import conformance_test, skipped_test
from .tests_core import CORE, MODIFIED, V1, V2, V3, accepted_with_refs, code, ok, request_header_cases

HTTPS_GW = (INFRA, "same-namespace-with-https-listener")


async def same_namespace(env: Env, route: str) -> Target:
    return await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, route))


# --- matching ----------------------------------------------------------------------------------


@conformance_test("HTTPRouteMethodMatching", "Method matching for different backends", CORE + ["HTTPRouteMethodMatching"], ["tests/httproute-method-matching.yaml"])
async def method_matching(env: Env) -> None:
    t = await same_namespace(env, "method-matching")
    await env.expect(
        t,
        ok(method="POST"), ok(backend=V2, method="GET"), code(404, method="HEAD"),
        ok("/path1", method="GET"), ok(backend=V2, method="PUT", headers={"version": "one"}),
        ok("/path2", V3, method="POST", headers={"version": "two"}),
        ok("/path3", method="PATCH"), ok("/path4", method="DELETE", headers={"version": "three"}),
        code(404, method="PUT"), code(404, "/path4", method="DELETE"),
        ok("/path5", method="PATCH"), ok(backend=V2, method="PATCH", headers={"version": "four"}),
    )


@conformance_test("HTTPRouteQueryParamMatching", "Query param matching for different backends", CORE + ["HTTPRouteQueryParamMatching"], ["tests/httproute-query-param-matching.yaml"])
async def query_param_matching(env: Env) -> None:
    t = await same_namespace(env, "query-param-matching")
    await env.expect(
        t,
        ok("/?animal=whale"), ok("/?animal=dolphin", V2), ok("/?animal=dolphin&color=blue", V3), ok("/?ANIMAL=Whale", V3),
        ok("/?animal=whale&otherparam=irrelevant"), ok("/?animal=dolphin&color=yellow", V2),
        code(404, "/?color=blue"), code(404, "/?animal=dog"), code(404, "/?animal=whaledolphin"), code(404, "/"),
        ok("/path1?animal=whale"), ok("/?animal=whale", V2, headers={"version": "one"}),
        ok("/path2?animal=whale", V3, headers={"version": "two"}),
        ok("/path3?animal=shark"), ok("/path4?animal=kraken", headers={"version": "three"}),
        code(404, "/?animal=shark"), code(404, "/path4?animal=kraken"),
        ok("/path5?animal=hydra"), ok("/?animal=hydra", V3, headers={"version": "four"}),
    )


# --- header modifiers --------------------------------------------------------------------------


@conformance_test("HTTPRouteResponseHeaderModifier", "Set, add and remove response headers", CORE + ["HTTPRouteResponseHeaderModification"], ["tests/httproute-response-header-modifier.yaml"])
async def response_header_modifier(env: Env) -> None:
    t = await same_namespace(env, "response-header-modifier")
    other = {"Some-Other-Header": "val"}
    multiple = {"X-Header-Set-2": "set-val-2", "X-Header-Add-2": "add-val-2", "X-Header-Remove-2": "remove-val-2", "Another-Header": "another-header-val"}
    await env.expect(
        t,
        ok("/set", backend_set_response_headers=other, response_headers={**other, "X-Header-Set": "set-overwrites-values"}),
        ok("/set", backend_set_response_headers={**other, "X-Header-Set": "some-other-value"}, response_headers={**other, "X-Header-Set": "set-overwrites-values"}),
        ok("/add", backend_set_response_headers=other, response_headers={**other, "X-Header-Add": "add-appends-values"}),
        ok("/add", backend_set_response_headers={**other, "X-Header-Add": "some-other-value"}, response_headers={**other, "X-Header-Add": "some-other-value,add-appends-values"}),
        ok("/remove", backend_set_response_headers={"X-Header-Remove": "val"}, response_absent=("X-Header-Remove",)),
        ok(
            "/multiple",
            backend_set_response_headers=multiple,
            response_headers={"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2", "X-Header-Add-3": "header-add-3", "Another-Header": "another-header-val"},
            response_absent=("X-Header-Remove-1", "X-Header-Remove-2"),
        ),
        ok(
            "/case-insensitivity",
            backend_set_response_headers={"x-header-set": "original-val-set", "x-header-add": "original-val-add", "x-header-remove": "original-val-remove", "Another-Header": "another-header-val"},
            response_headers={
                "X-Header-Set": "header-set", "X-Header-Add": "original-val-add,header-add", "X-Lowercase-Add": "lowercase-add",
                "X-Mixedcase-Add-1": "mixedcase-add-1", "X-Mixedcase-Add-2": "mixedcase-add-2", "X-Uppercase-Add": "uppercase-add",
                "Another-Header": "another-header-val",
            },
            response_absent=("x-header-remove", "X-Header-Remove"),
        ),
        ok(
            "/response-and-request-header-modifiers",
            backend_set_response_headers=multiple,
            response_headers={"X-Header-Set-1": "header-set-1", "X-Header-Set-2": "header-set-2", "X-Header-Add-1": "header-add-1", "X-Header-Add-2": "add-val-2,header-add-2", "Another-Header": "another-header-val"},
            response_absent=("X-Header-Remove-1", "X-Header-Remove-2"),
            **MODIFIED,
        ),
    )


BACKEND_HEADERS = CORE + ["HTTPRouteBackendRequestHeaderModification"]


@conformance_test("HTTPRouteBackendRequestHeaderModifier", "RequestHeaderModifier filters on backendRefs", BACKEND_HEADERS, ["tests/httproute-request-header-modifier-backend.yaml"])
async def backend_request_header_modifier(env: Env) -> None:
    t = await same_namespace(env, "request-header-modifier")
    await env.expect(t, *request_header_cases())


@conformance_test("HTTPRouteRequestHeaderModifierBackendWeights", "Each weighted backendRef's own header filter reaches only that backend", BACKEND_HEADERS, ["tests/httproute-request-header-modifier-backend-weights.yaml"])
async def backend_weights_header_modifier(env: Env) -> None:
    t = await same_namespace(env, "request-header-modifier-backend-weights")
    await env.expect(t, ok(backend="infra-backend-"))
    semaphore = asyncio.Semaphore(10)

    async def one() -> str:
        async with semaphore:
            got = await env.client.capture(t, Case())
        body = got.body or {}
        pod, header = str(body.get("pod", "")), ",".join((body.get("headers") or {}).get("Backend", []))
        if got.status != 200 or not header or not pod.startswith(header):
            return f"status {got.status}, pod {pod!r} got Backend: {header!r}"
        return ""

    problems = [p for p in await asyncio.gather(*(one() for _ in range(100))) if p]
    if problems:
        raise ConformanceError(f"{len(problems)}/100 requests carried another backend's header, e.g. {problems[0]}")


# --- redirects ---------------------------------------------------------------------------------


def redirect(request_path: str, status: int = 302, **kw: str) -> Case:
    return Case(path=request_path, status=status, redirect=Redirect(**kw), namespace=INFRA)


@conformance_test("HTTPRouteRedirectPath", "RequestRedirect with path replacement", CORE + ["HTTPRoutePathRedirect"], ["tests/httproute-redirect-path.yaml"])
async def redirect_path(env: Env) -> None:
    t = await same_namespace(env, "redirect-path")
    await env.expect(
        t,
        redirect("/original-prefix/lemon", path="/replacement-prefix/lemon"),
        redirect("/full/path/original", path="/full-path-replacement"),
        redirect("/path-and-host", host="example.org", path="/replacement-prefix"),
        redirect("/path-and-status", 301, path="/replacement-prefix"),
        redirect("/full-path-and-host", host="example.org", path="/replacement-full"),
        redirect("/full-path-and-status", 301, path="/replacement-full"),
    )


@conformance_test("HTTPRouteRedirectPort", "RequestRedirect with a port", CORE + ["HTTPRoutePortRedirect"], ["tests/httproute-redirect-port.yaml"])
async def redirect_port(env: Env) -> None:
    t = await same_namespace(env, "redirect-port")
    await env.expect(
        t,
        redirect("/port", port="8083"),
        redirect("/port-and-host", host="example.org", port="8083"),
        redirect("/port-and-status", 301, port="8083"),
        redirect("/port-and-host-and-status", host="example.org", port="8083"),
    )


@conformance_test("HTTPRouteRedirectScheme", "RequestRedirect with a scheme", CORE + ["HTTPRouteSchemeRedirect"], ["tests/httproute-redirect-scheme.yaml"])
async def redirect_scheme(env: Env) -> None:
    t = await same_namespace(env, "redirect-scheme")
    await env.expect(
        t,
        redirect("/scheme", scheme="https"),
        redirect("/scheme-and-host", host="example.org", scheme="https"),
        redirect("/scheme-and-status", 301, scheme="https"),
        redirect("/scheme-and-host-and-status", scheme="https", host="example.org"),
    )


@conformance_test(
    "HTTPRouteRedirectPortAndScheme",
    "RequestRedirect port and scheme over listeners on 80, 8080 and 443",
    CORE + ["HTTPRoutePortRedirect", "GatewayPort8080"],
    ["tests/httproute-redirect-port-and-scheme.yaml"],
)
async def redirect_port_and_scheme(env: Env) -> None:
    t80 = await accepted_with_refs(env, SAME_NAMESPACE, (INFRA, "http-route-for-listener-on-port-80"))
    t8080 = await accepted_with_refs(env, (INFRA, "same-namespace-with-http-listener-on-8080"), (INFRA, "http-route-for-listener-on-port-8080"))
    t443 = await accepted_with_refs(env, HTTPS_GW, (INFRA, "http-route-for-listener-on-port-443"))
    org = "example.org"

    def tls(path: str, **kw: str) -> Case:
        return Case(path=path, host="example.org", sni="example.org", status=302, redirect=Redirect(**kw), namespace=INFRA)

    await asyncio.gather(
        env.expect(
            t80,
            redirect("/scheme-nil-and-port-nil", scheme="http", host=org), redirect("/scheme-nil-and-port-80", scheme="http", host=org),
            redirect("/scheme-nil-and-port-8080", scheme="http", port="8080", host=org),
            redirect("/scheme-https-and-port-nil", scheme="https", host=org), redirect("/scheme-https-and-port-443", scheme="https", host=org),
            redirect("/scheme-https-and-port-8443", scheme="https", port="8443", host=org),
        ),
        env.expect(
            t8080,
            redirect("/scheme-nil-and-port-nil", scheme="http", port="8080", host=org), redirect("/scheme-nil-and-port-80", scheme="http", host=org),
            redirect("/scheme-https-and-port-nil", scheme="https", host=org),
        ),
        env.expect(
            t443,
            tls("/scheme-nil-and-port-nil", scheme="https", host=org), tls("/scheme-nil-and-port-443", scheme="https", host=org),
            tls("/scheme-nil-and-port-8443", scheme="https", port="8443", host=org), tls("/scheme-http-and-port-nil", scheme="http", host=org),
            tls("/scheme-http-and-port-80", scheme="http", host=org), tls("/scheme-http-and-port-8080", scheme="http", port="8080", host=org),
        ),
    )


def _status_redirect_test(code_: int, route: str, path: str) -> None:
    feature = f"HTTPRoute{code_}RedirectStatusCode"

    @conformance_test(f"HTTPRoute{code_}Redirect", f"An HTTPRoute with a {code_} redirect filter", CORE + [feature], [f"tests/httproute-{code_}-redirect.yaml"], provisional=True)
    async def run(env: Env) -> None:
        t = await same_namespace(env, route)
        await env.expect(t, Case(path=path, method="POST", status=code_, redirect=Redirect(path=path), namespace=INFRA))


_status_redirect_test(303, "303-redirect", "/see-other")
_status_redirect_test(307, "307-redirect", "/temporary")
_status_redirect_test(308, "308-redirect", "/permanent")


# --- rewrites and timeouts ---------------------------------------------------------------------


@conformance_test("HTTPRouteRewriteHost", "URLRewrite of the hostname", CORE + ["HTTPRouteHostRewrite"], ["tests/httproute-rewrite-host.yaml"])
async def rewrite_host(env: Env) -> None:
    t = await same_namespace(env, "rewrite-host")
    await env.expect(
        t,
        ok("/one", host="rewrite.example", expect_host="one.example.org", expect_headers={}),
        ok("/two", V2, host="rewrite.example", expect_host="example.org", expect_headers={}),
        ok("/rewrite-host-and-modify-headers", V2, host="rewrite.example", expect_host="test.example.org", **MODIFIED),
    )


@conformance_test("HTTPRouteRewritePath", "URLRewrite of the path", CORE + ["HTTPRoutePathRewrite"], ["tests/httproute-rewrite-path.yaml"])
async def rewrite_path(env: Env) -> None:
    t = await same_namespace(env, "rewrite-path")
    modified = dict(MODIFIED, headers={**MODIFIED["headers"], "X-Header-Set": "set-val"})
    await env.expect(
        t,
        ok("/prefix/one/two", expect_path="/one/two"),
        ok("/strip-prefix/three", expect_path="/three"),
        ok("/strip-prefix", expect_path="/"),
        ok("/full/one/two", expect_path="/one"),
        ok("/full/rewrite-path-and-modify-headers/test", expect_path="/test", **modified),
        ok("/prefix/rewrite-path-and-modify-headers/one", expect_path="/prefix/one", **modified),
    )


@conformance_test("HTTPRouteTimeoutRequest", "A request timeout answers 504; 0s disables it", CORE + ["HTTPRouteRequestTimeout"], ["tests/httproute-timeout-request.yaml"])
async def timeout_request(env: Env) -> None:
    t = await same_namespace(env, "request-timeout")
    await env.expect(
        t,
        Case(path="/request-timeout", namespace=INFRA),
        Case(path="/request-timeout?delay=1s", status=504, namespace=INFRA),
        Case(path="/disable-request-timeout?delay=1s", namespace=INFRA),
    )


@conformance_test("HTTPRouteTimeoutBackendRequest", "A backendRequest timeout answers 504; 0s disables it", CORE + ["HTTPRouteBackendTimeout"], ["tests/httproute-timeout-backend-request.yaml"])
async def timeout_backend_request(env: Env) -> None:
    t = await same_namespace(env, "backend-request-timeout")
    await env.expect(
        t,
        Case(path="/backend-timeout", namespace=INFRA),
        Case(path="/backend-timeout?delay=1s", status=504, namespace=INFRA),
        Case(path="/disable-backend-timeout?delay=1s", namespace=INFRA),
    )


# --- parentRef ports ---------------------------------------------------------------------------

PARENT_PORT = CORE + ["HTTPRouteParentRefPort"]


@conformance_test("HTTPRouteListenerPortMatching", "parentRef.port selects the listeners a route attaches to", PARENT_PORT, ["tests/httproute-listener-port-matching.yaml"])
async def listener_port_matching(env: Env) -> None:
    gw = (INFRA, "httproute-listener-port-matching")
    t80 = await accepted_with_refs(env, gw, (INFRA, "backend-v1"), listeners=("listener-1",))
    t8080 = await accepted_with_refs(env, gw, (INFRA, "backend-v2"), listeners=("listener-2",))
    t8090 = await accepted_with_refs(env, gw, (INFRA, "backend-v3"), listeners=("listener-4",))
    await asyncio.gather(
        env.expect(t80, ok(host="foo.com")),
        env.expect(t8080, ok(host="foo.com:8080", backend=V2), ok(host="bar.com:8080", backend=V2)),
        env.expect(t8090, ok(host="foo.com:8090", backend=V3), code(404, host="bar.com:8090")),
    )


@conformance_test("HTTPRouteInvalidParentRefSectionNameNotMatchingPort", "A parentRef whose sectionName and port disagree: NoMatchingParent", PARENT_PORT, ["tests/httproute-invalid-parentref-section-name-not-matching-port.yaml"])
async def section_name_not_matching_port(env: Env) -> None:
    gw = (INFRA, "gateway-with-one-not-matching-port-and-section-name-route")
    route = (INFRA, "httproute-listener-section-name-not-matching-port")
    await env.route_condition(route, gw, Cond("Accepted", "False", "NoMatchingParent"))
    await env.route_must_have_parents(route, [Parent(INFRA, gw[1], (Cond("Accepted", "False"),))])
    await env.gateway_zero_routes(gw)


skipped_test(
    "HTTPRouteInvalidParentRefNotMatchingListenerPort",
    CORE + ["HTTPRouteDestinationPortMatching"],
    "needs feature HTTPRouteDestinationPortMatching (experimental channel; mirrorplane serves the standard channel)",
)


# --- backend protocols -------------------------------------------------------------------------


@conformance_test("HTTPRouteBackendProtocolH2C", "A backend Service port with appProtocol kubernetes.io/h2c", CORE + ["HTTPRouteBackendProtocolH2C"], ["tests/httproute-backend-protocol-h2c.yaml"])
async def backend_protocol_h2c(env: Env) -> None:
    t = await env.gateway_and_routes_accepted(SAME_NAMESPACE, [(INFRA, "backend-protocol-h2c")])
    await env.expect(t, ok(protocol=H2C_PRIOR_KNOWLEDGE))


@conformance_test("HTTPRouteBackendProtocolWebSocket", "A backend Service port with appProtocol kubernetes.io/ws", CORE + ["HTTPRouteBackendProtocolWebSocket"], ["tests/httproute-backend-protocol-websocket.yaml"])
async def backend_protocol_websocket(env: Env) -> None:
    t = await env.gateway_and_routes_accepted(SAME_NAMESPACE, [(INFRA, "backend-protocol-ws")])
    deadline = asyncio.get_running_loop().time() + MAX_TIME_TO_CONSISTENCY
    successes, why = 0, ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as session:
        while successes < REQUIRED_CONSECUTIVE_SUCCESSES:
            why = await _websocket_round_trip(session, t)
            if not why:
                successes += 1
                continue
            successes = 0
            if asyncio.get_running_loop().time() > deadline:
                raise ConformanceError(f"websocket /ws: {why}")
            await asyncio.sleep(0.25)


async def _websocket_round_trip(session: aiohttp.ClientSession, t: Target) -> str:
    """upstream: dial ws://gateway/ws, a text frame and a binary frame must come back unchanged."""
    try:
        origin = {"Host": t.host_header(), "Origin": "ws://gateway/HTTPRouteBackendProtocolWebSocket"}
        async with session.ws_connect(f"ws://127.0.0.1:{t.local_port}/ws", headers=origin) as ws:
            await ws.send_str("Websocket Support!")
            if (reply := await ws.receive(timeout=10)).data != "Websocket Support!":
                return f"text frame came back as {reply.type.name} {reply.data!r}"
            await ws.send_bytes(bytes([1, 2, 3, 4, 5, 6, 7]))
            if (reply := await ws.receive(timeout=10)).data != bytes([1, 2, 3, 4, 5, 6, 7]):
                return f"binary frame came back as {reply.type.name} {reply.data!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"dial failed: {type(exc).__name__}: {exc}"
    return ""


# --- named rules and CORS ----------------------------------------------------------------------


@conformance_test("HTTPRouteNamedRule", "Routing works with name: set on a rule", CORE + ["HTTPRouteNamedRouteRule"], ["tests/httproute-named-rule.yaml"], provisional=True)
async def named_rule(env: Env) -> None:
    t = await same_namespace(env, "http-named-rules")
    await env.expect(t, ok("/named"), ok("/unnamed", V2))


def _preflight(path: str, origin: str, method: str, request_headers: str = "", **response: Any) -> Case:
    headers = {"Origin": origin, "access-control-request-method": method}
    if request_headers:
        headers["access-control-request-headers"] = request_headers
    return Case(path=path, method="OPTIONS", headers=headers, check_request=False, **response)


FOO_ALLOW = {
    "access-control-allow-methods": ("GET, OPTIONS", "OPTIONS, GET"),
    "access-control-allow-headers": ("x-header-1, x-header-2", "x-header-2, x-header-1"),
    "access-control-expose-headers": ("x-header-3, x-header-4", "x-header-4, x-header-3"),
    "access-control-max-age": ("3600",),
    "access-control-allow-credentials": ("true",),
}
X12 = "x-header-1, x-header-2"


@conformance_test("HTTPRouteCORS", "A CORS filter allows requests from the configured origins", CORE + ["HTTPRouteCORS"], ["tests/httproute-cors.yaml"])
async def cors(env: Env) -> None:
    routes = ("cors-multiple-origins-methods-headers", "cors-wildcard-methods", "cors-wildcard-origin", "cors-wildcard-methods-headers")
    t = await env.gateway_and_routes_accepted(SAME_NAMESPACE, [(INFRA, r) for r in routes[:2]])
    for r in routes:
        await env.resolved_refs_true((INFRA, r), SAME_NAMESPACE)
    creds_absent = ("access-control-allow-credentials",)

    def allow(origin: str) -> dict[str, tuple[str, ...]]:
        return {"access-control-allow-origin": (origin,), **FOO_ALLOW}

    def simple(path: str, origin: str, method: str = "GET", extra: dict[str, str] | None = None, **response: Any) -> Case:
        return Case(path=path, method=method, headers={"Origin": origin, **(extra or {})}, namespace=INFRA, **response)

    req = {"access-control-request-method": "GET", "access-control-request-headers": X12}
    await env.expect(
        t,
        _preflight("/cors-1", "https://www.foo.com", "GET", X12, status_codes=(200, 204), valid_header_values=allow("https://www.foo.com"), ignore_whitespace=True),
        _preflight("/cors-1", "https://www.bar.com", "GET", X12, valid_header_values=allow("https://www.bar.com"), ignore_whitespace=True),
        _preflight("/cors-1", "https://xpto.www.bar.com", "GET", X12, valid_header_values=allow("https://xpto.www.bar.com"), ignore_whitespace=True),
        _preflight("/cors-1", "https://foobar.com", "GET", status_codes=(200, 204, 403), response_absent=("access-control-allow-origin",)),
        simple("/cors-1", "https://www.foo.com", extra=req, status_codes=(200, 204), response_headers={"access-control-allow-origin": "https://www.foo.com"}),
        simple("/cors-1", "https://www.bar.com", extra=req, status_codes=(200, 204), response_headers={"access-control-allow-origin": "https://www.bar.com"}),
        simple("/cors-1", "https://foobar.com", extra={"access-control-request-method": "GET"}, response_absent=("access-control-allow-origin",)),
        _preflight(
            "/cors-2", "https://www.foo.com", "POST", status_codes=(200, 204),
            valid_header_values={"access-control-allow-methods": ("POST", "*")},
            response_headers={"access-control-allow-origin": "https://www.foo.com"}, response_absent=creds_absent,
        ),
        _preflight("/cors-2", "https://www.foo.com", "POST", response_absent=creds_absent),
        _preflight(
            "/cors-wildcard-origin", "https://foobar.com", "PUT", status_codes=(200, 204),
            valid_header_values={"access-control-allow-origin": ("https://foobar.com", "*"), "access-control-allow-methods": ("PUT",)},
            response_absent=creds_absent,
        ),
        _preflight(
            "/cors-wildcard-origin", "https://foobar.com:12345", "PUT", status_codes=(200, 204),
            valid_header_values={"access-control-allow-origin": ("https://foobar.com:12345", "*"), "access-control-allow-methods": ("PUT",)},
            response_absent=creds_absent,
        ),
        simple("/cors-wildcard-origin", "https://foobar.com:12345", "PUT", status_codes=(200,), valid_header_values={"access-control-allow-origin": ("https://foobar.com:12345", "*")}),
        simple(
            "/cors-wildcard-origin", "https://foobar.com", "PUT", status_codes=(200, 204),
            valid_header_values={"access-control-allow-origin": ("https://foobar.com", "*")}, response_absent=creds_absent,
        ),
        _preflight(
            "/cors-wildcard-methods-headers", "https://other.foo.com", "PUT", X12,
            valid_header_values={"access-control-allow-origin": ("https://other.foo.com",), "access-control-allow-methods": ("PUT",), "access-control-allow-headers": FOO_ALLOW["access-control-allow-headers"], "access-control-allow-credentials": ("true",)},
            ignore_whitespace=True,
        ),
        _preflight(
            "/cors-wildcard-methods-headers-unauth", "https://other.foo.com", "PUT", X12,
            valid_header_values={"access-control-allow-origin": ("https://other.foo.com", "*"), "access-control-allow-methods": ("PUT", "*"), "access-control-allow-headers": (*FOO_ALLOW["access-control-allow-headers"], "*")},
            response_absent=creds_absent, ignore_whitespace=True,
        ),
        simple(
            "/cors-wildcard-methods-headers", "https://other.foo.com", extra={"Authorization": "Bearer test"},
            valid_header_values={"access-control-allow-origin": ("https://other.foo.com",), "access-control-allow-credentials": ("true",)},
        ),
        simple(
            "/cors-wildcard-methods-headers-unauth", "https://other.foo.com", extra={"Authorization": "Bearer test"},
            valid_header_values={"access-control-allow-origin": ("https://other.foo.com",)}, response_absent=creds_absent,
        ),
    )


# --- Gateway features --------------------------------------------------------------------------


@conformance_test(
    "GatewayHTTPListenerIsolation",
    "A request reaches only the route of the most specific matching listener",
    ["Gateway", "GatewayHTTPListenerIsolation", "HTTPRoute"],
    ["tests/gateway-http-listener-isolation.yaml", "tests/gateway-http-listener-isolation-with-hostname-intersection.yaml"],
)
async def http_listener_isolation(env: Env) -> None:
    paths = ("/empty-hostname", "/wildcard-example-com", "/wildcard-foo-example-com", "/abc-foo-example-com")
    hosts = ("bar.com", "bar.example.com", "bar.foo.example.com", "abc.foo.example.com")
    cases = [
        ok(path, host=host) if i == j else code(404, path, host=host)
        for i, host in enumerate(hosts)
        for j, path in enumerate(paths)
    ]
    for gw, suffix in (("http-listener-isolation", ""), ("http-listener-isolation-with-hostname-intersection", "-with-hostname-intersection")):
        routes = [(INFRA, f"attaches-to-{p.lstrip('/')}{suffix}") for p in paths]
        t = await accepted_with_refs(env, (INFRA, gw), *routes)
        await env.expect(t, *cases)


@conformance_test(
    "HTTPRouteHTTPSListenerDetectMisdirectedRequests",
    "HTTPS listeners on one port answer 421 when SNI and Host select different listeners",
    ["Gateway", "GatewayHTTPSListenerDetectMisdirectedRequests", "HTTPRoute"],
    ["tests/httproute-https-listener-detect-misdirected-requests.yaml"],
)
async def detect_misdirected_requests(env: Env) -> None:
    routes = [(INFRA, f"https-listener-detect-misdirected-requests-test-{i}") for i in range(1, 5)]
    t = await accepted_with_refs(env, HTTPS_GW, *routes)
    table = [
        ("example.org", "example.org", 200, V1), ("example.org", "second-example.org", 421, ""), ("example.org", "unknown-example.org", 404, ""),
        ("second-example.org", "second-example.org", 200, V2), ("second-example.org", "example.org", 421, ""), ("second-example.org", "unknown-example.org", 421, ""),
        ("third-example.wildcard.org", "third-example.wildcard.org", 200, V3), ("third-example.wildcard.org", "fith-example.wildcard.org", 200, V3),
        ("third-example.wildcard.org", "fourth-example.wildcard.org", 421, ""), ("third-example.wildcard.org", "second-example.org", 421, ""),
        ("third-example.wildcard.org", "unknown-example.org", 421, ""),
        ("fourth-example.wildcard.org", "fourth-example.wildcard.org", 200, V1), ("fourth-example.wildcard.org", "fith-example.wildcard.org", 421, ""),
        ("unknown-example.org", "example.org", 200, V1), ("unknown-example.org", "unknown-example.org", 404, ""),
    ]
    await env.expect(
        t,
        *(
            Case(path="/detect-misdirected-requests", host=host, sni=sni, status_codes=(status,), backend=backend, namespace=INFRA)
            for sni, host, status, backend in table
        ),
    )


@conformance_test("GatewayWithAttachedRoutesWithPort8080", "Listener attachedRoutes with a listener on port 8080", ["Gateway", "GatewayPort8080"], ["tests/gateway-with-attached-routes-with-port-8080.yaml"])
async def attached_routes_port_8080(env: Env) -> None:
    good = (Cond("Accepted", "True"), Cond("ResolvedRefs", "True"))
    await env.gateway_listeners(
        (INFRA, "gateway-with-two-listeners-and-one-attached-route"),
        [ListenerExpectation("http-unattached", 0, good), ListenerExpectation("http", 1, good)],
    )
