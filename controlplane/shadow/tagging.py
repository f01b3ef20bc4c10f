"""What the xDS translator puts into Envoy's config so that the receiver can read an entry alone.

Both legs of a request are sampled together by comparing its ``x-request-id`` with a threshold
string: a lower-case hex UUID (what Envoy generates) is below ``threshold(p)`` for p % of ids.
Envoy's ``runtime_filter`` with ``use_independent_randomness: false`` does not do this for upstream
logs (docs/shadow-testing.md), so the comparison is a CEL expression instead, and the receiver
applies the same function to decide which mirror legs to expect.

The primary leg's entry names its route, whose tag the receiver finds in the controller's tag
table (:data:`TagTables`; with ``XdsOptions.shadow_tags_in_routes`` the route also carries it, as
JSON copied into the entry by a custom tag, for ``mirrorplane collect``); a mirror leg has no
route in Envoy, only its cluster, so mirror clusters carry their own threshold (the highest of
the rules mirroring to them) in cluster metadata. A route's tag depends on the route alone, so
the translator's per-virtual-host memo stays valid. Pure functions only: the translator and the
receiver both import this.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

METADATA_KEY = "mirrorplane_shadow"
"""filter_metadata key on mirrored routes and mirror clusters (no dot: CEL selects it as a field)."""
TAG = "mirrorplane"
"""The ALS custom tag holding a primary entry's :class:`RouteTag` as JSON (route metadata), when
routes carry it (``XdsOptions.shadow_tags_in_routes``)."""
MIRRORED_SUFFIX = "/mirrored"
"""Ends the name of every Envoy route that mirrors: a route whose rule samples every request (the
default) is found by it, so only a route with a lower threshold carries metadata (Envoy builds
each route's metadata on every update: a fifth to two fifths of applying 10,000 mirrored rules)."""
CLUSTER_TAG = "mirrorplane_cluster"
"""The ALS custom tag of a mirror entry: the lowest threshold of the rules mirroring to its cluster
(cluster metadata ``min``). A mirror leg whose primary never came, with an id at or above it, may
simply not have been sampled by its rule: not counted as unpaired."""
_SCALE = 0x10000


def threshold(percent: float) -> str:
    """The id threshold for sampling ``percent`` % of requests ("~" sorts after every hex id)."""
    if percent >= 100:
        return "~"
    return f"{max(0, int(percent * _SCALE / 100)):04x}"


def sampled(request_id: str, percent: float) -> bool:
    """Whether Envoy's filter keeps an entry with this id at ``percent`` (same comparison as CEL)."""
    return request_id < threshold(percent)


@dataclass(frozen=True)
class MirrorTag:
    cluster: str
    percent: int  # this rule's comparison.sample_percent (its cluster is logged at least as often)
    always: bool  # the mirror gets every request (no Gateway API fraction below 100 %)
    headers: tuple[str, ...]
    body: str = ""  # the rule's body settings (:func:`body_settings`); "": bodies are not compared


def body_settings(limit: int, ignore_json_paths: tuple[str, ...]) -> str:
    """The key a body is digested under, as the Lua filter sends it back: ``[limit, [paths]]``."""
    return json.dumps([limit, list(ignore_json_paths)], separators=(",", ":"))


MAX_SETTINGS = 64
"""Distinct body settings one report may ask for (one digest each): the rules mirroring to one
cluster with different ``maxBytes``/``ignoreJSONPaths``. Bounds the work one body can cause."""


def settings_keys(text: str) -> list[str]:
    """The keys in a report's settings list (the Lua filter's, controlplane/xds/bodycapture.py)."""
    items = json.loads(text)
    if not isinstance(items, list) or len(items) > MAX_SETTINGS:
        raise ValueError(f"body settings: a list of at most {MAX_SETTINGS} expected")
    return [json.dumps(item, separators=(",", ":")) for item in items]


def parse_body_settings(text: str) -> tuple[int, tuple[str, ...]]:
    """Raises ValueError (or TypeError) on anything :func:`body_settings` did not write."""
    limit, paths = json.loads(text)
    if not isinstance(limit, int) or not isinstance(paths, list):
        raise ValueError(f"body settings {text!r}")
    return limit, tuple(str(p) for p in paths)


@dataclass(frozen=True, slots=True)  # slots: one per mirrored route (accesslog.RouteTags)
class RouteTag:
    route: str  # "HTTPRoute ns/name"
    rule: str
    mirrors: tuple[MirrorTag, ...]

    def encode(self) -> str:
        return json.dumps(
            {
                "route": self.route,
                "rule": self.rule,
                # The body settings only when set: the tag of a rule not comparing bodies is unchanged.
                "mirrors": [
                    [m.cluster, m.percent, m.always, list(m.headers), *([m.body] if m.body else [])]
                    for m in self.mirrors
                ],
            },
            separators=(",", ":"),
        )

    @staticmethod
    def decode(text: str) -> RouteTag:
        """Raises ValueError (or KeyError/TypeError) on anything that is not what encode wrote."""
        data = json.loads(text)
        return RouteTag(
            route=str(data["route"]),
            rule=str(data["rule"]),
            mirrors=tuple(
                MirrorTag(str(c), int(p), bool(a), tuple(str(h) for h in hs), str(body[0]) if body else "")
                for c, p, a, hs, *body in data["mirrors"]
            ),
        )


TagTables = Mapping[str, Mapping[str, RouteTag]]
"""Per Gateway, each mirrored route's tag by the route's name: what the controller hands the
receiver after each translation (xds.accesslog.RouteTags makes one Gateway's)."""
