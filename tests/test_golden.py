"""Golden translator tests, in two stages (tests/goldens.py): each folder under tests/golden/
holds input YAML and the expected IR (ir.json), Envoy resources (xds.json), Gateway API status
(status.json) and load errors (errors.json); each folder under tests/golden-xds/ holds an IR
(ir.json) and the Envoy resources the xDS translator alone makes of it (xds.json). The
GatewayClass's supportedFeatures list is kept once, in tests/golden/supported-features.json.

These tests only compare. Regenerate after an intended change with the separate command
(tests/goldens.py), then review the diff like code:
    make golden        # = .venv/bin/python -m tests.goldens
    git diff tests/golden
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane import ir
from controlplane.gatewayapi.translator import translate
from controlplane.providers.files import FileProvider
from controlplane.xds.jsonview import resources_to_json
from controlplane.xds.translator import build_resources
from envoy_validate import envoy_rejects
from goldens import (
    FEATURES,
    FEATURES_REF,
    GOLDEN,
    cases,
    from_json,
    rendered,
    rendered_xds,
    xds_case_ir,
    xds_cases,
)

CASES = cases()
XDS_CASES = xds_cases()
ROOT = Path(__file__).resolve().parent.parent


def _compare(path: Path, value: object) -> None:
    assert path.exists(), f"{path} is missing: run `make golden` and review it"
    assert json.loads(path.read_text()) == value, f"{path} differs: run `make golden` and review `git diff`"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    files, features = rendered(case)
    for path, value in files.items():
        _compare(path, value)
    for found in features:
        _compare(FEATURES, found)


@pytest.mark.parametrize("case", XDS_CASES)
def test_golden_xds(case: str) -> None:
    for path, value in rendered_xds(case).items():
        _compare(path, value)


@pytest.mark.parametrize("case", CASES)
def test_the_ir_checkpoint_is_all_the_xds_translator_needs(case: str) -> None:
    """xds.json follows from ir.json alone: the IR checkpoint loses nothing on its way to JSON,
    and a diff in xds.json without one in ir.json is the xDS translator's."""
    irs = json.loads((GOLDEN / case / "ir.json").read_text())
    expected = json.loads((GOLDEN / case / "xds.json").read_text())
    assert irs.keys() == expected.keys()
    for key, body in irs.items():
        assert resources_to_json(build_resources(from_json(ir.GatewayIR, body))) == expected[key], key


def test_the_xds_cases_cover_what_they_are_named_for() -> None:
    assert {"mirror-fraction", "two-mirrors", "h2c-backend"} <= set(XDS_CASES)
    routes = {c: xds_case_ir(c).listeners[0].chains[0].virtual_hosts[0].routes[0] for c in XDS_CASES}
    assert (routes["mirror-fraction"].mirrors[0].numerator, routes["mirror-fraction"].mirrors[0].denominator) == (1, 3)
    assert len(routes["two-mirrors"].mirrors) == 2
    assert {b.protocol for b in xds_case_ir("h2c-backend").backends} == {"h2c"}


def test_every_case_has_input() -> None:
    assert CASES, "no golden cases"
    for case in CASES:
        assert list((ROOT / "tests" / "golden" / case / "input").glob("*.yaml")), f"{case} has no input/*.yaml"


def test_supported_features_live_in_one_file() -> None:
    """A feature change rewrites supported-features.json alone, and the list is really compared."""
    assert len(json.loads(FEATURES.read_text())) > 10
    for case in CASES:
        text = (ROOT / "tests" / "golden" / case / "status.json").read_text()
        assert '"supportedFeatures": [' not in text, f"{case}/status.json repeats the list"
    assert any(FEATURES_REF in (ROOT / "tests" / "golden" / c / "status.json").read_text() for c in CASES)


def test_the_old_update_switch_is_not_a_passing_run() -> None:
    assert os.environ.get("MIRRORPLANE_UPDATE_GOLDEN") is None, (
        "MIRRORPLANE_UPDATE_GOLDEN no longer rewrites anything: run `make golden` (python -m tests.goldens)"
    )


def test_update_is_refused_under_ci() -> None:
    """`make golden` in CI would turn every golden failure green; it exits 2 and writes nothing."""
    proc = subprocess.run([sys.executable, "-m", "tests.goldens"], cwd=ROOT, env={**os.environ, "CI": "true"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc
    assert "refusing" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts_every_golden_config(case: str) -> None:
    """What the translator emits for any input, even bad, is accepted by a real Envoy: one value it
    refuses would make Envoy NACK the whole Gateway's RouteConfiguration."""
    store = FileProvider(GOLDEN / case / "input").load()
    for key, gateway in translate(store).gateways.items():
        error = envoy_rejects(build_resources(gateway))
        assert error is None, f"{case}: Envoy refuses Gateway {key}: {error}"


@pytest.mark.parametrize("case", XDS_CASES)
def test_envoy_accepts_every_golden_xds_config(case: str) -> None:
    error = envoy_rejects(build_resources(xds_case_ir(case)))
    assert error is None, f"golden-xds {case}: Envoy rejects it: {error}"
