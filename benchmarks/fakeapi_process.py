"""tests/fakeapi as a process of its own, for the benchmarks that run the Kubernetes provider.

A real API server is another process on another machine. In the benchmark's process, the fake's
JSON encoding of a 10,000-object LIST, its watch fan-out and its memory competed with the control
plane for the interpreter lock and counted in the control plane's RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .procstat import rss_mib


def write_seed(path: Path, objects: Iterable[dict[str, Any]]) -> None:
    """The objects for ``python -m fakeapi --seed``, one JSON object per line."""
    with path.open("w") as f:
        for obj in objects:
            f.write(json.dumps(obj) + "\n")


class FakeApiProcess:
    """tests/fakeapi in a process of its own (``python -m fakeapi``), seeded from a file: like a
    real API server, its LIST encoding, watch fan-out and memory are not the control plane's."""

    def __init__(self, seed: Path, kubeconfig: Path) -> None:
        self.seed, self.kubeconfig = seed, kubeconfig
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> FakeApiProcess:
        root = Path(__file__).resolve().parent.parent
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fakeapi",
            "--seed",
            str(self.seed),
            "--kubeconfig",
            str(self.kubeconfig),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "tests"), str(root)])},
        )
        assert self._proc.stdout is not None
        line = (await asyncio.wait_for(self._proc.stdout.readline(), 300)).decode()
        if not line.startswith("ready "):
            raise RuntimeError(f"python -m fakeapi did not start (exit {await self._proc.wait()})")
        self.url = line.split()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the server's cue to stop
            try:
                await asyncio.wait_for(self._proc.wait(), 20)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()

    def rss_mb(self) -> float:
        assert self._proc is not None
        return rss_mib(self._proc.pid)
