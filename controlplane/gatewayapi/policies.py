"""MirrorPolicy (mirrorplane.io/v1alpha1) → settings of the targeted rules' mirrors, and its status.

A MirrorPolicy is an input like a ReferenceGrant: it changes what other objects become and never
becomes anything by itself. It attaches directly (GEP-713) to an HTTPRoute or GRPCRoute of its
own namespace, or to one named rule of it (``sectionName``), and sets what the mirror leg of
every RequestMirror filter of the targeted rules gets (all mirrors of a rule alike).

Resolution is a pure function of the store, done once per translation before routes are
attached. It is applied to a route's compiled rules *after* the RouteMemo (``apply``), so a
policy change can never leave a memoized route stale: incremental and full translation agree.

Precedence: a policy naming a rule (sectionName) is more specific than one naming the whole
route and wins for that rule. Two valid policies naming the same route and sectionName: the older
(creationTimestamp, then namespace/name) applies, the other is ``Conflicted`` (GEP-713).

Status: one ``ancestors[]`` entry per targetRef, whose ``ancestorRef`` is the targeted route (with
the sectionName): the policy acts the same on every Gateway the route is attached to, and a
target that exists nowhere has no Gateway to report against. A policy on a rule without a
mirror is ``Accepted`` with a message saying it has no effect (it takes effect once a
RequestMirror filter is added, with no other change).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .. import ir
from .envoy_limits import header_mods_problems
from .filters import header_mods
from .model import GATEWAY_GROUP, K8sObject, MirrorPolicy
from .rules import Rule
from .status import Condition, StatusKey, conditions
from .store import ROUTE_FIELDS, RouteKey, Store

KIND = "MirrorPolicy"
_TRACE_SAMPLED = {"FollowPrimary": None, "Always": True, "Never": False}


@dataclass(frozen=True)
class MirrorSettings:
    """What one policy asks of the mirror leg; ``None`` fields leave the mirror as it is."""

    policy: str  # "namespace/name"
    request_headers: ir.HeaderMods
    hostname: str | None
    keep_shadow_host_suffix: bool | None
    trace_sampled: bool | None
    comparison: ir.Comparison

    def apply(self, mirror: ir.Mirror) -> ir.Mirror:
        suffix = mirror.shadow_host_suffix if self.keep_shadow_host_suffix is None else self.keep_shadow_host_suffix
        return replace(
            mirror,
            shadow_host_suffix=suffix,
            request_headers=self.request_headers,
            hostname=self.hostname,
            trace_sampled=self.trace_sampled,
            comparison=self.comparison,
            policy=self.policy,
        )


@dataclass(frozen=True)
class Policies:
    """The winning policy per targeted route, and per targeted rule name of a route."""

    whole: dict[RouteKey, MirrorSettings]
    sections: dict[RouteKey, dict[str, MirrorSettings]]

    def for_route(self, key: RouteKey) -> tuple[MirrorSettings | None, dict[str, MirrorSettings] | None]:
        """Everything that applies to one route: what a memoized route is compared on."""
        return self.whole.get(key), self.sections.get(key)

    def apply(self, kind: str, route: K8sObject[Any], rules: list[Rule]) -> list[Rule]:
        """The route's rules with their mirrors set as the policies say (new objects; the
        memoized rules are left untouched)."""
        if not self.whole and not self.sections:
            return rules  # no MirrorPolicy: the usual case
        whole, sections = self.for_route((kind, route.namespace, route.name))
        if whole is None and sections is None:
            return rules
        out = []
        for rule in rules:
            settings = (sections.get(rule.name) if sections and rule.name else None) or whole
            if settings is None or not rule.filters.mirrors:
                out.append(rule)
                continue
            mirrors = tuple(settings.apply(m) for m in rule.filters.mirrors)
            out.append(replace(rule, filters=replace(rule.filters, mirrors=mirrors)))
        return out


NO_POLICIES = Policies({}, {})


def resolve(store: Store, controller_name: str, statuses: dict[StatusKey, dict[str, Any]]) -> Policies:
    """Every MirrorPolicy's effect, and its status (written into ``statuses``)."""
    if not store.mirrorpolicies:
        return NO_POLICIES
    ordered = sorted(store.mirrorpolicies.values(), key=lambda p: (p.metadata.creation_timestamp, p.namespace, p.name))
    whole: dict[RouteKey, MirrorSettings] = {}
    sections: dict[RouteKey, dict[str, MirrorSettings]] = {}
    owners: dict[tuple[RouteKey, str | None], str] = {}
    outcomes = []
    for policy in ordered:
        settings, problems = _settings(policy)
        for ref in policy.spec.get("targetRefs") or []:
            refused = _attach(store, policy, ref, settings, problems, owners)
            outcomes.append((policy, ref, refused))
            if refused is None:
                key: RouteKey = (ref["kind"], policy.namespace, ref["name"])
                if "sectionName" in ref:
                    sections.setdefault(key, {})[ref["sectionName"]] = settings
                else:
                    whole[key] = settings
    policies = Policies(whole, sections)
    for policy in ordered:
        statuses[(KIND, policy.namespace, policy.name)] = {"ancestors": []}
    for policy, ref, refused in outcomes:
        section = ref.get("sectionName")
        ancestor = {"group": ref["group"], "kind": ref["kind"], "namespace": policy.namespace, "name": ref["name"]}
        cond = refused or _accepted(store, policy, ref, policies)
        statuses[(KIND, policy.namespace, policy.name)]["ancestors"].append(
            {
                "ancestorRef": ancestor | ({"sectionName": section} if section else {}),
                "controllerName": controller_name,
                "conditions": conditions(cond),
            }
        )
    return policies


def _describe(namespace: str, ref: Mapping[str, Any]) -> str:
    section = ref.get("sectionName")
    return f"{ref['kind']} {namespace}/{ref['name']}" + (f" rule {section!r}" if section else "")


def _route(store: Store, namespace: str, ref: Mapping[str, Any]) -> K8sObject[Any] | None:
    if ref["group"] != GATEWAY_GROUP:
        return None
    return getattr(store, ROUTE_FIELDS.get(ref["kind"], ""), {}).get((namespace, ref["name"]))


def _attach(
    store: Store,
    policy: MirrorPolicy,
    ref: Mapping[str, Any],
    settings: MirrorSettings,
    problems: list[str],
    owners: dict[tuple[RouteKey, str | None], str],
) -> Condition | None:
    """Attach the policy to one targetRef: None when it attached, else the condition saying why not."""
    gen = policy.generation
    section = ref.get("sectionName")
    if problems:
        return Condition("Accepted", False, "Invalid", "; ".join(problems), gen)
    route = _route(store, policy.namespace, ref)
    if route is None:
        return Condition("Accepted", False, "TargetNotFound", f"{_describe(policy.namespace, ref)} not found", gen)
    if section is not None and not any(r.get("name") == section for r in route.spec.get("rules") or []):
        return Condition(
            "Accepted", False, "TargetNotFound", f"{ref['kind']} {route.namespace}/{route.name} has no rule named {section!r}", gen
        )  # fmt: skip
    key: RouteKey = (ref["kind"], policy.namespace, ref["name"])
    owner = owners.setdefault((key, section), settings.policy)
    if owner != settings.policy:
        return Condition(
            "Accepted", False, "Conflicted",
            f"{_describe(policy.namespace, ref)} is already targeted by MirrorPolicy {owner} (the older policy takes precedence)", gen,
        )  # fmt: skip
    return None


def _accepted(store: Store, policy: MirrorPolicy, ref: Mapping[str, Any], policies: Policies) -> Condition:
    """The Accepted condition of an attached targetRef, saying which rules it acts on."""
    route = _route(store, policy.namespace, ref)
    assert route is not None
    key: RouteKey = (ref["kind"], policy.namespace, ref["name"])
    section = ref.get("sectionName")
    what = _describe(policy.namespace, ref)
    targeted = [r for r in route.spec.get("rules") or [] if section is None or r.get("name") == section]
    named = policies.sections.get(key, {}) if section is None else {}
    overridden = sorted({r["name"] for r in targeted if r.get("name") in named})
    acting = [r for r in targeted if _mirrors(r) and r.get("name") not in overridden]
    if not acting:
        detail = "has no RequestMirror filter" if not overridden else "has no other rule with a RequestMirror filter"
        message = f"{what} {detail}: the policy has no effect until one is added"
    else:
        message = f"Applies to the mirrors of {len(acting)} rule(s) of {what}"
    if overridden:
        message += f"; rule(s) {', '.join(overridden)} follow the MirrorPolicy naming them (sectionName)"
    return Condition("Accepted", True, "Accepted", message, policy.generation)


def _mirrors(rule: dict[str, Any]) -> bool:
    filters = [
        *(rule.get("filters") or []),
        *(f for b in rule.get("backendRefs") or [] for f in b.get("filters") or []),
    ]
    return any(f.get("type") == "RequestMirror" for f in filters)


def _settings(policy: MirrorPolicy) -> tuple[MirrorSettings, list[str]]:
    """The policy's settings, and what in it Envoy would refuse (the policy is then Invalid)."""
    spec = policy.spec
    headers = header_mods(spec["requestHeaderModifier"]) if "requestHeaderModifier" in spec else ir.NO_HEADER_MODS
    problems = header_mods_problems(headers, "requestHeaderModifier")
    comparison = ir.DEFAULT_COMPARISON
    if "comparison" in spec:
        c = spec["comparison"]
        body = c.get("body") or {}
        comparison = ir.Comparison(
            sample_percent=c.get("samplePercent", comparison.sample_percent),
            body=body.get("enabled", comparison.body),
            body_limit_bytes=body.get("maxBytes", comparison.body_limit_bytes),
            headers=tuple(dict.fromkeys(h.lower() for h in c["headers"])) if "headers" in c else comparison.headers,
            ignore_json_paths=tuple(c.get("ignoreJSONPaths") or ()),
        )
    settings = MirrorSettings(
        policy=f"{policy.namespace}/{policy.name}",
        request_headers=headers,
        hostname=spec.get("hostname"),
        keep_shadow_host_suffix=spec.get("keepShadowHostSuffix"),
        trace_sampled=_TRACE_SAMPLED[(spec.get("tracing") or {}).get("sampling", "FollowPrimary")],
        comparison=comparison,
    )
    return settings, problems
