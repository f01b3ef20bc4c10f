"""The Gateway API v1.6.1 conformance harness (conformance/): its own logic, and one full run.

The full run is what `make test` relies on for conformance: every upstream test the issue asks
for must pass against real Envoys, and the GatewayClass must claim exactly the passing features.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from conformance import fixture, report, suite
from conformance.http import Captured, Case, Redirect, Target, compare
from conformance.status import Cond, ListenerExpectation, Parent, conditions_match, listeners_match, parents_match
from conformance.tests_mirror import binomial_band
from controlplane.gatewayapi.translator import DEFAULT_CONTROLLER, SUPPORTED_FEATURES

# Issue 3, "What must pass": the Core tests of CONFORMANCE.md §2 and these Extended features.
REQUIRED_EXTENDED = {
    "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors", "HTTPRouteRequestPercentageMirror",
    "HTTPRouteMethodMatching", "HTTPRouteQueryParamMatching", "HTTPRouteResponseHeaderModification",
    "HTTPRouteBackendRequestHeaderModification", "HTTPRoutePathRedirect", "HTTPRoutePortRedirect",
    "HTTPRouteSchemeRedirect", "HTTPRoute303RedirectStatusCode", "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode", "HTTPRouteHostRewrite", "HTTPRoutePathRewrite", "HTTPRouteRequestTimeout",
    "HTTPRouteBackendTimeout", "HTTPRouteParentRefPort", "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket", "HTTPRouteNamedRouteRule", "HTTPRouteCORS", "GatewayPort8080",
    "GatewayHTTPListenerIsolation", "GatewayHTTPSListenerDetectMisdirectedRequests",
}
REQUIRED_CORE = {
    "HTTPRouteSimpleSameNamespace", "HTTPRouteCrossNamespace", "HTTPRouteExactPathMatching", "HTTPRouteHeaderMatching",
    "HTTPRouteMatching", "HTTPRouteMatchingAcrossRoutes", "HTTPRoutePathMatchOrder", "HTTPRouteHostnameIntersection",
    "HTTPRouteListenerHostnameMatching", "HTTPRouteMultipleGateways", "HTTPRouteHTTPSListener",
    "HTTPRouteInvalidNonExistentBackendRef", "HTTPRouteInvalidBackendRefUnknownKind",
    "HTTPRouteInvalidCrossNamespaceParentRef", "HTTPRouteInvalidParentRefNotMatchingSectionName", "HTTPRouteNoBackendRefs",
    "HTTPRouteObservedGenerationBump", "HTTPRouteServiceTypes", "HTTPRouteWeight", "HTTPRouteRequestHeaderModifier",
    "HTTPRouteRedirectHostAndStatus", "GatewayWithAttachedRoutes", "HTTPRouteReferenceGrant",
    "HTTPRouteInvalidCrossNamespaceBackendRef", "HTTPRouteInvalidReferenceGrant",
    "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant", "GatewaySecretMissingReferenceGrant",
    "GatewaySecretInvalidReferenceGrant", "GatewaySecretReferenceGrantAllInNamespace", "GatewaySecretReferenceGrantSpecific",
}

TARGET = Target("127.0.0.1", 80, 18080)


def echo(status: int = 200, **body: object) -> Captured:
    base = {"path": "/", "method": "GET", "namespace": "ns", "pod": "infra-backend-v1-abc-xyz", "headers": {}}
    return Captured(status, {}, {**base, **body}, None)


# --- the registry ------------------------------------------------------------------------------


def test_every_required_test_is_registered_and_run() -> None:
    tests = {t.short_name: t for t in suite.all_tests()}
    missing = REQUIRED_CORE - set(tests)
    assert not missing, missing
    covered = {f for t in tests.values() if not t.skip_reason for f in t.features}
    assert REQUIRED_EXTENDED <= covered, REQUIRED_EXTENDED - covered
    assert all(not tests[name].skip_reason for name in REQUIRED_CORE)
    for t in tests.values():  # every manifest is a byte-for-byte upstream file in the repo
        for rel in t.manifests:
            assert (fixture.UPSTREAM / rel).is_file(), rel


def test_upstream_copy_is_recorded() -> None:
    text = (fixture.UPSTREAM / "UPSTREAM").read_text()
    assert "v1.6.1" in text and "8bb74df00e56ec8f944d48c25e6c1c9c2f6848e3" in text
    assert "Apache License" in (fixture.UPSTREAM / "LICENSE").read_text()
    assert "{GATEWAY_CLASS_NAME}" in fixture.BASE_MANIFESTS.read_text()  # never edited in place


# --- fixture -----------------------------------------------------------------------------------


def test_render_substitutes_placeholders() -> None:
    assert fixture.render('gatewayClassName: "{GATEWAY_CLASS_NAME}" {GATEWAY_CONTROLLER_NAME}') == (
        f'gatewayClassName: "{fixture.GATEWAY_CLASS}" {DEFAULT_CONTROLLER}'
    )


def test_echo_pods_follow_the_deployments() -> None:
    docs = fixture.load(fixture.BASE_MANIFESTS)
    deployments = fixture.echo_pods(docs, (7, 9))
    by_deployment: dict[str, list[fixture.PodSpec]] = {}
    for pod in deployments.pods:
        by_deployment.setdefault(f"{pod.namespace}/{pod.deployment}", []).append(pod)
    assert len(by_deployment["gateway-conformance-infra/infra-backend-v1"]) == 2  # replicas: 2
    assert len(by_deployment["gateway-conformance-infra/infra-backend-v3"]) == 1
    assert all(p.name.startswith(p.deployment + "-") for p in deployments.pods)
    assert len({p.ip for p in deployments.pods}) == len(deployments.pods)
    assert all(p.ip.startswith("127.7.9.") for p in deployments.pods)
    # Modes the local echo does not implement are reported, never silently dropped.
    # gRPC echo pods run since issue 13 (mirrorplane echo --grpc-port on echo-basic's port).
    grpc_v1 = by_deployment["gateway-conformance-infra/grpc-infra-backend-v1"]
    assert len(grpc_v1) == 2 and all(p.grpc for p in grpc_v1)
    assert not any(p.grpc for p in by_deployment["gateway-conformance-infra/infra-backend-v1"])
    assert "TLS_SERVER_CERT" in deployments.not_run["gateway-conformance-infra/tls-backend"]
    assert "coredns" in deployments.not_run["gateway-conformance-infra/coredns"]


def test_endpoint_slices_use_target_ports_and_ready_pods() -> None:
    docs = fixture.load(fixture.BASE_MANIFESTS)
    pods = fixture.echo_pods(docs, (1, 2)).pods
    ready = {p.name for p in pods if p.deployment != "infra-backend-v2"}
    slices = {(s["metadata"]["namespace"], s["metadata"]["labels"]["kubernetes.io/service-name"]): s for s in fixture.endpoint_slices(docs, pods, ready)}
    v1 = slices[("gateway-conformance-infra", "infra-backend-v1")]
    assert {(p["name"], p["port"]) for p in v1["ports"]} == {("first-port", 3000), ("second-port", 3001), ("third-port", 3000)}
    assert [e["conditions"]["ready"] for e in v1["endpoints"]] == [True, True]
    v2 = slices[("gateway-conformance-infra", "infra-backend-v2")]
    assert [e["conditions"]["ready"] for e in v2["endpoints"]] == [False, False]


def test_tls_secret_carries_the_requested_hosts() -> None:
    cert = fixture.self_signed(("*", "*.org"))
    secret = fixture.tls_secret("ns", "name", cert)
    parsed = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == ["*", "*.org"]
    assert secret["type"] == "kubernetes.io/tls" and b"PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"])


# --- HTTP comparison (upstream CompareRequest) --------------------------------------------------


def test_compare_status_backend_and_namespace() -> None:
    case = Case(path="/", backend="infra-backend-v1", namespace="ns")
    assert compare(TARGET, case, echo()) == ""
    assert "status code" in compare(TARGET, case, echo(404))
    assert "pod name" in compare(TARGET, Case(backend="infra-backend-v2", namespace="ns"), echo())
    assert "namespace" in compare(TARGET, Case(backend="infra-backend-v1", namespace="other"), echo())
    assert "path" in compare(TARGET, case, echo(path="/x"))


def test_compare_request_headers_join_values_and_ignore_case() -> None:
    case = Case(headers={"X-A": "1"}, expect_headers={"x-add": "a,b"}, expect_absent=("X-Gone",), namespace="ns")
    assert compare(TARGET, case, echo(headers={"X-Add": ["a", "b"]})) == ""
    assert "to be set to a,b" in compare(TARGET, case, echo(headers={"X-Add": ["a"]}))
    assert "not be set" in compare(TARGET, case, echo(headers={"X-Add": ["a", "b"], "X-Gone": ["v"]}))
    # Without expected headers, the request's own headers must arrive.
    assert "to be set" in compare(TARGET, Case(headers={"X-A": "1"}, namespace="ns"), echo())


def test_compare_timeouts_and_status_sets() -> None:
    assert compare(TARGET, Case(status=504), echo(408)) == ""
    assert compare(TARGET, Case(status_codes=(200, 204), check_request=False), Captured(204, {}, None, None)) == ""
    assert "200 or 204" in compare(TARGET, Case(status_codes=(200, 204)), Captured(403, {}, None, None))


def test_compare_response_headers() -> None:
    got = Captured(200, {"access-control-allow-methods": ["OPTIONS,GET"]}, None, None)
    lenient = Case(check_request=False, valid_header_values={"Access-Control-Allow-Methods": ("GET, OPTIONS", "OPTIONS, GET")}, ignore_whitespace=True)
    assert compare(TARGET, lenient, got) == ""
    strict = Case(check_request=False, valid_header_values={"access-control-allow-methods": ("OPTIONS, GET",)})
    assert "one of" in compare(TARGET, strict, got)
    assert "not be set" in compare(TARGET, Case(check_request=False, response_absent=("Access-Control-Allow-Methods",)), got)


@pytest.mark.parametrize(
    ("location", "expected", "why"),
    [
        ("http://example.org/p", Redirect(host="example.org"), ""),
        ("http://example.org:80/p", Redirect(host="example.org"), ""),
        ("http://example.org:8080/p", Redirect(host="example.org"), "80 or not set"),
        ("https://example.org/p", Redirect(scheme="https"), ""),
        ("https://example.org:8443/p", Redirect(scheme="https", port="8443"), ""),
        ("https://example.org/p", Redirect(scheme="http"), "scheme"),
        ("http://example.org/q", Redirect(path="/q"), ""),
        ("http://example.org/q", Redirect(), "path"),
    ],
)
def test_compare_redirects(location: str, expected: Redirect, why: str) -> None:
    got = Captured(302, {}, None, location)
    result = compare(TARGET, Case(path="/p", status=302, redirect=expected), got)
    assert (why in result) if why else result == ""


def test_host_header_follows_upstream_calculate_host() -> None:
    assert Target("10.0.0.1", 80, 1).host_header() == "10.0.0.1"
    assert Target("10.0.0.1", 8080, 1).host_header() == "10.0.0.1:8080"
    assert Target("10.0.0.1", 443, 1, "https").host_header() == "10.0.0.1"


def test_mirror_cases_get_a_unique_request_id() -> None:
    a, b = Case(path="/mirror").with_request_id(), Case(path="/mirror").with_request_id()
    assert a.path != b.path and a.path.startswith("/mirror?gateway-api-conformance-request-id=")
    assert a.expect_path == a.path


def test_percentage_band_is_three_sigma() -> None:
    assert binomial_band(20) == pytest.approx((73.17, 126.83), abs=0.01)
    assert binomial_band(50) == pytest.approx((216.46, 283.54), abs=0.01)
    assert binomial_band(35) == pytest.approx((143.00, 207.00), abs=0.01)


# --- status comparison -------------------------------------------------------------------------


def test_parents_match_namespace_and_generation() -> None:
    cond = {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 2}
    parent = {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}, "controllerName": "c", "conditions": [cond]}
    want = [Parent("ns", "gw", (Cond("Accepted", "True", "Accepted"),))]
    assert parents_match(want, [parent], "ns", "c", 2) == ""  # namespace may be nil in the same namespace
    assert "namespace" in parents_match(want, [parent], "other", "c", 2)  # ... but is required across namespaces
    assert "generation" in parents_match(want, [parent], "ns", "c", 3)
    assert "controllerName" in parents_match(want, [parent], "ns", "d", 2)
    assert "parent(s)" in parents_match(want, [parent, parent], "ns", "c", 2)


def test_conditions_and_listeners_match() -> None:
    conds = [{"type": "Accepted", "status": "True", "reason": "Accepted"}]
    assert conditions_match([Cond("Accepted", "True")], conds) == ""
    assert conditions_match([Cond("Accepted", "True", "Other")], conds) != ""
    lst: dict[str, Any] = {"name": "http", "attachedRoutes": 1, "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}], "conditions": conds}
    assert listeners_match([ListenerExpectation("http", 1, (Cond("Accepted", "True"),))], [lst]) == ""
    assert "attachedRoutes" in listeners_match([ListenerExpectation("http", 2, ())], [lst])
    # As upstream's listenersMatch: more supported kinds than expected is fine (GRPCRoute), fewer
    # is not, and an expected empty list must be empty.
    both = {**lst, "supportedKinds": [*lst["supportedKinds"], {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}]}
    assert listeners_match([ListenerExpectation("http", 1, ())], [both]) == ""
    grpc_only = ListenerExpectation("http", 1, (), (("gateway.networking.k8s.io", "GRPCRoute"),))
    assert "supportedKinds" in listeners_match([grpc_only], [lst])
    assert "supportedKinds" in listeners_match([ListenerExpectation("http", 1, (), ())], [lst])


# --- report ------------------------------------------------------------------------------------


def _result(name: str, features: tuple[str, ...], outcome: str) -> suite.Result:
    return suite.Result(suite.ConformanceTest(name, "", features, (), None), outcome, 1.0, "why" if outcome != "Passed" else "")


def test_report_shape_and_feature_verdicts() -> None:
    results = [
        _result("A", ("Gateway", "HTTPRoute"), "Passed"),
        _result("B", ("Gateway", "HTTPRoute", "HTTPRouteCORS"), "Failed"),
        _result("C", ("Gateway", "HTTPRoute", "HTTPRouteMethodMatching"), "Passed"),
        _result("D", ("Gateway", "HTTPRoute", "TLSRoute"), "Skipped"),
    ]
    run = suite.RunResult(results, 3.0, claimed_features=["Gateway", "HTTPRoute", "HTTPRouteCORS"])
    doc = report.build(run)
    assert (doc["apiVersion"], doc["kind"], doc["gatewayAPIVersion"], doc["gatewayAPIChannel"]) == (
        "gateway.networking.k8s.io/v1", "ConformanceReport", "v1.6.1", "standard",
    )
    profile = doc["profiles"][0]
    assert profile["name"] == "GATEWAY-HTTP"
    assert profile["core"] == {"result": "success", "statistics": {"Passed": 1, "Failed": 0, "Skipped": 0}}
    ext = profile["extended"]
    assert ext["statistics"] == {"Passed": 1, "Failed": 1, "Skipped": 1}
    assert ext["failedTests"] == ["B"] and ext["skippedTests"] == ["D"] and ext["reasons"] == {"B": "why", "D": "why"}
    assert ext["supportedFeatures"] == ["HTTPRouteMethodMatching"]
    assert "HTTPRouteCORS" in ext["unsupportedFeatures"]
    assert report.feature_mismatch(run) == (["HTTPRouteCORS"], ["HTTPRouteMethodMatching"])
    assert yaml.safe_load(report.dump(doc)) == doc


# --- the real thing ----------------------------------------------------------------------------


@pytest.mark.conformance
@pytest.mark.envoy
@pytest.mark.slow
async def test_full_conformance_run(tmp_path: Path) -> None:
    """Every upstream test, real Envoys: all required tests pass and the GatewayClass is honest."""
    with open(tmp_path / "progress.txt", "w") as progress:
        run = await suite.run(concurrency=4, out=progress)
    by_name = {r.test.short_name: r for r in run.results}
    failed = {r.test.short_name: r.reason for r in run.results if r.outcome == "Failed"}
    assert not failed, failed
    assert all(by_name[name].outcome == "Passed" for name in REQUIRED_CORE)
    passing = set(report.passing_features(run.results))
    assert REQUIRED_EXTENDED <= passing, REQUIRED_EXTENDED - passing
    assert run.claimed_features == sorted(SUPPORTED_FEATURES)
    assert report.feature_mismatch(run) == ([], []), "translator.SUPPORTED_FEATURES must list exactly the passing features"
    doc = report.build(run)
    assert not REQUIRED_EXTENDED & set(doc["profiles"][0]["extended"]["unsupportedFeatures"])
    assert run.seconds < 180, f"the whole run must stay short: {run.seconds:.0f}s"
