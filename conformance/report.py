"""The ConformanceReport (upstream's apis/v1 ConformanceReport shape) and the printed summary.

A feature is supported when every test that needs it passed; the GatewayClass must claim exactly
those (tests/test_conformance.py holds translator.SUPPORTED_FEATURES to this).
"""

from __future__ import annotations

import datetime
from importlib.metadata import version
from typing import Any

import yaml

from .suite import CORE_FEATURES, Result, RunResult

GATEWAY_API_VERSION = "v1.6.1"
PROFILE = "GATEWAY-HTTP"


def passing_features(results: list[Result]) -> list[str]:
    """Features every one of whose run tests passed (skipped tests prove nothing either way).

    Core features are judged by the core tests, an Extended feature by the tests that need it:
    a failing CORS test says nothing about HTTPRoute itself.
    """
    verdict: dict[str, bool] = {}
    for r in results:
        if r.outcome == "Skipped":
            continue
        for f in r.test.features if r.test.core else r.test.extended_features:
            verdict[f] = verdict.get(f, True) and r.outcome == "Passed"
    return sorted(f for f, ok in verdict.items() if ok)


def _section(results: list[Result]) -> dict[str, Any]:
    count = {o: sum(1 for r in results if r.outcome == o) for o in ("Passed", "Failed", "Skipped")}
    failed = [r for r in results if r.outcome == "Failed"]
    skipped = [r for r in results if r.outcome == "Skipped"]
    section: dict[str, Any] = {
        "result": "failure" if failed else ("partial" if skipped else "success"),
        "statistics": count,
    }
    if failed:
        section["failedTests"] = [r.test.short_name for r in failed]
    if skipped:
        section["skippedTests"] = [r.test.short_name for r in skipped]
    reasons = {r.test.short_name: r.reason for r in failed + skipped if r.reason}
    if reasons:
        section["reasons"] = reasons
    return section


def build(run: RunResult) -> dict[str, Any]:
    core = [r for r in run.results if r.test.core]
    extended = [r for r in run.results if not r.test.core]
    supported = [f for f in passing_features(run.results) if f not in CORE_FEATURES]
    ext = _section(extended)
    ext["supportedFeatures"] = supported
    known = {f for r in run.results for f in r.test.extended_features}
    ext["unsupportedFeatures"] = sorted(known - set(supported))
    doc: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ConformanceReport",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gatewayAPIVersion": GATEWAY_API_VERSION,
        "gatewayAPIChannel": "standard",
        "implementation": {
            "organization": "mirrorplane",
            "project": "mirrorplane",
            "url": "https://github.com/mirrorplane/mirrorplane",
            "version": version("mirrorplane"),
            "contact": ["@mirrorplane/maintainers"],
        },
        "mode": "default",
        "profiles": [{"name": PROFILE, "core": _section(core), "extended": ext}],
        "succeededProvisionalTests": sorted(
            r.test.short_name for r in run.results if r.test.provisional and r.outcome == "Passed"
        ),
        "timing": {
            "wallSeconds": round(run.seconds, 1),
            "tests": {r.test.short_name: round(r.seconds, 1) for r in run.results if r.outcome != "Skipped"},
        },
    }
    if run.not_run_deployments:
        doc["notRunDeployments"] = run.not_run_deployments
    return doc


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def feature_mismatch(run: RunResult) -> tuple[list[str], list[str]]:
    """(claimed but not passing, passing but not claimed) — both empty when the GatewayClass is honest."""
    if not run.complete:
        return [], []
    passing = set(passing_features(run.results))
    claimed = set(run.claimed_features)
    return sorted(claimed - passing), sorted(passing - claimed)


def summary(run: RunResult) -> str:
    by = {o: [r for r in run.results if r.outcome == o] for o in ("Passed", "Failed", "Skipped")}
    ran = [r for r in run.results if r.outcome != "Skipped"]
    mean = sum(r.seconds for r in ran) / len(ran) if ran else 0.0
    slowest = max(ran, key=lambda r: r.seconds, default=None)
    lines = [
        f"{len(by['Passed'])} passed, {len(by['Failed'])} failed, {len(by['Skipped'])} skipped "
        f"in {run.seconds:.1f}s wall (mean {mean:.1f}s per test"
        + (f", slowest {slowest.test.short_name} {slowest.seconds:.1f}s)" if slowest else ")")
    ]
    over, under = feature_mismatch(run)
    if not run.complete:
        lines.append("(a partial run: supportedFeatures are judged on full runs only)")
    elif over or under:
        lines.append(
            f"GatewayClass supportedFeatures disagree with the results: claimed but failing {over}, passing but not claimed {under}"
        )
    else:
        lines.append(f"GatewayClass supportedFeatures ({len(run.claimed_features)}) are exactly the passing features")
    return "\n".join(lines)
