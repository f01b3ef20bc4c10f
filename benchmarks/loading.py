"""Reading a folder of YAML: a cold load, and the reloads the per-document cache makes cheap.

    python -m benchmarks.loading [N ...]        (default: 1000 5000)

N mirrored HTTPRoutes (with their Gateway and Services) in one file. Figures: cutting the file into
documents and hashing them (``yamlread.chunks``), a cold ``FileProvider.load``, a reload after one
HTTPRoute changed, and a reload of identical bytes. Peers measured in the same run:
``yaml.load_all`` with libyaml's C loader (the floor for parsing the file at all) and PyYAML's
pure-Python ``safe_load_all`` (what main used).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from controlplane.gcpause import paused_gc
from controlplane.providers import yamlread
from controlplane.providers.files import FileProvider

from .workload import objects


def _timed(fn: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def run(n: int) -> None:
    text = yaml.safe_dump_all(objects(n), sort_keys=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.yaml"
        path.write_text(text)
        provider = FileProvider(Path(tmp))
        c_load = _timed(lambda: list(yaml.load_all(text, Loader=yaml.CSafeLoader)))
        pure_load = _timed(lambda: list(yaml.safe_load_all(text)))
        with paused_gc():  # as FileProvider.load runs it
            split = _timed(yamlread.chunks, text)
        cold = _timed(provider.load)
        edited = text.replace("host-0.example.com", "host-0-edited.example.com", 1)
        assert edited != text
        path.write_text(edited)
        one = _timed(provider.load)
        same = _timed(provider.load)
    mib = len(text.encode()) / 2**20
    print(f"{n} routes, {mib:.1f} MiB in one file")
    print(f"  peer yaml.load_all (C loader)      {c_load * 1000:8.0f} ms")
    print(f"  peer yaml.safe_load_all (pure)     {pure_load * 1000:8.0f} ms")
    print(f"  cut into chunks and hash them      {split * 1000:8.0f} ms   {split / c_load:.3f}x the C load")
    print(f"  cold load (parse+validate+store)   {cold * 1000:8.0f} ms")
    print(f"  reload, one route changed          {one * 1000:8.0f} ms   {cold / one:.1f}x faster than cold")
    print(f"  reload, same bytes                 {same * 1000:8.0f} ms")


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["1000", "5000"]:
        run(int(arg))
