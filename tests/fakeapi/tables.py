"""meta.k8s.io/v1 Table output, which `kubectl get` asks for to print columns.

Columns are NAME, the CRD's additionalPrinterColumns (simple JSONPaths only),
and AGE — close to what a real cluster prints for the Gateway API kinds.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from .resources import Resource

Obj = dict[str, Any]


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    created = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _json_path(obj: Obj, path: str) -> Any:
    """``.a.b``, ``.a[*].b`` and ``.a[?(@.k=="v")].b``; anything else yields nothing."""
    values: list[Any] = [obj]
    for step in re.findall(r"\.([A-Za-z0-9_]+)|\[(\*|\?\(@\.[A-Za-z0-9_]+==\"[^\"]*\"\)|\d+)\]", path):
        name, index = step
        nxt: list[Any] = []
        for v in values:
            if name and isinstance(v, dict) and name in v:
                nxt.append(v[name])
            elif index and isinstance(v, list):
                if index == "*":
                    nxt.extend(v)
                elif index.isdigit():
                    nxt.extend(v[int(index) : int(index) + 1])
                else:
                    filter_ = re.match(r"\?\(@\.([A-Za-z0-9_]+)==\"([^\"]*)\"\)", index)
                    assert filter_ is not None  # the step pattern lets only this form through
                    key, want = filter_.groups()
                    nxt.extend(i for i in v if isinstance(i, dict) and i.get(key) == want)
        values = nxt
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return ",".join(str(v) for v in values)


def _columns(resource: Resource, version: str) -> list[Obj]:
    return [
        c for c in resource.printer_columns.get(version, ()) if c.get("jsonPath") != ".metadata.creationTimestamp"
    ]


def table(resource: Resource, version: str, objects: list[Obj], rv: str, include: str = "Metadata", cont: str = "") -> Obj:
    """A Table of ``objects`` (a list, one object, or one watch event's object)."""
    extra = _columns(resource, version)
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    definitions += [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in extra
    ]
    definitions.append({"name": "Age", "type": "date", "format": "", "description": "Age", "priority": 0})
    rows = []
    for obj in objects:
        meta = obj.get("metadata", {})
        cells: list[Any] = [meta.get("name", "")]
        cells += [_json_path(obj, c["jsonPath"]) for c in extra]
        cells.append(_age(meta.get("creationTimestamp")))
        if include == "Object":
            embedded = obj
        elif include == "None":
            embedded = None
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
        row: Obj = {"cells": cells}
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    metadata: Obj = {"resourceVersion": rv}
    if cont:
        metadata["continue"] = cont
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    }
