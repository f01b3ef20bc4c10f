"""Golden translator tests: each folder under tests/golden/ holds input YAML and the expected
Envoy resources (xds.json), Gateway API status (status.json) and load errors (errors.json).

Regenerate after an intended change, then review the diff like code:
    make golden        # = MIRRORPLANE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
    git diff tests/golden
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from controlplane.gatewayapi.translator import translate
from controlplane.offline import translate_folder
from controlplane.providers.files import FileProvider
from controlplane.xds.translator import build_resources
from envoy_validate import envoy_rejects

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
UPDATE = os.environ.get("MIRRORPLANE_UPDATE_GOLDEN") == "1"


def _check(path: Path, value: object) -> None:
    text = json.dumps(value, indent=2, sort_keys=False) + "\n"
    if UPDATE:
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run `make golden` and review it"
    assert json.loads(path.read_text()) == value, f"{path} differs: run `make golden` and review `git diff`"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    out = translate_folder(GOLDEN / case / "input")
    _check(GOLDEN / case / "xds.json", out["gateways"])
    _check(GOLDEN / case / "status.json", out["status"])
    _check(GOLDEN / case / "errors.json", out["errors"])


def test_every_case_has_input() -> None:
    assert CASES, "no golden cases"
    for case in CASES:
        assert list((GOLDEN / case / "input").glob("*.yaml")), f"{case} has no input/*.yaml"


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts_every_golden_config(case: str) -> None:
    """What the translator emits for any input, even bad, is accepted by a real Envoy: one value it
    refuses would make Envoy NACK the whole Gateway's RouteConfiguration."""
    store = FileProvider(GOLDEN / case / "input").load()
    for key, gateway in translate(store).gateways.items():
        error = envoy_rejects(build_resources(gateway))
        assert error is None, f"{case}: Envoy refuses Gateway {key}: {error}"
