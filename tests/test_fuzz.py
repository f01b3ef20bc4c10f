"""Property-based fuzzing of the model and translator layers (hypothesis).

Generated Gateways and HTTPRoutes are near-valid: every field comes from a small pool of good,
edge and bad values (existing and missing Services, other namespaces, odd kinds, percent and
fraction edge cases, unknown filter types, junk where a field should be), so the examples reach
deep into the translator instead of stopping at the schema. Properties:
- loading never raises, and every document that is not served is reported with a message;
- translation never raises, and every route attached to our Gateway gets conditions with reasons;
- the Envoy output never names a cluster that is not served (the mirroring rule peers broke).
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from controlplane.gatewayapi.translator import translate
from controlplane.providers.files import parse_text
from controlplane.store import Store
from controlplane.xds.translator import INVALID_BACKEND_CLUSTER, build_resources

BASE = [
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "mp"},
     "spec": {"controllerName": "mirrorplane.io/gateway-controller"}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pipy", "namespace": "server"},
     "spec": {"ports": [{"port": 8080}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mirror", "namespace": "other"},
     "spec": {"ports": [{"port": 8080, "name": "http"}]}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "pipy-1", "namespace": "server", "labels": {"kubernetes.io/service-name": "pipy"}},
     "addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1"]}], "ports": [{"port": 9}]},
    {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
     "metadata": {"name": "g", "namespace": "other"},
     "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "server"}],
              "to": [{"group": "", "kind": "Service"}]}},
]  # fmt: skip

junk = st.one_of(st.none(), st.integers(-5, 70000), st.text(max_size=6), st.booleans(), st.just([]), st.just({}))


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A good value most of the time, junk (which the schema must reject, with a message) rarely."""
    return st.integers(0, 24).flatmap(lambda n: junk if n == 0 else value)


names = st.sampled_from(["pipy", "mirror", "missing", "pipy"])
namespaces = st.sampled_from([None, "server", "other", "elsewhere"])
ports = st.sampled_from([8080, 8080, 8080, 9090, None])
hostnames = st.sampled_from(["example.com", "*.example.com", "a.example.com", "foo.bar", "*.bar"])


VALID_REFS = [{"name": "pipy", "port": 8080}, {"name": "mirror", "namespace": "other", "port": 8080}]


@st.composite
def backend_ref(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 9)) < 6:  # mostly resolvable, so that examples reach the Envoy output
        return dict(draw(st.sampled_from(VALID_REFS)))
    ref: dict[str, Any] = {"name": draw(maybe(names))}
    port = draw(ports)
    if port is not None:
        ref["port"] = draw(maybe(st.just(port)))
    for key, strat in (("namespace", namespaces), ("weight", st.integers(0, 3)),
                       ("kind", st.sampled_from(["Service", "Bucket"])), ("group", st.sampled_from(["", "example.com"]))):  # fmt: skip
        value = draw(strat)
        if value is not None and draw(st.integers(0, 3)) == 0:
            ref[key] = draw(maybe(st.just(value)))
    return ref


@st.composite
def mirror_filter(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"backendRef": draw(backend_ref())}
    spec.pop("weight", None)
    choice = draw(st.integers(0, 8))
    if choice in (1, 2, 3):
        spec["percent"] = draw(maybe(st.sampled_from([0, 1, 20, 50, 99, 100])))
    elif choice in (4, 5, 6):
        fraction = {"numerator": draw(st.integers(0, 12))}
        if draw(st.booleans()):
            fraction["denominator"] = draw(st.integers(1, 12))
        spec["fraction"] = draw(maybe(st.just(fraction)))
    elif choice == 7:
        spec["percent"], spec["fraction"] = 10, {"numerator": 1}  # the CEL rule forbids both
    return {"type": "RequestMirror", "requestMirror": spec}


filters = st.one_of(
    mirror_filter(),
    mirror_filter(),
    mirror_filter(),
    st.just({"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "X-A", "value": "1"}]}}),
    st.just({"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["X-B"]}}),
    st.sampled_from([
        {"type": "RequestRedirect", "requestRedirect": {"statusCode": 302}},
        {"type": "URLRewrite", "urlRewrite": {"hostname": "x.example.com"}},
        {"type": "ExtensionRef", "extensionRef": {"group": "x.io", "kind": "K", "name": "n"}},
    ]),
    maybe(st.just({"type": "RequestMirror"})),  # junk, or the union CEL rule's missing requestMirror
)


@st.composite
def rule(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        path = {"type": draw(maybe(st.sampled_from(["PathPrefix", "Exact", "RegularExpression"]))),
                "value": draw(maybe(st.sampled_from(["/", "/v2", "/v2/", "/a/b", "/(.*"])))}  # fmt: skip
        match: dict[str, Any] = {"path": path}
        if draw(st.booleans()):
            match["headers"] = [{"name": "Version", "value": "two"}, {"name": "version", "value": "x"}]
        if draw(st.booleans()):
            match["method"] = draw(maybe(st.sampled_from(["GET", "POST"])))
        out["matches"] = [match]
    if draw(st.integers(0, 3)):
        out["filters"] = draw(st.lists(filters, min_size=1, max_size=3))
    backends = draw(st.lists(backend_ref(), max_size=3))
    if backends and draw(st.integers(0, 4)) == 0:
        backends[0]["filters"] = [draw(mirror_filter())]
    if backends:
        out["backendRefs"] = backends
    return out


@st.composite
def http_route(draw: st.DrawFn, index: int) -> dict[str, Any]:
    parent: dict[str, Any] = {"name": draw(st.sampled_from(["gw", "gw", "nope"]))}
    if draw(st.booleans()):
        parent["sectionName"] = draw(st.sampled_from(["http", "other", "web"]))
    if draw(st.integers(0, 3)) == 0:
        parent["port"] = draw(st.sampled_from([8000, 9000]))
    if draw(st.integers(0, 5)) == 0:
        parent["namespace"] = "server"
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": draw(st.lists(rule(), min_size=1, max_size=3))}
    if draw(st.booleans()):
        spec["hostnames"] = draw(st.lists(hostnames, max_size=2, unique=True))
    ns = draw(st.sampled_from(["server", "server", "other"]))
    return {"apiVersion": draw(st.sampled_from(["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"])),
            "kind": "HTTPRoute", "metadata": {"name": f"r{index}", "namespace": ns}, "spec": spec}  # fmt: skip


@st.composite
def gateway(draw: st.DrawFn) -> dict[str, Any]:
    listeners = []
    for name in draw(st.lists(st.sampled_from(["http", "other", "web"]), min_size=1, max_size=3, unique=True)):
        listener: dict[str, Any] = {"name": name, "port": draw(st.sampled_from([8000, 8000, 9000])),
                                    "protocol": draw(maybe(st.sampled_from(["HTTP", "HTTP", "HTTP", "HTTPS"])))}  # fmt: skip
        if draw(st.booleans()):
            listener["hostname"] = draw(hostnames)
        if draw(st.booleans()):
            listener["allowedRoutes"] = {"namespaces": {"from": draw(st.sampled_from(["Same", "All", "Selector"]))}}
        if listener["protocol"] == "HTTPS":
            listener["tls"] = {"certificateRefs": [{"name": "cert"}]}
        listeners.append(listener)
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "server"},
            "spec": {"gatewayClassName": "mp", "listeners": listeners}}  # fmt: skip


@st.composite
def documents(draw: st.DrawFn) -> list[Any]:
    docs: list[Any] = [*BASE, draw(gateway())]
    docs += [draw(http_route(i)) for i in range(draw(st.integers(1, 4)))]
    if draw(st.integers(0, 4)) == 0:  # junk documents and junk in random places
        docs.append(draw(st.one_of(junk, st.dictionaries(st.text(max_size=3), junk, max_size=3))))
    return docs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(documents())
def test_translation_never_raises_and_explains_everything(docs: list[Any]) -> None:
    text = yaml.safe_dump_all(docs)
    objects, errors = parse_text(text, "fuzz.yaml")
    assert all(e.message.strip() for e in errors)
    served_routes = {o.key for o in objects.values() if o.kind == "HTTPRoute"}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "HTTPRoute":
            key = ("HTTPRoute", doc["metadata"]["namespace"], doc["metadata"]["name"])
            reported = any(f"HTTPRoute {key[1]}/{key[2]}" in e.object for e in errors)
            assert (key in served_routes) != reported, f"{key}: neither served nor reported (or both)"

    store = Store.from_objects(objects.values())
    result = translate(store)

    gateway_served = ("server", "gw") in store.gateways
    for (ns, name), route in store.httproutes.items():
        if not gateway_served:
            break  # the generated Gateway itself was rejected (and reported) by the schema
        parents = [p for p in route.spec.get("parentRefs", []) if p["name"] == "gw" and (p.get("namespace") or ns) == "server"]
        if not parents:
            continue
        status = result.statuses[("HTTPRoute", ns, name)]
        assert len(status["parents"]) == len(parents)
        for parent in status["parents"]:
            types = {c["type"]: c for c in parent["conditions"]}
            assert {"Accepted", "ResolvedRefs"} <= types.keys()
            assert all(c["reason"] and c["message"] and c["observedGeneration"] == 1 for c in parent["conditions"])

    for gateway_ir in result.gateways.values():
        resources = build_resources(gateway_ir)
        served = set(resources.clusters)
        mirrored = 0
        for rc in resources.routes.values():
            for vh in rc.virtual_hosts:
                for r in vh.routes:
                    if not r.HasField("route"):
                        continue
                    for policy in r.route.request_mirror_policies:
                        mirrored += 1
                        assert policy.cluster in served, f"mirror names unserved cluster {policy.cluster}"
                    named = [r.route.cluster] if r.route.cluster else [c.name for c in r.route.weighted_clusters.clusters]
                    assert all(c in served or c == INVALID_BACKEND_CLUSTER for c in named)
        event(f"served mirror policies: {min(mirrored, 3)}")
