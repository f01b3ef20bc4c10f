"""Secrets out of what the admin API and CSDS show.

Operators see every Gateway's config, but never key material: a key read from the admin port
is a key copied into terminals, CI logs and support tickets. Redaction works on the decoded
protobuf, through every ``Any`` (a listener's TLS context is a typed_config inside a filter
chain's transport socket), so it does not depend on where the translator puts a
``TlsCertificate`` today.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

if TYPE_CHECKING:
    # What ``Message.DESCRIPTOR`` is typed as besides the pure-Python Descriptor (the upb one at runtime).
    from google._upb._message import Descriptor as UpbDescriptor

REDACTED = "[redacted]"
# Message type → its DataSource fields that hold secrets (Envoy's own "sensitive" fields).
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "envoy.extensions.transport_sockets.tls.v3.TlsCertificate": ("private_key", "pkcs12", "password"),
    "envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys": ("keys",),
    "envoy.extensions.transport_sockets.tls.v3.GenericSecret": ("secret",),
}
_ANY = any_pb2.Any.DESCRIPTOR.full_name


def _may_hold_secrets(descriptor: Descriptor | UpbDescriptor, seen: dict[str, bool]) -> bool:
    """Whether a message of this type can contain a secret field (an ``Any`` can hold anything)."""
    name = descriptor.full_name
    if name in seen:
        return seen[name]
    seen[name] = True  # while in progress (a recursive type): assume yes, never a false "no"
    found = name in SECRET_FIELDS or name == _ANY or any(
        f.message_type is not None and _may_hold_secrets(f.message_type, seen) for f in descriptor.fields
    )
    seen[name] = found
    return found


_SEEN: dict[str, bool] = {}


def redact(message: Message) -> bool:
    """Replace secret DataSources in ``message`` (in place) with ``"[redacted]"``; True if any."""
    descriptor = message.DESCRIPTOR
    if not _may_hold_secrets(descriptor, _SEEN):
        return False
    changed = False
    if isinstance(message, any_pb2.Any):  # the class of every Any (descriptor.full_name == _ANY)
        inner = _unpack(message)
        if inner is not None and redact(inner):
            message.Pack(inner)
            return True
        return False
    for field_name in SECRET_FIELDS.get(descriptor.full_name, ()):
        field = descriptor.fields_by_name[field_name]
        values = getattr(message, field_name) if field.is_repeated else (
            [getattr(message, field_name)] if message.HasField(field_name) else []
        )
        for source in values:
            source.Clear()
            source.inline_string = REDACTED
            changed = True
    for field, value in message.ListFields():
        message_type = field.message_type  # None unless a message (or map) field
        if message_type is None or not _may_hold_secrets(message_type, _SEEN):
            continue
        if message_type.GetOptions().map_entry:
            values = list(value.values()) if message_type.fields_by_name["value"].message_type else []
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            changed |= redact(item)
    return changed


def _unpack(packed: any_pb2.Any) -> Message | None:
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(packed.TypeName())
    except KeyError:
        return None  # not a type Envoy config here uses: the translator only emits known types
    inner = message_factory.GetMessageClass(descriptor)()
    packed.Unpack(inner)
    return inner


@functools.lru_cache(maxsize=4096)
def redacted_bytes(type_url: str, data: bytes) -> bytes:
    """A serialized resource of ``type_url`` with its secrets redacted (the same bytes if none).

    Cached: CSDS shows the same snapshot bytes once per node, and a snapshot's ``Entry.data`` is
    one bytes object (its hash is computed once, and a hit compares it by identity)."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_url.rsplit("/", 1)[1])
    if not _may_hold_secrets(descriptor, _SEEN):
        return data
    message = message_factory.GetMessageClass(descriptor).FromString(data)
    return message.SerializeToString() if redact(message) else data
