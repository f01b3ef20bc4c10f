"""What ``mirrorplane serve DIR`` has imported when its event loop starts (controlplane/launch.py;
docs/performance.md, "Cold start: the imports, ninth round"): the process's cold start pays for
every module on one core before its load can start."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Modules only other commands use: `echo` and `run --echo` (the echo's servers, its gRPC service),
# `run` and `bootstrap` (the local Envoy), `certs` (cryptography), `--kubernetes`.
NOT_FOR_SERVE = (
    "controlplane.echo.cli",
    "controlplane.echo.common",
    "controlplane.echo.http",
    "controlplane.echo.rpc",
    "controlplane.echo.h2c",
    "controlplane.localenvoy",
    "controlplane.certs",
    "controlplane.providers.kubernetes",
    "kubernetes_asyncio",
    "cryptography",
)


def _at_loop_start(tmp_path: Path, *argv: str) -> dict[str, object]:
    """Run the ``mirrorplane`` entry point in a fresh interpreter with ``argv``, stopped where the
    command starts its event loop: the modules imported by then and the collector's state."""
    (tmp_path / "routes.yaml").write_text("")
    script = textwrap.dedent(
        f"""
        import asyncio, gc, json, sys
        sys.path.insert(0, {str(REPO)!r})

        def run(main, **kwargs):
            main.close()
            from controlplane.providers import loadhelper
            loadhelper.adopt(None, None)  # stop the early helper
            state = {{"modules": sorted(sys.modules), "gc_enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}
            print(json.dumps(state))
            sys.exit(0)

        asyncio.run = run
        sys.argv = ["mirrorplane", *{list(argv)!r}]
        from controlplane.launch import main
        main()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    state: dict[str, object] = json.loads(done.stdout)
    return state


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``serve DIR`` at its event loop's start."""
    folder = tmp_path_factory.mktemp("serve")
    return _at_loop_start(folder, "serve", str(folder), "--xds-port", "0", "--http-port", "0")


def test_serving_a_folder_imports_no_other_commands_modules(serving: dict[str, object]) -> None:
    modules = set(serving["modules"])  # type: ignore[call-overload]
    assert "controlplane.serve" in modules and "controlplane.providers.files" in modules
    assert not {m for m in modules if m.startswith(NOT_FOR_SERVE)}


def test_the_imports_leave_the_collector_on_with_their_objects_frozen(serving: dict[str, object]) -> None:
    """Collections during the imports found nothing to free; their objects live as long as the
    process, so later collections skip them."""
    assert serving["gc_enabled"] is True
    assert isinstance(serving["frozen"], int) and serving["frozen"] > 20_000
