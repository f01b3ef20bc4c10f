"""Synthetic Gateway API input shared by the benchmarks: one Gateway, N HTTPRoutes, each with a
path match, a primary backend and a RequestMirror filter (half of them with a percentage)."""

from __future__ import annotations

from typing import Any

NAMESPACE = "bench"
SERVICES = 50


def objects(n_routes: int, *, gateway_port: int = 8000, endpoint_port: int = 9, tag: str = "") -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "mirrorplane"},
            "spec": {"controllerName": "mirrorplane.io/gateway-controller"},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": "mirrorplane",
                "listeners": [{"name": "http", "port": gateway_port, "protocol": "HTTP"}],
            },
        },
    ]
    for s in range(SERVICES):
        for name in (f"svc-{s}", f"mirror-{s}"):
            objs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"ports": [{"port": 8080}]},
                }
            )
            objs.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{name}-1",
                        "namespace": NAMESPACE,
                        "labels": {"kubernetes.io/service-name": name},
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": ["127.0.0.1"]}],
                    "ports": [{"port": endpoint_port}],
                }
            )
    for i in range(n_routes):
        objs.append(route(i, tag=tag))
    return objs


def route(i: int, *, tag: str = "") -> dict[str, Any]:
    mirror: dict[str, Any] = {"backendRef": {"name": f"mirror-{i % SERVICES}", "port": 8080}}
    if i % 2:
        mirror["percent"] = 10 + i % 90
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"route-{i}", "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": [f"host-{i}.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}{tag}"}}],
                    "filters": [{"type": "RequestMirror", "requestMirror": mirror}],
                    "backendRefs": [{"name": f"svc-{i % SERVICES}", "port": 8080}],
                }
            ],
        },
    }
