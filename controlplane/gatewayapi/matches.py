"""HTTPRoute matches → IR matches, and the precedence that orders them across routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import ir


def route_match(m: Mapping[str, Any]) -> ir.Match:
    path = m.get("path") or {"type": "PathPrefix", "value": "/"}
    if len(m) == 1 and "path" in m:  # most matches: a path alone (10,000 at a cold start)
        return ir.make_match(path.get("type", "PathPrefix"), path.get("value", "/"), (), (), None)
    headers, query = m.get("headers"), m.get("queryParams")
    return ir.make_match(
        path.get("type", "PathPrefix"),
        path.get("value", "/"),
        first_by_name(headers, fold_case=True) if headers else (),
        first_by_name(query, fold_case=False) if query else (),
        m.get("method"),
    )


def first_by_name(items: list[dict[str, Any]], *, fold_case: bool) -> tuple[ir.StringMatch, ...]:
    """The spec: when several matches name the same header/param, only the first counts."""
    seen, out = set(), []
    for item in items:
        key = item["name"].lower() if fold_case else item["name"]
        if key in seen:
            continue
        seen.add(key)
        out.append(ir.StringMatch(item["name"], item["value"], item.get("type", "Exact") == "RegularExpression"))
    return tuple(out)


_PATH_RANK = {"Exact": 0, "PathPrefix": 1}  # then RegularExpression


def precedence(match: ir.Match, created: Any, namespace: str, name: str, rule_index: int, mi: int) -> tuple[Any, ...]:
    """Gateway API route precedence: exact path, longest prefix, method, most headers, most query
    params, then the oldest route (``created``), then namespace/name, then rule and match order."""
    return (
        _PATH_RANK.get(match.path_type, 2),
        -len(match.path),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
        created,
        namespace,
        name,
        rule_index,
        mi,
    )
