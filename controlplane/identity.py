"""Who is calling the xDS port: identities from client certificates, and what each may do.

With mutual TLS every client certificate carries one SPIFFE ID as its URI subjectAltName:

* ``spiffe://mirrorplane/ns/NS/gateway/NAME``: the Envoys of one Gateway. An ADS stream may only
  ask for that Gateway's config (``node.cluster`` must be ``NS/NAME``), so a certificate stolen
  from one Gateway's Envoys reads no other Gateway's keys.
* ``spiffe://mirrorplane/operator``: people and tools (``mirrorplane nodes``, grpcurl). Only it
  may call the admin API and CSDS, which show every Gateway's config (with private keys redacted).

Anything else (no certificate, no URI, another trust domain) is refused everything but health
and reflection. The identity is read from gRPC's own ``peer_spiffe_id`` auth property, which gRPC
sets only for a certificate with exactly one URI SAN that is a valid SPIFFE ID: the SPIFFE rule,
checked by the TLS stack rather than re-parsed here.

Without mutual TLS (plaintext or server-only TLS on loopback, or ``--insecure``) there are no
identities and the port is open to whoever reaches it: that is why serve refuses a non-loopback
address without mTLS unless told otherwise (see docs/security.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

log = logging.getLogger("mirrorplane.identity")

TRUST_DOMAIN = "mirrorplane"
OPERATOR = f"spiffe://{TRUST_DOMAIN}/operator"
_GATEWAY_PREFIX = f"spiffe://{TRUST_DOMAIN}/ns/"


def gateway_id(gateway: str) -> str:
    """The SPIFFE ID of the Envoys serving ``gateway`` (``NAMESPACE/NAME``)."""
    ns, sep, name = gateway.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise ValueError(f"Gateway {gateway!r}: expected NAMESPACE/NAME")
    return f"{_GATEWAY_PREFIX}{ns}/gateway/{name}"


def gateway_of(spiffe_id: str) -> str | None:
    """``NAMESPACE/NAME`` for a Gateway's SPIFFE ID, else None."""
    if not spiffe_id.startswith(_GATEWAY_PREFIX):
        return None
    ns, sep, name = spiffe_id[len(_GATEWAY_PREFIX):].partition("/gateway/")
    if not sep or not ns or not name or "/" in ns or "/" in name:
        return None
    return f"{ns}/{name}"


@dataclass(frozen=True)
class Peer:
    """The caller as the TLS handshake proved it."""

    spiffe_id: str | None
    address: str

    @property
    def gateway(self) -> str | None:
        return gateway_of(self.spiffe_id) if self.spiffe_id else None

    @property
    def operator(self) -> bool:
        return self.spiffe_id == OPERATOR

    def describe(self) -> str:
        return self.spiffe_id or "(none)"


def peer(context: grpc.aio.ServicerContext) -> Peer:
    values = (context.auth_context() or {}).get("peer_spiffe_id") or []
    return Peer(values[0].decode() if values else None, context.peer() or "")


@dataclass(frozen=True)
class Authorizer:
    """Whether identities are checked: only when the port requires client certificates."""

    enforced: bool

    def stream_denial(self, context: grpc.aio.ServicerContext, gateway: str) -> str | None:
        """Why an ADS stream asking for ``gateway`` (its ``node.cluster``) is refused, or None.
        The stream ends with PERMISSION_DENIED and logs this reason."""
        if not self.enforced:
            return None
        who = peer(context)
        if who.gateway == gateway:
            return None
        if who.gateway:
            return f"certificate identity {who.describe()} is for Gateway {who.gateway}, not {gateway}"
        return f"certificate identity {who.describe()} is not a Gateway's ({gateway} needs {gateway_id(gateway)})"


# Services anyone who completes the handshake may call: they show no config.
PUBLIC_SERVICES = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME})


# grpc ships no type stubs: the base class is Any to mypy.
class OperatorOnly(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every service but the public ones and ``self_checked`` (ADS, which checks per stream)
    needs the operator identity: default-deny, so a service added later is not open by mistake."""

    def __init__(self, self_checked: Iterable[str]) -> None:
        self._open = PUBLIC_SERVICES | frozenset(self_checked)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        service = details.method.lstrip("/").partition("/")[0]
        if handler is None or service in self._open:
            return handler
        return _guarded(handler, details.method)


async def _require_operator(context: grpc.aio.ServicerContext, method: str) -> None:
    who = peer(context)
    if who.operator:
        return
    log.warning("authz.denied rpc=%s identity=%s peer=%s reason=operator_identity_required", method, who.describe(), who.address)
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} needs the operator identity ({OPERATOR}), got {who.describe()}")


def _answering(inner: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _require_operator(context, method)
        return await inner(request, context)

    return behaviour


def _streaming(inner: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await _require_operator(context, method)
        async for item in inner(request, context):
            yield item

    return behaviour


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` with the operator check before its behaviour (``request`` above is a message
    or, for client streaming, the iterator of them)."""
    de, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_answering(handler.unary_unary, method), de, ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_answering(handler.stream_unary, method), de, ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_streaming(handler.unary_stream, method), de, ser)
    return grpc.stream_stream_rpc_method_handler(_streaming(handler.stream_stream, method), de, ser)
