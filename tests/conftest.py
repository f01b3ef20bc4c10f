"""Shared fixtures. Keep it small; helpers live in tests/support.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import Phase, settings

import support
from e2e import Stack, start_stack

# `python -m tests.mutation` only needs to know that a property fails, not its smallest example.
settings.register_profile("mutation", phases=(Phase.explicit, Phase.generate), database=None)


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Factory: ``free_port()`` returns a free TCP port on 127.0.0.1."""
    return support.free_port


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The seed scenario live (tests/e2e.py): echo backends, the control plane, a real Envoy."""
    s = await start_stack(tmp_path)
    try:
        yield s
    finally:
        await s.exits.aclose()


# Markers (registered in pyproject.toml) for whole modules (by name prefix) and for tests using a
# fixture; a test that needs one for another reason carries its own decorator.
MODULE_MARKS: dict[str, tuple[str, ...]] = {
    "test_e2e_": ("envoy",),  # every test_e2e_*.py module: the seed scenario through a real Envoy
    "test_envoy_limits": ("envoy",),  # `envoy --mode validate` is the oracle
    "test_restart": ("envoy",),
    "test_metrics": ("envoy",),
    "test_fakeapi": ("kubernetes",),  # and test_fakeapi_*.py
    "test_kubernetes_provider": ("kubernetes",),
    "test_kubernetes_status": ("kubernetes",),
    "test_kubernetes_mirror_policy": ("kubernetes",),
    "test_kubernetes_grpc": ("kubernetes", "envoy"),
    "test_kubernetes_e2e": ("kubernetes", "envoy"),
    "test_fleet": ("slow",),
    "test_fuzz": ("slow",),  # hypothesis, 200 examples: 20-40 s
}
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "stack": ("envoy",),  # the seed scenario with a real Envoy (tests/e2e.py), or its Kubernetes twin
    "mtls_stack": ("envoy",),
    "quickstart": ("envoy",),  # `mirrorplane run`
    "readme_demo": ("envoy",),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__ if isinstance(item, pytest.Function) else ""
        marks = {m for prefix, ms in MODULE_MARKS.items() if module.startswith(prefix) for m in ms}
        for fixture in getattr(item, "fixturenames", ()):
            marks.update(FIXTURE_MARKS.get(fixture, ()))
        if isinstance(item, pytest.Function) and "envoy" in item.originalname:
            marks.add("envoy")  # test_real_envoy_..., test_envoy_accepts_..., ...
        for mark in sorted(marks - {m.name for m in item.iter_markers()}):
            item.add_marker(mark)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in support.SUMMARY:
        terminalreporter.write_line(line)
