"""What every echo transport (HTTP/1, h2c, gRPC) shares: the server's identity, its log lines,
the body digest and echo-basic's "request assertions" JSON.

Why one place: a mirror is only observable from the backend's log, so the three transports must
log and answer alike; and the transports import this module, never each other (issue 11).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Kubernetes' "safe" alphabet for generated name suffixes (no vowels, no
# look-alike characters), so default pod names look like real pod names.
_K8S_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

# RFC 7230 "token" characters; Go only canonicalises header names made of these.
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Request headers that Go's net/http moves out of ``Request.Header``; echo-basic
# therefore never reports them under "headers", and neither do we.
_GO_HIDDEN_REQUEST_HEADERS = frozenset({"host", "transfer-encoding"})


# ---------------------------------------------------------------------------
# Helpers mirroring Go semantics (echo-basic is written in Go, and conformance
# tooling compares against Go's behaviour).
# ---------------------------------------------------------------------------

_GO_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # MICRO SIGN
    "\u03bcs": 1_000,  # GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_GO_MAX_DURATION_NS = (1 << 63) - 1


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string (``"2s"``, ``"1h2m"``, ``"-1.5ms"``) into seconds.

    Why: echo-basic's ``?delay=`` takes Go durations and conformance tests
    send them verbatim; error messages copy Go's so that a 500 body reads the
    same as the real server's.  Raises ``ValueError``.
    """
    orig = text
    quoted = '"' + orig + '"'
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {quoted}")
    total_ns = 0.0
    while s:
        if not (s[0] == "." or s[0].isascii() and s[0].isdigit()):
            raise ValueError(f"time: invalid duration {quoted}")
        m = re.match(r"([0-9]*)(?:\.([0-9]*))?", s)
        assert m is not None  # the pattern can always match the empty string
        int_part, frac_part = m.group(1), m.group(2)
        if not int_part and not frac_part:
            # "." alone, or ".s": no digits at all
            raise ValueError(f"time: invalid duration {quoted}")
        s = s[m.end() :]
        unit_len = 0
        while unit_len < len(s) and s[unit_len] not in "0123456789.":
            unit_len += 1
        unit = s[:unit_len]
        s = s[unit_len:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        value = float(f"{int_part or '0'}.{frac_part or '0'}")
        total_ns += value * _GO_UNITS[unit]
        if total_ns > _GO_MAX_DURATION_NS:
            raise ValueError(f"time: invalid duration {quoted}")
    seconds = total_ns / 1e9
    return -seconds if neg else seconds


def canonical_header_key(name: str) -> str:
    """Return Go's ``textproto.CanonicalMIMEHeaderKey`` form (``x-forwarded-for`` → ``X-Forwarded-For``).

    Why: echo-basic reports ``Request.Header``, whose keys Go has already
    canonicalised; conformance assertions look headers up by that spelling.
    Like Go, names containing non-token characters are returned unchanged.
    """
    if not name or any(c not in _TOKEN_CHARS for c in name):
        return name
    out = []
    upper = True
    for c in name:
        out.append(c.upper() if upper else c.lower())
        upper = c == "-"
    return "".join(out)


def echo_set_headers(values: list[str]) -> list[tuple[str, str]]:
    """Parse ``X-Echo-Set-Header: Name:val,Name2:val2`` like echo-basic.

    Names keep their case; a repeated name gets its values joined with
    ``,`` (echo-basic appends to the first value).
    """
    collected: dict[str, str] = {}
    for header_list in values:
        for kv in header_list.split(","):
            name, _, value = kv.strip().partition(":")
            if not name:
                continue
            if name in collected:
                collected[name] += "," + value.strip()
            else:
                collected[name] = value
    return list(collected.items())


def echoing_line(raw_path: str, remote: str) -> str:
    """echo-basic's exact line; conformance greps "Echoing back request made to <path> to client"."""
    return f"Echoing back request made to {raw_path} to client ({remote})"


def digest(body: bytes) -> dict[str, Any]:
    """A body as its length and SHA-256: a mirror's log proves it got the client's bytes exactly
    without printing them."""
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _default_pod_name(name: str) -> str:
    """Pod-like default name (``pipy-x7kq2``): logs and JSON look like a Deployment pod's."""
    suffix = "".join(random.choice(_K8S_SUFFIX_ALPHABET) for _ in range(5))
    return f"{name}-{suffix}"


# ---------------------------------------------------------------------------
# The server's identity and output
# ---------------------------------------------------------------------------


class LogStream(Protocol):
    """Where log lines go: a text stream, or anything that takes its writes (a test's collector)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class EchoConfig:
    name: str
    namespace: str
    pod: str
    service: str
    ingress: str
    delay: float
    status: int | None
    http_port: int
    out: LogStream | None
    path_status: Mapping[str, int] = field(default_factory=dict)


def make_config(
    *,
    name: str,
    namespace: str = "",
    pod: str = "",
    service: str = "",
    ingress: str = "",
    delay: float = 0.0,
    status: int | None = None,
    http_port: int = 0,
    out: LogStream | None = None,
    path_status: Mapping[str, int] | None = None,
) -> EchoConfig:
    """Check and complete an echo server's options.

    ``pod`` defaults to ``<name>-<5 random chars>`` and ``service`` to
    ``name`` so the JSON looks like a real pod's answer and mirrored requests
    can be attributed to a backend.  ``delay`` (seconds) is added to every
    echo and ``/status`` answer and every gRPC call; ``status`` overrides the
    echo answer's code (``/health`` and ``/status/NNN`` stay truthful so probes
    keep working; gRPC maps it to a gRPC status).  ``http_port`` is reported
    as ``httpPort``; 0 means "the port the request arrived on".  ``out``
    receives the log lines (default: the *current* ``sys.stdout``, looked up
    at each write so capture tools work).  ``path_status`` answers HTTP echoes
    of these exact paths with these codes (shadow testing's seed scenario: a
    mirror that differs on one path).
    """
    if not name:
        raise ValueError("name must not be empty")
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay!r}")
    if status is not None and not 200 <= status <= 599:
        raise ValueError(f"status must be within 200..599, got {status!r}")
    return EchoConfig(
        name=name,
        namespace=namespace,
        pod=pod or _default_pod_name(name),
        service=service or name,
        ingress=ingress,
        delay=float(delay),
        status=status,
        http_port=http_port,
        out=out,
        path_status=dict(path_status or {}),
    )


class Echo:
    """One echo server's identity and log, shared by all its transports."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self._prefix = f"[{config.name}] "

    def emit(self, *lines: str) -> None:
        """Write whole lines to stdout and flush at once.

        Why flush: stdout is often a pipe (subprocess, ``kubectl logs``-style
        harnesses) and is then block-buffered; tests wait on these lines.
        All lines of one request go out in one write so they stay adjacent.
        """
        stream = self.config.out if self.config.out is not None else sys.stdout
        text = "".join(self._prefix + line + "\n" for line in lines)
        try:
            try:
                stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(stream, "encoding", None) or "ascii"
                stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            stream.flush()
        except (OSError, ValueError):
            # Reader went away (broken pipe / closed stream): keep serving.
            pass

    def assertions(
        self, *, method: str, raw_path: str, host: str, proto: str, headers: list[tuple[str, str]], port: int
    ) -> dict[str, Any]:
        """echo-basic's RequestAssertions JSON (plus ``httpPort``), for HTTP/1.1 and h2c alike."""
        grouped: dict[str, list[str]] = {}
        for name, value in headers:
            if name.lower() in _GO_HIDDEN_REQUEST_HEADERS or name.startswith(":"):
                continue
            grouped.setdefault(canonical_header_key(name), []).append(value)
        cfg = self.config
        return {
            "path": raw_path,
            "host": host,
            "method": method,
            "proto": proto,
            "headers": dict(sorted(grouped.items())),  # Go marshals maps sorted
            "namespace": cfg.namespace,
            "ingress": cfg.ingress,
            "service": cfg.service,
            "pod": cfg.pod,
            "httpPort": str(port),
        }


def head_line(protocol: str, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> str:
    """The pipy ``console.log(msg.head)`` equivalent, as one JSON line (a body as its digest)."""
    head: dict[str, Any] = {"protocol": protocol, "method": method, "path": path, "headers": headers}
    if body:
        head["body"] = digest(body)
    # ensure_ascii keeps the line pure ASCII: safe for any stdout encoding.
    return json.dumps(head)
