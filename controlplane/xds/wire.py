"""The protobuf wire format, the little of it needed to join serialized messages by hand.

A serialized message is its fields one after another, each a tag (field number and wire type)
and a value; a length-delimited field (a string, a submessage, one element of a repeated
message field) is the tag, the length as a varint, then the bytes. A deterministic serialization
writes the fields in field-number order, so a message can be put together from the bytes of its
parts (encoded.py: a RouteConfiguration from its virtual hosts; translator.py: Envoy routes from
fragments encoded once) and still equal what protobuf writes.
"""

from __future__ import annotations


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lengths below 128 are one byte (most names and paths), and so are the tags of fields 1 to 15:
# tables save the loop.
_SHORT = [bytes([n]) for n in range(0x80)]
_TAGS = [varint(n << 3 | 2) for n in range(64)]


def tag(number: int) -> bytes:
    """The tag of a length-delimited field (wire type 2)."""
    return _TAGS[number] if number < 64 else varint(number << 3 | 2)


# The tag and length of a field 1 to 31 whose bytes are shorter than 128, one bytes object each
# (4,096 of them, 150 kB): most fields a route is written from (a cold build writes 130,000).
_HEADS = [[t + n for n in _SHORT] for t in _TAGS[:32]]


def delimited(number: int, data: bytes) -> bytes:
    """A length-delimited field: a string, a submessage or one element of a repeated one."""
    n = len(data)
    if number < 32:
        if n < 0x80:
            return _HEADS[number][n] + data
        if n < 0x4000:  # two bytes of length: a route, a virtual host of a few routes
            return _TAGS[number] + bytes((n & 0x7F | 0x80, n >> 7)) + data
    return b"".join((tag(number), varint(n), data))


def short_heads(number: int) -> list[bytes]:
    """The tag and length of field ``number`` (1 to 31) for each length below 128, by length:
    what ``head`` looks up, for a caller that writes many such fields."""
    return _HEADS[number]


def head(number: int, n: int) -> bytes:
    """The tag and length of a length-delimited field of ``n`` bytes (``delimited`` without the
    bytes: for a field whose parts are joined in one go with its head)."""
    if number < 32:
        if n < 0x80:
            return _HEADS[number][n]
        if n < 0x4000:
            return _TAGS[number] + bytes((n & 0x7F | 0x80, n >> 7))
    return tag(number) + varint(n)


def string(number: int, text: str) -> bytes:
    """A string field that is set (a proto3 string outside a oneof is left out when empty)."""
    return delimited(number, text.encode())


def numbers(data: bytes) -> set[int]:
    """The field numbers a serialized message holds."""
    out = set()
    at = 0
    while at < len(data):
        start = at
        key, at = _read_varint(data, at)
        kind = key & 7
        if kind == 0:
            _, at = _read_varint(data, at)
        elif kind == 1:
            at += 8
        elif kind == 2:
            size, at = _read_varint(data, at)
            at += size
        elif kind == 5:
            at += 4
        else:
            raise ValueError(f"wire type {kind} at byte {start}")
        if at > len(data):
            raise ValueError(f"field at byte {start} runs past the end")
        out.add(key >> 3)
    return out


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("varint runs past the end")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
