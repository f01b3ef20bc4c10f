"""One instance for equal parts of decoded JSON: what 10,000 similar objects repeat is held once.

An API server sends every HTTPRoute whole: the same ``parentRefs``, the same backendRef of a
Service, the same defaults, and, once the status writer has written, the same ``status``
(conditions written in the same second are equal), each decoded into dicts and lists of its own.
At 10,000 one-rule HTTPRoutes the live statuses alone held 28 MB this way. :class:`Sharer`
replaces each dict and list by the first equal one it has seen (hash-consing), so that equal
parts are one object.

The parts are then shared between objects: whoever holds them must not change them. The store's
objects and the live statuses are read only (the translator is a pure function, the status writer
copies what it changes).

Equal means equal as JSON, with its types: ``1``, ``1.0`` and ``true`` compare equal in Python,
but a part holding one is never replaced by a part holding another; key order is kept too.
"""

from __future__ import annotations

from typing import Any

from .yamlread import Limits, RejectedError

SIZE = 4_096
"""Parts a :class:`Sharer` remembers before it forgets them all and starts again. Mostly they are
the parts of one object only (its name, its paths), which nothing will repeat: a table that kept
them all would hold as much as the sharing saves. Forgetting costs one more copy of each shared
part per ``SIZE`` parts seen."""


class Sharer:
    """Hash-conses JSON values (dicts, lists, str, int, float, bool, None), and checks them
    against the limits of one file (:class:`yamlread.Limits`) on the same walk: a walk of its
    own for the check cost more than both together.

    A part's key holds its scalars, wrapped in a tuple with their type unless a str, and the
    ``id`` of its (already shared) dicts and lists: bare ints are ids only, and the parts they
    name stay alive as long as the table that holds their keys."""

    def __init__(self, limits: Limits = Limits(), size: int = SIZE) -> None:
        self.limits = limits
        self.size = size
        self._dicts: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._lists: dict[tuple[Any, ...], list[Any]] = {}
        self._nodes = self._chars = 0

    def share(self, node: Any) -> Any:
        """``node``, or a part seen before equal to it; ``node``'s dicts and lists may be changed
        in place (their parts replaced by equal shared ones). ``RejectedError`` if it is nested
        deeper than the limits allow, or holds more nodes (keys and values) or characters (of
        keys and strings; 8 for another scalar). The depth limit (64) bounds the recursion."""
        if len(self._dicts) + len(self._lists) > self.size:
            self._dicts, self._lists = {}, {}
        self._nodes = self._chars = 0
        t = type(node)
        try:
            if t is dict or t is list:
                node = self._part(node, 1)
            else:
                self._chars = len(node) if t is str else 8
            self._nodes += 1  # the node itself; each dict and list counts its keys and values
            self._check()
        except RejectedError:
            self._dicts, self._lists = {}, {}  # not the parts of what is refused
            raise
        return node

    def _check(self) -> None:
        limits = self.limits
        if self._nodes > limits.max_nodes or self._chars > limits.max_bytes:
            raise RejectedError(f"larger than {limits.max_nodes} nodes or {limits.max_bytes} bytes")

    # Scalars are handled inline, not by a call each: that halved the time of 10,000 HTTPRoutes.
    def _part(self, node: Any, depth: int) -> Any:  # a dict or a list
        if depth > self.limits.max_depth:
            raise RejectedError(f"nested deeper than {self.limits.max_depth} levels")
        is_dict = type(node) is dict
        key: list[Any] = []
        chars = 0
        items: Any = node.items() if is_dict else enumerate(node)
        for k, v in items:
            if is_dict:
                key.append(k)
                chars += len(k)
            t = type(v)
            if t is str:
                key.append(v)
                chars += len(v)
            elif t is dict or t is list:
                part = self._part(v, depth + 1)
                if part is not v:
                    node[k] = part
                key.append(id(part))
            else:
                key.append((t, v))
                chars += 8
        self._nodes += len(key)
        self._chars += chars
        self._check()
        table: dict[tuple[Any, ...], Any] = self._dicts if is_dict else self._lists
        return table.setdefault(tuple(key), node)
