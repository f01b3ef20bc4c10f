"""Mutation check: flip one mirroring decision at a time and show that the tests fail.

    make mutation                        # = .venv/bin/python -m tests.mutation
    .venv/bin/python -m tests.mutation --list
    .venv/bin/python -m tests.mutation shadow-host-suffix fraction-scale

Each mutation is a one-line textual edit of the translator, applied to a copy of the working
tree in a temporary folder (the repository is never touched). The copy's tests run with the copy
first on PYTHONPATH, so subprocesses (the CLI) import the mutant too. A mutation is "killed" when
its tests fail; one that survives is a hole in the tests and makes the command exit 1. An edit
that no longer applies (the code moved) also exits 1: update its snippet here. The unmutated copy
runs the same tests first, so a kill is never a test that fails anyway. Hypothesis runs with the
"mutation" profile (tests/conftest.py): a falsifying example is reported without shrinking it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
XDS = "controlplane/xds/translator.py"
FILTERS = "controlplane/gatewayapi/filters.py"
GOLDEN = "tests/test_golden.py"
FUZZ = "tests/test_fuzz.py"
FRACTIONS = "tests/test_fractions.py"
POLICIES = "controlplane/gatewayapi/policies.py"
POLICY_TESTS = "tests/test_mirror_policy.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    why: str  # the decision the mutant gets wrong
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "shadow-host-suffix",
        "mirrors see Envoy's Host-shadow suffix (disable_shadow_host_suffix_append inverted)",
        XDS,
        "disable_shadow_host_suffix_append=not m.shadow_host_suffix",
        "disable_shadow_host_suffix_append=m.shadow_host_suffix",
        (GOLDEN, "tests/test_e2e_mirror.py::test_seed_post_is_answered_by_primary_and_mirrored_byte_for_byte"),
    ),
    Mutation(
        "fraction-scale",
        "a fraction is not scaled to Envoy's denominator (25/50 becomes 25 %)",
        XDS,
        "return FractionalPercent(numerator=numerator * (scale // denominator), denominator=kind)",
        "return FractionalPercent(numerator=numerator, denominator=kind)",
        (GOLDEN, "tests/test_e2e_mirror.py::test_mirror_fraction_within_three_sigma"),
    ),
    Mutation(
        "fraction-rounding",
        "a fraction Envoy cannot express exactly is truncated, not rounded (2/3 becomes 666666/MILLION)",
        XDS,
        "numerator=(numerator * 1_000_000 + denominator // 2) // denominator, denominator=FractionalPercent.MILLION",
        "numerator=numerator * 1_000_000 // denominator, denominator=FractionalPercent.MILLION",
        (GOLDEN, FRACTIONS),
    ),
    Mutation(
        "full-fraction-policy",
        "a 100 % mirror gets a runtime_fraction (100/HUNDRED) instead of none",
        XDS,
        "    if numerator >= denominator:\n        return None\n",
        "    if numerator > denominator:\n        return None\n",
        (GOLDEN, FRACTIONS),
    ),
    Mutation(
        "keep-invalid-mirror",
        "a mirror whose backendRef does not resolve is kept, naming a cluster that is not served",
        FILTERS,
        "    elif backend is not None:\n        out.mirrors += (ir.Mirror(backend.name, numerator, denominator, shadow_suffix),)",
        "    out.mirrors += (ir.Mirror(backend.name if backend else 'unresolved', numerator, denominator, shadow_suffix),)",
        (GOLDEN, FUZZ, "tests/test_e2e_mirror.py::test_route_with_missing_mirror_backend_keeps_serving_primary"),
    ),
    Mutation(
        "percent-zero-policy",
        "percent 0 (or numerator 0) still becomes a mirror policy (of 0 %)",
        FILTERS,
        "    if numerator <= 0:\n        return\n",
        "    if numerator < 0:\n        return\n",
        (GOLDEN,),
    ),
    Mutation(
        "policy-newest-wins",
        "of two MirrorPolicies on the same target the newer applies (GEP-713: the older)",
        POLICIES,
        "sorted(store.mirrorpolicies.values(), key=",
        "sorted(store.mirrorpolicies.values(), reverse=True, key=",
        (GOLDEN, POLICY_TESTS),
    ),
    Mutation(
        "policy-route-beats-rule",
        "a whole-route MirrorPolicy wins over one naming the rule (sectionName is more specific)",
        POLICIES,
        "(sections.get(rule.name) if sections and rule.name else None) or whole",
        "whole or (sections.get(rule.name) if sections and rule.name else None)",
        (GOLDEN, POLICY_TESTS),
    ),
    Mutation(
        "policy-stale-memo",
        "a route's memoized attachment is replayed after the MirrorPolicies applying to it changed",
        "controlplane/gatewayapi/translator.py",
        "if hit is not None and hit.policies == applied and memo.same(",
        "if hit is not None and memo.same(",
        ("tests/test_incremental.py",),
    ),
    Mutation(
        "policy-headers-on-primary",
        "a MirrorPolicy's header changes are dropped from the mirror leg",
        XDS,
        "    policy.request_headers_mutations.extend(\n        mutation_rules_pb2.HeaderMutation(remove=name)",
        "    (\n        mutation_rules_pb2.HeaderMutation(remove=name)",
        (GOLDEN, "tests/test_e2e_mirror_policy.py"),
    ),
    Mutation(
        "body-verdict-not-cleared",
        "a verdict the client forged survives a request for which Envoy's expression writes none",
        XDS,
        "            mutation_rules_pb2.HeaderMutation(remove=BODY_HEADER),\n",
        "",
        ("tests/test_e2e_mirror_decision.py::test_a_content_length_beyond_int64_is_not_mirrored",),
    ),
    Mutation(
        "body-header-upstream",
        "the body header Envoy writes for route selection reaches the primary and the mirror",
        XDS,
        "        request_headers_to_remove=[BODY_HEADER],\n",
        "",
        (
            "tests/test_e2e_mirror_decision.py::test_neither_backend_sees_the_body_header_and_the_client_answer_is_unchanged",
        ),
    ),
    Mutation(
        "unsampled-by-name",
        "a mirrored route with no threshold of its own (samplePercent 100) is not logged, so nothing is compared",
        "controlplane/xds/accesslog.py",
        "f\" : (xds.route_name.endsWith('{MIRRORED_SUFFIX}') ? '{threshold(100)}' : '')))\"",
        "f\" : (xds.route_name.endsWith('{MIRRORED_SUFFIX}') ? '' : '')))\"",
        (
            "tests/test_e2e_shadow.py::test_envoys_routes_carry_neither_the_tag_nor_a_full_threshold_and_legs_still_pair",
        ),
    ),
)


def copy_tree(dest: Path) -> None:
    """The working tree as it is (tracked and new files, uncommitted edits included), without .venv."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[bool, list[str], float]:
    """(passed, the failed test ids, seconds) of the tests, run in ``tree``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-rf",
         "--hypothesis-profile=mutation", *tests],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.M)
    if proc.returncode not in (0, 1):  # 2-5: interrupted, internal or usage error, nothing collected
        failed.append(f"pytest exit {proc.returncode}: {(proc.stdout + proc.stderr).strip().splitlines()[-1:]}")
    return proc.returncode == 0, failed, time.monotonic() - started


def apply(tree: Path, m: Mutation) -> None:
    path = tree / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise LookupError(f"{m.path}: the code to mutate is not there exactly once: {m.old.strip()!r}")
    path.write_text(text.replace(m.old, m.new))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:22} {m.why}")
        return 0

    problems = 0
    with tempfile.TemporaryDirectory(prefix="mirrorplane-mutation-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base)
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        passed, failed, seconds = run_tests(base, tests)
        print(f"mutation.baseline passed={passed} tests={len(tests)} seconds={seconds:.0f}", flush=True)
        if not passed:
            print(f"mutation.baseline_failed failed={failed}: fix these first, kills would mean nothing")
            return 1
        for m in chosen:
            tree = Path(tmp) / m.name
            shutil.copytree(base, tree)
            try:
                apply(tree, m)
            except LookupError as exc:
                print(f"mutation.stale name={m.name} error={exc}")
                problems += 1
                continue
            passed, failed, seconds = run_tests(tree, m.tests)
            verdict = "survived" if passed else "killed"
            problems += passed
            print(f"mutation.{verdict} name={m.name} seconds={seconds:.0f} failed={len(failed)} ({m.why})", flush=True)
            for file, count in Counter(t.split("::")[0] for t in failed).items():
                print(f"  {file}: {count} failed, e.g. {next(t for t in failed if t.startswith(file))}")
            shutil.rmtree(tree)
    print(f"mutation.done mutations={len(chosen)} not_killed={problems}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
