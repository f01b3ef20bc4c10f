"""Body comparison (MirrorPolicy ``comparison.body``): the bodies Envoy's Lua upstream filter sends
(controlplane/xds/bodycapture.py; :mod:`.bodyreport` receives them) become digests here.

Envoy sends each sampled leg's whole response body up to its rules' limit, with the settings to
digest it under: ``[limit, [ignoreJSONPaths]]``, one per distinct setting of the rules involved.
A body is digested at once (sha256; JSON with ignored paths dropped and re-serialized
canonically first) and only the digest, the size and a short excerpt are kept, waiting for the
pairing (:mod:`.hub`) to ask for them by (Gateway, request id, cluster). The store is bounded
in count and in time; a body nobody asked for is counted ``body_unused`` when it leaves.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .tagging import parse_body_settings

EXCERPT = 256
"""Characters of a body kept to show beside a differing pair."""
DEFAULT_LIMIT = 50_000
DEFAULT_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Digest:
    digest: str  # sha256 hex of the body as compared; "" when over the limit (compared by size)
    size: int  # bytes Envoy sent (0 when over the limit: the entry's size is used)
    excerpt: str


OVER_LIMIT = Digest("", 0, "")

# The paths the CRD admits: $ then .name, [N], [*] or .* steps.
_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]|(\[\*\]|\.\*)")


def parse_path(path: str) -> list[str | int | None]:
    """``$.items[*].id`` → ["items", None, "id"] (None: every element). ValueError otherwise.

    Hand-written: the CRD admits only these four kinds of step, a dozen lines, no dependency."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} does not start with $")
    steps: list[str | int | None] = []
    pos = 1
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise ValueError(f"JSON path {path!r}: unexpected {path[pos:]!r}")
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)) if m.group(2) is not None else None)
        pos = m.end()
    if not steps:
        raise ValueError(f"JSON path {path!r} names no field")
    return steps


def drop_path(value: Any, steps: list[str | int | None]) -> None:
    """Remove what ``steps`` names from a parsed JSON value, in place; absent parts are no error."""
    step, rest = steps[0], steps[1:]
    if step is None:
        children = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []
        if not rest:
            if isinstance(value, (dict, list)):
                value.clear()
            return
        for child in children:
            drop_path(child, rest)
        return
    if isinstance(step, int):
        if not isinstance(value, list) or step >= len(value):
            return
        if not rest:
            value[step] = None  # keeps the other indexes where they were
        else:
            drop_path(value[step], rest)
        return
    if not isinstance(value, dict) or step not in value:
        return
    if not rest:
        del value[step]
    else:
        drop_path(value[step], rest)


@functools.lru_cache(maxsize=256)
def _setting(key: str) -> tuple[int, tuple[list[str | int | None], ...]]:
    """A setting parsed once: every body of a rule comes with the same one."""
    limit, paths = parse_body_settings(key)
    return limit, tuple(parse_path(p) for p in paths)


def digest_body(body: bytes, over_limit: bool, key: str) -> Digest:
    """The digest of one body under one setting (``[limit, paths]``, see tagging.body_settings).
    Raises ValueError on a setting that is not one."""
    limit, paths = _setting(key)
    if over_limit or len(body) > limit:
        return OVER_LIMIT
    compared = body
    if paths:
        try:
            value = json.loads(body)
            for steps in paths:
                drop_path(value, steps)
            compared = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except (ValueError, RecursionError):  # not JSON (or nested beyond the parser): compared as bytes
            compared = body
    return Digest(hashlib.sha256(compared).hexdigest(), len(body), compared[:EXCERPT].decode("utf-8", "replace"))


Count = Callable[[str, int], None]
Key = tuple[str, str, str]  # (gateway, request id, cluster)


class BodyStore:
    """Digests waiting to be asked for, by (Gateway, request id, cluster): at most ``limit`` legs,
    each for at most ``ttl`` seconds."""

    def __init__(
        self,
        count: Count,
        *,
        limit: int = DEFAULT_LIMIT,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count, self.limit, self.ttl, self.clock = count, limit, ttl, clock
        self._legs: OrderedDict[Key, tuple[float, dict[str, Digest], list[bool]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._legs)

    def add(self, key: Key, digests: dict[str, Digest]) -> None:
        now = self.clock()
        self.expire(now)
        if key in self._legs:  # a retried upstream request: its last attempt's body counts
            self._forget(key)
        while len(self._legs) >= self.limit:
            self._forget(next(iter(self._legs)))
        self._legs[key] = (now, digests, [False])

    def get(self, key: Key, setting: str) -> Digest | None:
        leg = self._legs.get(key)
        if leg is None:
            return None
        digest = leg[1].get(setting)
        if digest is not None:
            leg[2][0] = True
        return digest

    def expire(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        while self._legs:
            key, (at, _, _) = next(iter(self._legs.items()))
            if at + self.ttl > now:
                return
            self._forget(key)

    def _forget(self, key: Key) -> None:
        _, _, used = self._legs.pop(key)
        if not used[0]:
            self.count("body_unused", 1)
