"""Typed models for the Kubernetes objects mirrorplane reads.

Objects arrive as dicts (YAML or the API server), are validated and defaulted against the
upstream CRD schemas (``schema.py``), and are then wrapped here. The spec shapes are TypedDicts
rather than classes: after schema defaulting every required key is present, so the translator
reads plain dicts at dict speed while type checkers still know the field names.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar

GATEWAY_GROUP = "gateway.networking.k8s.io"
MIRRORPLANE_GROUP = "mirrorplane.io"  # mirrorplane's own kinds (MirrorPolicy)

# (apiVersion, kind) pairs mirrorplane understands.
GATEWAY_API_KINDS = {"GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant"}
CORE_KINDS = {("v1", "Service"), ("discovery.k8s.io/v1", "EndpointSlice"), ("v1", "Secret"), ("v1", "Namespace")}


# --- shared ------------------------------------------------------------------------------------


class ParentReference(TypedDict):
    group: str
    kind: str
    name: str
    namespace: NotRequired[str]
    sectionName: NotRequired[str]
    port: NotRequired[int]


class BackendObjectReference(TypedDict):
    group: str
    kind: str
    name: str
    namespace: NotRequired[str]
    port: NotRequired[int]


# --- GatewayClass / Gateway --------------------------------------------------------------------


class GatewayClassSpec(TypedDict):
    controllerName: str
    description: NotRequired[str]


class RouteGroupKind(TypedDict):
    group: str
    kind: str


class RouteNamespaces(TypedDict):
    # "All" | "Same" | "Selector"
    from_: NotRequired[str]  # the real key is "from" (a Python keyword): read it with .get("from")
    selector: NotRequired[dict[str, Any]]


class AllowedRoutes(TypedDict):
    namespaces: dict[str, Any]
    kinds: NotRequired[list[RouteGroupKind]]


class GatewayTLSConfig(TypedDict):
    mode: NotRequired[str]
    certificateRefs: NotRequired[list[dict[str, Any]]]


class Listener(TypedDict):
    name: str
    hostname: NotRequired[str]
    port: int
    protocol: str
    tls: NotRequired[GatewayTLSConfig]
    allowedRoutes: AllowedRoutes


class GatewaySpec(TypedDict):
    gatewayClassName: str
    listeners: list[Listener]
    addresses: NotRequired[list[dict[str, Any]]]
    infrastructure: NotRequired[dict[str, Any]]  # read only to refuse a parametersRef


# --- HTTPRoute ---------------------------------------------------------------------------------


class HTTPPathMatch(TypedDict):
    type: Literal["Exact", "PathPrefix", "RegularExpression"]
    value: str


class HTTPHeaderMatch(TypedDict):
    type: Literal["Exact", "RegularExpression"]
    name: str
    value: str


class HTTPQueryParamMatch(TypedDict):
    type: Literal["Exact", "RegularExpression"]
    name: str
    value: str


class HTTPRouteMatch(TypedDict):
    path: NotRequired[HTTPPathMatch]
    headers: NotRequired[list[HTTPHeaderMatch]]
    queryParams: NotRequired[list[HTTPQueryParamMatch]]
    method: NotRequired[str]


class Fraction(TypedDict):
    numerator: int
    denominator: int  # CRD default 100


class HTTPRequestMirrorFilter(TypedDict):
    backendRef: BackendObjectReference
    percent: NotRequired[int]
    fraction: NotRequired[Fraction]


class HTTPRouteFilter(TypedDict):
    type: str
    requestMirror: NotRequired[HTTPRequestMirrorFilter]
    requestHeaderModifier: NotRequired[dict[str, Any]]
    responseHeaderModifier: NotRequired[dict[str, Any]]
    requestRedirect: NotRequired[dict[str, Any]]
    urlRewrite: NotRequired[dict[str, Any]]
    cors: NotRequired[dict[str, Any]]
    extensionRef: NotRequired[dict[str, Any]]


class HTTPBackendRef(BackendObjectReference):
    weight: int  # CRD default 1
    filters: NotRequired[list[HTTPRouteFilter]]


class HTTPRouteRule(TypedDict):
    name: NotRequired[str]
    matches: list[HTTPRouteMatch]  # CRD default [{path: {type: PathPrefix, value: /}}]
    filters: NotRequired[list[HTTPRouteFilter]]
    backendRefs: NotRequired[list[HTTPBackendRef]]
    timeouts: NotRequired[dict[str, str]]


class HTTPRouteSpec(TypedDict):
    parentRefs: NotRequired[list[ParentReference]]
    hostnames: NotRequired[list[str]]
    rules: list[HTTPRouteRule]


# --- GRPCRoute --------------------------------------------------------------------------------


class GRPCMethodMatch(TypedDict):
    type: Literal["Exact", "RegularExpression"]  # CRD default Exact
    service: NotRequired[str]
    method: NotRequired[str]


class GRPCRouteMatch(TypedDict):
    method: NotRequired[GRPCMethodMatch]
    headers: NotRequired[list[HTTPHeaderMatch]]


class GRPCRouteRule(TypedDict):
    name: NotRequired[str]
    matches: NotRequired[list[GRPCRouteMatch]]
    filters: NotRequired[list[HTTPRouteFilter]]
    backendRefs: NotRequired[list[HTTPBackendRef]]


class GRPCRouteSpec(TypedDict):
    parentRefs: NotRequired[list[ParentReference]]
    hostnames: NotRequired[list[str]]
    rules: NotRequired[list[GRPCRouteRule]]


# --- ReferenceGrant ----------------------------------------------------------------------------


class ReferenceGrantFrom(TypedDict):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(TypedDict):
    group: str
    kind: str
    name: NotRequired[str]


class ReferenceGrantSpec(TypedDict):
    # "from" is a keyword in Python: read it with spec["from"] / spec.get("from").
    to: list[ReferenceGrantTo]


# --- MirrorPolicy (mirrorplane.io/v1alpha1) ----------------------------------------------------


class PolicyTargetReference(TypedDict):
    """GEP-713 LocalPolicyTargetReferenceWithSectionName: a route (or one named rule) in the policy's namespace."""

    group: str
    kind: str
    name: str
    sectionName: NotRequired[str]


class MirrorPolicySpec(TypedDict):
    targetRefs: list[PolicyTargetReference]
    requestHeaderModifier: NotRequired[dict[str, Any]]
    hostname: NotRequired[str]
    keepShadowHostSuffix: NotRequired[bool]
    tracing: NotRequired[dict[str, Any]]
    comparison: NotRequired[dict[str, Any]]


# --- core --------------------------------------------------------------------------------------


class ServicePort(TypedDict):
    port: int
    name: NotRequired[str]
    protocol: NotRequired[str]
    appProtocol: NotRequired[str]
    targetPort: NotRequired[int | str]


class ServiceSpec(TypedDict):
    ports: NotRequired[list[ServicePort]]
    type: NotRequired[str]
    externalName: NotRequired[str]
    selector: NotRequired[dict[str, str]]


class EndpointSliceBody(TypedDict):
    """An EndpointSlice has no ``spec``: its top-level fields (addressType, endpoints, ports) live here."""

    addressType: Literal["IPv4", "IPv6", "FQDN"]
    endpoints: list[dict[str, Any]]
    ports: NotRequired[list[dict[str, Any]]]


# --- the wrapper -------------------------------------------------------------------------------
# Both classes have slots: a cluster's 10,000 HTTPRoutes are 20,000 instances, whose __dict__s
# held 1.5 MB more than their fields.


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str
    namespace: str = ""
    generation: int = 1
    # No uid: nothing reads it (the diff, the status writer and conflicts go by name,
    # resourceVersion and creationTimestamp), and 10,000 HTTPRoutes held 0.9 MB of them.
    resource_version: str = ""
    creation_timestamp: str = ""  # RFC 3339; orders route precedence ties (oldest first)
    # Read only: from_dict gives every object without labels (or annotations) one shared empty
    # mapping; an empty dict of each was 1.3 MB at 10,000 HTTPRoutes.
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


SpecT = TypeVar("SpecT")


@dataclass(frozen=True, slots=True)
class K8sObject(Generic[SpecT]):
    """One validated, defaulted object.

    ``spec`` holds the object's spec (or, for kinds with no spec such as EndpointSlice and
    Secret, the top-level body minus apiVersion/kind/metadata/status). ``source`` names where it
    came from (a file path, or ``kubernetes``) so that errors can point at it.
    """

    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    source: str = ""
    # (kind, namespace, name), made once: the translator's memo, the statuses and the status
    # writer each key a dict by it, and a tuple made per call was one more per dict (40,000
    # tuples, 2.4 MB, kept for 10,000 HTTPRoutes).
    key: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.kind, self.metadata.namespace, self.metadata.name))

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def generation(self) -> int:
        return self.metadata.generation

    def describe(self) -> str:
        ns = f"{self.metadata.namespace}/" if self.metadata.namespace else ""
        return f"{self.kind} {ns}{self.metadata.name}"


GatewayClass = K8sObject[GatewayClassSpec]
Gateway = K8sObject[GatewaySpec]
HTTPRoute = K8sObject[HTTPRouteSpec]
GRPCRoute = K8sObject[GRPCRouteSpec]
ReferenceGrant = K8sObject[dict[str, Any]]
Service = K8sObject[ServiceSpec]
EndpointSlice = K8sObject[EndpointSliceBody]
Secret = K8sObject[dict[str, Any]]
Namespace = K8sObject[dict[str, Any]]
MirrorPolicy = K8sObject[MirrorPolicySpec]

_NONE: Mapping[str, str] = MappingProxyType({})  # no labels, no annotations
_NO_SPEC_KINDS = {"EndpointSlice", "Secret", "Namespace"}
_CLUSTER_SCOPED = {"GatewayClass", "Namespace"}


def from_dict(body: dict[str, Any], *, source: str = "", default_namespace: str = "default") -> K8sObject[Any]:
    """Wrap an already validated and defaulted object body.

    Namespaced objects without ``metadata.namespace`` land in ``default_namespace``, as
    ``kubectl apply`` would put them in the current namespace.
    """
    meta = body.get("metadata") or {}
    # What 10,000 objects of a kind repeat, held once (JSON decoding gives each its own copy:
    # 2 MB at 10,000 HTTPRoutes). Objects made in the same second share their timestamp.
    kind = sys.intern(body["kind"])
    namespace = "" if kind in _CLUSTER_SCOPED else sys.intern(meta.get("namespace") or default_namespace)
    if kind in _NO_SPEC_KINDS:
        spec = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    else:
        spec = body.get("spec") or {}
    return K8sObject(
        api_version=sys.intern(body["apiVersion"]),
        kind=kind,
        metadata=ObjectMeta(
            name=meta["name"],
            namespace=namespace,
            generation=int(meta.get("generation") or 1),
            resource_version=str(meta.get("resourceVersion", "")),
            creation_timestamp=sys.intern(str(meta.get("creationTimestamp") or "")),
            labels=dict(labels) if (labels := meta.get("labels")) else _NONE,
            annotations=dict(annotations) if (annotations := meta.get("annotations")) else _NONE,
        ),
        spec=spec,
        source=source,
    )
