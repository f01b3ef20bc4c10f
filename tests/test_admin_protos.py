"""The committed generated code (admin API: controlplane/admin/v1/; echo: controlplane/echo/grpcecho/
and controlplane/echo/v1/) is what `make protos` generates from protos/ now: regenerate into a
temporary folder with the same make target and compare."""

from __future__ import annotations

import filecmp
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Folder of generated code -> the files `make protos` writes there.
GENERATED = {
    "controlplane/admin/v1": ["admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py"],
    "controlplane/echo/grpcecho": ["grpcecho_pb2.py", "grpcecho_pb2.pyi", "grpcecho_pb2_grpc.py"],
    "controlplane/echo/v1": ["streamecho_pb2.py", "streamecho_pb2.pyi", "streamecho_pb2_grpc.py"],
    "controlplane/shadow/v1": ["shadow_pb2.py", "shadow_pb2.pyi", "shadow_pb2_grpc.py"],
}


def test_generated_code_is_current(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed (the Makefile's protos target is the documented command)")
    # STAMP= : use this interpreter as it is, without the target's venv (re)install step.
    cmd = ["make", "-s", "protos", f"PY={sys.executable}", "STAMP=", f"PROTOS_OUT={tmp_path}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(f"{folder}/{name}" for folder, names in GENERATED.items() for name in names)
    stale = [n for n in written if not filecmp.cmp(tmp_path / n, REPO / n, shallow=False)]
    assert not stale, f"{stale} differ from protos/: run `make protos` and commit the result"


def test_generated_code_imports_as_the_package():
    from controlplane.admin.v1 import admin_pb2, admin_pb2_grpc
    from controlplane.echo.grpcecho import grpcecho_pb2, grpcecho_pb2_grpc
    from controlplane.echo.v1 import streamecho_pb2, streamecho_pb2_grpc

    assert admin_pb2.DESCRIPTOR.package == "mirrorplane.admin.v1"
    assert admin_pb2.DESCRIPTOR.name == "controlplane/admin/v1/admin.proto"
    assert admin_pb2_grpc.AdminStub.__module__ == "controlplane.admin.v1.admin_pb2_grpc"
    # Upstream's package name, so that clients of upstream's echo-basic call this echo unchanged.
    assert grpcecho_pb2.DESCRIPTOR.package == "gateway_api_conformance.echo_basic.grpcecho"
    assert grpcecho_pb2_grpc.GrpcEchoStub.__module__ == "controlplane.echo.grpcecho.grpcecho_pb2_grpc"
    assert streamecho_pb2.DESCRIPTOR.package == "mirrorplane.echo.v1"
    assert streamecho_pb2_grpc.StreamEchoStub.__module__ == "controlplane.echo.v1.streamecho_pb2_grpc"


def test_upstream_proto_is_a_recorded_copy():
    folder = REPO / "protos" / "controlplane" / "echo" / "grpcecho"
    assert sorted(p.name for p in folder.iterdir()) == ["LICENSE", "UPSTREAM", "grpcecho.proto"]
    assert "Apache License" in (folder / "LICENSE").read_text()
    upstream = (folder / "UPSTREAM").read_text()
    assert "conformance/echo-basic/grpcecho.proto" in upstream
    # Unedited: the digest recorded when it was copied from upstream's v1.6.1 tag.
    digest = hashlib.sha256((folder / "grpcecho.proto").read_bytes()).hexdigest()
    assert f"sha256 of grpcecho.proto (tests/test_admin_protos.py checks it): {digest}" in upstream
