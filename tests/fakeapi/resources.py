"""The kinds the fake API server serves, and their discovery documents.

Built-in Kubernetes kinds are listed by hand (only those mirrorplane, its
manifests and kubectl touch); Gateway API kinds come from the CRDs the project
ships, so served versions, scope and the status subresource match upstream.
A CRD created through the API registers its kinds the same way.
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    """One REST resource (group + plural), served under one or more versions."""

    group: str
    versions: tuple[str, ...]  # served; the first is the preferred (storage) one
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    categories: tuple[str, ...] = ()
    custom: bool = False  # from a CRD: takes no strategic merge patch
    # CRD additionalPrinterColumns per version, for kubectl's Table output.
    printer_columns: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict, compare=False)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """``httproutes.gateway.networking.k8s.io``, as the API server names it in errors."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v

    def api_resources(self) -> list[dict[str, Any]]:
        """The APIResourceList entries: the resource and its status subresource."""
        main = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.has_status:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


def _core(
    plural: str, kind: str, namespaced: bool = True, short: tuple[str, ...] = (), status: bool = False
) -> Resource:
    return Resource("", ("v1",), plural, kind, namespaced, short, status)


BUILTIN: tuple[Resource, ...] = (
    _core("namespaces", "Namespace", namespaced=False, short=("ns",), status=True),
    _core("services", "Service", short=("svc",), status=True),
    _core("secrets", "Secret"),
    _core("configmaps", "ConfigMap", short=("cm",)),
    _core("serviceaccounts", "ServiceAccount", short=("sa",)),
    _core("pods", "Pod", short=("po",), status=True),
    _core("endpoints", "Endpoints", short=("ep",)),
    _core("events", "Event", short=("ev",)),
    Resource("apps", ("v1",), "deployments", "Deployment", True, ("deploy",), True),
    Resource("batch", ("v1",), "jobs", "Job", True, (), True),
    Resource("discovery.k8s.io", ("v1",), "endpointslices", "EndpointSlice", True),
    Resource("coordination.k8s.io", ("v1",), "leases", "Lease", True),
    Resource("rbac.authorization.k8s.io", ("v1",), "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", ("v1",), "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("rbac.authorization.k8s.io", ("v1",), "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", ("v1",), "rolebindings", "RoleBinding", True),
    Resource(
        "apiextensions.k8s.io",
        ("v1",),
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        True,
    ),
    # Stored only (no admission is enforced): the Gateway API standard channel installs them.
    Resource(
        "admissionregistration.k8s.io",
        ("v1",),
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        False,
        (),
        True,
    ),
    Resource(
        "admissionregistration.k8s.io",
        ("v1",),
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        False,
    ),
)


def from_crd(crd: dict[str, Any]) -> Resource:
    """The Resource a CustomResourceDefinition declares (served versions, storage version first)."""
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec.get("versions", []) if v.get("served", True)]
    served.sort(key=lambda v: not v.get("storage", False))
    return Resource(
        group=spec["group"],
        versions=tuple(v["name"] for v in served),
        plural=names["plural"],
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames", ())),
        has_status=any("status" in (v.get("subresources") or {}) for v in served),
        categories=tuple(names.get("categories", ())),
        custom=True,
        printer_columns={v["name"]: tuple(v.get("additionalPrinterColumns", ())) for v in served},
    )


@functools.cache
def gateway_api_resources() -> tuple[Resource, ...]:
    """The Gateway API kinds, from the CRDs shipped in controlplane/gatewayapi/crds (read once)."""
    import controlplane.gatewayapi

    folder = os.path.join(os.path.dirname(controlplane.gatewayapi.__file__), "crds")
    resources = []
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    resources.append(from_crd(doc))
    return tuple(resources)


class Registry:
    """Resources by (group, plural), findable by URL parts, kind, plural or short name."""

    def __init__(self, resources: tuple[Resource, ...]) -> None:
        self._by_key: dict[tuple[str, str], Resource] = {}
        for r in resources:
            self.add(r)

    def add(self, resource: Resource) -> None:
        self._by_key[(resource.group, resource.plural)] = resource

    def remove(self, group: str, plural: str) -> None:
        """Stop serving a resource (a test control: a cluster without that CRD)."""
        del self._by_key[(group, plural)]

    def all(self) -> list[Resource]:
        return list(self._by_key.values())

    def get(self, group: str, version: str, plural: str) -> Resource | None:
        r = self._by_key.get((group, plural))
        return r if r is not None and version in r.versions else None

    def for_object(self, obj: dict[str, Any]) -> Resource:
        """The resource of an object, from its apiVersion and kind."""
        api_version = obj.get("apiVersion", "")
        group, _, version = api_version.rpartition("/")
        for r in self._by_key.values():
            if r.group == group and r.kind == obj.get("kind") and version in r.versions:
                return r
        raise KeyError(f"no resource for apiVersion={api_version} kind={obj.get('kind')}")

    def lookup(self, name: str) -> Resource:
        """By kind (``HTTPRoute``), plural, short name, or ``plural.group``; case-insensitive."""
        wanted = name.lower()
        for r in self._by_key.values():
            if wanted in (r.kind.lower(), r.plural, r.qualified, *r.short_names):
                return r
        raise KeyError(f"no resource named {name!r}")

    def groups(self) -> dict[str, list[str]]:
        """Group name → served versions (preferred first), in registration order; core excluded."""
        out: dict[str, list[str]] = {}
        for r in self._by_key.values():
            if not r.group:
                continue
            versions = out.setdefault(r.group, [])
            for v in r.versions:
                if v not in versions:
                    versions.append(v)
        return out

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return [r for r in self._by_key.values() if r.group == group and version in r.versions]
