"""A thin JSON layer over kubernetes-asyncio's ApiClient: config loading, requests, watch streams.

kubernetes-asyncio does authentication (kubeconfig, exec plugins, in-cluster tokens), TLS and the
HTTP session; its typed models are not used here (nor imported: see kubelib). The provider
needs plain dicts in the API's own camelCase (``model.from_dict`` reads those), and turning
10,000 HTTPRoutes into model objects and back costs seconds. So every call goes through
``ApiClient.call_api`` with ``_preload_content=False`` and the JSON is read directly.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..errors import KubernetesApiError, SourceError
from .kubelib import ApiClient, Configuration, config

MERGE_PATCH = "application/merge-patch+json"


ApiError = KubernetesApiError
"""A non-2xx answer from the API server, or none (the name the providers use)."""


@dataclass(frozen=True)
class Resource:
    """One kind the provider reads, and where the API serves it."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


async def load_configuration(kubeconfig: Path | None) -> Configuration:
    """The kubeconfig file given, else the in-cluster service account, else ``~/.kube/config``."""
    cfg = Configuration()
    try:
        if kubeconfig is not None:
            await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg, persist_config=False)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                await config.load_kube_config(client_configuration=cfg, persist_config=False)
    except (config.ConfigException, OSError) as exc:
        where = kubeconfig or "in-cluster service account or ~/.kube/config"
        raise SourceError(f"no usable Kubernetes configuration ({where}): {exc}") from exc
    return cfg


class KubeApi:
    """JSON requests and watch streams against one API server."""

    def __init__(self, cfg: Configuration) -> None:
        self.host = str(cfg.host)  # None only for a Configuration no loader filled in
        self._client = ApiClient(configuration=cfg)
        self._no_lookups_per_request(cfg)

    def _no_lookups_per_request(self, cfg: Configuration) -> None:
        """kubernetes-asyncio's aiohttp session has ``trust_env``: on every request it reads
        ~/.netrc and looks for a proxy in the environment, each in a worker thread. That was
        320 µs of CPU a request instead of 90 (10,000 status writes at a cold start), and a
        ~/.netrc entry for the API's host made every request fail (its basic auth cannot go
        with the bearer token). client-go reads no netrc. With a proxy in the environment for
        this host the session is left as it is, so that the proxy (and its credentials, which
        aiohttp reads from the environment or netrc) is used as before."""
        where = urlsplit(self.host)
        proxies = urllib.request.getproxies()
        if not cfg.proxy and where.scheme in proxies and not urllib.request.proxy_bypass(where.hostname or ""):
            return
        rest = self._client.rest_client
        # Same connector (TLS settings, pool); 2 MiB lines as kubernetes-asyncio allows (watch
        # events of large objects). Closing this session closes the connector, and so the first,
        # which is kept until then: dropped while open, it would warn of an unclosed session.
        self._replaced = rest.pool_manager
        rest.pool_manager = aiohttp.ClientSession(
            connector=rest.pool_manager.connector, trust_env=False, read_bufsize=2**21
        )

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None) -> KubeApi:
        return cls(await load_configuration(kubeconfig))

    async def close(self) -> None:
        await self._client.close()

    async def _open(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | float | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if method in ("POST", "PUT", "PATCH"):
            headers["Content-Type"] = content_type
        try:
            resp = await self._client.call_api(
                path,
                method,
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiError(0, f"cannot reach the Kubernetes API at {self.host}: {_describe(exc)}") from exc
        if not 200 <= resp.status <= 299:
            text = await resp.text()
            resp.release()
            raise ApiError(resp.status, _status_message(text))
        return resp

    async def request(self, method: str, path: str, *, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        """One request, its JSON answer (``query``, ``body`` and ``content_type`` as for ``_open``)."""
        resp = await self._open(method, path, timeout=timeout, **kw)
        try:
            answer: dict[str, Any] = _json(await resp.read())
            return answer
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiError(0, f"lost the Kubernetes API at {self.host}: {_describe(exc)}") from exc
        finally:
            resp.release()

    async def stream(self, path: str, query: Mapping[str, Any], read_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """Watch events, one JSON object per line, until the server ends the stream.

        ``read_timeout`` bounds the silence between two lines: a half-open connection (the API
        server gone without a FIN) would otherwise hang the watch forever.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        resp = await self._open("GET", path, query={**query, "watch": "true"}, timeout=timeout)
        try:
            while True:
                try:
                    line = await resp.content.readline()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    raise ApiError(0, f"watch {path} broke: {_describe(exc)}") from exc
                if not line:
                    return
                if line.strip():
                    yield _json(line)
        finally:
            resp.release()

    async def served_resources(self, group_version: str) -> set[str]:
        """Plural names served under ``group/version`` (empty if the API does not serve it)."""
        path = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        try:
            listing = await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return set()
            raise
        return {r["name"] for r in listing.get("resources") or [] if "/" not in r["name"]}


def _json(data: bytes) -> Any:
    """JSON, with nesting too deep for the decoder reported like any other malformed body."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(f"JSON nested too deeply ({len(data)} bytes)") from None


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _status_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return text.strip()[:300]
