"""The store: every object the providers currently hold, indexed by kind and name.

Providers build a new ``Store`` on every change and hand it to the translator; the translator
only reads it. Keeping it immutable is what lets translation be a pure function of its input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress
from operator import attrgetter, is_not
from types import MappingProxyType
from typing import Any

from .model import (
    EndpointSlice,
    Gateway,
    GatewayClass,
    GRPCRoute,
    HTTPRoute,
    K8sObject,
    MirrorPolicy,
    Namespace,
    ReferenceGrant,
    Secret,
    Service,
)

NsName = tuple[str, str]
RouteKey = tuple[str, str, str]  # (kind, namespace, name)

# The route kinds, and the field of a Store holding each.
ROUTE_FIELDS = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes"}

_FIELD_BY_KIND = {
    "GatewayClass": "gatewayclasses",
    "Gateway": "gateways",
    "HTTPRoute": "httproutes",
    "GRPCRoute": "grpcroutes",
    "ReferenceGrant": "referencegrants",
    "Service": "services",
    "EndpointSlice": "endpointslices",
    "Secret": "secrets",
    "Namespace": "namespaces",
    "MirrorPolicy": "mirrorpolicies",
}


# What translation reads of an object of these kinds, where that is less than the whole object:
# of a Service, its spec (refs.resolve_backend), never its labels, annotations, resourceVersion
# or managedFields, which other tools change at will. The diff leaves out changes to the rest.
_READ: dict[str, Callable[[Any], Any]] = {"services": attrgetter("spec")}


def _frozen() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Store:
    gatewayclasses: Mapping[str, GatewayClass] = field(default_factory=_frozen)
    gateways: Mapping[NsName, Gateway] = field(default_factory=_frozen)
    httproutes: Mapping[NsName, HTTPRoute] = field(default_factory=_frozen)
    grpcroutes: Mapping[NsName, GRPCRoute] = field(default_factory=_frozen)
    referencegrants: Mapping[NsName, ReferenceGrant] = field(default_factory=_frozen)
    services: Mapping[NsName, Service] = field(default_factory=_frozen)
    endpointslices: Mapping[NsName, EndpointSlice] = field(default_factory=_frozen)
    secrets: Mapping[NsName, Secret] = field(default_factory=_frozen)
    namespaces: Mapping[str, Namespace] = field(default_factory=_frozen)
    mirrorpolicies: Mapping[NsName, MirrorPolicy] = field(default_factory=_frozen)

    @classmethod
    def from_objects(cls, objects: Iterable[K8sObject[Any]]) -> Store:
        """Index objects; a later object with the same kind/namespace/name replaces an earlier one."""
        buckets: dict[str, dict[Any, K8sObject[Any]]] = {f: {} for f in _FIELD_BY_KIND.values()}
        for obj in objects:
            fname = _FIELD_BY_KIND.get(obj.kind)
            if fname is None:
                continue
            key: Any = obj.name if obj.kind in ("GatewayClass", "Namespace") else (obj.namespace, obj.name)
            buckets[fname][key] = obj
        return cls(**{f: MappingProxyType(b) for f, b in buckets.items()})

    @staticmethod
    def index(kind: str, objects: Mapping[NsName, K8sObject[Any]]) -> tuple[str, Mapping[Any, K8sObject[Any]]]:
        """The field that holds ``kind``, and a copy of ``objects`` (all of that kind, by
        namespace and name) keyed as it keys them: a provider that keeps its objects per kind
        makes again only the kinds that changed (a dict of 10,000 copied in C)."""
        if kind in ("GatewayClass", "Namespace"):
            return _FIELD_BY_KIND[kind], MappingProxyType({name: obj for (_, name), obj in objects.items()})
        return _FIELD_BY_KIND[kind], MappingProxyType(dict(objects))

    def changed(self, other: Store) -> dict[str, set[Any]]:
        """Per field (``"services"``, ``"endpointslices"``, ...), the keys whose object differs
        between the two stores: added, removed or changed. Objects compare by content, or by what
        translation reads of them (``_READ``)."""
        out: dict[str, set[Any]] = {}
        for fname in _FIELD_BY_KIND.values():
            mine, theirs = getattr(self, fname), getattr(other, fname)
            if mine is theirs:
                continue
            # Identity first, in C loops (a provider hands on the objects that did not change,
            # and a store may hold 10,000 routes); only the rest is compared by content.
            names = list(theirs)
            suspects = set(compress(names, map(is_not, map(mine.get, names), theirs.values())))
            if len(mine) != len(theirs) or any(k not in mine for k in suspects):
                suspects |= mine.keys() - theirs.keys()
            read = _READ.get(fname)
            if read is None:
                keys = {k for k in suspects if mine.get(k) != theirs.get(k)}
            else:
                keys = {k for k in suspects if k not in mine or k not in theirs or read(mine[k]) != read(theirs[k])}
            if keys:
                out[fname] = keys
        return out

    def objects(self) -> Iterable[K8sObject[Any]]:
        for fname in _FIELD_BY_KIND.values():
            yield from getattr(self, fname).values()

    @cached_property
    def routes(self) -> Mapping[RouteKey, K8sObject[Any]]:
        """Every route of either kind, by (kind, namespace, name): the NACK quarantine treats them alike."""
        return MappingProxyType({r.key: r for f in ROUTE_FIELDS.values() for r in getattr(self, f).values()})

    def endpointslices_for(self, namespace: str, service: str) -> list[EndpointSlice]:
        """EndpointSlices labelled ``kubernetes.io/service-name`` for a Service, sorted by name for determinism."""
        return self._slices_by_service.get((namespace, service), [])

    @cached_property
    def _slices_by_service(self) -> dict[NsName, list[EndpointSlice]]:
        index: dict[NsName, list[EndpointSlice]] = {}
        for (ns, _), s in sorted(self.endpointslices.items()):
            service = s.metadata.labels.get("kubernetes.io/service-name")
            if service:
                index.setdefault((ns, service), []).append(s)
        return index

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        """Labels of a Namespace object; a namespace never declared has only the automatic name label."""
        ns = self.namespaces.get(namespace)
        labels = dict(ns.metadata.labels) if ns else {}
        labels.setdefault("kubernetes.io/metadata.name", namespace)
        return labels
