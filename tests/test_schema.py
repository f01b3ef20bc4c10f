"""Tests for controlplane.gatewayapi.schema: API-server-style validation and defaulting.

Expected error lines are the API server's exact wording, so a regression in the wording (which
users compare with ``kubectl apply`` output) fails here too.
"""

from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.gatewayapi import schema
from controlplane.gatewayapi.schema import ValidationError, supported, validate

GROUP = "gateway.networking.k8s.io"
CEL_SKIPPED = (
    '<nil>: Invalid value: "null": some validation rules were not checked because the object was '
    "invalid; correct the existing errors to complete validation"
)

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: foo, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: mirror, port: 8080}
        percent: 50
    backendRefs: [{name: backend, port: 80}]
"""

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: mirrorplane
  listeners:
  - {name: http, port: 80, protocol: HTTP}
"""

GATEWAY_CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: mirrorplane}
spec:
  controllerName: example.com/mirrorplane
"""

REFERENCE_GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-routes, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 80, targetPort: http, appProtocol: kubernetes.io/h2c}
  sessionAffinity: None
"""

ENDPOINT_SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-abc12
  namespace: default
  labels: {kubernetes.io/service-name: backend}
addressType: IPv4
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-1
ports:
- {name: http, port: 8080, protocol: TCP}
"""

SECRET = """
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
"""

NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata: {name: backends, labels: {team: mirror}}
"""

# Every schema node of the HTTPRoute CRD that carries CEL rules is present here, and valid.
KITCHEN_SINK_ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: kitchen-sink, namespace: default}
spec:
  parentRefs:
  - {name: gw, sectionName: http}
  - {name: gw, namespace: other, sectionName: https}
  hostnames: [example.com]
  rules:
  - name: everything
    matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-a, value: b}]
      queryParams: [{name: q, value: v}]
      method: GET
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: mirror, port: 8080}
        fraction: {numerator: 1, denominator: 10}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-a, value: b}], add: [{name: x-b, value: c}], remove: [x-c]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-a, value: b}]}
    - type: CORS
      cors: {allowOrigins: ["https://example.com"], allowMethods: [GET], allowHeaders: [x-a]}
    - type: URLRewrite
      urlRewrite: {hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs:
    - name: backend
      port: 80
      filters:
      - type: RequestMirror
        requestMirror:
          backendRef: {name: mirror, port: 8080}
          fraction: {numerator: 1}
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-a, value: b}]}
      - type: ResponseHeaderModifier
        responseHeaderModifier: {remove: [x-a]}
      - type: CORS
        cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"]}
      - type: RequestRedirect
        requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /moved}}
    - name: rewritten
      port: 80
      filters:
      - type: URLRewrite
        urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /x}}
    timeouts: {request: 10s, backendRequest: 5s}
  - name: redirect
    matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
"""

# The same for the Gateway CRD.
KITCHEN_SINK_GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kitchen-sink, namespace: default}
spec:
  gatewayClassName: mirrorplane
  addresses:
  - {type: IPAddress, value: 192.0.2.1}
  - {type: Hostname, value: gw.example.com}
  infrastructure:
    labels: {app: gw}
    annotations: {example.com/owner: team}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: example.com
    tls: {mode: Terminate, certificateRefs: [{name: cert}]}
  tls:
    frontend:
      default:
        validation: {caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]}
      perPort:
      - port: 443
        tls:
          validation: {caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]}
"""


def load(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


def errors_of(body: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        validate(body)
    return info.value.errors


def route_rule(body: dict[str, Any]) -> dict[str, Any]:
    return body["spec"]["rules"][0]


def mirror(body: dict[str, Any]) -> dict[str, Any]:
    return route_rule(body)["filters"][0]["requestMirror"]


# --- valid objects and defaults ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [ROUTE, GATEWAY, GATEWAY_CLASS, REFERENCE_GRANT, SERVICE, ENDPOINT_SLICE, SECRET, NAMESPACE,
     KITCHEN_SINK_ROUTE, KITCHEN_SINK_GATEWAY],
)  # fmt: skip
def test_valid_objects_pass(text: str) -> None:
    body = load(text)
    out = validate(body)
    assert out["metadata"] == body["metadata"]
    assert out["kind"] == body["kind"]


def test_validate_returns_a_copy_and_leaves_the_input_alone() -> None:
    body = load(ROUTE)
    before = copy.deepcopy(body)
    out = validate(body)
    assert body == before
    out["spec"]["rules"][0]["backendRefs"][0]["name"] = "changed"
    assert body == before


def test_httproute_defaults() -> None:
    body = load(ROUTE)
    second_mirror = {"backendRef": {"name": "m2", "port": 80}, "fraction": {"numerator": 5}}
    route_rule(body)["filters"].append({"type": "RequestMirror", "requestMirror": second_mirror})
    body["spec"]["rules"].append({"backendRefs": [{"name": "other", "port": 8080}]})
    spec = validate(body)["spec"]
    assert spec["parentRefs"] == [{"name": "gw", "group": GROUP, "kind": "Gateway"}]
    first, second = spec["rules"]
    assert first["backendRefs"] == [{"name": "backend", "port": 80, "group": "", "kind": "Service", "weight": 1}]
    assert first["filters"][0]["requestMirror"]["backendRef"] == {
        "name": "mirror", "port": 8080, "group": "", "kind": "Service"
    }  # fmt: skip
    assert first["filters"][1]["requestMirror"]["fraction"] == {"numerator": 5, "denominator": 100}
    assert second["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]


def test_defaults_are_themselves_defaulted() -> None:
    body = load(ROUTE)
    del body["spec"]["rules"]
    assert validate(body)["spec"]["rules"] == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]


def test_match_defaults() -> None:
    body = load(ROUTE)
    route_rule(body)["matches"] = [{"headers": [{"name": "x-a", "value": "b"}]}, {"path": {"value": "/x"}}]
    matches = route_rule(validate(body))["matches"]
    assert matches[0] == {
        "headers": [{"name": "x-a", "value": "b", "type": "Exact"}],
        "path": {"type": "PathPrefix", "value": "/"},
    }
    assert matches[1] == {"path": {"value": "/x", "type": "PathPrefix"}}


def test_gateway_listener_defaults() -> None:
    listener = validate(load(GATEWAY))["spec"]["listeners"][0]
    assert listener["allowedRoutes"] == {"namespaces": {"from": "Same"}}


def test_null_fields_are_dropped_then_defaulted() -> None:
    body = load(ROUTE)
    route_rule(body).update(matches=None, filters=None)
    rule = route_rule(validate(body))
    assert "filters" not in rule
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]


def test_status_is_kept_but_not_validated() -> None:
    body = load(ROUTE)
    body["status"] = {"parents": "not even a list"}
    assert validate(body)["status"] == {"parents": "not even a list"}


def test_v1beta1_httproute_is_accepted() -> None:
    body = load(ROUTE)
    body["apiVersion"] = f"{GROUP}/v1beta1"
    assert validate(body)["spec"]["parentRefs"][0]["kind"] == "Gateway"


# --- CEL rules ---------------------------------------------------------------------------------


def test_mirror_percent_and_fraction_are_exclusive() -> None:
    body = load(ROUTE)
    mirror(body)["fraction"] = {"numerator": 1}
    assert errors_of(body) == [
        'spec.rules[0].filters[0].requestMirror: Invalid value: "object": '
        "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter"
    ]


def test_fraction_numerator_above_denominator() -> None:
    body = load(ROUTE)
    del mirror(body)["percent"]
    mirror(body)["fraction"] = {"numerator": 3, "denominator": 2}
    assert errors_of(body) == [
        'spec.rules[0].filters[0].requestMirror.fraction: Invalid value: "object": '
        "numerator must be less than or equal to denominator"
    ]


def test_fraction_numerator_is_compared_with_the_default_denominator() -> None:
    body = load(ROUTE)
    del mirror(body)["percent"]
    mirror(body)["fraction"] = {"numerator": 101}
    assert errors_of(body) == [
        'spec.rules[0].filters[0].requestMirror.fraction: Invalid value: "object": '
        "numerator must be less than or equal to denominator"
    ]


def test_request_mirror_filter_needs_its_field() -> None:
    body = load(ROUTE)
    del route_rule(body)["filters"][0]["requestMirror"]
    assert errors_of(body) == [
        'spec.rules[0].filters[0]: Invalid value: "object": '
        "filter.requestMirror must be specified for RequestMirror filter.type"
    ]


@pytest.fixture
def evaluated(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every value a CEL program is evaluated on, from here on: the schemas are compiled afresh,
    so that no value an earlier test validated is remembered already (the CEL memo)."""
    from controlplane.gatewayapi import schema

    schema._compiled.cache_clear()
    seen: list[Any] = []
    real = schema._activation

    def activation(value: Any, *functions: Any) -> Any:
        seen.append(value)
        return real(value, *functions)

    monkeypatch.setattr(schema, "_activation", activation)
    return seen


def test_rules_are_skipped_only_for_values_they_already_accepted(evaluated: list[Any]) -> None:
    """The CEL memo: a filter that passed is not evaluated again; one that failed fails every time."""
    body = load(ROUTE)
    route_rule(body)["filters"][0]["requestMirror"]["backendRef"]["name"] = "memo-test"  # not seen before
    route_rule(body)["matches"][0]["path"]["value"] = "/memo-test"
    validate(body)
    first = len(evaluated)
    evaluated.clear()
    validate(body)
    # The small nodes (filters, backendRefs, this path) are remembered; with the projections, which
    # leave names and paths out of what the rules of filters and rule lists read, that is all of them.
    assert first > 0 and len(evaluated) < first
    bad = load(ROUTE)
    del route_rule(bad)["filters"][0]["requestMirror"]
    for _ in range(2):
        assert errors_of(bad) == [
            'spec.rules[0].filters[0]: Invalid value: "object": '
            "filter.requestMirror must be specified for RequestMirror filter.type"
        ]


def test_a_long_value_the_rules_accepted_is_remembered_too(evaluated: list[Any]) -> None:
    """A 16-rule route's rule list projects to 300 characters, the same for every such route: it
    is remembered by digest and evaluated once, not once per route; a failing one still fails."""
    from controlplane.gatewayapi import schema

    def sixteen_rules(tag: str) -> dict[str, Any]:
        body = load(ROUTE)
        body["spec"]["rules"] = [copy.deepcopy(route_rule(body)) for _ in range(16)]
        for i, rule in enumerate(body["spec"]["rules"]):
            rule["matches"][0]["path"]["value"] = f"/{tag}-{i}"
        return body

    def rule_lists() -> list[Any]:
        return [v for v in evaluated if isinstance(v, list) and len(v) == 16]

    validate(sixteen_rules("first"))
    assert len(rule_lists()) == 1 and len(repr(rule_lists()[0])) > schema._RuleSet.MEMO_CHARS
    validate(sixteen_rules("second"))
    assert len(rule_lists()) == 1
    bad = sixteen_rules("bad")
    for rule in bad["spec"]["rules"]:
        rule["matches"] = [copy.deepcopy(rule["matches"][0]) for _ in range(9)]  # 144 matches: over 128
    for _ in range(2):
        assert any("128" in e for e in errors_of(bad))


def test_service_backend_ref_needs_a_port() -> None:
    body = load(ROUTE)
    del route_rule(body)["backendRefs"][0]["port"]
    assert errors_of(body) == [
        'spec.rules[0].backendRefs[0]: Invalid value: "object": Must have port for Service reference'
    ]


def test_mirror_backend_ref_needs_a_port_too() -> None:
    body = load(ROUTE)
    del mirror(body)["backendRef"]["port"]
    assert errors_of(body) == [
        'spec.rules[0].filters[0].requestMirror.backendRef: Invalid value: "object": '
        "Must have port for Service reference"
    ]


def test_repeated_request_header_modifier_is_rejected() -> None:
    body = load(ROUTE)
    modifier = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-a", "value": "b"}]}}
    route_rule(body)["filters"] += [modifier, copy.deepcopy(modifier)]
    assert errors_of(body) == [
        'spec.rules[0].filters: Invalid value: "array": RequestHeaderModifier filter cannot be repeated'
    ]


def test_repeated_request_mirror_is_accepted() -> None:
    body = load(ROUTE)
    second = copy.deepcopy(route_rule(body)["filters"][0])
    second["requestMirror"]["backendRef"]["name"] = "mirror-2"
    route_rule(body)["filters"].append(second)
    assert len(route_rule(validate(body))["filters"]) == 2


def test_request_redirect_with_backend_refs_is_rejected() -> None:
    body = load(ROUTE)
    route_rule(body)["filters"].append({"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}})
    assert errors_of(body) == [
        'spec.rules[0]: Invalid value: "object": RequestRedirect filter must not be used together with backendRefs'
    ]


def test_replace_prefix_match_needs_one_path_prefix_match() -> None:
    body = load(ROUTE)
    rewrite = {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}
    route_rule(body)["filters"].append(rewrite)
    route_rule(body)["matches"][0]["path"]["type"] = "Exact"
    assert errors_of(body) == [
        'spec.rules[0]: Invalid value: "object": When using URLRewrite filter with path.replacePrefixMatch, '
        "exactly one PathPrefix match must be specified"
    ]


def test_path_value_rules() -> None:
    body = load(ROUTE)
    route_rule(body)["matches"][0]["path"]["value"] = "api//v1"
    assert errors_of(body) == [
        'spec.rules[0].matches[0].path: Invalid value: "object": '
        "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
        'spec.rules[0].matches[0].path: Invalid value: "object": '
        "must not contain '//' when type one of ['Exact', 'PathPrefix']",
    ]


def test_backend_timeout_cannot_exceed_request_timeout() -> None:
    body = load(ROUTE)
    route_rule(body)["timeouts"] = {"request": "1s", "backendRequest": "1m"}
    assert errors_of(body) == [
        'spec.rules[0].timeouts: Invalid value: "object": backendRequest timeout cannot be longer than request timeout'
    ]


def test_parent_refs_to_the_same_parent_need_section_names() -> None:
    body = load(ROUTE)
    body["spec"]["parentRefs"].append({"name": "gw", "sectionName": "http"})
    assert errors_of(body) == [
        'spec.parentRefs: Invalid value: "array": '
        "sectionName must be specified when parentRefs includes 2 or more references to the same parent"
    ]


def test_gateway_listener_names_must_be_unique() -> None:
    body = load(GATEWAY)
    body["spec"]["listeners"].append({"name": "http", "port": 8080, "protocol": "HTTP"})
    assert errors_of(body) == [
        'spec.listeners[1]: Duplicate value: {"name":"http"}',
        'spec.listeners: Invalid value: "array": Listener name must be unique within the Gateway',
    ]


def test_https_listener_needs_certificates() -> None:
    body = load(GATEWAY)
    tls: dict[str, Any] = {"certificateRefs": [], "options": {}}
    body["spec"]["listeners"].append({"name": "https", "port": 443, "protocol": "HTTPS", "tls": tls})
    assert errors_of(body) == [
        'spec.listeners[1].tls: Invalid value: "object": '
        "certificateRefs or options must be specified when mode is Terminate"
    ]


def test_rule_runtime_error_is_reported_like_the_api_server() -> None:
    # Upstream's rule reads certificateRefs/options without has(): with neither set, the server
    # itself answers with the evaluation error rather than the rule's message.
    body = load(GATEWAY)
    body["spec"]["listeners"].append({"name": "https", "port": 443, "protocol": "HTTPS", "tls": {}})
    [error] = errors_of(body)
    assert error.startswith('spec.listeners[1].tls: Invalid value: "object": no such key: ')
    assert error.endswith(" evaluating rule: certificateRefs or options must be specified when mode is Terminate")


def test_annotation_key_rule_uses_the_strings_extension() -> None:
    body = load(GATEWAY)
    body["spec"]["infrastructure"] = {"annotations": {"a" * 254 + "/key": "v"}}
    assert errors_of(body) == [
        'spec.infrastructure.annotations: Invalid value: "object": '
        "If specified, the annotation key's prefix must be a DNS subdomain not longer than 253 characters in total.",
    ]


def test_transition_rules_do_not_apply_on_create() -> None:
    # controllerName carries `self == oldSelf`; with no stored object it must not fire.
    assert validate(load(GATEWAY_CLASS))["spec"]["controllerName"] == "example.com/mirrorplane"


# --- OpenAPI schema ----------------------------------------------------------------------------


def test_unknown_fields_are_rejected() -> None:
    body = load(ROUTE)
    body["spec"]["foo"] = 1
    route_rule(body)["backendRefs"][0]["bar"] = "x"
    body["extra"] = True
    assert errors_of(body) == [
        'unknown field "spec.rules[0].backendRefs[0].bar"',
        'unknown field "spec.foo"',
        'unknown field "extra"',
    ]


def test_unknown_fields_stop_before_validation_like_strict_decoding() -> None:
    body = load(ROUTE)
    body["spec"]["foo"] = 1
    mirror(body)["fraction"] = {"numerator": 1}
    assert errors_of(body) == ['unknown field "spec.foo"']


def test_bad_enum() -> None:
    body = load(ROUTE)
    route_rule(body)["matches"][0]["path"]["type"] = "Foo"
    assert errors_of(body) == [
        'spec.rules[0].matches[0].path.type: Unsupported value: "Foo": '
        'supported values: "Exact", "PathPrefix", "RegularExpression"',
        CEL_SKIPPED,
    ]


def test_percent_above_100_is_rejected() -> None:
    body = load(ROUTE)
    mirror(body)["percent"] = 101
    assert errors_of(body) == [
        "spec.rules[0].filters[0].requestMirror.percent: Invalid value: 101: "
        "spec.rules[0].filters[0].requestMirror.percent in body should be less than or equal to 100"
    ]


def test_non_blocking_schema_errors_still_run_cel() -> None:
    body = load(ROUTE)
    mirror(body).update(percent=101, fraction={"numerator": 1})
    assert errors_of(body) == [
        "spec.rules[0].filters[0].requestMirror.percent: Invalid value: 101: "
        "spec.rules[0].filters[0].requestMirror.percent in body should be less than or equal to 100",
        'spec.rules[0].filters[0].requestMirror: Invalid value: "object": '
        "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
    ]


def test_blocking_schema_errors_skip_cel() -> None:
    body = load(ROUTE)
    mirror(body)["fraction"] = {"numerator": 1}
    route_rule(body)["backendRefs"][0]["port"] = "80"
    assert errors_of(body) == [
        'spec.rules[0].backendRefs[0].port: Invalid value: "string": '
        'spec.rules[0].backendRefs[0].port in body must be of type integer: "string"',
        CEL_SKIPPED,
    ]


def test_listener_port_minimum() -> None:
    body = load(GATEWAY)
    body["spec"]["listeners"][0]["port"] = 0
    assert errors_of(body) == [
        "spec.listeners[0].port: Invalid value: 0: spec.listeners[0].port in body should be greater than or equal to 1"
    ]


def test_missing_required_field() -> None:
    body = load(ROUTE)
    del body["spec"]["parentRefs"][0]["name"]
    assert errors_of(body) == ["spec.parentRefs[0].name: Required value", CEL_SKIPPED]


def test_pattern_too_long_and_too_many() -> None:
    body = load(ROUTE)
    body["spec"]["hostnames"] = ["Bad_Host", "a" * 254]
    body["spec"]["rules"] = [{}] * 17
    assert errors_of(body) == [
        'spec.hostnames[0]: Invalid value: "Bad_Host": spec.hostnames[0] in body should match '
        r"'^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'",
        "spec.hostnames[1]: Too long: may not be more than 253 bytes",
        "spec.rules: Too many: 17: must have at most 16 items",
        CEL_SKIPPED,
    ]


def test_ip_address_format_and_one_of() -> None:
    body = load(GATEWAY)
    body["spec"]["addresses"] = [{"value": "not-an-ip"}]
    assert errors_of(body) == [
        'spec.addresses[0]: Invalid value: {"value":"not-an-ip","type":"IPAddress"}: '
        "spec.addresses[0] in body must validate one and only one schema (oneOf)",
        'spec.addresses[0].value: Invalid value: "not-an-ip": '
        "spec.addresses[0].value in body must validate at least one schema (anyOf)",
        'spec.addresses[0].value: Invalid value: "not-an-ip": '
        'spec.addresses[0].value in body must be of type ipv4: "not-an-ip"',
    ]


def test_duplicate_header_match_names() -> None:
    body = load(ROUTE)
    route_rule(body)["matches"][0]["headers"] = [{"name": "x-a", "value": "1"}, {"name": "x-a", "value": "2"}]
    assert errors_of(body) == ['spec.rules[0].matches[0].headers[1]: Duplicate value: {"name":"x-a"}']


# --- metadata, kinds, the exception ------------------------------------------------------------


def test_missing_name() -> None:
    body = load(ROUTE)
    del body["metadata"]["name"]
    assert errors_of(body) == ["metadata.name: Required value: name or generateName is required", CEL_SKIPPED]


def test_bad_name_and_namespace() -> None:
    body = load(ROUTE)
    body["metadata"] = {"name": "Foo", "namespace": "a.b"}
    errors = errors_of(body)
    assert errors[0].startswith('metadata.name: Invalid value: "Foo": a lowercase RFC 1123 subdomain must consist')
    assert errors[1].startswith('metadata.namespace: Invalid value: "a.b": a lowercase RFC 1123 label must consist')


def test_exception_reads_like_kubectl() -> None:
    body = load(ROUTE)
    body["spec"]["foo"] = 1
    del route_rule(body)["backendRefs"]
    body["spec"]["bar"] = 2
    with pytest.raises(ValidationError) as info:
        validate(body)
    assert (info.value.kind, info.value.name) == ("HTTPRoute", "foo")
    assert str(info.value) == 'The HTTPRoute "foo" is invalid: unknown field "spec.foo"; unknown field "spec.bar"'


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        (f"{GROUP}/v1", "GatewayClass", True),
        (f"{GROUP}/v1beta1", "GatewayClass", True),
        (f"{GROUP}/v1", "Gateway", True),
        (f"{GROUP}/v1beta1", "Gateway", True),
        (f"{GROUP}/v1", "HTTPRoute", True),
        (f"{GROUP}/v1beta1", "HTTPRoute", True),
        (f"{GROUP}/v1", "ReferenceGrant", True),
        (f"{GROUP}/v1beta1", "ReferenceGrant", True),
        ("v1", "Service", True),
        ("discovery.k8s.io/v1", "EndpointSlice", True),
        ("v1", "Secret", True),
        ("v1", "Namespace", True),
        (f"{GROUP}/v1alpha2", "HTTPRoute", False),
        (f"{GROUP}/v1", "GRPCRoute", True),  # issue 13: GRPCRoute is served
        (f"{GROUP}/v1", "TLSRoute", False),
        ("apps/v1", "Deployment", False),
        ("discovery.k8s.io/v1beta1", "EndpointSlice", False),
        ("v1", "ConfigMap", False),
    ],
)
def test_supported(api_version: str, kind: str, expected: bool) -> None:
    assert supported(api_version, kind) is expected


def test_unsupported_kind_says_what_is_supported() -> None:
    body = load(ROUTE)
    body["kind"] = "TLSRoute"  # was GRPCRoute, served since issue 13
    [error] = errors_of(body)
    assert error.startswith(f'no matches for kind "TLSRoute" in version "{GROUP}/v1" (supported: ')
    assert f"{GROUP}/v1beta1 HTTPRoute" in error and "discovery.k8s.io/v1 EndpointSlice" in error


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, ["apiVersion not set", "kind not set"]),
        ({"kind": "Service", "metadata": {"name": "a"}}, ["apiVersion not set"]),
        ({"apiVersion": "v1", "kind": 3}, ["apiVersion and kind must be strings"]),
        (["not", "a", "mapping"], ["Object must be a mapping, not list"]),
    ],
)
def test_malformed_objects_are_rejected_not_crashed_on(body: Any, expected: list[str]) -> None:
    assert errors_of(body) == expected


# --- core kinds --------------------------------------------------------------------------------


def test_service_defaults() -> None:
    spec = validate(load(SERVICE))["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["ports"][0]["protocol"] == "TCP"
    assert spec["sessionAffinity"] == "None"  # unknown core fields pass through


def test_service_port_required_and_in_range() -> None:
    body = load(SERVICE)
    body["spec"]["ports"] = [{"name": "a"}, {"port": 70000, "targetPort": 8080}, {"port": 1, "targetPort": 1.5}]
    assert errors_of(body) == [
        "spec.ports[0].port: Required value",
        "spec.ports[1].port: Invalid value: 70000: spec.ports[1].port in body should be less than or equal to 65535",
        'spec.ports[2].targetPort: Invalid value: "number": '
        'spec.ports[2].targetPort in body must be of type integer,string: "number"',
    ]


def test_service_name_is_a_dns_1035_label() -> None:
    body = load(SERVICE)
    body["metadata"]["name"] = "1backend"
    [error] = errors_of(body)
    assert error.startswith('metadata.name: Invalid value: "1backend": a DNS-1035 label must consist')


@pytest.mark.parametrize(
    ("address_type", "address"), [("IPv4", "10.0.0.1"), ("IPv6", "fd00::1"), ("FQDN", "backend.example.com")]
)
def test_endpoint_slice_address_types(address_type: str, address: str) -> None:
    body = load(ENDPOINT_SLICE)
    body["addressType"] = address_type
    body["endpoints"][0]["addresses"] = [address]
    out = validate(body)
    assert out["endpoints"][0]["addresses"] == [address]


def test_endpoint_slice_defaults() -> None:
    body = load(ENDPOINT_SLICE)
    body["endpoints"] = None
    body["ports"] = [{"port": 80}]
    out = validate(body)
    assert out["endpoints"] == []
    assert out["ports"] == [{"port": 80, "name": "", "protocol": "TCP"}]


def test_endpoint_slice_required_fields() -> None:
    body = load(ENDPOINT_SLICE)
    del body["addressType"]
    body["endpoints"] = [{"conditions": {"ready": "yes"}}, {"addresses": []}]
    assert errors_of(body) == [
        "addressType: Required value",
        "endpoints[0].addresses: Required value",
        'endpoints[0].conditions.ready: Invalid value: "string": '
        'endpoints[0].conditions.ready in body must be of type boolean: "string"',
        "endpoints[1].addresses: Invalid value: 0: endpoints[1].addresses in body should have at least 1 items",
    ]


def test_endpoint_slice_bad_address_type() -> None:
    body = load(ENDPOINT_SLICE)
    body["addressType"] = "IPv5"
    assert errors_of(body) == ['addressType: Unsupported value: "IPv5": supported values: "IPv4", "IPv6", "FQDN"']


def test_secret_data_must_be_base64() -> None:
    body = load(SECRET)
    body["data"]["tls.key"] = "not base64!"
    assert errors_of(body) == [
        'data.tls.key: Invalid value: "not base64!": data.tls.key in body must be of type byte: "not base64!"'
    ]


def test_secret_type_default() -> None:
    body = load(SECRET)
    del body["type"]
    assert validate(body)["type"] == "Opaque"


def test_namespace_labels_are_strings() -> None:
    body = load(NAMESPACE)
    body["metadata"]["labels"]["version"] = 2
    assert errors_of(body) == [
        'metadata.labels.version: Invalid value: "integer": '
        'metadata.labels.version in body must be of type string: "integer"'
    ]


def test_cluster_scoped_namespace_field_is_ignored() -> None:
    body = load(GATEWAY_CLASS)
    body["metadata"]["namespace"] = "Not_A_Label"
    validate(body)


# --- every CEL rule in the CRDs ----------------------------------------------------------------


def crd_documents() -> list[dict[str, Any]]:
    crds = importlib.resources.files("controlplane.gatewayapi") / "crds"
    return [yaml.safe_load(f.read_text()) for f in crds.iterdir() if f.name.endswith(".yaml")]


def rules_in(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = list(node.get("x-kubernetes-validations", []))
        return found + [r for value in node.values() for r in rules_in(value)]
    if isinstance(node, list):
        return [r for value in node for r in rules_in(value)]
    return []


def compiled_rules(node: schema._Node) -> list[schema._Rule]:
    own = list(node.rules.rules) if node.rules else []
    kids = [*node.properties.values(), *(n for n in (node.items, node.additional) if n)]
    return own + [r for kid in kids for r in compiled_rules(kid)]


def served_versions() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(crd, v) for crd in crd_documents() for v in crd["spec"]["versions"] if v["served"]]


def test_every_crd_rule_compiles() -> None:
    specs = [r for crd in crd_documents() for v in crd["spec"]["versions"] for r in rules_in(v["schema"])]
    assert len({r["rule"] for r in specs}) >= 60
    for spec in specs:
        rule = schema._Rule.compile(spec)
        assert rule.is_transition == ("oldSelf" in spec["rule"])


@pytest.mark.parametrize(
    ("crd", "version"), served_versions(), ids=lambda x: x["spec"]["names"]["kind"] if "spec" in x else x["name"]
)
def test_every_spec_rule_is_compiled_into_the_schema(crd: dict[str, Any], version: dict[str, Any]) -> None:
    spec_rules = rules_in(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    expected = [r["rule"].strip() for r in spec_rules if "oldSelf" not in r["rule"]]
    compiled = schema._compiled(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
    assert sorted(r.source for r in compiled_rules(compiled.root)) == sorted(expected)


def cel_nodes(value: Any, node: schema._Node | None) -> list[tuple[Any, schema._Node]]:
    """Every (value as CEL sees it, schema node) pair of an escaped object, depth first."""
    if node is None:  # inside metadata, which has no schema
        return []
    found = [(value, node)]
    if isinstance(value, dict):
        by_cel_name = {cel_name: node.properties[name] for name, cel_name in node.cel_names.items()}
        for key, child in value.items():
            found += cel_nodes(child, by_cel_name.get(key) or node.additional)
    elif isinstance(value, list) and node.items is not None:
        for child in value:
            found += cel_nodes(child, node.items)
    return found


@pytest.mark.parametrize("text", [KITCHEN_SINK_ROUTE, KITCHEN_SINK_GATEWAY])
@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_every_spec_rule_evaluates(text: str, version: str) -> None:
    """Each rule, run on its own against its node of a valid object, returns true without error."""
    body = load(text)
    body["apiVersion"] = f"{GROUP}/{version}"
    root = schema._compiled(body["apiVersion"], body["kind"]).root
    problems: list[schema._Problem] = []
    escaped = schema._cel_check(validate(body), root, (), problems)
    assert problems == []
    evaluated: set[int] = set()
    for value, node in cel_nodes(escaped, root):
        for rule in node.rules.rules if node.rules else ():
            assert rule.check(value, "x", node.type or "") is None
            evaluated.add(id(rule))
    assert [r.source for r in compiled_rules(root) if id(r) not in evaluated] == []


# --- upstream conformance fixtures -------------------------------------------------------------

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance" / "upstream"  # every upstream file, vendored

# What the conformance suite substitutes before applying a fixture.
PLACEHOLDERS = {
    "{GATEWAY_CLASS_NAME}": "mirrorplane",
    "{GATEWAY_CONTROLLER_NAME}": "example.com/mirrorplane",
    "PLACEHOLDER_UNUSABLE_ADDRS": "192.0.2.1",
    "PLACEHOLDER_USABLE_ADDRS": "192.0.2.2",
}

# Fixtures of experimental-channel features, whose fields the standard-channel CRDs lack.
EXPERIMENTAL = {"httproute-retry.yaml": ['unknown field "spec.rules[0].retry"', 'unknown field "spec.rules[1].retry"']}


def conformance_files() -> list[Path]:
    return [CONFORMANCE / "base" / "manifests.yaml", *sorted((CONFORMANCE / "tests").glob("*.yaml"))]


def fixture_objects(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize("path", conformance_files(), ids=lambda p: p.name)
def test_conformance_fixtures(path: Path) -> None:
    """Upstream applies these to real API servers, so every supported object must pass.

    Files named *invalid* describe objects a controller must reject (unknown backend kinds,
    missing ReferenceGrants, bad TLS secrets...), not objects the API server refuses.
    """
    for body in fixture_objects(path):
        if not supported(body["apiVersion"], body["kind"]):
            assert errors_of(body)[0].startswith(f'no matches for kind "{body["kind"]}"')
        elif path.name in EXPERIMENTAL:
            assert errors_of(body) == EXPERIMENTAL[path.name]
        else:
            validate(body)


def _spec_route(**rule: Any) -> dict[str, Any]:
    body = load(ROUTE)
    body["spec"]["rules"][0].update(rule)
    return body


@pytest.mark.parametrize(
    "body",
    [
        _spec_route(backendRefs=[{"name": "svc", "port": "80"}]),  # type
        _spec_route(backendRefs=[{"name": "svc", "port": 80.0}]),  # a float is no integer
        _spec_route(backendRefs=[{"name": "svc", "port": True}]),  # nor is a boolean
        _spec_route(backendRefs=[{"name": "svc", "port": 70000}]),  # maximum
        _spec_route(backendRefs=[{"name": "x" * 300, "port": 80}]),  # maxLength
        _spec_route(matches=[{"path": {"type": "Nope", "value": "/"}}]),  # enum
        _spec_route(matches=[{"headers": [{"name": "bad name", "value": "v"}]}]),  # pattern
        _spec_route(backendRefs=[{"port": 80}]),  # required
    ],
)
def test_the_structural_fast_path_rejects_what_jsonschema_rejects(body: dict[str, Any]) -> None:
    """The fast validator only decides valid or not; it must never let through what jsonschema
    would word an error for."""
    compiled = schema._compiled(body["apiVersion"], body["kind"])
    decoded = schema._decode(body, compiled.root, (), [])
    assert list(compiled.validator.iter_errors(decoded)), "the case must be invalid for jsonschema"
    assert not schema._structurally_valid(compiled.fast, decoded)


def test_the_structural_fast_path_checks_formats() -> None:
    secret = load(SECRET)
    secret["data"]["tls.crt"] = "not base64!"
    compiled = schema._compiled("v1", "Secret")
    assert not schema._structurally_valid(compiled.fast, schema._decode(secret, compiled.root, (), []))
    with pytest.raises(ValidationError, match="tls.crt"):
        validate(secret)


@pytest.mark.parametrize("text", [ROUTE, GATEWAY, GATEWAY_CLASS, SERVICE, ENDPOINT_SLICE, SECRET, KITCHEN_SINK_ROUTE])
def test_valid_objects_take_the_structural_fast_path(text: str) -> None:
    body = load(text)
    compiled = schema._compiled(body["apiVersion"], body["kind"])
    assert schema._structurally_valid(compiled.fast, schema._decode(body, compiled.root, (), []))


def test_valid_objects_are_validated_without_importing_jsonschema() -> None:
    """jsonschema only words the errors of what the fast check rejects: a process that reads
    valid objects does not pay its memory."""
    import subprocess
    import sys

    script = (
        "import sys, yaml\n"
        "from controlplane.gatewayapi.schema import validate\n"
        f"for text in {[ROUTE, GATEWAY, SERVICE, ENDPOINT_SLICE]!r}:\n"
        "    validate(yaml.safe_load(text))\n"
        "print('jsonschema' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False", done.stderr


# Nodes _typed_check takes, with every keyword it handles, and values on each side of each limit.
TYPED_NODES = [
    {"type": "string"},
    {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"},
    {"type": "string", "enum": ["ab", "abc", 1]},
    {"type": "integer", "minimum": 1, "maximum": 3},
    {"type": "integer", "minimum": 1, "maximum": 3, "exclusiveMinimum": True, "exclusiveMaximum": True},
    {"type": "integer", "enum": [2, "2"]},
    {"type": "object", "required": ["a"], "minProperties": 1, "maxProperties": 2},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
    {"type": "object", "properties": {"a": {"type": "integer", "maximum": 2}}},
    {"type": "array", "minItems": 1, "maxItems": 2},
    {"type": "array", "items": {"type": "string", "maxLength": 2}},
]
TYPED_VALUES = [
    None,
    True,
    False,
    0,
    1,
    2,
    3,
    4,
    2.0,
    "",
    "a",
    "ab",
    "abc",
    "abcd",
    "AB",
    "2",
    [],
    ["a"],
    ["a", "ab"],
    ["a", "b", "c"],
    ["abc"],
    [1],
    {},
    {"a": 1},
    {"a": 3},
    {"a": "x"},
    {"b": "x"},
    {"b": 1},
    {"a": 1, "b": "x"},
    {"a": 1, "b": "x", "c": "y"},
]


@pytest.mark.parametrize("node", TYPED_NODES, ids=lambda n: str(sorted(n)))
def test_the_typed_fast_checks_give_the_general_checks_verdicts(node: dict[str, Any], monkeypatch: Any) -> None:
    """One closure per typed node must say what the general chain of one closure per keyword
    says, for every value on each side of each limit (and of another type)."""
    typed = schema._fast_check(node)
    assert schema._typed_check(node) is not None, "the node must take the typed path"
    monkeypatch.setattr(schema, "_typed_check", lambda *_: None)
    general = schema._fast_check(node)
    verdicts = [(value, typed(value), general(value)) for value in TYPED_VALUES]
    assert [v for v in verdicts if v[1] != v[2]] == []
    assert {v[1] for v in verdicts} == {True, False}, "the values must reach both verdicts"


def _schema_nodes(node: schema._Node) -> list[schema._Node]:
    kids = [*node.properties.values(), *(n for n in (node.items, node.additional) if n)]
    return [node, *(n for k in kids for n in _schema_nodes(k))]


def _cel_walk(body: dict[str, Any]) -> tuple[Any, list[str]]:
    compiled = schema._compiled(body["apiVersion"], body["kind"])
    decoded = schema._decode(body, compiled.root, (), [])
    problems: list[schema._Problem] = []
    return schema._cel_check(decoded, compiled.root, (), problems), [p.line for p in problems]


def _cel_failing_routes() -> list[dict[str, Any]]:
    """Kitchen-sink routes with a rule failing deep in a subtree: a Service backendRef without a
    port, a RequestMirror filter without its requestMirror."""
    no_port, no_mirror = load(KITCHEN_SINK_ROUTE), load(KITCHEN_SINK_ROUTE)
    del no_port["spec"]["rules"][0]["backendRefs"][0]["port"]
    no_mirror["spec"]["rules"][0]["filters"] = [{"type": "RequestMirror"}]
    return [no_port, no_mirror]


@pytest.mark.parametrize("path", conformance_files(), ids=lambda p: p.name)
def test_the_cel_walk_sees_a_cel_same_subtree_as_the_copying_walk_does(path: Path, monkeypatch: Any) -> None:
    """Where the walk takes a subtree as CEL sees it without copying it (``cel_same``), the
    value CEL sees and the problems must be those of the walk that copies and escapes every
    node: the conformance objects escape names (``namespace``) and repeat every kind's shape."""
    bodies = [b for b in fixture_objects(path) if supported(b["apiVersion"], b["kind"])]
    bodies += [load(KITCHEN_SINK_ROUTE), load(KITCHEN_SINK_GATEWAY), *_cel_failing_routes()]
    fast = [_cel_walk(b) for b in bodies]
    assert [len(problems) for _, problems in fast[-2:]] == [1, 1]
    kinds = {(b["apiVersion"], b["kind"]) for b in bodies}
    nodes = [n for kind in kinds for n in _schema_nodes(schema._compiled(*kind).root)]
    assert any(n.cel_same and n.cel_below for n in nodes)
    for node in nodes:
        monkeypatch.setattr(node, "cel_same", False)
    assert fast == [_cel_walk(b) for b in bodies]


def test_the_cel_walk_drops_the_fields_of_a_non_strict_object_the_schema_lacks() -> None:
    """A non-strict object keeps unknown fields through decoding, and CEL must not see them (as
    the API server prunes them): such a node is never ``cel_same``."""
    node = schema._compile_node(
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "!has(self.b)", "message": "b seen"}],
        },
        strict=False,
    )
    problems: list[schema._Problem] = []
    assert schema._cel_check({"a": "x", "b": "y"}, node, (), problems) == {"a": "x"}
    assert problems == []
