"""Label and field selectors, parsed as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable
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
            checks.append(lambda o, k=m["nkey"]: k not in _labels(o))
        elif m["skey"]:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            if m["setop"] == "in":
                checks.append(lambda o, k=m["skey"], vs=values: _labels(o).get(k) in vs)
            else:
                checks.append(lambda o, k=m["skey"], vs=values: _labels(o).get(k) not in vs)
        elif m["op"] is None:
            checks.append(lambda o, k=m["key"]: k in _labels(o))
        elif m["op"] == "!=":
            checks.append(lambda o, k=m["key"], v=m["value"]: _labels(o).get(k) != v)
        else:
            checks.append(lambda o, k=m["key"], v=m["value"]: _labels(o).get(k) == v)
    return lambda obj: all(check(obj) for check in checks)


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
        if op == "!=":
            checks.append(lambda o, p=path, v=value: (_field(o, p) or "") != v)
        else:
            checks.append(lambda o, p=path, v=value: (_field(o, p) or "") == v)
    return lambda obj: all(check(obj) for check in checks)
