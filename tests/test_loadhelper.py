"""A large file is read by a helper process too (controlplane/providers/loadhelper.py), and what
the helper reads is exactly what reading alone gives: the same objects, the same errors in the
same order, the same rejections (docs/loading.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.providers import yamlread
from controlplane.providers.files import FileProvider, _parse_document, read_chunk
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
ODD = [
    # The first three need what only the caller has (a log line, a document's position): the
    # helper leaves them to it. The others it reads as the caller would.
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped, namespace: server}\n---\n",
    "just a string\n---\n",
    "kind: List\napiVersion: v1\nitems:\n- 42\n---\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: anchored, namespace: server}\nspec: &s {ports: [{port: 80}]}\n---\n",
    ROUTE.format(i="Bad_Name"),  # invalid: the helper words it the same way
    ROUTE.replace("PathPrefix", "Prefixed").format(i="bad-type"),
]


def document_text(n: int) -> str:
    docs = [ROUTE.format(i=i) for i in range(n)]
    for k, odd in enumerate(ODD):
        docs.insert(1 + k * (n // len(ODD)), odd)
    return "".join(docs)


def local(text: str) -> list[Any]:
    """Each chunk read here, as without a helper (document positions from 0 within the chunk)."""
    out = []
    for chunk in yamlread.chunks(text):
        nodes, docs = yamlread.load(chunk, text)
        out.append((nodes, tuple(_parse_document(doc, i, "x.yaml") for i, doc in enumerate(docs))))
    return out


def test_a_chunk_read_for_a_helper_is_what_reading_it_here_gives_or_is_left_to_the_caller() -> None:
    text = document_text(30)
    chunks = yamlread.chunks(text)
    declined = 0
    for chunk, (nodes, documents) in zip(chunks, local(text), strict=True):
        got = read_chunk(chunk.text, "x.yaml", Limits())
        if got is None:
            declined += 1
            continue
        assert (got.nodes, got.documents) == (nodes, documents)
    assert declined == 3  # the skipped kind, the string, the List of a number
    assert sum(bool(d.failures) for _, docs in local(text) for d in docs) == 4  # 2 invalid routes included


def test_a_helper_process_works_from_the_end_and_hands_over_what_it_did() -> None:
    text = document_text(40)
    chunks = yamlread.chunks(text)
    helper = Helper(f"{read_chunk.__module__}:read_chunk", ("x.yaml", Limits()), [c.text for c in chunks])
    try:
        deadline = time.monotonic() + 60
        while helper.take(0) is None and time.monotonic() < deadline:  # the first chunk is a route: not declined
            time.sleep(0.02)
        for i, chunk in enumerate(chunks):
            expected = read_chunk(chunk.text, "x.yaml", Limits())
            assert helper.take(i) == expected
    finally:
        helper.close()


def test_a_helper_that_fails_costs_nothing_but_time() -> None:
    helper = Helper("controlplane.providers.no_such_module:f", (), ["a", "b"])
    try:
        assert helper.take(0) is None and helper.take(1) is None
    finally:
        helper.close()


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader waits until the helper has read every chunk (from the end back to the first, a
    route in these files) before it starts: so it takes the helper's result for every chunk the
    helper did not leave to it, whatever the machine's load."""
    start = Helper.__init__

    def init(self: Helper, *args: Any) -> None:
        start(self, *args)
        deadline = time.monotonic() + 60
        while self.take(0) is None and time.monotonic() < deadline:
            time.sleep(0.02)

    monkeypatch.setattr(Helper, "__init__", init)


def loaded(folder: Path, helper: bool) -> tuple[list[Any], list[Any]]:
    provider = FileProvider(folder, helper=helper)
    store = provider.load()
    objects = sorted(((o.key, o.spec, o.metadata) for o in store.objects()), key=repr)
    return objects, [e for errors in provider.errors.values() for e in errors]


def test_a_large_file_reads_the_same_with_a_helper_as_alone(tmp_path: Path, patient: None) -> None:
    """Valid and invalid routes, skipped kinds, a document that is no object, a YAML error at the
    end (the first chunk the helper reads): the same objects and the same errors either way."""
    (tmp_path / "routes.yaml").write_text(document_text(400))
    alone = loaded(tmp_path, helper=False)
    assert len(alone[0]) == 401 and len(alone[1]) == 4  # 400 routes and the Service
    assert loaded(tmp_path, helper=True) == alone
    (tmp_path / "routes.yaml").write_text(document_text(400) + "key: [unclosed\n")
    alone = loaded(tmp_path, helper=False)
    end = document_text(400).count("\n") + 2  # where the unclosed flow sequence ends: the file's end
    assert [e.message.split(":")[0] for e in alone[1]] == [f"YAML does not parse (line {end}, column 1)"]
    assert loaded(tmp_path, helper=True) == alone


def test_the_node_limit_counts_the_helpers_chunks_in_the_files_order(tmp_path: Path, patient: None) -> None:
    (tmp_path / "routes.yaml").write_text(document_text(400))
    provider = FileProvider(tmp_path, limits=Limits(max_nodes=20_000), helper=True)
    provider.load()
    assert [e.message for e in provider.errors[tmp_path / "routes.yaml"]] == [
        "rejected: more than 20000 nodes once aliases are expanded"
    ]


def test_a_small_file_or_a_change_to_a_large_one_is_read_without_a_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper's start would cost more than it saves: under HELPER_MIN_CHARS of new documents,
    whatever the machine's load, no helper is started."""
    from controlplane.providers import files, loadhelper

    started: list[int] = []
    start = Helper.__init__

    def init(self: Helper, function: str, args: tuple[Any, ...], items: list[str]) -> None:
        started.append(sum(map(len, items)))
        start(self, function, args, items)

    monkeypatch.setattr(Helper, "__init__", init)
    monkeypatch.setattr(loadhelper, "idle_core", lambda: True)  # as on an idle machine
    text = document_text(2000)
    assert len(text) < files.HELPER_MIN_CHARS
    (tmp_path / "routes.yaml").write_text(text)
    provider = FileProvider(tmp_path)
    provider.load()
    big = text + "".join(ROUTE.format(i=f"more-{i}") for i in range(3000))
    assert len(big) >= files.HELPER_MIN_CHARS
    (tmp_path / "routes.yaml").write_text(big)
    provider.load()  # the new documents come to more than HELPER_MIN_CHARS: a helper
    (tmp_path / "routes.yaml").write_text(big.replace("/rmore-7}", "/rmore-7-changed}"))
    provider.load()  # one changed document: no helper
    assert len(started) == 1 and started[0] >= files.HELPER_MIN_CHARS
    assert len(provider.errors[tmp_path / "routes.yaml"]) == 4


def test_a_helper_that_cannot_start_leaves_the_reading_to_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    (tmp_path / "routes.yaml").write_text(document_text(50))
    assert loaded(tmp_path, helper=True)[0] == loaded(tmp_path, helper=False)[0]
    assert "file.helper_unavailable" in caplog.text and "then=read_alone" in caplog.text
