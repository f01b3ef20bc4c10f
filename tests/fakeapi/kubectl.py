"""Running the real kubectl against a kubeconfig (the fake's, or a real cluster's)."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

# Discovery is cached per server URL; one cache per test process keeps a
# reused port from serving another fake's stale discovery to kubectl.
_CACHE_DIR = tempfile.mkdtemp(prefix="mirrorplane-kubectl-cache-")
atexit.register(shutil.rmtree, _CACHE_DIR, True)


def kubectl_binary() -> str | None:
    """The kubectl on PATH (the machine image ships v1.32 at /usr/bin/kubectl), or None."""
    return shutil.which("kubectl")


def _argv(kubeconfig: str | os.PathLike[str], args: Sequence[str]) -> list[str]:
    binary = kubectl_binary()
    if binary is None:
        raise FileNotFoundError("kubectl is not installed")
    return [binary, f"--kubeconfig={os.fspath(kubeconfig)}", f"--cache-dir={_CACHE_DIR}", *args]


async def kubectl_async(
    kubeconfig: str | os.PathLike[str], *args: str, input: str | None = None, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl ARGS`` without blocking the event loop; raises CalledProcessError (with stderr)
    if it fails and ``check``."""
    argv = _argv(kubeconfig, args)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    result = subprocess.CompletedProcess(argv, proc.returncode or 0, out.decode(), err.decode())
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, argv, result.stdout, result.stderr)
    return result


class KubectlWatch:
    """A long-running ``kubectl get -w ...``; its output lines are collected as they come.

    async with KubectlWatch(kubeconfig, "get", "httproute", "-w") as w:
        await w.wait_for(lambda line: "MODIFIED" in line)
    """

    def __init__(self, kubeconfig: str | os.PathLike[str], *args: str) -> None:
        self.argv = _argv(kubeconfig, args)
        self.lines: list[str] = []
        self.stderr = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KubectlWatch:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15) -> str:
        """The first output line matching ``predicate``; TimeoutError names what was printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if predicate(line):
                    return line
            if self._proc is not None and self._proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        stderr = await self._stderr()
        raise TimeoutError(f"kubectl printed no matching line; stdout={self.lines!r} stderr={stderr!r}")

    async def _stderr(self) -> str:
        if self._proc is not None and self._proc.returncode is not None and self._proc.stderr is not None:
            self.stderr += (await self._proc.stderr.read()).decode()
        return self.stderr

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._reader is not None:
            await self._reader
