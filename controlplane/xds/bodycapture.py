"""Shadow testing's body comparison (MirrorPolicy ``comparison.body``): the Envoy config that sends
each sampled leg's response body to the receiver, which digests it (controlplane/shadow/bodies.py).

Envoy computes no body digest and its access log carries no body, so a Lua filter does it, as an
*upstream* HTTP filter of the clusters (``HttpProtocolOptions.http_filters``, before the upstream
codec): there it runs on the primary's upstream request and on each shadow's, which the router's
downstream filters never see. It streams the response body through ``bodyChunks()`` (never
buffering it in Envoy's path), keeps a copy up to the limit, and at the end sends it with an
*asynchronous* ``httpCall`` (a hand-framed gRPC unary call, ``mirrorplane.shadow.v1.Bodies/Report``)
over the ``mirrorplane_als`` cluster: Envoy never waits for the answer, so the primary is not
slowed by the receiver, and a receiver that is down costs a failed call, not a failed request.

Only rules with ``comparison.body`` pay for it:

* a primary cluster gets the filter *disabled*; each mirrored route of such a rule enables it
  (``typed_per_filter_config``: ``LuaPerRoute`` naming the cluster's script) and carries its
  settings in route metadata (``filter_metadata["mirrorplane.body"]``), which the script reads;
* a shadow request has no route of its own in Envoy (neither per-route config nor route
  metadata reaches its upstream filters), so a mirror cluster gets the filter *enabled*, with the
  settings of the rules that mirror to it written into its script.

Why not ``ext_proc`` in ``observability_mode`` (the first candidate): docs/shadow-testing.md
(Envoy 1.40 crashes with it under concurrent responses of a few hundred KiB).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Set

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from .. import ir
from ..shadow.tagging import body_settings, threshold

FILTER = "mirrorplane.body"
"""The upstream filter's name; also the route metadata key its script reads (Lua's metadata())."""
SCRIPT = "mirrorplane"
"""The named script of a primary cluster's filter, which a route's LuaPerRoute enables."""
REPORT_PATH = "/mirrorplane.shadow.v1.Bodies/Report"
MAX_CAPTURE = 4 * 1024 * 1024 - 64 * 1024
"""Bodies are sent whole up to this: gRPC's default largest message (4 MiB) less room for the rest.
A larger ``maxBytes`` is capped here (larger bodies are compared by size)."""

_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_ALS_CLUSTER = "mirrorplane_als"  # accesslog.ALS_CLUSTER (not imported: accesslog imports this module)

# %-formatted: GATEWAY, CLUSTER, then SETTINGS, BELOW, MAX (nil on a primary cluster: the route's).
_LUA = """-- mirrorplane shadow testing: send a sampled leg's response body to the receiver
-- (controlplane/xds/bodycapture.py, docs/shadow-testing.md). Envoy never waits for the call.
local GATEWAY, CLUSTER = %s, %s
local SETTINGS, BELOW, MAX = %s, %s, %s
local KEY = "mirrorplane.body"
local function varint(n)
  local t = {}
  while n >= 128 do t[#t + 1] = string.char(n %% 128 + 128); n = math.floor(n / 128) end
  t[#t + 1] = string.char(n)
  return table.concat(t)
end
local function field(num, s) return string.char(num * 8 + 2) .. varint(#s) .. s end
function envoy_on_request(h)
  local settings, below, max = SETTINGS, BELOW, MAX
  if settings == nil then
    local m = h:metadata()
    settings, below, max = m:get("settings"), m:get("below"), m:get("max")
    if settings == nil or below == nil or max == nil then return end
  end
  local rid = h:headers():get("x-request-id")
  if rid == nil or not (rid < below) then return end
  local md = h:streamInfo():dynamicMetadata()
  md:set(KEY, "rid", rid)
  md:set(KEY, "settings", settings)
  md:set(KEY, "max", max)
end
function envoy_on_response(h)
  local md = h:streamInfo():dynamicMetadata():get(KEY)
  if md == nil then return end
  local max = md["max"]
  local parts, n, over = {}, 0, false
  for chunk in h:bodyChunks() do
    local len = chunk:length()
    if n + len > max then over = true; break end
    if len > 0 then parts[#parts + 1] = chunk:getBytes(0, len) end
    n = n + len
  end
  local msg = field(1, GATEWAY) .. field(2, md["rid"]) .. field(3, CLUSTER) .. field(6, md["settings"])
  if over then msg = msg .. "\\40\\1" else msg = msg .. field(4, table.concat(parts)) end
  local m = #msg
  local frame = "\\0" .. string.char(math.floor(m / 16777216) %% 256, math.floor(m / 65536) %% 256,
    math.floor(m / 256) %% 256, m %% 256) .. msg
  h:httpCall(%s, {[":method"] = "POST", [":path"] = %s, [":authority"] = "mirrorplane",
    ["content-type"] = "application/grpc", ["te"] = "trailers"}, frame, 5000, true)
end
"""


def _lua_string(text: str) -> str:
    """A Lua string literal of any text: a long bracket when that is safe (readable settings),
    else every byte but a safe few as a decimal escape."""
    if text.isascii() and text.isprintable() and "]=" not in text:
        return f"[=[{text}]=]"
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-._:~ "
    return '"' + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in text.encode()) + '"'


def lua_script(gateway: str, cluster: str, own: tuple[str, str, int] | None) -> str:
    """The script of one cluster; ``own`` = (settings, below, max) of a mirror cluster."""
    settings, below, limit = (_lua_string(own[0]), _lua_string(own[1]), str(own[2])) if own else ("nil",) * 3
    return _LUA % (
        _lua_string(gateway),
        _lua_string(cluster),
        settings,
        below,
        limit,
        _lua_string(_ALS_CLUSTER),
        _lua_string(REPORT_PATH),
    )


def _compared(route: ir.Route) -> list[ir.Comparison]:
    return [m.comparison for m in route.mirrors if m.comparison.body]


def _settings(comparisons: Iterable[ir.Comparison]) -> tuple[str, str, int]:
    """(settings list as JSON, sampling threshold, bytes to keep) of the mirrors of some rules."""
    cs = list(comparisons)
    keys = sorted({body_settings(c.body_limit_bytes, c.ignore_json_paths) for c in cs})
    return (
        "[" + ",".join(keys) + "]",
        threshold(max(c.sample_percent for c in cs)),
        min(MAX_CAPTURE, max(c.body_limit_bytes for c in cs)),
    )


def capture_route(source: ir.Route, route: rc.Route) -> None:
    """Enable the primary cluster's filter on a route whose rule compares bodies, with its settings."""
    mirrors = _compared(source)
    if not mirrors:
        return
    settings, below, limit = _settings(mirrors)
    meta = route.metadata.filter_metadata[FILTER]
    meta.fields["settings"].string_value = settings
    meta.fields["below"].string_value = below
    meta.fields["max"].number_value = limit
    route.typed_per_filter_config[FILTER].CopyFrom(_any(lua_pb2.LuaPerRoute(name=SCRIPT)))


def uncapture_route(route: rc.Route) -> None:
    if FILTER in route.typed_per_filter_config:
        del route.typed_per_filter_config[FILTER]
    if FILTER in route.metadata.filter_metadata:
        del route.metadata.filter_metadata[FILTER]
        if not route.metadata.filter_metadata:
            route.ClearField("metadata")


def add_body_capture(
    gateway: str,
    primaries: Set[str],
    mirrors: Mapping[str, Set[ir.Comparison]],
    clusters: MutableMapping[str, cluster_pb2.Cluster],
) -> None:
    """The filter on the primary and mirror clusters of every rule that compares bodies
    (encoded.MirrorUsage.body_capture counts them)."""
    for name in sorted(primaries):
        if name in clusters and name not in mirrors:
            lua = lua_pb2.Lua(source_codes={SCRIPT: base_pb2.DataSource(inline_string=lua_script(gateway, name, None))})
            _add_filter(clusters[name], lua, disabled=True)
    for name, comparisons in sorted(mirrors.items()):
        if name in clusters:
            lua = lua_pb2.Lua(
                default_source_code=base_pb2.DataSource(inline_string=lua_script(gateway, name, _settings(comparisons)))
            )
            _add_filter(clusters[name], lua, disabled=False)


def _add_filter(cluster: cluster_pb2.Cluster, lua: lua_pb2.Lua, *, disabled: bool) -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if _HTTP_PROTOCOL_OPTIONS in cluster.typed_extension_protocol_options:
        cluster.typed_extension_protocol_options[_HTTP_PROTOCOL_OPTIONS].Unpack(options)
    else:  # what Envoy does without options: HTTP/1.1 upstream
        options.explicit_http_config.http_protocol_options.SetInParent()
    del options.http_filters[:]
    options.http_filters.extend(
        [
            hcm.HttpFilter(name=FILTER, disabled=disabled, typed_config=_any(lua)),
            hcm.HttpFilter(
                name="envoy.filters.http.upstream_codec", typed_config=_any(upstream_codec_pb2.UpstreamCodec())
            ),
        ]
    )
    cluster.typed_extension_protocol_options[_HTTP_PROTOCOL_OPTIONS].CopyFrom(_any(options))


def _any(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg, deterministic=True)
    return packed
