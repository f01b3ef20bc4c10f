"""What the API server does to a Gateway API object on every write, status writes included.

It runs the CRD's structural schema: defaults are filled in, unknown fields
are pruned (or refused with ``fieldValidation=Strict``, as `kubectl apply`
without --validate=false asks), and the OpenAPI and CEL rules reject invalid
objects with 422 Invalid. The checks are controlplane.gatewayapi.schema, the
code the file provider validates with, so a status writer that a real
cluster would refuse fails here too. schema.validate() leaves .status alone
(files carry none), so the status schema is compiled here with that module's
internals (_crd, _KindSchema, _decode): one implementation of the rules.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
from typing import Any

from controlplane.gatewayapi import schema

from .resources import Resource
from .store import ApiError, Obj

_UNKNOWN = re.compile(r'^unknown field "(.+)"$')


def _drop(obj: Any, path: str) -> None:
    """Remove the field at a schema error path such as ``spec.rules[0].foo``."""
    tokens: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        tokens.append(int(index) if index else name)
    for token in tokens[:-1]:
        try:
            obj = obj[token]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(obj, dict):
        obj.pop(tokens[-1], None)


def _invalid(resource: Resource, obj: Obj, errors: list[str]) -> ApiError:
    name = (obj.get("metadata") or {}).get("name", "")
    return ApiError(
        422,
        "Invalid",
        f'{resource.kind}.{resource.group} "{name}" is invalid: {"; ".join(errors)}',
        {
            "name": name,
            "group": resource.group,
            "kind": resource.kind,
            "causes": [_cause(e) for e in errors],
        },
    )


def _cause(error: str) -> dict[str, str]:
    """A field error line ``field: detail`` as the server's cause (kubectl prints ``field: message``)."""
    field, sep, detail = error.partition(": ")
    if not sep or " " in field:
        return {"reason": "FieldValueInvalid", "message": error, "field": ""}
    return {"reason": "FieldValueInvalid", "message": detail, "field": field}


@functools.cache
def _status_schema(api_version: str, kind: str) -> Any:
    """The CRD version's schema with only .status checked (None if it has no status)."""
    crd = schema._crd(kind)
    status = crd.versions[api_version.rpartition("/")[2]].get("properties", {}).get("status")
    if status is None:
        return None
    whole = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {},
            "spec": {},
            "status": status,
        },
    }
    return schema._KindSchema.build(
        whole, strict=True, name_format=schema._DNS1123_SUBDOMAIN, namespaced=crd.namespaced
    )


def _admit_status(resource: Resource, obj: Obj, strict: bool) -> Obj:
    compiled = _status_schema(obj["apiVersion"], obj["kind"])
    if compiled is None or "status" not in obj:
        return obj
    unknown: list[str] = []
    out = schema._decode(obj, compiled.root, (), unknown)  # defaulted, unknown fields pruned
    if unknown and strict:
        raise _invalid(resource, obj, [f'unknown field "{path}"' for path in unknown])
    problems = compiled.problems(out)
    if problems:
        raise _invalid(resource, obj, [p.line for p in problems])
    return out


def admit(resource: Resource, obj: Obj, old: Obj | None, strict: bool, validate: bool = True) -> Obj:
    """The object as stored: defaulted and (``validate``) checked; raises ApiError 422 if refused."""
    if resource.kind == "Service" and not resource.group:
        return _service_defaults(obj, old)
    if resource.kind == "CustomResourceDefinition":
        return _crd_established(obj)
    if not validate or not resource.custom or not schema.supported(obj.get("apiVersion", ""), obj.get("kind", "")):
        return obj
    return _admit_status(resource, _admit_spec(resource, obj, strict), strict)


def _crd_established(obj: Obj) -> Obj:
    """The status the apiextensions controllers write at once, which `kubectl wait
    --for=condition=Established` waits for."""
    now = obj["metadata"].get("creationTimestamp", "")
    conditions = [
        {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": now}
        for t, r, m in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        )
    ]
    names = (obj.get("spec") or {}).get("names", {})
    storage = [v["name"] for v in (obj.get("spec") or {}).get("versions", []) if v.get("storage")]
    return {**obj, "status": {"acceptedNames": names, "conditions": conditions, "storedVersions": storage}}


_cluster_ips = itertools.count(10)


def _service_defaults(obj: Obj, old: Obj | None) -> Obj:
    """What the Service REST strategy and IP allocator add: a ClusterIP (kept across updates),
    the type, and each port's protocol and targetPort."""
    obj = copy.deepcopy(obj)  # a status write shares the stored spec
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    old_spec = (old or {}).get("spec") or {}
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        if old_spec.get("clusterIP"):
            spec["clusterIP"], spec["clusterIPs"] = (
                old_spec["clusterIP"],
                old_spec.get("clusterIPs", [old_spec["clusterIP"]]),
            )
        else:
            n = next(_cluster_ips)
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
    if spec.get("clusterIP") and spec["clusterIP"] != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    return obj


def _admit_spec(resource: Resource, obj: Obj, strict: bool) -> Obj:
    try:
        return schema.validate(obj)
    except schema.ValidationError as err:
        unknown = [m.group(1) for m in map(_UNKNOWN.match, err.errors) if m]
        if strict or len(unknown) != len(err.errors):
            raise _invalid(resource, obj, err.errors) from None
    for path in unknown:
        _drop(obj, path)
    try:
        return schema.validate(obj)
    except schema.ValidationError as err:
        raise _invalid(resource, obj, err.errors) from None
