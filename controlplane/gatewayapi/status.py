"""Gateway API status: conditions and the status bodies of each kind.

The translator produces status bodies without ``lastTransitionTime`` so that translation stays a
pure, repeatable function; whoever writes status (the Kubernetes writer, or the admin API in file
mode) stamps the time, keeping the old one when a condition did not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

StatusKey = tuple[str, str, str]  # (kind, namespace, name)

NEGATIVE_POLARITY = frozenset({"Conflicted", "PartiallyInvalid"})
"""Condition types that say something is wrong when True (every other type: when False)."""


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | str  # True/False, or "Unknown"
    reason: str
    message: str
    observed_generation: int

    def to_dict(self) -> dict[str, Any]:
        status = self.status if isinstance(self.status, str) else ("True" if self.status else "False")
        return {
            "type": self.type,
            "status": status,
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
        }


def conditions(*conds: Condition) -> list[dict[str, Any]]:
    """Each a dict of its own (whoever holds a status body may change it)."""
    return [_as_dict(c).copy() for c in conds]


@lru_cache(maxsize=256)
def _as_dict(condition: Condition) -> dict[str, Any]:
    """Copied, never handed out: the same conditions repeat on every route that is well."""
    return condition.to_dict()


def is_problem(condition: dict[str, Any]) -> bool:
    """Whether a condition (a status body's dict) reports something wrong."""
    return bool(condition["status"] == "True") == (condition["type"] in NEGATIVE_POLARITY)


def conditions_in(body: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every condition in a status body, with where it sits: ``""`` (the object itself),
    ``listener NAME``, ``parent [NAMESPACE/]NAME`` or, for a policy, ``target KIND NAME[ rule R]``."""
    if not isinstance(body, dict):
        return
    for c in body.get("conditions") or []:
        yield where, c
    for listener in body.get("listeners") or []:
        yield from conditions_in(listener, f"listener {listener.get('name')}")
    for parent in body.get("parents") or []:
        ref = parent.get("parentRef", {})
        name = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else ref.get("name", "?")
        yield from conditions_in(parent, f"parent {name}")
    for ancestor in body.get("ancestors") or []:  # a policy's targets (GEP-713)
        ref = ancestor.get("ancestorRef", {})
        section = f" rule {ref['sectionName']}" if ref.get("sectionName") else ""
        yield from conditions_in(ancestor, f"target {ref.get('kind', '?')} {ref.get('name', '?')}{section}")


def has_problem(body: Any) -> bool:
    """Whether a condition :func:`conditions_in` finds reports something wrong, without naming
    where: a cold start logs 10,000 new statuses, nearly all well, and naming every place took
    as long as stamping them."""
    if not isinstance(body, dict):
        return False
    for c in body.get("conditions") or ():
        if bool(c["status"] == "True") == (c["type"] in NEGATIVE_POLARITY):  # is_problem(c)
            return True
    for field in _INNER:
        for inner in body.get(field) or ():
            if has_problem(inner):
                return True
    return False


_INNER = ("listeners", "parents", "ancestors")  # where conditions_in looks below a body


def stamp(new: dict[str, Any], old: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """Add lastTransitionTime to every condition in a status body, keeping the old time when a
    condition's status did not change (the Kubernetes convention)."""
    if not old:
        fresh: dict[str, Any] = _stamped_new(new, now)
        return fresh
    old_times: dict[tuple[str, str], tuple[Any, Any]] = {}
    for path, cond in _walk_conditions(old):
        old_times[(path, cond["type"])] = (cond.get("status"), cond.get("lastTransitionTime"))

    def visit(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "conditions" and isinstance(v, list):
                    out[k] = [_stamped(c, path, old_times, now) for c in v]
                else:
                    out[k] = visit(v, f"{path}/{k}")
            return out
        if isinstance(node, list):
            return [visit(v, f"{path}/{_identity(v, i)}") for i, v in enumerate(node)]
        return node

    stamped: dict[str, Any] = visit(new, "")
    return stamped


def _stamped_new(node: Any, now: str) -> Any:
    """What :func:`stamp` makes of a body seen for the first time (every condition at ``now``),
    without the paths that only matter for finding old times: a cold start stamps 10,000."""
    route = _stamped_route(node, now)
    return _stamped_any(node, now) if route is None else route


def _stamped_route(node: Any, now: str, parts: dict[tuple[Any, ...], Any] | None = None) -> dict[str, Any] | None:
    """A route's status, as the translator writes it (10,000 at a cold start), stamped in one
    expression per parent rather than a call per dict and list (a third less time); with
    ``parts``, each parent's parentRef and conditions are those kept there (:func:`share_parents`)
    when equal ones are, not copies. None for any other shape."""
    if type(node) is not dict or len(node) != 1 or type(parents := node.get("parents")) is not list:
        return None
    out_parents = []
    for parent in parents:
        stamped = _stamped_parent(parent, now, parts)
        if stamped is None:
            return None
        out_parents.append(stamped)
    return {"parents": out_parents}


def _stamped_parent(parent: Any, now: str, parts: dict[tuple[Any, ...], Any] | None) -> dict[str, Any] | None:
    """A route's parent status as _stamped_any stamps it, when it holds nothing but a parentRef of
    plain values, a controllerName and a list of conditions; None for any other shape."""
    if type(parent) is not dict or len(parent) != 3 or "controllerName" not in parent:
        return None
    ref, name, conds = parent.get("parentRef"), parent.get("controllerName"), parent.get("conditions")
    if type(ref) is not dict or isinstance(name, _NESTED) or type(conds) is not list:
        return None
    for value in ref.values():
        if isinstance(value, _NESTED):
            return None
    try:
        stamped = [{**c, "lastTransitionTime": now} for c in conds]
        if parts is None:
            return {**parent, "parentRef": ref.copy(), "conditions": stamped}
        shared_ref = _shared(parts, _ref_key(ref), ref.copy)
        return {**parent, "parentRef": shared_ref, "conditions": _shared(parts, _conds_key(stamped), lambda: stamped)}
    except (TypeError, AttributeError):  # a condition not a dict, or a nested value in one
        return None


def _shared(parts: dict[tuple[Any, ...], Any], key: tuple[Any, ...], make: Any) -> Any:
    found = parts.get(key)
    if found is None:
        found = parts[key] = make()
    return found


def _ref_key(ref: dict[str, Any]) -> tuple[Any, ...]:
    return ("parentRef", *ref.items())


def _conds_key(conds: list[dict[str, Any]]) -> tuple[Any, ...]:
    return ("conditions", *(tuple(c.items()) for c in conds))


def _stamped_any(node: Any, now: str) -> Any:
    if isinstance(node, dict):
        out = node.copy()
        for k, v in node.items():
            if k == "conditions" and isinstance(v, list):
                out[k] = [{**c, "lastTransitionTime": now} for c in v]
            elif isinstance(v, _NESTED):  # (a call per leaf value was half the cost)
                out[k] = _stamped_any(v, now)
        return out
    if isinstance(node, list):
        return [_stamped_any(v, now) if isinstance(v, _NESTED) else v for v in node]
    return node


_NESTED = (dict, list)


def _stamped(cond: dict[str, Any], path: str, old_times: dict[Any, Any], now: str) -> dict[str, Any]:
    prev_status, prev_time = old_times.get((path, cond["type"]), (None, None))
    time = prev_time if prev_status == cond["status"] and prev_time else now
    return {**cond, "lastTransitionTime": time}


def _identity(item: Any, index: int) -> str:
    if isinstance(item, dict):
        if "name" in item:
            return str(item["name"])
        if "parentRef" in item or "ancestorRef" in item:
            ref = item.get("parentRef") or item["ancestorRef"]
            return f"{ref.get('kind', '')}/{ref.get('namespace', '')}/{ref.get('name')}/{ref.get('sectionName', '')}/{ref.get('port', '')}"
    return str(index)


def _walk_conditions(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "conditions" and isinstance(v, list):
                for c in v:
                    yield path, c
            else:
                yield from _walk_conditions(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_conditions(v, f"{path}/{_identity(v, i)}")


def stamp_shared(
    body: dict[str, Any], old: dict[str, Any] | None, now: str, parts: dict[tuple[Any, ...], Any]
) -> dict[str, Any]:
    """``share_parents(stamp(body, old, now), parts)``. A route's first stamp (10,000 at a cold
    start, nearly all alike) takes its parents' parts from ``parts`` as it makes them, instead of
    copies dropped at once for the shared ones."""
    if old is None:
        route = _stamped_route(body, now, parts)
        if route is not None:
            return route
    return share_parents(stamp(body, old, now), parts)


def share_parents(body: dict[str, Any], parts: dict[tuple[Any, ...], Any]) -> dict[str, Any]:
    """``body`` with each route parent's parentRef and conditions replaced by equal ones kept in
    ``parts``, for bodies that are read only once made (the controller's stamped statuses, the
    status writer's patches): the routes stamped at once (10,000 at a cold start) then hold one
    of each, 12.4 → 4.9 MB for the controller's. A key is the items: ``1`` and ``True`` would make
    one key, but neither a condition (str, and an int generation) nor a schema-checked parentRef
    holds a bool; a nested value is unhashable and left as it is."""
    parents = body.get("parents")
    if type(parents) is not list:
        return body
    for parent in parents:
        if type(parent) is not dict:
            continue
        ref, conds = parent.get("parentRef"), parent.get("conditions")
        try:
            if type(ref) is dict:
                parent["parentRef"] = parts.setdefault(_ref_key(ref), ref)
            if type(conds) is list:
                parent["conditions"] = parts.setdefault(_conds_key(conds), conds)
        except (TypeError, AttributeError):  # a nested value, or a condition not a dict
            continue
    return body
