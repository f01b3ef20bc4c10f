"""Arbitrary YAML bytes never make `mirrorplane serve` unresponsive or large (hypothesis).

One real `serve` process watches a folder; each example is a new file in it: deep nesting, alias
bombs, large files, UTF-16/UTF-32/BOM, invalid UTF-8, binary. While each loads, /healthz must
answer every probe within PROBE_TIMEOUT (main blocked its event loop for 40 s on a 50 MB file);
at the end the process's peak RSS must have grown by less than MEMORY_BUDGET (main went from
190 MB to 1.25 GB on a 544-byte alias bomb). Bounded: 30 examples.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e import LOCAL
from support import free_port
from test_cli import MIRRORPLANE

PROBE_TIMEOUT = 2.0
MEMORY_BUDGET_KIB = 300 * 1024
SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: fuzz}}\nspec:\n  ports: [{{port: 80}}]\n"


class Serve:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.http = free_port()
        self.proc = subprocess.Popen(
            [*MIRRORPLANE, "serve", str(folder), "--xds-port", str(free_port()), "--http-port", str(self.http)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self.baseline = 0  # KiB of resident memory once ready (the fixture sets it)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def updates(self) -> int:
        return sum(1 for line in self.lines if " translate." in line)

    def get(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=PROBE_TIMEOUT)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()

    def memory_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    folder = tmp_path_factory.mktemp("fuzz") / "local"
    shutil.copytree(LOCAL, folder)
    s = Serve(folder)
    deadline = time.monotonic() + 60
    while True:
        try:
            if s.get("/readyz") == 200:
                break
        except OSError:
            pass
        assert s.proc.poll() is None and time.monotonic() < deadline, "".join(s.lines)
        time.sleep(0.1)
    s.baseline = s.memory_kib("VmRSS")
    yield s
    peak = s.memory_kib("VmHWM")
    s.proc.terminate()
    s.proc.wait(15)
    assert peak - s.baseline < MEMORY_BUDGET_KIB, f"peak RSS grew by {(peak - s.baseline) // 1024} MiB"


def _nested(depth: int, mapping: bool) -> str:
    inner = "{a: " * depth + "1" + "}" * depth if mapping else "[" * depth + "]" * depth
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: deep, namespace: fuzz}}\nspec:\n  x: {inner}\n"


def _laughs(width: int, levels: int) -> str:
    lines = [f"  l0: &l0 [{','.join(['lol'] * width)}]"]
    lines += [f"  l{i}: &l{i} [{','.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "apiVersion: v1\nkind: Service\nmetadata: {name: lol, namespace: fuzz}\nspec:\n" + "\n".join(lines) + "\n"


texts = st.one_of(
    st.builds(_nested, st.integers(1, 3000), st.booleans()),
    st.builds(_laughs, st.integers(2, 12), st.integers(1, 12)),
    st.builds(lambda n: "---\n".join(SERVICE.format(i=i) for i in range(n)), st.integers(0, 3000)),
    st.builds(lambda n: "# padding\n" * n, st.integers(0, 1_000_000)),  # up to 10 MB: over the size limit
    st.text(max_size=2000),
)
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1"])
payloads = st.one_of(
    texts.map(str.encode),
    texts.map(str.encode),
    st.builds(lambda t, e: t.encode(e, errors="replace"), texts, encodings),
    st.binary(max_size=20_000),
    st.builds(lambda t, cut: t.encode()[:cut] + b"\xff\xfe\xc3" + t.encode()[cut:], texts, st.integers(0, 2000)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(data=payloads)
def test_any_bytes_keep_serve_responsive_and_small(serve: Serve, data: bytes) -> None:
    path = serve.folder / f"example-{time.monotonic_ns()}.yaml"
    _change(serve, lambda: path.write_bytes(data))
    assert serve.get("/readyz") == 200, "the provider kept running"
    assert not any("Traceback" in line for line in serve.lines), "".join(serve.lines[-50:])
    _change(serve, path.unlink)


def _change(serve: Serve, change: Callable[[], object]) -> None:
    """Make a change and wait for the update it causes; every probe meanwhile answers in time."""
    before = serve.updates()
    change()
    deadline = time.monotonic() + 60
    while serve.updates() == before:
        assert serve.proc.poll() is None, "".join(serve.lines[-50:])
        assert serve.get("/healthz") == 200
        assert time.monotonic() < deadline, "the change never reached the store"
        time.sleep(0.02)
