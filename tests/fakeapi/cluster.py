"""The API server a test runs against: the fake, or a real cluster.

Set MIRRORPLANE_TEST_KUBECONFIG to a kubeconfig of a real cluster (with the
Gateway API CRDs installed) to run the same contract tests there; each test
then works in a namespace of its own, deleted afterwards. Controls only the
fake has (compaction, restarts, the request log) make a test skip there,
with the reason.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from .server import FakeApiServer

ENV = "MIRRORPLANE_TEST_KUBECONFIG"


@dataclass
class Cluster:
    kubeconfig: str
    namespace: str  # a fresh namespace for this test
    api: client.ApiClient  # kubernetes-asyncio, authenticated from the kubeconfig
    fake: FakeApiServer | None  # None on a real cluster

    @property
    def is_fake(self) -> bool:
        return self.fake is not None

    def require_fake(self, why: str) -> FakeApiServer:
        """The fake, or skip on a real cluster saying why the test needs the fake."""
        if self.fake is None:
            pytest.skip(f"needs the fake API server: {why}")
        return self.fake


@contextlib.asynccontextmanager
async def open_cluster(tmp_path: Path, bookmark_interval: float = 0.2) -> AsyncIterator[Cluster]:
    """A Cluster with a fresh namespace; the fake is started here, a real one taken from $ENV."""
    real = os.environ.get(ENV)
    fake = None if real else FakeApiServer(bookmark_interval=bookmark_interval).start()
    try:
        kubeconfig = real or (fake.write_kubeconfig(tmp_path / "kubeconfig") if fake else "")
        api = await config.new_client_from_config(config_file=kubeconfig)
        namespace = f"mp-test-{uuid.uuid4().hex[:8]}"
        core = client.CoreV1Api(api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        try:
            yield Cluster(kubeconfig, namespace, api, fake)
        finally:
            with contextlib.suppress(Exception):  # a test may have stopped the fake
                await core.delete_namespace(namespace)
            await api.close()
    finally:
        if fake is not None:
            fake.stop()
