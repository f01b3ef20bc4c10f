"""Hashing in worker threads without releasing the GIL (controlplane/digest.py): the digest is
SHA-256's, and building a route table never hands hashlib a buffer it would let go of the lock
for (each release let the worker starve the event loop: docs/performance.md)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from benchmarks.change_latency import http_route
from benchmarks.workload import NAMESPACE, objects
from controlplane import digest
from controlplane.gatewayapi import schema
from controlplane.gatewayapi.model import from_dict
from controlplane.gatewayapi.store import Store
from controlplane.gatewayapi.translator import translate
from controlplane.providers import yamlread
from controlplane.xds.encoded import EncodedMemo
from controlplane.xds.translator import XdsOptions, build_resources

# CPython's hashlib releases the GIL for a buffer of this many bytes or more (HASHLIB_GIL_MINSIZE).
RELEASES_AT = 2048


@pytest.mark.parametrize("size", [0, 1, RELEASES_AT - 1, RELEASES_AT, 3 * digest.PIECE, 13_000, 1_000_003])
def test_the_digest_is_sha256(size: int) -> None:
    data = os.urandom(size)
    assert digest.sha256(data) == hashlib.sha256(data).digest()
    assert digest.sha256(memoryview(data)) == hashlib.sha256(data).digest()
    assert digest.blake2b_128(data) == hashlib.blake2b(data, digest_size=16).digest()


class _Recorder:
    """hashlib.sha256, noting the size of every buffer it is given."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.sizes: list[int] = []

    def __call__(self, data: bytes = b"", **kwargs: Any) -> Any:
        self.sizes.append(memoryview(data).nbytes)
        recorder, h = self, self.real(data, **kwargs)

        class Hash:
            def update(self, more: bytes) -> None:
                recorder.sizes.append(memoryview(more).nbytes)
                h.update(more)

            def digest(self) -> bytes:
                return bytes(h.digest())

        return Hash()


def test_building_a_route_table_hashes_without_releasing_the_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three of the benchmark's HTTPRoutes of 16 mirrored rules on one hostname: one virtual host
    of about 13 kB (one HTTPRoute was, at three Envoy routes per rule)."""
    routes = [http_route(j, 3 * 16) for j in range(3)]
    for r in routes:
        r["spec"]["hostnames"] = ["host-0.example.com"]
    docs = [*objects(0), *routes]
    gateway = translate(Store.from_objects(from_dict(schema.validate(d)) for d in docs)).gateways[f"{NAMESPACE}/gw"]
    recorder = _Recorder(hashlib.sha256)
    monkeypatch.setattr(hashlib, "sha256", recorder)
    resources = build_resources(gateway, XdsOptions(), EncodedMemo())
    (route_configuration,) = resources.routes.values()
    assert len(route_configuration.SerializeToString()) > 4 * RELEASES_AT, "a virtual host large enough to matter"
    assert recorder.sizes, "the virtual hosts are hashed"
    assert max(recorder.sizes) < RELEASES_AT


def test_cutting_a_file_into_documents_hashes_without_releasing_the_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file provider's worker hashes every document it cuts (yamlread.chunks), one buffer per
    document in a loop, as the route build did per virtual host."""
    text = "---\n".join(yaml.safe_dump(d) for d in [*objects(0), *(http_route(i, 16) for i in range(8))])
    recorder = _Recorder(hashlib.blake2b)
    monkeypatch.setattr(hashlib, "blake2b", recorder)
    chunks = yamlread.chunks(text)
    assert max(len(c.text) for c in chunks) > RELEASES_AT, "documents large enough to matter"
    assert len(recorder.sizes) > len(chunks), "every document is hashed"
    assert max(recorder.sizes) < RELEASES_AT
