"""The golden files: what each case under tests/golden/ must contain, and the one command that rewrites them.

tests/test_golden.py only compares; rewriting is this separate command, so an update can never
count as a passing test run:

    make golden        # = .venv/bin/python -m tests.goldens
    git diff tests/golden

Every accepted GatewayClass carries the whole supportedFeatures list. It lives once, in
tests/golden/supported-features.json; each status.json names that file instead, so adding a
feature changes one golden file, not one per case.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from controlplane.offline import translate_folder

GOLDEN = Path(__file__).resolve().parent / "golden"
FEATURES = GOLDEN / "supported-features.json"
FEATURES_REF = "see tests/golden/supported-features.json"


def cases() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def dump(value: object) -> str:
    return json.dumps(value, indent=2) + "\n"


def rendered(case: str) -> tuple[dict[Path, object], list[object]]:
    """The case's golden files as they must be, and the supportedFeatures lists factored out of them."""
    out = translate_folder(GOLDEN / case / "input")
    features: list[object] = []
    status = out["status"]
    for key, body in status.items():
        if key.startswith("GatewayClass/") and "supportedFeatures" in body:
            features.append(body["supportedFeatures"])
            status[key] = {**body, "supportedFeatures": FEATURES_REF}
    files = {GOLDEN / case / "xds.json": out["gateways"], GOLDEN / case / "status.json": status,
             GOLDEN / case / "errors.json": out["errors"]}  # fmt: skip
    return files, features


def update() -> list[Path]:
    """Rewrite every golden file; returns the ones whose content changed."""
    wanted: dict[Path, object] = {}
    features: list[object] = []
    for case in cases():
        files, found = rendered(case)
        wanted.update(files)
        features += found
    distinct = {dump(f) for f in features}
    if len(distinct) > 1:
        raise SystemExit("golden: GatewayClasses disagree on supportedFeatures; the translator must claim one list")
    if distinct:
        wanted[FEATURES] = features[0]
    changed = []
    for path, value in wanted.items():
        text = dump(value)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def main() -> int:
    if os.environ.get("CI"):
        print("golden: refusing to rewrite golden files with CI set; run `make golden` locally and commit the diff", file=sys.stderr)
        return 2
    changed = update()
    root = GOLDEN.parent.parent
    for path in changed:
        print(f"golden.rewritten file={path.relative_to(root)}")
    print(f"golden.done changed={len(changed)} (review with `git diff tests/golden`; `make test` compares)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
