"""Status assertions, as upstream's conformance/utils/kubernetes helpers make them.

Every check polls (status converges like a controller's would) and requires each condition it
reads to carry ``observedGeneration == metadata.generation``, exactly as upstream treats older
conditions as stale.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.gatewayapi.model import GATEWAY_GROUP

# Upstream allows 30-60 s for status; a file change reaches our status in milliseconds, so a status
# still wrong after 15 s is not converging (this keeps failing runs short).
STATUS_TIMEOUT = 15.0
POLL = 0.05


class ConformanceError(AssertionError):
    """An upstream assertion that did not hold; the message says what was expected and seen."""


@dataclass(frozen=True)
class Cond:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str = ""  # "" = any reason


def accepted(status: str = "True", reason: str = "") -> Cond:
    return Cond("Accepted", status, reason)


def resolved_refs(status: str = "True", reason: str = "") -> Cond:
    return Cond("ResolvedRefs", status, reason)


def stale(generation: int, conditions: list[dict[str, Any]]) -> str:
    old = [c["type"] for c in conditions if c.get("observedGeneration") != generation]
    return f"conditions {old} are not at generation {generation}" if old else ""


def conditions_match(expected: list[Cond], actual: list[dict[str, Any]]) -> str:
    """'' when every expected condition is present (type, status, and reason unless any)."""
    for want in expected:
        have = next((c for c in actual if c["type"] == want.type), None)
        if have is None:
            return f"no {want.type} condition"
        if have["status"] != want.status or (want.reason and have["reason"] != want.reason):
            return f"{want.type} is {have['status']}/{have['reason']}, want {want.status}/{want.reason or '(any)'}"
    return ""


async def eventually(check: Callable[[], str], what: str, timeout: float = STATUS_TIMEOUT) -> None:
    """Poll ``check`` (returns '' when satisfied, else why not) until it holds."""
    deadline = time.monotonic() + timeout
    why = ""
    while True:
        why = check()
        if not why:
            return
        if time.monotonic() > deadline:
            raise ConformanceError(f"{what}: {why} (after {timeout:g}s)")
        await asyncio.sleep(POLL)


@dataclass(frozen=True)
class Parent:
    """An expected RouteParentStatus (upstream compares group, kind, name, namespace, controller)."""

    gateway_namespace: str
    gateway_name: str
    conditions: tuple[Cond, ...]
    section_name: str | None = None


def parents_match(
    expected: list[Parent], actual: list[dict[str, Any]], route_namespace: str, controller: str, generation: int
) -> str:
    if len(expected) != len(actual):
        return f"expected {len(expected)} parent(s), got {len(actual)}: {[p['parentRef'] for p in actual]}"
    for want, have in zip(expected, actual, strict=True):
        ref = have["parentRef"]
        if have.get("controllerName") != controller:
            return f"controllerName {have.get('controllerName')!r} != {controller!r}"
        if ref.get("group", GATEWAY_GROUP) != GATEWAY_GROUP or ref.get("kind", "Gateway") != "Gateway":
            return f"parentRef group/kind {ref.get('group')}/{ref.get('kind')}"
        if ref["name"] != want.gateway_name:
            return f"parentRef name {ref['name']} != {want.gateway_name}"
        namespace = ref.get("namespace")
        required = route_namespace != want.gateway_namespace
        if namespace != want.gateway_namespace and (required or namespace is not None):
            return f"parentRef namespace {namespace} != {want.gateway_namespace}"
        why = stale(generation, have.get("conditions") or []) or conditions_match(
            list(want.conditions), have.get("conditions") or []
        )
        if why:
            return f"parent {ref['name']}: {why}"
    return ""


@dataclass(frozen=True)
class ListenerExpectation:
    name: str
    attached_routes: int
    conditions: tuple[Cond, ...]
    supported_kinds: tuple[tuple[str, str], ...] = ((GATEWAY_GROUP, "HTTPRoute"),)


def listeners_match(expected: list[ListenerExpectation], actual: list[dict[str, Any]]) -> str:
    """Upstream's listenersMatch: same count; each expected listener by name with (at least) its
    kinds, attached routes and conditions."""
    if len(expected) != len(actual):
        return f"expected {len(expected)} listener(s), got {len(actual)}"
    for want in expected:
        have = next((lst for lst in actual if lst["name"] == want.name), None)
        if have is None:
            return f"no listener {want.name}"
        kinds = {(k.get("group", GATEWAY_GROUP), k["kind"]) for k in have.get("supportedKinds") or []}
        # As upstream: the expected kinds must be there (an implementation may support more, e.g.
        # GRPCRoute); an expected empty list must be empty.
        if not set(want.supported_kinds) <= kinds or (not want.supported_kinds and kinds):
            return f"listener {want.name} supportedKinds {sorted(kinds)}, want {list(want.supported_kinds)}"
        if have.get("attachedRoutes") != want.attached_routes:
            return f"listener {want.name} attachedRoutes {have.get('attachedRoutes')}, want {want.attached_routes}"
        why = conditions_match(list(want.conditions), have.get("conditions") or [])
        if why:
            return f"listener {want.name}: {why}"
    return ""
