"""Well-known protobuf types from plain Python values, shared by the admin API and CSDS."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2


def timestamp(at: float | None) -> timestamp_pb2.Timestamp | None:
    """``None`` stays unset, so grpcurl shows no field instead of 1970-01-01."""
    if at is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(at * 1e9))
    return ts


def duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a Struct, which grpcurl prints as plain JSON (numbers become doubles)."""
    s = struct_pb2.Struct()
    s.update(value)
    return s
