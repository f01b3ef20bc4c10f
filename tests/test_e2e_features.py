"""HTTPRoute features end to end: YAML → control plane → a real Envoy → real echo backends.

What is asserted is what a client or backend observes (status, Location, the request the backend
saw), matching the expectations of the upstream conformance tests for the same feature.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from features_stack import NS, FeatureStack, route_yaml, start
from support import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FeatureStack]:
    s = await start(tmp_path_factory.mktemp("features"))
    try:
        yield s
    finally:
        await s.exits.aclose()


def rule(path: str, filters: str = "", backends: str = "v1", extra: str = "") -> str:
    out = f"""  - matches:
    - path: {{type: PathPrefix, value: {path}}}
"""
    if filters:
        out += "    filters:\n" + filters
    if backends:
        out += "    backendRefs:\n" + "".join(f"    - {{name: {b}, port: 8080}}\n" for b in backends.split(","))
    return out + extra


def redirect(**fields: object) -> str:
    return f"    - type: RequestRedirect\n      requestRedirect: {json.dumps(fields)}\n"


def echoed(body: bytes) -> dict:
    return json.loads(body)


# --- RequestRedirect ---------------------------------------------------------------------------

REDIRECTS = {
    "/scheme": redirect(scheme="https"),
    "/scheme-and-host": redirect(scheme="https", hostname="example.org"),
    "/host-and-status": redirect(hostname="example.org", statusCode=301),
    "/port": redirect(port=8083),
    "/port-and-host": redirect(port=8083, hostname="example.org"),
    "/scheme-http-port-80": redirect(scheme="http", port=80, hostname="example.org"),
    "/scheme-https-port-8443": redirect(scheme="https", port=8443, hostname="example.org"),
    "/see-other": redirect(statusCode=303, hostname="example.org"),
    "/temporary": redirect(statusCode=307, hostname="example.org"),
    "/permanent": redirect(statusCode=308, hostname="example.org"),
    "/prefix/one": redirect(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/one"}, hostname="example.org"),
    "/strip-prefix": redirect(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}, hostname="example.org"),
    "/full/one": redirect(path={"type": "ReplaceFullPath", "replaceFullPath": "/one"}, hostname="example.org"),
}


@pytest.mark.parametrize(
    ("port", "path", "status", "location"),
    [
        (80, "/scheme", 302, "https://127.0.0.1/scheme"),
        (80, "/scheme-and-host", 302, "https://example.org/scheme-and-host"),
        (80, "/host-and-status", 301, "http://example.org/host-and-status"),
        (80, "/port", 302, "http://127.0.0.1:8083/port"),
        (80, "/port-and-host", 302, "http://example.org:8083/port-and-host"),
        (80, "/scheme-http-port-80", 302, "http://example.org/scheme-http-port-80"),
        (80, "/scheme-https-port-8443", 302, "https://example.org:8443/scheme-https-port-8443"),
        (80, "/see-other", 303, "http://example.org/see-other"),
        (80, "/temporary", 307, "http://example.org/temporary"),
        (80, "/permanent", 308, "http://example.org/permanent"),
        (80, "/prefix/one/two?q=1", 302, "http://example.org/one/two?q=1"),
        (80, "/prefix/one", 302, "http://example.org/one"),
        (80, "/strip-prefix/three", 302, "http://example.org/three"),
        (80, "/strip-prefix", 302, "http://example.org/"),
        (80, "/full/one/two", 302, "http://example.org/one"),
        # The listener's own port when the redirect names neither scheme nor port.
        (8080, "/host-and-status", 301, "http://example.org:8080/host-and-status"),
        (8080, "/scheme-and-host", 302, "https://example.org/scheme-and-host"),
        (443, "/host-and-status", 301, "https://example.org/host-and-status"),
        (443, "/scheme-http-port-80", 302, "http://example.org/scheme-http-port-80"),
    ],
)
async def test_request_redirect_location_and_status(
    stack: FeatureStack, port: int, path: str, status: int, location: str
) -> None:
    stack.write(
        "redirects.yaml", route_yaml("redirects", "".join(rule(p, f, backends="") for p, f in REDIRECTS.items()))
    )
    kw = {"host": "example.org"} if port == 443 else {}
    _, headers, _ = await stack.until(path, status, port=port, **kw)
    assert headers["location"] == location


# --- URLRewrite --------------------------------------------------------------------------------


def rewrite(**fields: object) -> str:
    return f"    - type: URLRewrite\n      urlRewrite: {json.dumps(fields)}\n"


HEADERS = """    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}]
        remove: [X-Header-Remove]
"""

REWRITES = "".join(
    [
        rule("/prefix/one", rewrite(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/one"})),
        rule("/strip-prefix", rewrite(path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"})),
        rule("/full/one", rewrite(path={"type": "ReplaceFullPath", "replaceFullPath": "/one"})),
        rule("/host", rewrite(hostname="one.example.org")),
        rule(
            "/both",
            rewrite(hostname="test.example.org", path={"type": "ReplaceFullPath", "replaceFullPath": "/test"})
            + HEADERS,
        ),
    ]
)


@pytest.mark.parametrize(
    ("path", "seen_path", "seen_host"),
    [
        ("/prefix/one/two", "/one/two", None),
        ("/prefix/one", "/one", None),
        ("/strip-prefix/three", "/three", None),
        ("/strip-prefix", "/", None),
        ("/strip-prefix/?q=1", "/?q=1", None),
        ("/full/one/two?x=y", "/one?x=y", None),
        ("/host/a", "/host/a", "one.example.org"),
        ("/both/a", "/test", "test.example.org"),
    ],
)
async def test_url_rewrite_is_what_the_backend_sees(
    stack: FeatureStack, path: str, seen_path: str, seen_host: str | None
) -> None:
    stack.write("rewrites.yaml", route_yaml("rewrites", REWRITES, hostnames="  hostnames: [rewrite.example]\n"))
    headers = {"X-Header-Remove": "gone", "X-Header-Add": "first"}
    _, _, body = await stack.until(path, 200, host="rewrite.example", headers=headers)
    got = echoed(body)
    assert got["path"] == seen_path
    if seen_host:
        assert got["host"] == seen_host
    if path.startswith("/both"):
        assert got["headers"]["X-Header-Set"] == ["set-overwrites-values"]
        assert got["headers"]["X-Header-Add"] == ["first,header-val-1"] or got["headers"]["X-Header-Add"] == [
            "first",
            "header-val-1",
        ]
        assert "X-Header-Remove" not in got["headers"]


# --- timeouts ----------------------------------------------------------------------------------


def timeouts(**fields: str) -> str:
    return f"    timeouts: {json.dumps(fields)}\n"


TIMEOUTS = "".join(
    [
        rule("/request-timeout", extra=timeouts(request="500ms")),
        rule("/request-timeout-off", extra=timeouts(request="0s")),
        rule("/backend-timeout", extra=timeouts(backendRequest="500ms")),
        rule("/both-timeouts", extra=timeouts(request="10s", backendRequest="500ms")),
    ]
)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/request-timeout?delay=1s", 504),
        ("/request-timeout?delay=10ms", 200),
        ("/request-timeout-off?delay=1s", 200),
        ("/backend-timeout?delay=1s", 504),
        ("/both-timeouts?delay=1s", 504),
        ("/both-timeouts?delay=10ms", 200),
    ],
)
async def test_rule_timeouts_answer_504(stack: FeatureStack, path: str, status: int) -> None:
    stack.write("timeouts.yaml", route_yaml("timeouts", TIMEOUTS, hostnames="  hostnames: [timeouts.example]\n"))
    await stack.until(path, status, host="timeouts.example")


# --- backendRef filters ------------------------------------------------------------------------


async def test_backend_request_header_modifier_applies_only_to_its_backend(stack: FeatureStack) -> None:
    rules = """  - backendRefs:
    - name: v1
      port: 8080
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: Backend, value: v1}], add: [{name: X-Add, value: a1}], remove: [X-Remove]}
    - name: v2
      port: 8080
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: Backend, value: v2}]}
"""
    stack.write(
        "backend-headers.yaml",
        route_yaml("backend-headers", rules, hostnames="  hostnames: [backend-headers.example]\n"),
    )
    await stack.until("/", 200, host="backend-headers.example")
    seen = set()
    for _ in range(30):
        _, _, body = await stack.request("/", host="backend-headers.example", headers={"X-Remove": "x"})
        got = echoed(body)
        pod = got["pod"].split("-")[0]
        assert got["headers"]["Backend"] == [pod]
        if pod == "v1":
            assert got["headers"]["X-Add"] == ["a1"] and "X-Remove" not in got["headers"]
        else:
            assert "X-Add" not in got["headers"] and got["headers"]["X-Remove"] == ["x"]
        seen.add(pod)
    assert seen == {"v1", "v2"}


# --- CORS --------------------------------------------------------------------------------------

CORS = """  - matches:
    - path: {type: PathPrefix, value: /cors-1}
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: v1, port: 8080}]
  - matches:
    - path: {type: PathPrefix, value: /cors-wildcard}
    filters:
    - type: CORS
      cors: {allowOrigins: ["*"], allowMethods: [PUT]}
    backendRefs: [{name: v1, port: 8080}]
"""

PREFLIGHT = {"access-control-request-method": "GET", "access-control-request-headers": "x-header-1, x-header-2"}


def _nospace(v: str) -> set[str]:
    return set(v.replace(" ", "").split(","))


async def test_cors_preflight_from_allowed_origins(stack: FeatureStack) -> None:
    stack.write("cors.yaml", route_yaml("cors", CORS, hostnames="  hostnames: [cors.example]\n"))
    for origin in ("https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"):
        headers = {"Origin": origin, **PREFLIGHT}
        status, got, _ = await stack.until("/cors-1", 200, method="OPTIONS", host="cors.example", headers=headers)
        assert got["access-control-allow-origin"] == origin
        assert _nospace(got["access-control-allow-methods"]) == {"GET", "OPTIONS"}
        assert _nospace(got["access-control-allow-headers"]) == {"x-header-1", "x-header-2"}
        assert _nospace(got["access-control-expose-headers"]) == {"x-header-3", "x-header-4"}
        assert got["access-control-max-age"] == "3600"
        assert got["access-control-allow-credentials"] == "true"


async def test_cors_rejects_other_origins_and_answers_simple_requests(stack: FeatureStack) -> None:
    stack.write("cors.yaml", route_yaml("cors", CORS, hostnames="  hostnames: [cors.example]\n"))
    await stack.until("/cors-1", 200, host="cors.example")
    status, got, _ = await stack.request(
        "/cors-1", method="OPTIONS", host="cors.example", headers={"Origin": "https://foobar.com", **PREFLIGHT}
    )
    assert status in (200, 204, 403) and "access-control-allow-origin" not in got
    status, got, _ = await stack.request("/cors-1", host="cors.example", headers={"Origin": "https://www.foo.com"})
    assert status == 200 and got["access-control-allow-origin"] == "https://www.foo.com"
    status, got, _ = await stack.request("/cors-1", host="cors.example", headers={"Origin": "https://foobar.com"})
    assert status == 200 and "access-control-allow-origin" not in got
    headers = {"Origin": "https://foobar.com:12345", "access-control-request-method": "PUT"}
    status, got, _ = await stack.request("/cors-wildcard", method="OPTIONS", host="cors.example", headers=headers)
    assert status in (200, 204)
    assert got["access-control-allow-origin"] in ("https://foobar.com:12345", "*")
    assert got["access-control-allow-methods"] == "PUT"
    assert "access-control-allow-credentials" not in got


# --- backend protocols -------------------------------------------------------------------------


async def test_h2c_backend_is_spoken_to_in_http2(stack: FeatureStack) -> None:
    stack.write("h2c.yaml", route_yaml("h2c", rule("/", backends="h2c"), hostnames="  hostnames: [h2c.example]\n"))
    _, _, body = await stack.until("/h2c?x=1", 200, host="h2c.example")
    got = echoed(body)
    assert got["proto"] == "HTTP/2.0" and got["path"] == "/h2c?x=1"


async def test_websocket_backend_echoes_text_and_binary_frames(stack: FeatureStack) -> None:
    stack.write("ws.yaml", route_yaml("ws", rule("/", backends="ws"), hostnames="  hostnames: [ws.example]\n"))
    await stack.until("/", 200, host="ws.example")
    url = f"http://127.0.0.1:{stack.ports[80]}/ws"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers={"Host": "ws.example"}) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=5)).data == "hello"
            await ws.send_bytes(b"\x00\x01binary")
            assert (await ws.receive(timeout=5)).data == b"\x00\x01binary"


async def test_unknown_app_protocol_is_unresolved_and_answers_500(stack: FeatureStack) -> None:
    stack.write(
        "services-grpc.yaml",
        (stack.dir / "services.yaml")
        .read_text()
        .split("---")[1]
        .replace("name: v1", "name: grpc-svc")
        .replace("targetPort", "appProtocol: grpc, targetPort"),
    )
    stack.write(
        "grpc.yaml", route_yaml("grpc", rule("/", backends="grpc-svc"), hostnames="  hostnames: [grpc.example]\n")
    )
    await stack.until("/", 500, host="grpc.example")
    assert stack.route_condition("grpc", "ResolvedRefs") == ("False", "UnsupportedProtocol")
    assert stack.route_condition("grpc", "Accepted") == ("True", "Accepted")


# --- HTTPS listeners ---------------------------------------------------------------------------

HTTPS_ROUTES = "---\n".join(
    [
        route_yaml(
            "tls-1",
            rule("/tls", backends="v1"),
            parent="    sectionName: https\n",
            hostnames="  hostnames: [example.org]\n",
        ),
        route_yaml("tls-2", rule("/tls", backends="v2"), parent="    sectionName: https-second\n"),
        route_yaml("tls-3", rule("/tls", backends="h2c"), parent="    sectionName: https-wildcard\n"),
    ]
)


@pytest.mark.parametrize(
    ("sni", "host", "status", "backend"),
    [
        ("example.org", "example.org", 200, "v1"),
        ("example.org", "second-example.org", 421, None),
        ("example.org", "unknown-example.org", 404, None),
        ("second-example.org", "second-example.org", 200, "v2"),
        ("second-example.org", "example.org", 421, None),
        ("second-example.org", "unknown-example.org", 421, None),
        ("a.wildcard.org", "a.wildcard.org", 200, "h2c"),
        ("a.wildcard.org", "b.wildcard.org", 200, "h2c"),
        ("a.wildcard.org", "second-example.org", 421, None),
        ("unknown-example.org", "example.org", 200, "v1"),
        ("unknown-example.org", "unknown-example.org", 404, None),
    ],
)
async def test_https_sni_selects_the_listener_and_misdirected_hosts_get_421(
    stack: FeatureStack, sni: str, host: str, status: int, backend: str | None
) -> None:
    """HTTPRouteHTTPSListener and GatewayHTTPSListenerDetectMisdirectedRequests, over TLS with a
    trustme CA: the SNI picks the certificate's listener, the Host must belong to it."""
    stack.write("https-routes.yaml", HTTPS_ROUTES)
    await stack.until("/tls", 200, port=443, sni="example.org", host="example.org")
    covered = sni != "unknown-example.org"  # not in the certificate: verify the chain only
    _, _, body = await stack.until("/tls", status, port=443, sni=sni, host=host, check_hostname=covered)
    if backend:
        got = echoed(body)
        assert got["pod"].startswith(backend) and got["host"] == host


async def test_https_listener_with_a_missing_secret_is_not_programmed(stack: FeatureStack) -> None:
    stack.write("https-routes.yaml", HTTPS_ROUTES)  # its own routes: it must pass alone, in any order
    await stack.until("/tls", 200, port=443, sni="second-example.org", host="second-example.org")
    text = (stack.dir / "gateway.yaml").read_text()
    stack.write(
        "gateway.yaml",
        text.replace(
            "hostname: second-example.org\n    tls: {certificateRefs: [{name: tls-cert}]}",
            "hostname: second-example.org\n    tls: {certificateRefs: [{name: missing}]}",
        ),
    )
    try:

        def conditions() -> dict[str, tuple[str, str]]:
            listeners = {lst["name"]: lst for lst in stack.status("Gateway", "features")["listeners"]}
            return {c["type"]: (c["status"], c["reason"]) for c in listeners["https-second"]["conditions"]}

        # Wait on the status. (This test used to wait for sni=second-example.org, Host example.org to
        # answer 421, but that was also the answer before the change, so the status could be read
        # before the change arrived.)
        await wait_until(
            lambda: conditions()["ResolvedRefs"] == ("False", "InvalidCertificateRef"),
            message="the missing Secret seen",
        )
        conds = conditions()
        assert conds["Programmed"] == ("False", "Invalid")
        assert conds["Accepted"] == ("True", "Accepted")
        # The other listeners on the port keep serving.
        await stack.until("/tls", 200, port=443, sni="example.org", host="example.org")
    finally:
        stack.write("gateway.yaml", text)
    await stack.until("/tls", 200, port=443, sni="second-example.org", host="second-example.org")


# --- mirroring where upstream has no test ------------------------------------------------------


def mirror(service: str = "v2", namespace: str = NS) -> str:
    return f"    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: {service}, namespace: {namespace}, port: 8080}}}}\n"


async def _mirrored(stack: FeatureStack, log: str, path: str) -> dict:
    await wait_until(lambda: stack.logs[log].echoed(path), message=f"{log} logging {path}")
    return next(h for h in reversed(stack.logs[log].heads()) if h["path"] == path)


async def test_the_mirror_sees_the_request_as_the_rules_filters_changed_it(stack: FeatureStack) -> None:
    """Envoy shadows the request after the route's header modifiers, URL rewrites (path and Host)
    and the chosen backendRef's own header modifier have been applied, so the mirror gets what
    the primary backend gets."""
    rules = rule(
        "/mirror-modified",
        HEADERS
        + rewrite(hostname="rewritten.example", path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"})
        + mirror(),
        backends="",
        extra="""    backendRefs:
    - name: v1
      port: 8080
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: v1}]}}]
""",
    )
    stack.write("mirror-filters.yaml", route_yaml("mirror-filters", rules, hostnames="  hostnames: [mirror.example]\n"))
    await stack.until("/mirror-modified", 200, host="mirror.example")
    uri = "/mirror-modified/a?gateway-api-conformance-request-id=8a7c"
    _, _, body = await stack.request(
        uri, host="mirror.example", headers={"X-Header-Remove": "r", "X-Header-Add": "orig"}
    )
    primary = echoed(body)
    assert primary["path"] == "/new/a?gateway-api-conformance-request-id=8a7c"
    shadow = await _mirrored(stack, "v2", primary["path"])
    assert shadow["headers"]["host"] == "rewritten.example" == primary["host"]
    assert shadow["headers"]["x-header-set"] == "set-overwrites-values"
    assert shadow["headers"]["x-header-add"] == "orig, header-val-1"
    assert "x-header-remove" not in shadow["headers"]
    assert shadow["headers"]["x-backend"] == "v1" and primary["headers"]["X-Backend"] == ["v1"]


async def test_a_mirror_listed_before_a_modifier_still_sees_the_modification(stack: FeatureStack) -> None:
    """Documented deviation from "filters SHOULD be applied in order": Envoy applies every
    route-level request modification before it shadows, whatever the filter order."""
    rules = rule(
        "/mirror-first", mirror() + HEADERS + rewrite(path={"type": "ReplaceFullPath", "replaceFullPath": "/full"})
    )
    stack.write(
        "mirror-order.yaml", route_yaml("mirror-order", rules, hostnames="  hostnames: [mirror-order.example]\n")
    )
    await stack.until("/mirror-first", 200, host="mirror-order.example")
    await stack.request("/mirror-first/x?id=order", host="mirror-order.example")
    shadow = await _mirrored(stack, "v2", "/full?id=order")
    assert shadow["headers"]["x-header-set"] == "set-overwrites-values"


GRANT = f"""apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: mirror-from-infra, namespace: other}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {NS}}}]
  to: [{{group: "", kind: Service}}]
"""


async def test_cross_namespace_mirror_needs_a_grant_and_stops_when_it_is_deleted(stack: FeatureStack) -> None:
    stack.write("grant.yaml", GRANT)
    rules = rule("/", mirror("other", "other"))
    stack.write("mirror-xns.yaml", route_yaml("mirror-xns", rules, hostnames="  hostnames: [xns.example]\n"))
    await wait_until(lambda: stack.route_condition("mirror-xns", "ResolvedRefs") == ("True", "ResolvedRefs"))
    await stack.until("/", 200, host="xns.example")
    await stack.request("/granted", host="xns.example")
    await _mirrored(stack, "other", "/granted")

    stack.remove("grant.yaml")
    await wait_until(
        lambda: stack.route_condition("mirror-xns", "ResolvedRefs") == ("False", "RefNotPermitted"),
        message="RefNotPermitted once the grant is gone",
    )
    assert stack.route_condition("mirror-xns", "Accepted") == ("True", "Accepted")
    await wait_until(lambda: _no_mirror_cluster(stack), message="Envoy dropping the mirror policy")
    for i in range(5):
        status, _, _ = await stack.request(f"/revoked-{i}", host="xns.example")
        assert status == 200  # the primary keeps serving
    await wait_until(lambda: stack.logs["v1"].echoed("/revoked-4"))

    # A sentinel that must reach the mirror, sent after them: the grant back, mirroring resumes.
    stack.write("grant.yaml", GRANT)
    await wait_until(lambda: stack.route_condition("mirror-xns", "ResolvedRefs") == ("True", "ResolvedRefs"))
    await wait_until(lambda: _has_mirror_cluster(stack), message="Envoy holding the mirror cluster again")

    # The cluster comes before the route that mirrors to it (make-before-break): resend the
    # sentinel until the route's mirror policy has arrived too.
    async def sentinel_mirrored() -> bool:
        await stack.request("/sentinel", host="xns.example")
        return stack.logs["other"].echoed("/sentinel")

    await wait_until(sentinel_mirrored, timeout=30, message="a sentinel reaching the mirror once the grant is back")
    assert not any(stack.logs["other"].echoed(f"/revoked-{i}") for i in range(5))


async def _no_mirror_cluster(stack: FeatureStack) -> bool:
    return not await _has_mirror_cluster(stack)


async def _has_mirror_cluster(stack: FeatureStack) -> bool:
    return "mirror/other/other/8080" in json.dumps(await stack.envoy.config_dump())


# --- parentRef port, port 8080, named rules ----------------------------------------------------


async def test_parent_ref_port_selects_the_8080_listener_and_named_rules_get_stats(stack: FeatureStack) -> None:
    rules = """  - name: the-named-rule
    matches: [{path: {type: PathPrefix, value: /named}}]
    backendRefs: [{name: v2, port: 8080}]
"""
    stack.write("port-8080.yaml", route_yaml("port-8080", rules, parent="    port: 8080\n"))
    _, _, body = await stack.until("/named", 200, port=8080)
    assert echoed(body)["pod"].startswith("v2")
    status, _, _ = await stack.request("/named", port=80)
    assert status == 404  # port 8080 only
    listeners = {lst["name"]: lst["attachedRoutes"] for lst in stack.status("Gateway", "features")["listeners"]}
    assert listeners["http-8080"] >= 1
    stats = await stack.envoy.admin_get("/stats?filter=the-named-rule")
    # Per-route stats under the rule's name: Envoy's only per-rule traffic counters.
    assert re.search(r"route\.httproute/infra/port-8080/rule/the-named-rule/match/0\.upstream_rq_200: [1-9]", stats), (
        stats
    )
