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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in support.SUMMARY:
        terminalreporter.write_line(line)
