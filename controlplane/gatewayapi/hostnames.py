"""Hostname intersection between listeners and routes, and listener isolation.

Gateway API hostnames are either exact (``foo.example.com``) or a leading wildcard
(``*.example.com``, matching one or more labels in front of ``example.com``). A route attached to
a listener serves the intersection of the two; a hostname that a more specific listener on the
same port also matches belongs to that listener only (GatewayHTTPListenerIsolation).
"""

from __future__ import annotations

from collections.abc import Iterable

CATCH_ALL = "*"


def _wild(h: str) -> bool:
    return h.startswith("*.")


def matches(pattern: str | None, host: str) -> bool:
    """Does a listener/route hostname ``pattern`` (None = any) cover the exact ``host``?"""
    if pattern is None:
        return True
    if _wild(pattern):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def intersect(listener: str | None, route_hostnames: Iterable[str]) -> list[str]:
    """The hostnames a route serves on a listener; ``["*"]`` when neither restricts it.

    An empty result means the route has hostnames and none intersects the listener's, which the
    spec reports as Accepted=False/NoMatchingListenerHostname.
    """
    route_hostnames = list(route_hostnames)
    if not route_hostnames:
        return [listener or CATCH_ALL]
    out: list[str] = []
    for h in route_hostnames:
        e = _intersect_one(listener, h)
        if e is not None and e not in out:
            out.append(e)
    return out


def _intersect_one(listener: str | None, h: str) -> str | None:
    if listener is None or listener == h:
        return h
    if _wild(listener):
        if not _wild(h):
            return h if matches(listener, h) else None
        # both wildcards: the more specific one, if one contains the other
        if h.endswith(listener[1:]):
            return h
        if listener.endswith(h[1:]):
            return listener
        return None
    # exact listener
    return listener if _wild(h) and matches(h, listener) else None


def more_specific(a: str | None, b: str | None) -> bool:
    """Is listener hostname ``a`` strictly more specific than ``b``?"""
    if a == b or a is None:
        return False
    if b is None:
        return True
    if not _wild(a) and _wild(b):
        return True
    if _wild(a) and _wild(b):
        return len(a) > len(b)
    return False


def owned_by(hostname: str, listener: str | None, siblings: Iterable[str | None]) -> bool:
    """Is ``hostname`` (an intersection result on ``listener``) served by that listener, rather
    than by a more specific sibling listener on the same port?

    An exact hostname belongs to the most specific listener covering it; a wildcard hostname is
    taken away only by a sibling listener with exactly that wildcard.
    """
    for other in siblings:
        if other == listener or not more_specific(other, listener):
            continue
        if other == hostname or (not _wild(hostname) and matches(other, hostname)):
            return False
    return True
