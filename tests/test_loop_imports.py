"""Work a cold start must not do on the event loop: importing modules (docs/performance.md, the
cold-load stall)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_starting_the_file_watch_imports_nothing_on_the_event_loop(tmp_path: Path) -> None:
    """watchfiles' awatch imported anyio's asyncio backend (about 30 modules, 15-40 ms) on the
    event loop at its first step, right after the first load. A fresh interpreter, so that no
    other test has imported them already."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(REPO)!r})
        from controlplane.providers.files import FileProvider

        async def main():
            provider = FileProvider({str(tmp_path)!r})
            await provider.start()
            before = set(sys.modules)
            watch = asyncio.create_task(provider.watch(lambda store: None))
            await provider.watching.wait()
            print(" ".join(sorted(set(sys.modules) - before)))
            watch.cancel()

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []
