"""A fake Kubernetes API server for the tests (no cluster exists on these machines).

    from fakeapi import FakeApiServer

    with FakeApiServer() as api:                 # own thread + loop, free 127.0.0.1 port
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")   # kubectl + kubernetes-asyncio
        api.create({...})                        # direct helpers, no HTTP: create/apply/get/list/
        api.get("HTTPRoute", "r", "default")     #   update/patch/delete
        api.requests(method="PATCH", path="/status")  # the request log
        api.compact(); api.restart(); api.cut_watches(); api.open_watches

See server.FakeApiServer for the whole API and docs/development.md "The fake API server used by the tests".
"""

from .app import RecordedRequest
from .kubeconfig import write_kubeconfig
from .server import FakeApiServer
from .store import ApiError

__all__ = ["ApiError", "FakeApiServer", "RecordedRequest", "write_kubeconfig"]
