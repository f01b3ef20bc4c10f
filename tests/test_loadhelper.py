"""At a cold start a large file is read by a helper process too (controlplane/providers/loadhelper.py),
and what the helper reads is exactly what reading alone gives: the same objects, the same errors in
the same order, the same rejections. A helper that cannot start, dies or hits a bug costs time
only (docs/loading.md). Real helper processes throughout."""

from __future__ import annotations

import logging
import mmap
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane import launch
from controlplane.providers import loadhelper
from controlplane.providers.files import FileProvider
from controlplane.providers.loadhelper import Helper
from controlplane.providers.yamlread import Limits

ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{i}, namespace: server}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [host-{i}.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /r{i}}}}}]
    filters:
    - type: RequestMirror
      requestMirror: {{backendRef: {{name: mirror, port: 8080}}, percent: 50}}
    backendRefs: [{{name: svc-{i}, port: 8080}}]
---
"""
# Documents the helper leaves to the reader (a log line, a document's position, an error's
# wording are the reader's), spread over the file, and one it reads (an anchor: PyYAML builds it).
ODD = [
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped, namespace: server}\n---\n",
    "just a string\n---\n",
    "kind: List\napiVersion: v1\nitems:\n- 42\n---\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: anchored, namespace: server}\nspec: &s {ports: [{port: 80}]}\n---\n",
    ROUTE.format(i="Bad_Name"),  # invalid
    ROUTE.replace("PathPrefix", "Prefixed").format(i="bad-type"),  # invalid
    "apiVersion: v1\nkind: Service\nmetadata: {name: dated, namespace: server, creationTimestamp: 2024-01-01}\n---\n",
]


def document_text(n: int) -> str:
    docs = [ROUTE.format(i=i) for i in range(n)]
    for k, odd in enumerate(ODD):
        docs.insert(1 + k * (n // len(ODD)), odd)
    return "".join(docs)


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader waits for the helper to end (it has then read every chunk, from the last back to
    the first) before it reads: so it takes the helper's records wherever there are, whatever the
    machine's load."""
    start = Helper.__init__

    def init(self: Helper, *args: Any) -> None:
        start(self, *args)
        self._process.wait()

    monkeypatch.setattr(Helper, "__init__", init)


def taken(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The chunks each helper handed over, from its last log line."""
    return [int(r.getMessage().rsplit("=", 1)[1]) for r in caplog.records if "loadhelper.done" in r.getMessage()]


def loaded(folder: Path, helper: bool | None, limits: Limits = Limits()) -> tuple[list[Any], list[Any]]:
    provider = FileProvider(folder, helper=helper, limits=limits)
    store = provider.load()
    objects = sorted(((o.key, o.spec, o.metadata, o.source) for o in store.objects()), key=repr)
    return objects, [e for errors in provider.errors.values() for e in errors]


def test_a_large_file_reads_the_same_with_a_helper_as_alone(
    tmp_path: Path, patient: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Valid and invalid routes, skipped kinds, documents that are no objects, an anchor, a date
    (marshal does not carry it): the same objects and errors either way, most chunks the helper's."""
    caplog.set_level(logging.INFO, logger="mirrorplane")
    (tmp_path / "routes.yaml").write_text(document_text(400))
    alone = loaded(tmp_path, helper=False)
    assert len(alone[0]) == 402 and len(alone[1]) == 4  # 400 routes and two Services
    assert taken(caplog) == []
    assert loaded(tmp_path, helper=True) == alone
    assert taken(caplog)[0] >= 400  # the routes and the anchored Service; none of the odd ones but that


@pytest.mark.parametrize(
    "tail",
    [
        "key: [unclosed\n",  # a YAML error, at the file's end (the first chunk the helper reads)
        "a:\n  b: " + "[" * 40 + "]" * 40 + "\n",  # nested too deep
        "a: &a [x, x, x, x, x, x, x, x]\n"
        + "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 8)}]\n" for a, b in zip("abcde", "bcdef", strict=True)),
    ],
    ids=["yaml-error", "too-deep", "aliases"],
)
def test_a_hostile_document_is_refused_with_the_same_message_with_a_helper(
    tmp_path: Path, patient: None, caplog: pytest.LogCaptureFixture, tail: str
) -> None:
    caplog.set_level(logging.INFO, logger="mirrorplane")
    text = document_text(300)
    middle = text.index("---\n", len(text) // 2) + 4
    (tmp_path / "routes.yaml").write_text(text[:middle] + tail + "---\n" + text[middle:])
    limits = Limits(max_depth=32, max_nodes=50_000)
    alone = loaded(tmp_path, helper=False, limits=limits)
    assert len(alone[1]) == 1 and alone[1][0].object == "file"
    assert "(line " in alone[1][0].message or "nodes" in alone[1][0].message
    assert loaded(tmp_path, helper=True, limits=limits) == alone
    assert taken(caplog)[0] > 100  # the helper read the documents after the hostile one


def test_the_node_limit_counts_the_helpers_chunks_in_the_files_order(tmp_path: Path, patient: None) -> None:
    (tmp_path / "routes.yaml").write_text(document_text(400))
    alone = loaded(tmp_path, helper=False, limits=Limits(max_nodes=20_000))
    assert [e.message for e in alone[1]] == ["rejected: more than 20000 nodes once aliases are expanded"]
    assert loaded(tmp_path, helper=True, limits=Limits(max_nodes=20_000)) == alone


def test_a_helper_that_cannot_start_costs_time_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "routes.yaml").write_text(document_text(100))
    alone = loaded(tmp_path, helper=False)
    monkeypatch.setattr(loadhelper, "PYTHON", str(tmp_path / "no-such-python"))
    assert loaded(tmp_path, helper=True) == alone
    assert "file.helper_unavailable" in caplog.text and "then=read_alone" in caplog.text


def test_a_helper_that_dies_costs_time_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed once it has handed over some chunks (perhaps in the middle of writing one): the
    reader takes what is whole and reads the rest."""
    (tmp_path / "routes.yaml").write_text(document_text(400))
    alone = loaded(tmp_path, helper=False)
    start = Helper.__init__
    counts: list[int] = []

    def init(self: Helper, *args: Any) -> None:
        start(self, *args)
        while self._process.poll() is None and os.fstat(self._shared.fileno()).st_size < mmap.PAGESIZE + 20_000:
            os.sched_yield()  # until it has written a few records, or ended
        os.kill(self._process.pid, signal.SIGKILL)
        counts.append(1)

    monkeypatch.setattr(Helper, "__init__", init)
    assert loaded(tmp_path, helper=True) == alone
    assert counts == [1]


def test_a_bug_in_the_helper_is_logged_with_its_traceback_and_costs_time_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, patient: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The helper's own code fails on one chunk (a fault put into the real helper process): the
    reader reads that chunk itself, and the helper's traceback is in the log."""
    (tmp_path / "routes.yaml").write_text(document_text(200))
    alone = loaded(tmp_path, helper=False)
    root = Path(loadhelper.__file__).resolve().parents[2]
    faulty = tmp_path / "faulty-python"
    fault = (
        f"import sys; sys.path.insert(0, {str(root)!r}); from controlplane.providers import loadhelper as h; "
        "read = h.read_chunk; "
        "h.read_chunk = lambda c, t, l: (1 / 0) if 'route-77,' in c.text else read(c, t, l); "
        "h.main()"
    )
    faulty.write_text(f'#!/bin/sh\nshift 3\nexec {sys.executable} -I -c "{fault}" "$@"\n')
    faulty.chmod(0o755)
    monkeypatch.setattr(loadhelper, "PYTHON", str(faulty))
    caplog.set_level(logging.INFO, logger="mirrorplane")
    assert loaded(tmp_path, helper=True) == alone
    failed = [r.getMessage() for r in caplog.records if "loadhelper.failed" in r.getMessage()]
    assert len(failed) == 1 and "ZeroDivisionError" in failed[0] and "Traceback" in failed[0]
    assert taken(caplog)[0] >= 190


def test_a_file_changed_between_the_two_reads_is_read_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(document_text(200))
    start = Helper.__init__

    def init(self: Helper, *args: Any) -> None:
        start(self, *args)
        self._process.wait()  # it read every chunk of the first version
        path.write_text(document_text(150))

    monkeypatch.setattr(Helper, "__init__", init)
    caplog.set_level(logging.INFO, logger="mirrorplane")
    with_helper = loaded(tmp_path, helper=True)
    assert "loadhelper.discarded" in caplog.text and taken(caplog) == [0]
    assert with_helper == loaded(tmp_path, helper=False)
    assert len(with_helper[0]) == 152


def test_small_files_and_changes_never_start_a_helper(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper's start (a fresh interpreter) would cost more than it saves: only a cold load of a
    file of ``loadhelper.MIN_BYTES`` or more starts one, and only for the largest file."""
    monkeypatch.setattr(loadhelper, "cpus", lambda: 2.0)  # a second CPU, whatever this machine has
    caplog.set_level(logging.INFO, logger="mirrorplane")
    small = tmp_path / "small.yaml"
    small.write_text(document_text(50))
    provider = FileProvider(tmp_path)
    provider.load()
    assert "loadhelper" not in caplog.text

    large = tmp_path / "large.yaml"
    large.write_text(document_text(3000))
    assert large.stat().st_size >= loadhelper.MIN_BYTES
    provider.load([large])  # a file added later: not a cold load
    assert "loadhelper" not in caplog.text

    cold = FileProvider(tmp_path)
    cold.load()
    assert [r.getMessage().split()[1] for r in caplog.records if "loadhelper.done" in r.getMessage()] == [
        f"source={large}"
    ]
    caplog.clear()
    large.write_text(large.read_text().replace("/r7}", "/changed}", 1))
    cold.load()  # a change: read alone
    cold.load([large])
    assert "loadhelper" not in caplog.text


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Helper]]:
    """Every helper started from here on, in order (an early one left over is stopped after)."""
    helpers: list[Helper] = []
    start = Helper.__init__

    def init(self: Helper, *args: Any) -> None:
        start(self, *args)
        helpers.append(self)

    monkeypatch.setattr(Helper, "__init__", init)
    monkeypatch.setattr(loadhelper, "cpus", lambda: 2.0)  # a second CPU, whatever this machine has
    yield helpers
    loadhelper.adopt(None, Limits())


def test_the_helper_the_command_starts_before_its_imports_is_the_first_loads(
    tmp_path: Path, patient: None, started: list[Helper], caplog: pytest.LogCaptureFixture
) -> None:
    """`mirrorplane serve DIR` starts the helper of DIR's largest file before importing the rest of
    the program (controlplane/launch.py); the file provider's cold load takes it over instead of
    starting another, and reads the same objects and errors."""
    (tmp_path / "routes.yaml").write_text(document_text(3000))
    (tmp_path / "base.yaml").write_text(document_text(5))
    alone = loaded(tmp_path, helper=False)
    caplog.set_level(logging.INFO, logger="mirrorplane")
    launch._start_load_helper(["serve", "--xds-port", "18000", "--log-level", "info", str(tmp_path)])
    assert [h.path for h in started] == [tmp_path / "routes.yaml"]
    assert loaded(tmp_path, helper=None) == alone
    assert len(started) == 1 and taken(caplog)[0] >= 3000


def test_an_early_helper_for_another_file_or_other_limits_is_stopped_unused(
    tmp_path: Path, started: list[Helper], caplog: pytest.LogCaptureFixture
) -> None:
    """The guess was wrong (another folder's file) or the load reads under other limits: the early
    helper is stopped, having handed over nothing, and the load starts its own."""
    caplog.set_level(logging.INFO, logger="mirrorplane")
    other, folder = tmp_path / "other", tmp_path / "folder"
    other.mkdir()
    folder.mkdir()
    (other / "routes.yaml").write_text(document_text(3000))
    (folder / "routes.yaml").write_text(document_text(3000))
    loadhelper.start_early(other, Limits())
    FileProvider(folder).load()
    assert [h.path for h in started] == [other / "routes.yaml", folder / "routes.yaml"]
    assert taken(caplog)[0] == 0  # the early one, stopped first
    loadhelper.start_early(folder, Limits(max_nodes=10**7))
    FileProvider(folder).load()
    assert len(started) == 4 and taken(caplog)[2] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["translate", "DIR"],
        ["serve", "--kubernetes", "--kubeconfig", "DIR"],
        ["status"],
        ["serve", "DIR/missing"],
        ["serve", "--tls-cert", "DIR/cert.pem"],
    ],
)
def test_no_early_helper_but_for_serve_or_run_of_a_folder_or_file(
    tmp_path: Path, started: list[Helper], argv: list[str]
) -> None:
    (tmp_path / "routes.yaml").write_text(document_text(3000))
    (tmp_path / "cert.pem").write_text("x" * (2 << 20))
    launch._start_load_helper([a.replace("DIR", str(tmp_path)) for a in argv])
    assert started == []
    launch._start_load_helper(["run", "--tls-cert", str(tmp_path / "cert.pem"), str(tmp_path / "routes.yaml")])
    assert [h.path for h in started] == [tmp_path / "routes.yaml"]
    assert loadhelper.adopt(None, Limits()) is None and loadhelper.adopt(None, Limits()) is None  # stopped, once


@pytest.mark.parametrize(
    ("cgroup", "files", "expected"),
    [
        ("0::/kubepods/pod1/ctr\n", {"kubepods/pod1/ctr/cpu.max": "max 100000\n"}, 2.0),
        (
            "0::/kubepods/pod1/ctr\n",
            {"kubepods/pod1/ctr/cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "150000 100000\n"},
            1.5,
        ),  # a parent's limit
        ("0::/kubepods/pod1/ctr\n", {"cpu.max": "50000 100000\n"}, 0.5),  # a container's own view
        (
            "4:cpu,cpuacct:/docker/abc\n",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            },
            1.0,
        ),
        (
            "4:cpu,cpuacct:/docker/abc\n",
            {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
            2.0,
        ),
    ],
)
def test_a_cpu_quota_under_two_cpus_leaves_no_core_to_a_helper(
    tmp_path: Path, cgroup: str, files: dict[str, str], expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container's CPU limit is the reader's and the helper's together: a helper's CPU would be
    taken from the reader. ``cpus`` reads it as the kernel lays it out (v2 ``cpu.max``, v1 CFS quota)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})  # two CPUs; a quota may allow fewer
    (tmp_path / "proc-cgroup").write_text(cgroup)
    fs = tmp_path / "fs"
    for name, text in files.items():
        (fs / name).parent.mkdir(parents=True, exist_ok=True)
        (fs / name).write_text(text)
    assert loadhelper.cpus(tmp_path / "proc-cgroup", fs) == expected


def test_the_helper_only_takes_cpu_nobody_else_wants(tmp_path: Path) -> None:
    """At the lowest priority: on a busy machine (or a busy control group) it takes next to no
    CPU from the reader or anyone else, and it runs on a core that would be idle."""
    (tmp_path / "routes.yaml").write_text(document_text(100))
    helper = Helper(tmp_path / "routes.yaml", Limits())
    try:
        assert os.getpriority(os.PRIO_PROCESS, helper._process.pid) == 19
    finally:
        helper.close()


def test_a_file_too_large_or_not_text_is_refused_as_without_a_helper(tmp_path: Path, patient: None) -> None:
    """The helper reads the file within the same limits and hands over nothing; the worker refuses it."""
    path = tmp_path / "routes.yaml"
    path.write_bytes(document_text(200).encode() + b"# caf\xe9\n")
    alone = loaded(tmp_path, helper=False)
    assert [e.message for e in alone[1]] == [f"rejected: not UTF-8 text: byte {path.stat().st_size - 2} is b'\\xe9'"]
    assert loaded(tmp_path, helper=True) == alone
    path.write_text(document_text(200))
    limits = Limits(max_bytes=path.stat().st_size - 1)
    alone = loaded(tmp_path, helper=False, limits=limits)
    assert [e.message for e in alone[1]] == [f"rejected: larger than {limits.max_bytes} bytes"]
    assert loaded(tmp_path, helper=True, limits=limits) == alone
