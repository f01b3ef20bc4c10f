"""What Envoy refuses in a route, checked before Envoy sees it.

Envoy validates a RouteConfiguration as a whole: one bad value anywhere makes it NACK the entire
RouteConfiguration, and every later change to any route of that Gateway is then ignored. The
CRDs' schema lets through values that Envoy rejects, so each class found by probing Envoy (1.40,
``envoy --mode validate`` on configs built by our translators) is checked here, and the rule
carrying it is dropped alone (see rules.py):

* regexes (path, header and query param matches, CORS origin patterns): Envoy compiles them with
  RE2, which has no backreferences or look-around and caps repetitions at 1000, and then refuses
  a compiled program bigger than ``re2.max_program_size.error_level`` (runtime, default 100;
  source/common/common/regex.cc). The ``google-re2`` binding is the same library, so its verdict
  and ``programsize`` are Envoy's, given Envoy's encoding: Envoy 1.40 parses the pattern's UTF-8
  bytes as Latin-1 (measured: its program sizes for ``.``, ``\\pL``, ``(?i)k`` or ``é`` and its
  refusal of ``\\x{100}`` are exactly RE2's in Latin-1, and not in UTF-8, where ``.`` alone costs
  four times as much). tests/test_envoy_limits.py holds this against a real Envoy. (The
  prefix-rewrite pattern is exempt: Envoy does not size-check ``regex_rewrite``, and the schema's
  path pattern keeps it valid.)
* header modifiers (request/response, rule or backendRef): Envoy rejects setting, adding or
  removing ``host`` and ``:``-prefixed headers in any case, and NUL, CR or LF in a name or value
  (the proto's HTTP_HEADER_NAME/VALUE rules). ``remove`` entries carry no schema pattern at all.

* redirect and rewrite paths (ReplaceFullPath, ReplacePrefixMatch): NUL, CR or LF, which the
  schema allows there, is refused by Envoy (HTTP_HEADER_VALUE rule of path_redirect and of the
  rewrite substitution).

Header match values, match paths and hostnames were probed too: the schema's patterns already
keep out what Envoy rejects there. A ``%`` in a header value is not a problem
here: the xDS translator escapes it (Envoy would otherwise read it as a format command).
"""

from __future__ import annotations

import re2

from .. import ir

MAX_PROGRAM_SIZE = 100
"""Envoy's default ``re2.max_program_size.error_level``."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the problem goes into the route's status, not to stderr
_OPTIONS.encoding = re2.Options.Encoding.LATIN1  # as Envoy compiles (see above)
_FORBIDDEN_BYTES = ("\0", "\r", "\n")


def regex_problem(pattern: str) -> str | None:
    """Why Envoy's RE2 engine would refuse ``pattern``, or None."""
    try:
        size = re2.compile(pattern.encode(), _OPTIONS).programsize
    except re2.error as e:
        detail = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        return f"regex '{pattern}' is not valid RE2, the regex syntax Envoy uses: {detail}"
    if size > MAX_PROGRAM_SIZE:
        return f"regex '{pattern}' is too complex for Envoy: RE2 program size {size} > {MAX_PROGRAM_SIZE}"
    return None


def match_problems(match: ir.Match) -> list[str]:
    """Every regex of one match that Envoy would refuse."""
    out: list[str] = []
    if match.path_type != "RegularExpression" and not match.headers and not match.query_params:
        return out  # most matches: a path prefix alone
    if match.path_type == "RegularExpression" and (p := regex_problem(match.path)):
        out.append(f"path {p}")
    for what, items in (("header", match.headers), ("query param", match.query_params)):
        for item in items:
            if item.regex and (p := regex_problem(item.value)):
                out.append(f"{what} {item.name!r} {p}")
    return out


def header_mods_problems(mods: ir.HeaderMods, where: str) -> list[str]:
    """What Envoy refuses in one header modifier (``where`` names the filter for the message)."""
    out = []
    for name in [n for n, _ in mods.set] + [n for n, _ in mods.add] + list(mods.remove):
        if name.lower() == "host" or name.startswith(":"):
            out.append(f"{where} cannot modify {name!r}: Envoy never lets a route modify Host or pseudo-headers")
        elif not name or any(b in name for b in _FORBIDDEN_BYTES):
            out.append(f"{where} header name {name!r} is empty or holds NUL, CR or LF")
    for name, value in mods.set + mods.add:
        if any(b in value for b in _FORBIDDEN_BYTES):
            out.append(f"{where} header {name!r} has a value holding NUL, CR or LF")
    return out


def cors_problems(cors: ir.Cors) -> list[str]:
    return [
        f"CORS allowOrigins {origin!r}: {p}"
        for origin in cors.allow_origins
        if (pattern := ir.origin_regex(origin)) is not None and (p := regex_problem(pattern))
    ]


def path_problem(where: str, value: str) -> str | None:
    if any(b in value for b in _FORBIDDEN_BYTES):
        return f"{where} path {value!r} holds NUL, CR or LF"
    return None
