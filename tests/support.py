"""Small helpers shared by the tests (importable: ``from support import ...``)."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Never the same port twice in one test process, so several ports taken in
    a row for one test do not collide.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port found")


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> None:
    """Poll ``predicate`` (sync or async) until it returns true; instead of sleeps.

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
