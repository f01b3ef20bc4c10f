"""HTTP expectations, as upstream's conformance/utils/http: make a request, compare what the echo
backend saw and what came back, and require 3 consecutive matches within 30 s."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from .status import ConformanceError

REQUIRED_CONSECUTIVE_SUCCESSES = 3
MAX_TIME_TO_CONSISTENCY = 30.0
REQUEST_TIMEOUT = 10.0
RETRY_DELAY = 0.25  # upstream waits 1 s after a miss; only the pace differs
MIRROR_ID_PARAM = "gateway-api-conformance-request-id"

HTTP1, H2C_PRIOR_KNOWLEDGE, HTTP2 = "HTTP", "H2C_PRIOR_KNOWLEDGE", "HTTP/2"


@dataclass(frozen=True)
class Redirect:
    scheme: str = ""
    host: str = ""
    port: str = ""
    path: str = ""


@dataclass(frozen=True)
class Case:
    """One upstream ExpectedResponse; ``expect_*`` describe the request the backend must see
    (default: the request as sent)."""

    path: str = "/"
    host: str = ""
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    protocol: str = HTTP1
    expect_path: str | None = None
    expect_host: str = ""
    expect_method: str | None = None
    expect_headers: dict[str, str] | None = None
    expect_absent: tuple[str, ...] = ()
    status: int = 200
    status_codes: tuple[int, ...] = ()  # any of these (upstream Response.StatusCodes)
    check_request: bool = True  # False: the answer has no echo body (e.g. a CORS preflight)
    valid_header_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ignore_whitespace: bool = False
    response_headers: dict[str, str] | None = None
    response_absent: tuple[str, ...] = ()
    backend_set_response_headers: dict[str, str] = field(default_factory=dict)
    redirect: Redirect | None = None
    backend: str = ""
    namespace: str = ""
    mirrored_to: tuple[tuple[str, str], ...] = ()  # (namespace, service)
    sni: str = ""  # HTTPS: server name to send (default: host)

    def with_request_id(self) -> "Case":
        """Mirror cases carry a fresh uuid so the mirror's log line is this request's alone."""
        rid = f"{MIRROR_ID_PARAM}={uuid.uuid4()}"
        sep = "&" if "?" in self.path else "?"
        expect = self.expect_path if self.expect_path is not None else self.path
        esep = "&" if "?" in expect else "?"
        return replace(self, path=f"{self.path}{sep}{rid}", expect_path=f"{expect}{esep}{rid}")

    def name(self) -> str:
        where = f"{self.method} {self.host}{self.path}"
        return f"{where} → {self.backend or self.status}"


@dataclass
class Captured:
    status: int
    headers: dict[str, list[str]]
    body: dict[str, Any] | None
    location: str | None


@dataclass(frozen=True)
class Target:
    """Where a Gateway listener really is: its address as upstream sees it, and our local port."""

    address: str  # Gateway status address (e.g. 127.0.0.1)
    port: int  # the listener port from the Gateway spec
    local_port: int  # where its Envoy listens
    scheme: str = "http"
    ca_pem: bytes | None = None

    def host_header(self) -> str:
        """upstream's CalculateHost: the port is implied for http:80 and https:443."""
        if (self.scheme, self.port) in (("http", 80), ("https", 443)):
            return self.address
        return f"{self.address}:{self.port}"


class Client:
    """A fresh connection per request, like upstream's round tripper (no stale keep-alives)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, bytes | None], httpx.AsyncClient] = {}

    def _client(self, protocol: str, ca_pem: bytes | None) -> httpx.AsyncClient:
        key = (protocol, ca_pem)
        if key not in self._clients:
            verify: ssl.SSLContext | bool = False
            if ca_pem is not None:
                # The chain must lead to the Secret's certificate, as upstream's client requires;
                # the name check is left out because OpenSSL refuses the "*.org" SAN that
                # upstream's certificate relies on (Go accepts it).
                verify = ssl.create_default_context(cadata=ca_pem.decode())
                verify.check_hostname = False
            self._clients[key] = httpx.AsyncClient(
                http1=protocol == HTTP1 or ca_pem is not None and protocol != HTTP2,
                http2=protocol in (H2C_PRIOR_KNOWLEDGE, HTTP2),
                verify=verify,
                timeout=REQUEST_TIMEOUT,
                follow_redirects=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._clients[key]

    async def close(self) -> None:
        for c in self._clients.values():
            await c.aclose()

    async def capture(self, target: Target, case: Case) -> Captured:
        headers = dict(case.headers)
        headers["Host"] = case.host or target.host_header()
        headers["X-Echo-Set-Header"] = ",".join(f"{k}:{v}" for k, v in case.backend_set_response_headers.items())
        url = f"{target.scheme}://127.0.0.1:{target.local_port}{case.path}"
        extensions = {}
        if target.scheme == "https":
            extensions["sni_hostname"] = case.sni or (case.host or target.address).split(":")[0]
        client = self._client(case.protocol, target.ca_pem)
        resp = await client.request(case.method, url, headers=headers, extensions=extensions)
        body = None
        if resp.headers.get("content-type", "").startswith("application/json"):
            try:
                body = json.loads(resp.content)
            except ValueError:
                body = None
        grouped: dict[str, list[str]] = {}
        for k, v in resp.headers.multi_items():
            grouped.setdefault(k.lower(), []).append(v)
        return Captured(resp.status_code, grouped, body, resp.headers.get("location"))


def _is_timeout(code: int) -> bool:
    return code in (408, 504)


def compare(target: Target, case: Case, got: Captured) -> str:
    """upstream's CompareRequest: '' when the answer matches the case, else why not."""
    if _is_timeout(got.status) and _is_timeout(case.status):
        return ""
    codes = case.status_codes or (case.status,)
    if got.status not in codes:
        return f"expected status code to be {' or '.join(map(str, codes))}, got {got.status}"
    if 200 <= got.status < 300:
        why = _compare_response_headers(case, got)
        if why:
            return why
    if got.status == 200 and case.check_request:
        seen = got.body or {}
        expect_path = case.expect_path if case.expect_path is not None else case.path
        if case.expect_host and case.expect_host != seen.get("host"):
            return f"expected host to be {case.expect_host}, got {seen.get('host')}"
        if expect_path != seen.get("path"):
            return f"expected path to be {expect_path}, got {seen.get('path')}"
        method = case.expect_method or case.method
        if method != seen.get("method"):
            return f"expected method to be {method}, got {seen.get('method')}"
        if case.namespace != seen.get("namespace", ""):
            return f"expected namespace to be {case.namespace}, got {seen.get('namespace')}"
        expected_headers = case.expect_headers if case.expect_headers is not None else (case.headers or None)
        req_headers = {k.lower(): v for k, v in (seen.get("headers") or {}).items()}
        for name, value in (expected_headers or {}).items():
            have = req_headers.get(name.lower())
            if have is None:
                return f"expected {name} header to be set, actual headers: {req_headers}"
            if ",".join(have) != value:
                return f"expected {name} header to be set to {value}, got {','.join(have)}"
        for name in case.expect_absent:
            if name.lower() in req_headers:
                return f"expected {name} header to not be set, got {req_headers[name.lower()]}"
        if not str(seen.get("pod", "")).startswith(case.backend):
            return f"expected pod name to start with {case.backend}, got {seen.get('pod')}"
    elif 300 <= got.status < 400 and case.redirect is not None:
        return _compare_redirect(target, case, got)
    return ""


def _compare_response_headers(case: Case, got: Captured) -> str:
    squash = (lambda v: "".join(v.split())) if case.ignore_whitespace else (lambda v: v)
    for name, value in (case.response_headers or {}).items():
        have = got.headers.get(name.lower())
        if have is None:
            return f"expected {name} response header to be set, actual headers: {got.headers}"
        if ",".join(have) != value:
            return f"expected {name} response header to be set to {value}, got {','.join(have)}"
    for name, values in case.valid_header_values.items():
        have = got.headers.get(name.lower())
        if have is None:
            return f"expected {name} response header to be one of {list(values)}, it is not set"
        if squash(",".join(have)) not in {squash(v) for v in values}:
            return f"expected {name} response header to be one of {list(values)}, got {','.join(have)}"
    for name in case.response_absent:
        if name.lower() in got.headers:
            return f"expected {name} response header to not be set, got {got.headers[name.lower()]}"
    return ""


def _compare_redirect(target: Target, case: Case, got: Captured) -> str:
    loc = urlsplit(got.location or "")
    want = case.redirect
    assert want is not None
    host = want.host or (loc.hostname or "")
    scheme = want.scheme or target.scheme
    path = want.path or case.path.split("?")[0]
    got_port = str(loc.port) if loc.port is not None else ""
    if host != (loc.hostname or ""):
        return f"expected redirected hostname to be {host!r}, got {loc.hostname!r}"
    if not want.port:
        if loc.scheme.lower() == "http" and got_port not in ("80", ""):
            return f"for http scheme, expected redirected port to be 80 or not set, got {got_port!r}"
        if loc.scheme.lower() == "https" and got_port not in ("443", ""):
            return f"for https scheme, expected redirected port to be 443 or not set, got {got_port!r}"
    elif want.port != got_port:
        return f"expected redirected port to be {want.port!r}, got {got_port!r}"
    if scheme != loc.scheme:
        return f"expected redirected scheme to be {scheme!r}, got {loc.scheme!r}"
    if path != loc.path:
        return f"expected redirected path to be {path!r}, got {loc.path!r}"
    return ""


async def expect_consistent(
    client: Client, target: Target, case: Case, threshold: int = REQUIRED_CONSECUTIVE_SUCCESSES
) -> None:
    """upstream's MakeRequestAndExpectEventuallyConsistentResponse."""
    successes, start = 0, time.monotonic()
    why = ""
    while True:
        try:
            got = await client.capture(target, case)
            why = compare(target, case, got)
        except httpx.HTTPError as exc:
            why = f"request failed: {type(exc).__name__}: {exc}"
        if not why:
            successes += 1
            if successes >= threshold:
                return
            continue
        successes = 0
        if time.monotonic() - start > MAX_TIME_TO_CONSISTENCY:
            raise ConformanceError(f"{case.name()}: {why} (no {threshold} consecutive matches in {MAX_TIME_TO_CONSISTENCY:g}s)")
        await asyncio.sleep(RETRY_DELAY)


def mirror_regexp(path: str) -> re.Pattern[str]:
    return re.compile(f"Echoing back request made to {re.escape(path)} to client")
