"""Shared fixtures. Keep it small; helpers live in tests/support.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import support


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Factory: ``free_port()`` returns a free TCP port on 127.0.0.1."""
    return support.free_port
