"""The collector pause (controlplane/gcpause.py): overlapping pauses, the freeze after a large one,
and the short switch interval while one lasts."""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator

import pytest

from controlplane.gcpause import FREEZE_AFTER, SWITCH_INTERVAL, _malloc_trim, paused_gc


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    if not enabled:
        gc.disable()


def test_overlapping_pauses_resume_the_collector_when_the_last_ends() -> None:
    """The file loader's thread and the controller's pause at the same time: the first to finish
    must not turn the collector back on under the other."""
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with paused_gc():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with paused_gc():
        thread.start()
        inside.wait(10)
    assert not gc.isenabled(), "the other pause is still running"
    leave.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_large_pause_moves_what_it_left_out_of_the_collectors_sight() -> None:
    frozen = gc.get_freeze_count()
    with paused_gc():
        small: list[list[int]] = [[] for _ in range(100)]
    assert gc.get_freeze_count() == frozen, "a small change is left to the collector"
    with paused_gc():
        config: list[list[int]] = [[] for _ in range(FREEZE_AFTER + 1000)]
    assert gc.get_freeze_count() >= frozen + len(config), "a large load is frozen"
    assert small and gc.isenabled()


def _rss_kb() -> int:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None, reason="no glibc malloc_trim here")
def test_a_large_pause_gives_the_heap_it_freed_back_to_the_system() -> None:
    """What a load frees in the middle of the C heap (blocks over Python's small-object size, a
    few kept among them, as parsed YAML and serialized messages leave it) leaves RSS again."""
    before = _rss_kb()
    with paused_gc():
        config: list[list[int]] = [[] for _ in range(FREEZE_AFTER + 1000)]
        blocks = [bytes(1000 + i % 7) for i in range(100_000)]  # 100 MB through malloc
        kept = blocks[::64]
        del blocks
    grown_mb = (_rss_kb() - before) / 1024
    assert config and kept
    assert grown_mb < 40, f"RSS still {grown_mb:.0f} MB above where it was"


def test_the_loop_gets_the_interpreter_back_sooner_while_a_pause_lasts() -> None:
    """A pause is CPU-bound Python in a worker thread: the switch interval is short while any pause
    lasts (the event loop waits for the interpreter at each wake-up), and what it was comes back
    when the last one ends."""
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL
    with paused_gc():
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        with paused_gc():
            assert sys.getswitchinterval() == SWITCH_INTERVAL
        assert sys.getswitchinterval() == SWITCH_INTERVAL, "an inner pause must not restore it"
    assert sys.getswitchinterval() == before
