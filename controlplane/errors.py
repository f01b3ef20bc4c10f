"""The errors mirrorplane raises on purpose, in one hierarchy (as httpx's ``_exceptions.py``).

A :class:`MirrorplaneError` is about the input or the environment, never about mirrorplane itself:
its message is one line that names what to fix, and the command line prints just that line and
exits 1. Any other exception reaching the command line is a bug and keeps its traceback.

    MirrorplaneError
    ├── UsageError           flags, settings or files given that do not parse or do not fit together
    ├── ConflictError        existing state mirrorplane will not overwrite (e.g. a key without its CA)
    ├── SourceError          the config source cannot be served: a missing folder, no kubeconfig, no CRDs
    ├── KubernetesApiError   the Kubernetes API answered an error, or could not be reached
    ├── BindError            a port cannot be bound (in use, or an address the host does not have)
    ├── EnvoyError           a local Envoy could not be found, started or reached, or it exited
    │   ├── EnvoyNotFoundError
    │   └── EnvoyStartError
    ├── gatewayapi.schema.ValidationError   an object fails its CRD's schema
    └── xds.stream.RequestError            an ADS request that closes its stream (with a gRPC status)

Subclasses that replace a built-in error keep it as a second base (``UsageError`` is a
``ValueError``), so that ``except ValueError`` around a library call keeps working.

Errors that are not the user's (a translator producing a malformed resource, a misuse of an
internal function) stay built-in exceptions, so that they surface as bugs.
"""

from __future__ import annotations


class MirrorplaneError(Exception):
    """Base of every error mirrorplane raises on purpose; ``str()`` is a one-line cause."""


class UsageError(MirrorplaneError, ValueError):
    """Flags, settings or files that do not parse or do not fit together."""


class ConflictError(MirrorplaneError, ValueError):
    """Existing state that mirrorplane will not overwrite or cannot build on."""


class SourceError(MirrorplaneError):
    """The config source (a folder, a cluster) cannot be served."""


class KubernetesApiError(MirrorplaneError, RuntimeError):
    """A non-2xx answer from the API server (``status`` is the HTTP code, 0 when unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        # ``resource=PLURAL`` when listing a kind failed (the reflector sets it), for the log line.
        self.resource: str | None = None


class BindError(MirrorplaneError, OSError):
    """A port that cannot be bound."""


class EnvoyError(MirrorplaneError, RuntimeError):
    """Envoy could not be found, started or reached, or it exited."""


class EnvoyNotFoundError(EnvoyError):
    """No Envoy binary: neither the ``run`` extra nor one on PATH."""


class EnvoyStartError(EnvoyError):
    """Envoy exited or did not become ready while starting."""
