"""Label and field selectors, parsed as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

# One requirement: "key", "!key", "key=v", "key==v", "key!=v", "key in (a,b)", "key notin (a,b)".
_REQUIREMENT = re.compile(
    r"""\s*(?:
        (?P<not>!)\s*(?P<nkey>[^\s,!=()]+)
      | (?P<skey>[^\s,!=()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
      | (?P<key>[^\s,!=()]+)\s*(?:(?P<op>==|!=|=)\s*(?P<value>[^\s,!=()]*))?
    )\s*(?:,|$)""",
    re.VERBOSE,
)


class SelectorError(ValueError):
    """A selector the server cannot parse (answered with 400 BadRequest)."""


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def parse_label_selector(text: str | None) -> Matcher:
    """A predicate on objects for a ``labelSelector`` query parameter."""
    if not text or not text.strip():
        return lambda obj: True
    checks: list[Matcher] = []
    pos = 0
    while pos < len(text):
        m = _REQUIREMENT.match(text, pos)
        if m is None or m.end() == pos:
            raise SelectorError(f"unable to parse requirement: {text[pos:]!r}")
        pos = m.end()
        if m["nkey"]:
            checks.append(partial(_requirement, m["nkey"], "!", frozenset()))
        elif m["skey"]:
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            checks.append(partial(_requirement, m["skey"], m["setop"], values))
        elif m["op"] is None:
            checks.append(partial(_requirement, m["key"], "exists", frozenset()))
        else:
            checks.append(partial(_requirement, m["key"], "notin" if m["op"] == "!=" else "in", frozenset({m["value"]})))
    return lambda obj: all(check(obj) for check in checks)


def _requirement(key: str, op: str, values: frozenset[str], obj: dict[str, Any]) -> bool:
    """One parsed requirement; ``key=v`` is ``key in (v)`` and ``key!=v`` is ``key notin (v)``."""
    labels = _labels(obj)
    if op == "exists":
        return key in labels
    if op == "!":
        return key not in labels
    return (labels.get(key) in values) == (op == "in")


def _field(obj: dict[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return None if value is None else str(value)


def parse_field_selector(text: str | None) -> Matcher:
    """A predicate for a ``fieldSelector``: ``path=v``, ``path==v``, ``path!=v``, comma-joined."""
    if not text or not text.strip():
        return lambda obj: True
    checks: list[Matcher] = []
    for term in text.split(","):
        m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*([^\s]*)\s*", term)
        if m is None:
            raise SelectorError(f"invalid field selector: {term!r}")
        path, op, value = m.groups()
        checks.append(partial(_field_is, path, value, op != "!="))
    return lambda obj: all(check(obj) for check in checks)


def _field_is(path: str, value: str, equal: bool, obj: dict[str, Any]) -> bool:
    return ((_field(obj, path) or "") == value) == equal
