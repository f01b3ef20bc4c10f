"""The committed admin API code (controlplane/admin/v1/) is what `make protos` generates from
protos/ now: regenerate into a temporary folder with the same make target and compare."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "controlplane" / "admin" / "v1"


def test_generated_code_is_current(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed (the Makefile's protos target is the documented command)")
    # STAMP= : use this interpreter as it is, without the target's venv (re)install step.
    cmd = ["make", "-s", "protos", f"PY={sys.executable}", "STAMP=", f"PROTOS_OUT={tmp_path}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    fresh = tmp_path / "controlplane" / "admin" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == ["admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py"]
    stale = [n for n in names if not filecmp.cmp(fresh / n, GENERATED / n, shallow=False)]
    assert not stale, f"{stale} differ from protos/: run `make protos` and commit the result"


def test_generated_code_imports_as_the_package():
    from controlplane.admin.v1 import admin_pb2, admin_pb2_grpc

    assert admin_pb2.DESCRIPTOR.package == "mirrorplane.admin.v1"
    assert admin_pb2.DESCRIPTOR.name == "controlplane/admin/v1/admin.proto"
    assert admin_pb2_grpc.AdminStub.__module__ == "controlplane.admin.v1.admin_pb2_grpc"
