"""controlplane.gatewayapi.refs: a backendRef (primary or mirror) becomes a cluster, or a
ResolvedRefs reason the route's status reports. The same rules on both paths."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.refs import reference_granted, resolve_backend
from controlplane.gatewayapi.store import Store
from controlplane.ir import Endpoint


def service(
    name: str, namespace: str = "app", *, ports: list[dict[str, Any]] | None = None, **spec: Any
) -> dict[str, Any]:
    body = {"ports": ports if ports is not None else [{"port": 80, "targetPort": 8080}], **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace}, "spec": body}


def endpoint_slice(service_name: str, addresses: list[str], *, address_type: str = "IPv4", ready: bool = True,
                   port_name: str = "", namespace: str = "app", name: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-x",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },  # fmt: skip
        "addressType": address_type,
        "ports": [{"name": port_name, "port": 8080}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addresses],
    }


def grant(namespace: str, *, from_namespace: str = "web", to: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "allow", "namespace": namespace},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": from_namespace}],
            "to": [to or {"group": "", "kind": "Service"}],
        },
    }


ROUTE = from_dict(
    schema.validate(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "web"},
            "spec": {"parentRefs": [{"name": "gw"}]},
        }
    )
)


def store(*docs: dict[str, Any]) -> Store:
    return Store.from_objects(from_dict(schema.validate(d)) for d in docs)


def resolve(s: Store, ref: dict[str, Any], *, mirror: bool = False) -> tuple[Any, Any]:
    return resolve_backend(s, ROUTE, ref, mirror=mirror)


def test_a_service_in_the_routes_namespace_needs_no_grant() -> None:
    s = store(service("api", "web"), endpoint_slice("api", ["10.0.0.2", "10.0.0.1"], namespace="web"))
    backend, problem = resolve(s, {"name": "api", "port": 80})
    assert problem is None
    assert backend.name == "web/api/80" and backend.discovery == "eds" and backend.protocol == "http1"
    assert backend.endpoints == (Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080))  # sorted
    assert backend.service == ("web", "api", 80)


def test_a_mirror_gets_its_own_cluster_name_and_the_same_checks() -> None:
    s = store(service("api", "web"))
    backend, problem = resolve(s, {"name": "api", "port": 80}, mirror=True)
    assert problem is None and backend.name == "mirror/web/api/80"
    _, problem = resolve(store(service("api", "app")), {"name": "api", "namespace": "app", "port": 80}, mirror=True)
    assert problem.reason == "RefNotPermitted" and problem.message.startswith("mirror backendRef to Service app/api")


@pytest.mark.parametrize(
    "docs, granted",
    [
        ([], False),
        ([grant("app")], True),
        ([grant("other")], False),  # the grant must sit in the target's namespace
        ([grant("app", from_namespace="elsewhere")], False),
        ([grant("app", to={"group": "", "kind": "Service", "name": "api"})], True),
        ([grant("app", to={"group": "", "kind": "Service", "name": "not-api"})], False),
        ([grant("app", to={"group": "", "kind": "Secret"})], False),
    ],
)
def test_a_cross_namespace_reference_needs_a_matching_reference_grant(
    docs: list[dict[str, Any]], granted: bool
) -> None:
    s = store(service("api", "app"), *docs)
    backend, problem = resolve(s, {"name": "api", "namespace": "app", "port": 80})
    assert (problem is None) is granted, problem
    assert (
        reference_granted(
            s, from_kind="HTTPRoute", from_namespace="web", to_namespace="app", to_kind="Service", to_name="api"
        )
        is granted
    )


@pytest.mark.parametrize(
    "ref, docs, reason",
    [
        ({"name": "api", "kind": "Pod", "port": 80}, [service("api", "web")], "InvalidKind"),
        ({"name": "api", "group": "ex.com", "kind": "Service", "port": 80}, [service("api", "web")], "InvalidKind"),
        ({"name": "gone", "port": 80}, [], "BackendNotFound"),
        ({"name": "api"}, [service("api", "web")], "BackendNotFound"),  # no port
        ({"name": "api", "port": 81}, [service("api", "web")], "BackendNotFound"),
        (
            {"name": "api", "port": 80},
            [service("api", "web", ports=[{"port": 80, "appProtocol": "kubernetes.io/wss"}])],
            "UnsupportedProtocol",
        ),
    ],
)
def test_what_cannot_be_a_cluster_says_why(ref: dict[str, Any], docs: list[dict[str, Any]], reason: str) -> None:
    backend, problem = resolve(store(*docs), ref)
    assert backend is None and problem.reason == reason, problem


def test_app_protocol_h2c_makes_an_http2_cluster() -> None:
    s = store(service("grpc", "web", ports=[{"port": 50051, "appProtocol": "kubernetes.io/h2c"}]))
    backend, _ = resolve(s, {"name": "grpc", "port": 50051})
    assert backend.protocol == "h2c"


def test_an_external_name_service_is_a_dns_cluster_on_the_ref_port() -> None:
    s = store(service("ext", "web", ports=[], type="ExternalName", externalName="api.example.com"))
    backend, problem = resolve(s, {"name": "ext", "port": 443})
    assert problem is None
    assert (backend.discovery, backend.endpoints, backend.service) == ("dns", (Endpoint("api.example.com", 443),), None)


def test_endpoints_not_ready_are_left_out_and_ip_slices_win_over_fqdn() -> None:
    s = store(
        service("api", "web"),
        endpoint_slice("api", ["10.0.0.1"], namespace="web", name="ready"),
        endpoint_slice("api", ["10.0.0.9"], namespace="web", name="not-ready", ready=False),
        endpoint_slice("api", ["api.internal"], namespace="web", name="fqdn", address_type="FQDN"),
    )
    backend, _ = resolve(s, {"name": "api", "port": 80})
    assert (backend.discovery, backend.endpoints) == ("eds", (Endpoint("10.0.0.1", 8080),))
    fqdn = endpoint_slice("api", ["api.internal"], namespace="web", address_type="FQDN")
    only_fqdn = store(service("api", "web"), fqdn)
    backend, _ = resolve(only_fqdn, {"name": "api", "port": 80})
    assert (backend.discovery, backend.endpoints) == ("dns", (Endpoint("api.internal", 8080),))


def test_a_slice_port_is_matched_by_the_service_ports_name() -> None:
    s = store(
        service("api", "web", ports=[{"name": "http", "port": 80}, {"name": "admin", "port": 81}]),
        endpoint_slice("api", ["10.0.0.1"], namespace="web", port_name="admin"),
    )
    assert resolve(s, {"name": "api", "port": 80})[0].endpoints == ()
    assert resolve(s, {"name": "api", "port": 81})[0].endpoints == (Endpoint("10.0.0.1", 8080),)
