"""Small helpers shared by the tests (importable: ``from support import ...``)."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Callable

from controlplane.ports import free_port

__all__ = ["free_port", "wait_until"]


async def wait_until(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> None:
    """Poll ``predicate`` (sync or async) until what it returns (or awaits to) is truthy; instead of sleeps.

    Raises TimeoutError after ``timeout`` seconds, naming the predicate's last
    exception if it raised.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            last_error = None
        except Exception as exc:  # noqa: BLE001 - not there yet
            last_error = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise TimeoutError(f"{what} not met within {timeout:g}s{detail}")
        await asyncio.sleep(interval)


# Lines a test wants in the terminal summary of every run (conftest.py prints them), e.g. the
# fuzzer's statistics, which would otherwise hide in captured output.
SUMMARY: list[str] = []


def other_address() -> str | None:
    """A non-loopback address of this machine, if it has one: what a client elsewhere would reach.

    Connecting a UDP socket sends nothing; it only picks the outgoing address of a route. The
    targets are unicast on purpose: connecting to a broadcast address fails without SO_BROADCAST.
    """
    for target in ("198.51.100.1", "10.255.255.254"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((target, 9))
            except OSError:
                continue
            address = s.getsockname()[0]
            if not address.startswith("127."):
                return address
    return None
