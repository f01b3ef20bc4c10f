"""Validate and default objects the way the Kubernetes API server does on create.

mirrorplane reads Gateway API objects from files as well as from a cluster. Objects from a file
never went through an API server, so without this module a typo would silently change routing
(an unknown field is ignored, a missing default is read as "unset"). Here every object goes
through the same pipeline the API server runs for a custom resource, driven only by the CRDs
shipped as package data (upstream's, and mirrorplane's own MirrorPolicy CRD):

1. decoding: unknown fields are errors (``kubectl apply``'s strict field validation), nulls of
   non-nullable fields are dropped, and ``default:`` values are filled in recursively;
2. OpenAPI validation with ``jsonschema``, errors reworded into the API server's field-error lines;
3. ``x-kubernetes-list-type`` set/map uniqueness;
4. the CRDs' CEL rules (``x-kubernetes-validations``), skipped entirely when the metadata or
   step 2 found a blocking error (wrong type, missing field, bad enum, too long, too many),
   exactly like the API server, which then adds its "some validation rules were not checked"
   line. Non-blocking errors (pattern, minimum, ...) never change a value's type, so CEL stays
   safe to run next to them, and the server reports both kinds together.

Core kinds (Service, EndpointSlice, Secret, Namespace) are built into the API server rather than
described by CRDs; small hand-written schemas cover only the fields mirrorplane reads, allow
unknown fields (real clusters send many) and carry the server's static defaults.

CEL library: ``common-expression-language`` (Rust ``cel`` crate behind PyO3), not ``cel-python``.
Both compile all 63 distinct rules in the v1.6.1 CRDs; evaluating one rule took ~8 µs against
~180 µs for cel-python (20x), and it is the difference between CEL dominating validation time and
CEL being cheap. Its ``matches()`` uses Rust's ``regex``, which has RE2 syntax and linear-time
guarantees, as Kubernetes does, but compiles the pattern on every call: a rule set's batch has
RE2 itself search with the pattern compiled once (``_Re2Match``). It lacks the
cel-go strings extension that Kubernetes enables (the CRDs use ``split``); the package ships a
Python port of it, registered only for rules that call one of those functions. Evaluation itself is cheap; what costs is the binding converting
``self`` into CEL values (~0.7 µs per string, list or map). So all rules of one schema node are
evaluated as a single CEL list expression, converting ``self`` once per node rather than once per
rule (10x faster on the 14-rule HTTPRouteFilter node), and only a node whose batch fails or
errors is re-run rule by rule to attribute the messages.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import importlib.resources
import ipaddress
import json
import marshal
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import re2
import yaml

from .. import digest
from ..errors import MirrorplaneError
from .cellib import EXTENSIONS as _CEL_EXTENSIONS
from .cellib import cel

if TYPE_CHECKING:
    import jsonschema

_CRD_FILES = {
    "GatewayClass": "gateway.networking.k8s.io_gatewayclasses.yaml",
    "Gateway": "gateway.networking.k8s.io_gateways.yaml",
    "HTTPRoute": "gateway.networking.k8s.io_httproutes.yaml",
    "GRPCRoute": "gateway.networking.k8s.io_grpcroutes.yaml",
    "ReferenceGrant": "gateway.networking.k8s.io_referencegrants.yaml",
    # mirrorplane's own policy kind (group mirrorplane.io), validated exactly like the others.
    "MirrorPolicy": "mirrorplane.io_mirrorpolicies.yaml",
}

Path = tuple[str | int, ...]

_MISSING: Any = object()


# --- errors ------------------------------------------------------------------------------------


class ValidationError(MirrorplaneError):
    """An object the API server would refuse, with every reason it would give.

    The lines match what ``kubectl apply`` prints, so that a user who later moves the same file
    to a real cluster sees the messages they already fixed.
    """

    def __init__(self, kind: str, name: str, errors: list[str]) -> None:
        super().__init__(kind, name, errors)  # these args let the exception pickle
        self.kind = kind
        self.name = name
        self.errors = errors

    def __str__(self) -> str:
        return f'The {self.kind or "object"} "{self.name}" is invalid: {"; ".join(self.errors)}'


@dataclass(frozen=True)
class _Problem:
    """One API-server field error; ``blocking`` ones make the server skip CEL rules."""

    line: str
    blocking: bool = False


# The server's own line when a blocking error stops CEL (a nil field path prints as "<nil>").
_CEL_SKIPPED = _Problem(
    '<nil>: Invalid value: "null": some validation rules were not checked because the object was '
    "invalid; correct the existing errors to complete validation"
)


def _fmt_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _fmt_value(value: Any) -> str:
    """Print a bad value as Go's field errors do: strings quoted, scalars bare, the rest as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- compiled schema nodes ---------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    """One schema node, preprocessed for the walks (properties, items and map values only).

    The ``*_below`` flags include the node itself, so that walks skip whole subtrees that have
    nothing to do.
    """

    type: str | None = None
    properties: dict[str, _Node] = field(default_factory=dict)
    items: _Node | None = None
    additional: _Node | None = None
    strict: bool = False
    default: Any = _MISSING
    list_type: str | None = None
    map_keys: tuple[str, ...] = ()
    rules: _RuleSet | None = None
    cel_names: dict[str, str] = field(default_factory=dict)
    decode_below: bool = False
    lists_below: bool = False
    cel_below: bool = False
    escape_below: bool = False
    cel_visit: bool = False  # cel_below or escape_below: the CEL walk goes into this node
    # CEL sees this subtree's value as it is (once decoded and structurally valid): no name to
    # escape below, and every field of every object below has a schema (a strict object's
    # unknown fields fail decoding), so that the walk need not copy it.
    cel_same: bool = False
    defaults: tuple[tuple[str, _Node], ...] = ()  # the properties with a default
    memo: bool = False  # an object or array field: a load's Memo may take its value whole


def _compile_node(schema: dict[str, Any], strict: bool) -> _Node:
    node = _Node(type=schema.get("type"), default=schema.get("default", _MISSING))
    node.properties = {k: _compile_node(v, strict) for k, v in schema.get("properties", {}).items()}
    for sub in node.properties.values():
        sub.memo = sub.type in ("object", "array")
    if "items" in schema:
        node.items = _compile_node(schema["items"], strict)
    if isinstance(schema.get("additionalProperties"), dict):
        node.additional = _compile_node(schema["additionalProperties"], strict)
    # Structural pruning drops any field an object schema does not declare; kubectl's strict
    # field validation turns each dropped field into an error instead.
    node.strict = strict and node.type == "object" and node.additional is None
    node.defaults = tuple((k, sub) for k, sub in node.properties.items() if sub.default is not _MISSING)
    node.list_type = schema.get("x-kubernetes-list-type")
    node.map_keys = tuple(schema.get("x-kubernetes-list-map-keys", ()))
    node.cel_names = {name: _cel_name(name) for name in node.properties}
    node.rules = _RuleSet.compile(schema.get("x-kubernetes-validations", []), node)
    kids = [*node.properties.values(), *(n for n in (node.items, node.additional) if n)]
    node.decode_below = node.strict or any(k.decode_below or k.default is not _MISSING for k in kids)
    node.lists_below = node.list_type in ("set", "map") or any(k.lists_below for k in kids)
    node.cel_below = node.rules is not None or any(k.cel_below for k in kids)
    node.escape_below = any(n != c for n, c in node.cel_names.items()) or any(k.escape_below for k in kids)
    node.cel_visit = node.cel_below or node.escape_below
    if node.type in ("string", "integer", "number", "boolean"):
        node.cel_same = not kids
    elif node.type == "object":
        node.cel_same = (node.strict or node.additional is not None) and all(k.cel_same for k in kids)
    elif node.type == "array":
        node.cel_same = node.items is not None and node.items.cel_same and node.additional is None
    node.cel_same = node.cel_same and not node.escape_below
    return node


# --- step 1: decoding (strict fields, null pruning, defaults) ----------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _decode(value: Any, node: _Node, path: Path, unknown: list[str]) -> Any:
    """Return a defaulted copy of ``value``; fields the schema does not know go to ``unknown``."""
    if not node.decode_below:
        return _copy(value)
    if isinstance(value, dict):
        return _decode_object(value, node, path, unknown)
    item = node.items
    if isinstance(value, list) and item is not None:
        if not item.decode_below:
            return [_copy(v) for v in value]
        # Most items are objects (rules, matches, refs): straight to the object's decoding.
        return [
            _decode_object(v, item, (*path, i), unknown) if type(v) is dict else _decode(v, item, (*path, i), unknown)
            for i, v in enumerate(value)
        ]
    return _copy(value)


_SCALARS = (str, int, float, bool)  # what a copy keeps as it is (the value's exact type)


def _decode_object(value: dict[str, Any], node: _Node, path: Path, unknown: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    properties, additional = node.properties, node.additional
    for key, child in value.items():
        sub = properties.get(key) or additional
        if sub is None:
            if node.strict:
                unknown.append(_fmt_path((*path, key)))
            else:
                out[key] = _copy(child)
        elif type(child) in _SCALARS:  # most fields: a leaf is decoded to itself, without a call
            out[key] = child
        elif sub.memo and (call := _state.call) is not None and (type(child) is dict or type(child) is list):
            out[key] = call.decode(child, sub, (*path, key), unknown)
        elif type(child) is dict and sub.decode_below:
            out[key] = _decode_object(child, sub, (*path, key), unknown)
        elif child is not None:  # a null is dropped (no CRD field is nullable); a default may refill it
            out[key] = _decode(child, sub, (*path, key), unknown)
    for key, sub in node.defaults:
        if key in out:
            continue
        if type(sub.default) in _SCALARS:  # group, kind, weight: the default as it is
            out[key] = sub.default
        else:
            # The server defaults the default itself too (e.g. a defaulted rule gets its matches).
            out[key] = _decode(_copy(sub.default), sub, (*path, key), unknown)
    return out


# --- step 2: OpenAPI validation through jsonschema ---------------------------------------------

# OpenAPI v3.0 keywords jsonschema's draft 4 understands with the same meaning.
_JSONSCHEMA_KEYWORDS = {
    "type", "enum", "required", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties", "maxProperties",
    "format",
}  # fmt: skip


def _to_jsonschema(schema: dict[str, Any]) -> dict[str, Any]:
    """Keep only what jsonschema should check; Kubernetes extensions are handled elsewhere."""
    out = {k: v for k, v in schema.items() if k in _JSONSCHEMA_KEYWORDS}
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in schema:
        out["properties"] = {k: _to_jsonschema(v) for k, v in schema["properties"].items()}
    if "items" in schema:
        out["items"] = _to_jsonschema(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _to_jsonschema(schema["additionalProperties"])
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema and not schema.get("x-kubernetes-int-or-string"):
            out[key] = [_to_jsonschema(s) for s in schema[key]]
    if "not" in schema:
        out["not"] = _to_jsonschema(schema["not"])
    return out


def _required(validator: Any, required: list[str], instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """draft 4 ``required``, but with the missing field in the error's path, as the server puts it."""
    if validator.is_type(instance, "object"):
        for prop in required:
            if prop not in instance:
                yield _jsonschema().ValidationError(f"{prop!r} is a required property", path=[prop])


def _is_ipv4(value: Any) -> bool:
    return not isinstance(value, str) or bool(ipaddress.IPv4Address(value))


def _is_ipv6(value: Any) -> bool:
    return not isinstance(value, str) or bool(ipaddress.IPv6Address(value))


def _is_base64(value: Any) -> bool:
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


@functools.cache
def _jsonschema() -> Any:
    """jsonschema, imported when first needed: only to word the errors of an object the fast
    check rejects, or for a kind without one. Valid input never needs it, and a serving
    process is 2 MB smaller without it (its validators for each kind included)."""
    import jsonschema

    return jsonschema


@functools.cache
def _validator_class() -> Any:
    jsonschema = _jsonschema()
    # Only the string formats the schemas use on validated fields (int32/int64 only document the
    # Go type; date-time appears in status, which is not validated).
    formats = jsonschema.FormatChecker(())
    formats.checks("ipv4", raises=ValueError)(_is_ipv4)
    formats.checks("ipv6", raises=ValueError)(_is_ipv6)
    formats.checks("byte", raises=binascii.Error)(_is_base64)
    extended = jsonschema.validators.extend(jsonschema.Draft4Validator, {"required": _required})
    return functools.partial(extended, format_checker=formats)


# --- the structural fast path ---------------------------------------------------------------

Check = Callable[[Any], bool]


def _bound_check(limit: Any, test: Callable[[Any, Any], bool], exclusive: Any) -> Check:
    return lambda v: not _is_number(v) or (test(v, limit) and not (exclusive and v == limit))


def _size_check(limit: int, kinds: type[Sized], test: Callable[[int, int], bool]) -> Check:
    return lambda v: not isinstance(v, kinds) or test(len(v), limit)


# What each JSON type accepts, strictly: a bool is no integer or number, a float no integer.
_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}
_FAST_FORMATS: dict[str, Callable[[Any], bool]] = {"ipv4": _is_ipv4, "ipv6": _is_ipv6, "byte": _is_base64}
_FAST_KEYWORDS = _JSONSCHEMA_KEYWORDS | {
    "properties",
    "items",
    "additionalProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # enum: true is not 1


def _fast_check(schema: dict[str, Any], node: _Node | None = None) -> Check:
    """One schema node as a function that only says valid or not.

    The closures mirror the node tree, so a kind costs a few thousand small functions (fast and
    small, where a generated-code validator such as fastjsonschema took ~30 MB for the
    HTTPRoute and Gateway CRDs). Each check is at least as strict as jsonschema's draft 4 one;
    an unknown keyword raises KeyError, and the kind then has no fast path. ``node`` is the same
    place in the compiled tree (none under allOf, anyOf, oneOf, not): a field's check then
    passes a value a load's Memo vouches for (``_field_check``).
    """
    if not schema.keys() <= _FAST_KEYWORDS:
        raise KeyError(sorted(schema.keys() - _FAST_KEYWORDS))
    typed = _typed_check(schema, node)
    if typed is not None:
        return typed
    checks: list[Check] = []
    kind = schema.get("type")
    if kind is not None:
        allowed = [_JSON_TYPES[t] for t in (kind if isinstance(kind, list) else [kind])]
        checks.append(allowed[0] if len(allowed) == 1 else lambda v: any(ok(v) for ok in allowed))
    if "enum" in schema:
        options = schema["enum"]
        checks.append(lambda v: any(_same(v, o) for o in options))
    if "required" in schema:
        required = schema["required"]
        checks.append(lambda v: not isinstance(v, dict) or all(k in v for k in required))
    bounds: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
        ("minimum", lambda v, lim: v >= lim),
        ("maximum", lambda v, lim: v <= lim),
    )
    for key, test in bounds:
        if key in schema:
            exclusive = schema.get("exclusive" + key.title())
            checks.append(_bound_check(schema[key], test, exclusive))
    sizes: tuple[tuple[str, type[Sized], Callable[[int, int], bool]], ...] = (
        ("minLength", str, lambda n, lim: n >= lim),
        ("maxLength", str, lambda n, lim: n <= lim),
        ("minItems", list, lambda n, lim: n >= lim),
        ("maxItems", list, lambda n, lim: n <= lim),
        ("minProperties", dict, lambda n, lim: n >= lim),
        ("maxProperties", dict, lambda n, lim: n <= lim),
    )
    for key, kinds, test in sizes:
        if key in schema:
            checks.append(_size_check(schema[key], kinds, test))
    if "pattern" in schema:
        regex = re.compile(schema["pattern"])  # jsonschema's own semantics: re.search
        checks.append(lambda v: not isinstance(v, str) or regex.search(v) is not None)
    if "format" in schema and schema["format"] in _FAST_FORMATS:
        fmt = _FAST_FORMATS[schema["format"]]

        def formatted(v: Any) -> bool:
            try:
                return bool(fmt(v))
            except ValueError:  # binascii.Error is one too
                return False

        checks.append(formatted)
    if "properties" in schema or "additionalProperties" in schema:
        props, extra = _field_checks(schema, node)

        def fields(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k, child in v.items():
                check = props.get(k, extra)
                if check is not None and not check(child):
                    return False
            return True

        checks.append(fields)
    if "items" in schema:
        item = _fast_check(schema["items"], node and node.items)
        checks.append(lambda v: not isinstance(v, list) or all(map(item, v)))
    if "allOf" in schema:
        parts = [_fast_check(x) for x in schema["allOf"]]
        checks.append(lambda v: all(p(v) for p in parts))
    if "anyOf" in schema:
        parts = [_fast_check(x) for x in schema["anyOf"]]
        checks.append(lambda v: any(p(v) for p in parts))
    if "oneOf" in schema:
        parts = [_fast_check(x) for x in schema["oneOf"]]
        checks.append(lambda v: sum(1 for p in parts if p(v)) == 1)
    if "not" in schema:
        negated = _fast_check(schema["not"])
        checks.append(lambda v: not negated(v))
    return _every(checks)


# The keywords a node of one type may have for ``_typed_check`` to take it.
_TYPED_KEYWORDS = {
    "string": {"type", "minLength", "maxLength", "pattern", "enum"},
    "integer": {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum"},
    "object": {"type", "required", "properties", "additionalProperties", "minProperties", "maxProperties"},
    "array": {"type", "items", "minItems", "maxItems"},
}


def _typed_check(schema: dict[str, Any], node: _Node | None = None) -> Check | None:
    """The commonest nodes (a string, an integer, an object, an array) as one closure each.

    ``_fast_check``'s general form chains a closure per keyword, each testing the value's type
    again; once the type is known, the bounds, sizes and fields need no more test. Same
    verdicts: each line below is the general form's check with its type test already passed.
    None for any other node.
    """
    kind = schema.get("type")
    if not isinstance(kind, str) or not schema.keys() <= _TYPED_KEYWORDS.get(kind, set()):
        return None
    options = schema.get("enum")
    if kind == "string":
        shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
        search = re.compile(schema["pattern"]).search if "pattern" in schema else None

        def string(v: Any) -> bool:
            if not isinstance(v, str):
                return False
            n = len(v)
            if n < shortest or (longest is not None and n > longest):
                return False
            if search is not None and search(v) is None:
                return False
            return options is None or any(_same(v, o) for o in options)

        return string
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")

        def integer(v: Any) -> bool:
            if not isinstance(v, int) or isinstance(v, bool):
                return False
            if low is not None and (v < low or (above and v == low)):
                return False
            if high is not None and (v > high or (below and v == high)):
                return False
            return options is None or any(_same(v, o) for o in options)

        return integer
    if kind == "object":
        required = schema.get("required", ())
        fewest, most = schema.get("minProperties", 0), schema.get("maxProperties")
        props, extra = _field_checks(schema, node)

        def mapping(v: Any) -> bool:
            if not isinstance(v, dict):
                return False
            n = len(v)
            if n < fewest or (most is not None and n > most):
                return False
            for k in required:
                if k not in v:
                    return False
            for k, child in v.items():
                check = props.get(k, extra)
                if check is not None and not check(child):
                    return False
            return True

        return mapping
    item = _fast_check(schema["items"], node and node.items) if "items" in schema else None
    fewest, most = schema.get("minItems", 0), schema.get("maxItems")

    def array(v: Any) -> bool:
        if not isinstance(v, list):
            return False
        n = len(v)
        if n < fewest or (most is not None and n > most):
            return False
        return item is None or all(map(item, v))

    return array


def _field_checks(schema: dict[str, Any], node: _Node | None) -> tuple[dict[str, Check], Check | None]:
    """An object node's checks of its properties, and of its other fields (None: any)."""
    subs = node.properties if node is not None else {}
    props = {k: _field_check(_fast_check(v, subs.get(k)), subs.get(k)) for k, v in schema.get("properties", {}).items()}
    if "additionalProperties" not in schema:
        return props, None
    return props, _fast_check(schema["additionalProperties"], node and node.additional)


def _field_check(check: Check, node: _Node | None) -> Check:
    """``check``, or for a field a load's Memo may take whole: true at once for the value the
    Memo gave (``_Call.trusted``), which passed this same check in an object found valid."""
    if node is None or not node.memo:
        return check

    def vouched_or(v: Any) -> bool:
        call = _state.call
        if call is not None and call.vouches(v, node):
            return True
        return check(v)

    return vouched_or


def _every(checks: list[Check]) -> Check:
    """All of ``checks``, without a generator per call (the fast path's hottest line)."""
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)

    def every(v: Any) -> bool:
        for check in checks:
            if not check(v):
                return False
        return True

    return every


def _fast_validator(schema: dict[str, Any], root: _Node) -> Check | None:
    """A check that only says valid or not, ~20x faster than jsonschema's validator.

    It never words an error: anything it rejects goes through jsonschema, whose errors are
    reworded into the API server's lines. Being at least as strict, a rejection only it makes
    costs the slow path, never a wrong answer. None when the schema uses a keyword it lacks.
    """
    try:
        return _fast_check(schema, root)
    except KeyError:
        return None


def _structurally_valid(fast: Check | None, body: dict[str, Any]) -> bool:
    if fast is None:
        return False
    try:
        return fast(body)
    # A fallback, not a swallow: on odd input (e.g. a non-string key) jsonschema validates the body.
    except Exception:  # noqa: BLE001 - any failure of the fast path means "ask jsonschema"
        return False


_GO_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array"}

# jsonschema keyword -> go-openapi wording of an "Invalid value" detail.
_INVALID_DETAIL = {
    "minimum": "should be greater than or equal to {limit}",
    "maximum": "should be less than or equal to {limit}",
    "minLength": "should be at least {limit} chars long",
    "pattern": "should match '{limit}'",
    "minItems": "should have at least {limit} items",
    "minProperties": "should have at least {limit} properties",
    "format": 'must be of type {limit}: "{value}"',
    "oneOf": "must validate one and only one schema (oneOf)",
    "anyOf": "must validate at least one schema (anyOf)",
    "allOf": "must validate all the schemas (allOf)",
    "not": "must not validate the schema (not)",
}


def _schema_problem(err: jsonschema.ValidationError) -> _Problem:
    path = _fmt_path(err.absolute_path)
    # Typed "or Unset" (an error made by hand may lack them); one a validator raised has them all.
    value: Any = err.instance
    limit: Any = err.validator_value
    schema: Any = err.schema
    match err.validator:
        case "required":
            return _Problem(f"{path}: Required value", blocking=True)
        case "enum":
            allowed = ", ".join(json.dumps(v if isinstance(v, str) else json.dumps(v)) for v in limit)
            line = f"{path}: Unsupported value: {_fmt_value(value)}: supported values: {allowed}"
            return _Problem(line, blocking=True)
        case "type":
            actual = "null" if value is None else _GO_TYPES.get(type(value), type(value).__name__)
            want = ",".join(limit) if isinstance(limit, list) else limit
            detail = f'{path or "body"} in body must be of type {want}: "{actual}"'
            return _Problem(f'{path}: Invalid value: "{actual}": {detail}', blocking=True)
        case "maxLength":
            unit = "byte" if limit == 1 else "bytes"
            return _Problem(f"{path}: Too long: may not be more than {limit} {unit}", blocking=True)
        case "maxItems" | "maxProperties":
            unit = "item" if limit == 1 else "items"
            return _Problem(f"{path}: Too many: {len(value)}: must have at most {limit} {unit}", blocking=True)
        case "exclusiveMinimum" | "exclusiveMaximum":
            word = "greater" if err.validator == "exclusiveMinimum" else "less"
            bound = schema["minimum" if word == "greater" else "maximum"]
            return _invalid(path, value, f"should be {word} than {bound}")
    template = _INVALID_DETAIL.get(str(err.validator), err.message)
    bad = len(value) if err.validator in ("minItems", "minProperties") else value
    return _invalid(path, bad, template.format(limit=limit, value=value))


def _schema_problems(err: jsonschema.ValidationError) -> Iterator[_Problem]:
    """The error itself, and for a failed oneOf/anyOf the closest branch's errors, as go-openapi adds."""
    yield _schema_problem(err)
    if err.validator in ("oneOf", "anyOf") and err.context:
        yield from _schema_problems(_jsonschema().exceptions.best_match(err.context))


def _invalid(path: str, value: Any, detail: str) -> _Problem:
    return _Problem(f"{path}: Invalid value: {_fmt_value(value)}: {path or 'body'} in body {detail}")


# --- step 3: list-type set / map uniqueness ----------------------------------------------------


def _list_problems(items: list[Any], node: _Node, path: Path) -> Iterator[_Problem]:
    """Duplicates in a set, or in a map's key fields (a missing key counts as its default)."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        if node.list_type == "map":
            if not isinstance(item, dict) or node.items is None:
                continue
            key: Any = {k: item.get(k, _key_default(node.items, k)) for k in node.map_keys}
        else:
            key = item
        token = json.dumps(key, sort_keys=True)
        if token in seen:
            yield _Problem(f"{_fmt_path((*path, index))}: Duplicate value: {_fmt_value(key)}")
        seen.add(token)


def _key_default(item: _Node, key: str) -> Any:
    default = item.properties[key].default
    return None if default is _MISSING else default


def _list_type_problems(value: Any, node: _Node, path: Path) -> list[_Problem]:
    found: list[_Problem] = []
    if value is not None and node.lists_below:
        _add_list_type_problems(value, node, path, found)
    return found


def _add_list_type_problems(value: Any, node: _Node, path: Path, found: list[_Problem]) -> None:
    """Into ``found``; only into children with a set or map list below (no call, no generator per leaf)."""
    if isinstance(value, dict):
        properties, additional = node.properties, node.additional
        for key, child in value.items():
            sub = properties.get(key) or additional
            if sub is not None and sub.lists_below and child is not None:
                if sub.memo and (call := _state.call) is not None and call.vouches(child, sub):
                    continue
                _add_list_type_problems(child, sub, (*path, key), found)
    elif isinstance(value, list):
        if node.list_type in ("set", "map"):
            found += _list_problems(value, node, path)
        item = node.items
        if item is not None and item.lists_below:
            for index, child in enumerate(value):
                if child is not None:
                    _add_list_type_problems(child, item, (*path, index), found)


# --- step 4: CEL -------------------------------------------------------------------------------

# Identifiers CEL reserves, which Kubernetes exposes as __name__ (e.g. parentRef.__namespace__).
_CEL_RESERVED = {
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
    "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while",
}  # fmt: skip
_CEL_ESCAPABLE = re.compile(r"[a-zA-Z_./-][a-zA-Z0-9_./-]*")
_CEL_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}
_CEL_ESCAPE_RE = re.compile(r"__|[./-]")

# The cel-go strings extension, which the API server enables and the Rust crate lacks.
_K8S_FUNCTIONS: dict[str, Callable[..., Any]] = dict(_CEL_EXTENSIONS["strings"])


def _cel_name(name: str) -> str:
    """A property name as Kubernetes exposes it to CEL (apiserver/pkg/cel/escaping.go)."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    if not _CEL_ESCAPABLE.fullmatch(name):
        return name  # not addressable from CEL at all; kept as a plain map key
    return _CEL_ESCAPE_RE.sub(lambda m: _CEL_ESCAPES[m.group()], name)


# What a CEL evaluation error is raised as: the binding uses plain Python errors (a missing key is a
# KeyError, a type mismatch a TypeError, 1/0 a ZeroDivisionError, a bad regex or an unknown function
# a RuntimeError).
_CEL_ERRORS = (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError)


def _cel_error(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]}"
    return str(exc) or type(exc).__name__


def _activation(value: Any, extended: bool, variables: dict[str, Any] | None = None, flat: bool = False) -> Any:
    """``self`` (and ``variables``) for a program evaluated on ``value``, or ``variables`` alone
    when they are its fields (``flat``); a Context when it calls the strings extension."""
    bound = variables if flat and variables is not None else {"self": value, **(variables or {})}
    return cel.Context(variables=bound, functions=_K8S_FUNCTIONS) if extended else bound


# --- regular expressions: RE2, each pattern compiled once ------------------------------------

# The CEL library compiles the pattern of ``matches()`` on every evaluation: about 13 µs for the
# path value's pattern, evaluated for every path match of every HTTPRoute, most of what a path's
# eleven rules cost. So in a rule set's batch, ``self.x.y.matches(r'p')`` becomes a variable set
# beforehand by RE2 (``google-re2``: the engine Kubernetes evaluates ``matches()`` with, so its
# verdict is the one to give), the pattern compiled once: about 3 µs a search. When ``self.x.y``
# is no string, the variable is left unset and the batch fails where CEL would have evaluated
# it, so the rules are evaluated again as written; so is any rule that fails, with its message.
# A pattern RE2 does not compile stays as written. tests/test_schema_regex.py compares the
# batches with the rules as written.
_MATCHES = re.compile(r"(self(?:\.[A-Za-z_]\w*)*)\.matches\(\s*r(\"\"\"|'''|\"|')(.*?)\2\s*\)", re.DOTALL)


@dataclass(frozen=True)
class _Re2Match:
    """``self.<path>.matches(r'<pattern>')`` of a batch, as the variable ``name``."""

    name: str
    path: tuple[str, ...]  # the fields after ``self``, as CEL names them
    regex: re2._Regexp

    def bind(self, value: Any, into: dict[str, Any]) -> None:
        """Set the variable when the operand is a string; leave it unset (an error where CEL
        evaluates it) otherwise, as ``matches()`` on anything else, or on nothing, is. A string
        with no UTF-8 form (a lone surrogate) raises ``UnicodeEncodeError``, a ValueError: the
        batch fails, and the rules as written say what the CEL library says of it."""
        for key in self.path:
            if type(value) is not dict:
                return
            value = value.get(key)
        if type(value) is str:
            # On the UTF-8 bytes the search of a str runs on anyway, without mapping its offsets
            # back to characters: 1.2 µs against 2.9 µs.
            into[self.name] = self.regex.search(value.encode()) is not None


def _re2_matches(source: str) -> tuple[str, tuple[_Re2Match, ...]]:
    """``source`` with every ``self....matches(r'...')`` whose pattern RE2 compiles written as a
    variable; and how to set those variables."""
    found: list[_Re2Match] = []

    def variable(m: re.Match[str]) -> str:
        try:
            regex = re2.compile(m.group(3))
        except re2.error:
            return m.group()
        found.append(_Re2Match(f"__re{len(found)}", tuple(m.group(1).split(".")[1:]), regex))
        return found[-1].name

    return _MATCHES.sub(variable, source), tuple(found)


# --- self's fields as variables --------------------------------------------------------------

# Handing ``self`` to the CEL library costs about 1 µs per key and per value converted, plus the
# map itself: a path match's ``{'type': ..., 'value': ...}`` took 7–8 µs, twice its two strings
# as variables, and every one of the 10,000 path matches of the 10,000-route workload is unique,
# so the memo never spares it. So a batch that reads ``self`` only through its fields
# (``self.type``, ``self.value.size()``) also gets a form with each such field a variable of its
# own (``__self0``), bound to the field's value when it is there and left unbound when it is
# not: where ``self.x`` raises "no such key", ``__self0`` raises "undefined variable", at the same
# point of the same evaluation, and CEL's ``&&``, ``||`` and ``?:`` absorb both alike. Anything
# else that names ``self`` (``has(self.x)``, ``self.?x``, an index, a method of ``self``) keeps
# the batch as it is. So the flat batch gives each rule's verdict as written (a rule it finds
# false is reported with its message), and when it raises, as with RE2, its rules are evaluated
# again as written. tests/test_schema_flat.py compares the two forms of every such rule set of
# the CRDs, on values whose fields hold anything or are missing.
_SELF_TOKEN = re.compile(r"(?<![\w.])self(?!\w)")
_SELF_AFTER_DOT = re.compile(r"\.\s+self(?!\w)")
_SELF_FIELD = re.compile(r"(?<![\w.])self\s*\.\s*([A-Za-z_]\w*)(?!\w|\s*\()")


def _code_spans(source: str) -> list[tuple[int, int]]:
    """Where ``source`` is code, between its string literals (``_strip_strings``'s scan)."""
    spans, pos = [], 0
    while (m := _CEL_STRING.search(source, pos)) is not None:
        quote = m.group(1)
        raw = "r" in m.group()[: -len(quote)].lower()
        end = m.end()
        while True:
            close = source.find(quote, end)
            if close < 0:
                raise ValueError("unterminated string")
            backslashes = len(source[:close]) - len(source[:close].rstrip("\\"))
            if raw or backslashes % 2 == 0:
                break
            end = close + 1
        spans.append((pos, m.start()))
        pos = close + len(quote)
    return [*spans, (pos, len(source))]


def _flat_self(source: str) -> tuple[cel.Program, tuple[tuple[str, str], ...]] | None:
    """``source`` with every ``self.<field>`` a variable, and (field, variable) pairs; None when
    it uses ``self`` otherwise (or does not compile so)."""
    try:
        spans = _code_spans(source)
    except ValueError:
        return None
    names: dict[str, str] = {}

    def variable(m: re.Match[str]) -> str:
        return names.setdefault(m.group(1), f"__self{len(names)}")

    out = []
    for i, (start, end) in enumerate(spans):
        code = source[start:end]
        if _SELF_AFTER_DOT.search(code):  # ``x. self``: a field named self, which the scan would take
            return None
        code = _SELF_FIELD.sub(variable, code)
        if _SELF_TOKEN.search(code):
            return None
        out.append(code)
        if i + 1 < len(spans):
            out.append(source[end : spans[i + 1][0]])
    if not names:
        return None
    try:
        program = cel.compile("".join(out))
    except ValueError:  # has(self.x) became has(__self0)
        return None
    if "self" in program.variables():
        return None
    return program, tuple(names.items())


_REASON_TYPES = {"FieldValueForbidden": "Forbidden", "FieldValueRequired": "Required value"}


@dataclass(frozen=True)
class _Rule:
    """One ``x-kubernetes-validations`` entry, compiled."""

    source: str
    program: cel.Program
    message: str
    message_program: cel.Program | None
    field_path: str
    reason: str | None
    extended: bool

    @classmethod
    def compile(cls, spec: dict[str, Any]) -> _Rule:
        program = cel.compile(spec["rule"])
        expr = spec.get("messageExpression")
        return cls(
            source=spec["rule"].strip(),
            program=program,
            message=(spec.get("message") or "").strip(),
            message_program=cel.compile(expr) if expr else None,
            field_path=spec.get("fieldPath", "").lstrip("."),
            reason=spec.get("reason"),
            extended=not _K8S_FUNCTIONS.keys().isdisjoint(program.functions()),
        )

    @property
    def is_transition(self) -> bool:
        return "oldSelf" in self.program.variables()

    def check(self, value: Any, path: str, type_name: str) -> _Problem | None:
        try:
            result = self.program.execute(_activation(value, self.extended))
        except _CEL_ERRORS as exc:
            detail = f"{_cel_error(exc)} evaluating rule: {self.message or self.source}"
            return _Problem(f'{path}: Invalid value: "{type_name}": {detail}')
        return None if result is True else self.failure(value, path, type_name)

    def failure(self, value: Any, path: str, type_name: str) -> _Problem:
        if self.field_path:
            path = f"{path}.{self.field_path}" if path else self.field_path
        detail = self._detail(value)
        if self.reason in _REASON_TYPES:
            return _Problem(f"{path}: {_REASON_TYPES[self.reason]}: {detail}")
        if self.reason == "FieldValueDuplicate":
            return _Problem(f'{path}: Duplicate value: "{type_name}"')
        return _Problem(f'{path}: Invalid value: "{type_name}": {detail}')

    def _detail(self, value: Any) -> str:
        if self.message_program is not None:
            try:
                text = self.message_program.execute(_activation(value, True))
            except _CEL_ERRORS:  # the server falls back to the static message, so do we
                text = None
            if isinstance(text, str) and text.strip():
                return text.strip()
        return self.message or f"failed rule: {self.source}"


# --- what a rule set reads: the projection handed to CEL ---------------------------------------

# Converting ``self`` into CEL values is most of what a rule costs (~0.7 µs per string, list or
# map), and a rule usually reads a few fields of a large value: the rule on HTTPRoute's
# ``spec.rules`` that caps the matches of all rules reads only ``matches`` (as a size), yet the
# whole list of rules, filters and backendRefs included, was converted for it (0.5 ms per route).
# So each rule set hands CEL a projection of ``self``: every object with declared properties keeps
# only the fields whose names the rules select somewhere (``.name``); lists keep every item, maps
# (additionalProperties) and scalars stay whole. The verdict is the same as on the full value when
# an object is only ever used through its fields, which the scan below makes sure of, and which
# Kubernetes' own type checking enforces for the rest (an object with properties is a CEL object
# type there: no size(), no iteration, no ``in``, no index by string). Anything the scan cannot
# vouch for gets the full value, as before. Only the batch sees the projection: a rule that fails
# or errors is evaluated again, with its message, on the full value.

# Functions a projected rule may call: the operators, and functions of strings, lists and
# durations. Any other function (string(), dyn(), an extension) might see a whole object.
_PROJECTABLE_FUNCTIONS = {
    "!_", "-_", "@in", "@not_strictly_false", "_!=_", "_&&_", "_+_", "_-_", "_*_", "_/_", "_%_", "_<=_", "_<_",
    "_==_", "_>=_", "_>_", "_?_:_", "_[_]", "_||_", "contains", "duration", "endsWith", "matches", "size",
    "split", "startsWith",
}  # fmt: skip
_SCALAR_TYPES: set[str | None] = {"string", "integer", "boolean", "number"}
_CEL_STRING = re.compile(r"[rRbB]{0,2}('''|\"\"\"|'|\")")
_SELECTED = re.compile(r"\.\s*\??\s*([A-Za-z_]\w*)")
_COMPARISON = re.compile(r"==|!=|\bin\b")
_LEFT_OPERAND = re.compile(r"(?:^|(?<=[(,?:&|!\[]))\s*([\w.]+(?:\(\))?|'S'|\[[^\]]*\])\s*$")
_RIGHT_OPERAND = re.compile(r"^\s*([\w.]+(?:\(\))?|'S'|\[[^\]]*\])\s*(?=$|[),?:&|\]])")
_SCALAR_LITERAL = r"'S'|-?\d+(?:\.\d+)?|true|false|null"
_LITERAL = re.compile(rf"{_SCALAR_LITERAL}|\[\s*(?:(?:{_SCALAR_LITERAL})(?:\s*,\s*(?:{_SCALAR_LITERAL}))*)?\s*\]")
_LISTING = re.compile(r"\.\s*(size|all|exists|exists_one|filter|map)\s*\(|\bsize\s*\(")
_TRAILING = re.compile(r"[\w.]+$|\)$")
_FIELD_CHAIN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def _strip_strings(source: str) -> str:
    """The expression with every string literal replaced by ``'S'``, so that the scan sees code only."""
    return "'S'".join(source[start:end] for start, end in _code_spans(source))


def _field_types(node: _Node, into: dict[str, set[str | None]]) -> dict[str, set[str | None]]:
    """Every property name in the subtree (as CEL spells it) with every type it has there."""
    for name, sub in node.properties.items():
        into.setdefault(node.cel_names[name], set()).add(sub.type)
    for child in (*node.properties.values(), node.items, node.additional):
        if child is not None:
            _field_types(child, into)
    return into


def _scalar_operand(operand: str, types: dict[str, set[str | None]]) -> bool:
    """A literal, a size, or a field whose type is a scalar wherever the name occurs below."""
    if _LITERAL.fullmatch(operand) or operand.endswith(".size()"):
        return True
    if not _FIELD_CHAIN.fullmatch(operand):
        return False  # a bare variable, or self: possibly a whole object
    kinds = types.get(operand.rsplit(".", 1)[1], set())
    return bool(kinds) and kinds <= _SCALAR_TYPES


def _is_list(chain: str, types: dict[str, set[str | None]]) -> bool:
    return types.get(chain.rsplit(".", 1)[1]) == {"array"}


def _comparisons_safe(code: str, types: dict[str, set[str | None]], self_type: str | None) -> bool:
    """Every ==, != and ``in`` compares values a projection cannot change.

    One side a literal suffices (an object never equals a literal, projected or not); otherwise
    both sides must be scalars. An operand counts only where the scan can delimit it: next to
    the comparison, an operator binding less tightly, a bracket or the end (``a + 'x' == b`` has
    no literal operand).
    """
    for m in _COMPARISON.finditer(code):
        left = _LEFT_OPERAND.search(code[: m.start()])
        right = _RIGHT_OPERAND.search(code[m.end() :])
        lhs = left.group(1) if left else ""
        rhs = right.group(1) if right else ""
        if m.group() == "in":  # membership in a list, never in an object's keys
            listed = rhs.startswith("[") and _LITERAL.fullmatch(rhs) or rhs == "self" and self_type == "array"
            if not (listed or _LITERAL.fullmatch(lhs) and _FIELD_CHAIN.fullmatch(rhs) and _is_list(rhs, types)):
                return False
        elif not (_LITERAL.fullmatch(lhs) or _LITERAL.fullmatch(rhs)):
            if not (_scalar_operand(lhs, types) and _scalar_operand(rhs, types)):
                return False
    return True


def _open_paren(code: str, close: int) -> int:
    """Where the parenthesis closed at ``close`` opens (-1: nowhere)."""
    depth = 0
    for i in range(close, -1, -1):
        depth += {")": 1, "(": -1}.get(code[i], 0)
        if depth == 0:
            return i
    return -1


def _a_list(operand: str, types: dict[str, set[str | None]], self_type: str | None) -> bool:
    """``operand`` is a list or a string: ``self`` of such a node, a field of such a type
    wherever the name occurs below, or what ``filter()`` or ``map()`` made."""
    operand = operand.strip()
    if operand == "self":
        return self_type in ("array", "string")
    if operand.endswith(")"):
        start = _open_paren(operand, len(operand) - 1)
        return start > 0 and re.search(r"\.\s*(filter|map)\s*$", operand[:start]) is not None
    chain = re.fullmatch(r"[\w.]*\.(\w+)", operand)
    kinds = types.get(chain.group(1), set()) if chain is not None else set()
    return bool(kinds) and kinds <= {"array", "string"}


def _listings_safe(code: str, types: dict[str, set[str | None]], self_type: str | None) -> bool:
    """size() and the comprehensions only ever see lists and strings (an object's keys would
    differ once projected), and an index is a number into a list, never a name into an object."""
    for m in _LISTING.finditer(code):
        if m.group(1) is not None:  # receiver.size(...), receiver.all(...), ...
            text = code[: m.start()].rstrip()
            receiver = _TRAILING.search(text)
            if receiver is None:
                return False
            operand = text if receiver.group() == ")" else receiver.group()
            if operand.startswith("."):
                operand = "x" + operand  # after an index: the field is what counts
        else:  # size(argument)
            close = m.end() - 1
            depth, end = 0, -1
            for i in range(close, len(code)):
                depth += {"(": 1, ")": -1}.get(code[i], 0)
                if depth == 0:
                    end = i
                    break
            operand = code[m.end() : end] if end > 0 else ""
            if not re.fullmatch(r"\s*[\w.]+\s*", operand):
                return False
        if not _a_list(operand, types, self_type):
            return False
    for m in re.finditer(r"(?<=[\w)\]])\s*\[", code):  # an index, not a list literal
        if not re.match(r"\[\s*\d+\s*\]", code[m.end() - 1 :]):
            return False
    return True


Projection = Callable[[Any], Any]


def _projection(node: _Node, program: cel.Program, source: str) -> Projection | None:
    """What of ``self`` the rules may read, as a function of the value; None: all of it."""
    if not _PROJECTABLE_FUNCTIONS.issuperset(program.functions()):
        return None
    try:
        code = _strip_strings(source)
    except ValueError:
        return None
    types = _field_types(node, {})
    if not (_comparisons_safe(code, types, node.type) and _listings_safe(code, types, node.type)):
        return None
    return _project(node, frozenset(_SELECTED.findall(code)))


def _project(node: _Node, names: frozenset[str]) -> Projection | None:
    if node.type == "array" and node.items is not None:
        item = _project(node.items, names)
        if item is None:
            return None
        return lambda v: list(map(item, v)) if isinstance(v, list) else v
    if node.type != "object" or node.additional is not None or not node.properties:
        return None
    kept = {node.cel_names[k]: _project(sub, names) for k, sub in node.properties.items() if node.cel_names[k] in names}
    if len(kept) == len(node.properties) and all(f is None for f in kept.values()):
        return None
    same = tuple(k for k, f in kept.items() if f is None)
    deeper = {k: f for k, f in kept.items() if f is not None}

    def project(v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        # The kept fields in the schema's order, not the value's: equal values, equal reprs.
        out = {}
        for k in same:
            if k in v:
                out[k] = v[k]
        for k, f in deeper.items():
            if k in v:
                out[k] = f(v[k])
        return out

    return project


@dataclass(frozen=True)
class _RuleSet:
    """The rules declared on one schema node, plus one program evaluating them all at once.

    ``passed`` remembers projected values every rule accepted, by ``repr``: the rules see
    nothing but the value (transition rules are left out), and for the types YAML and JSON give,
    equal reprs are equal values of equal types. Manifests repeat the same filters and
    backendRefs over and over, and a repeated one then costs a repr instead of a CEL evaluation
    (the 10,000-route workload of docs/performance.md: 45% of CEL time); a projection that
    leaves out the unique parts (paths, names) repeats too, and may be long: a 16-rule route's
    rule list is 300 characters of ``{'matches': [{}]}``. A repr longer than ``MEMO_CHARS`` is
    remembered by its 128-bit BLAKE2 digest, so that an entry stays small; bounded in entries,
    the memo stays within a few MB however many objects are read.
    """

    rules: tuple[_Rule, ...]
    batch: cel.Program
    extended: bool
    projection: Projection | None = None
    matches: tuple[_Re2Match, ...] = ()  # the batch's ``matches()`` on RE2
    # The batch with self's fields as variables (``_flat_self``), and (field, variable) pairs.
    flat: cel.Program | None = None
    fields: tuple[tuple[str, str], ...] = ()
    passed: set[str | bytes] = field(default_factory=set, compare=False, repr=False)

    MEMO_ENTRIES: ClassVar[int] = 512
    MEMO_CHARS: ClassVar[int] = 64

    @classmethod
    def compile(cls, specs: list[dict[str, Any]], node: _Node | None = None) -> _RuleSet | None:
        # Transition rules compare against oldSelf, the stored object. With no previous object
        # (a create, which is what reading a file is) the API server does not evaluate them.
        rules = tuple(r for r in map(_Rule.compile, specs) if not r.is_transition)
        if not rules:
            return None
        source = "[" + ", ".join(f"({r.source})" for r in rules) + "]"
        batch = cel.compile(source)
        projection = _projection(node, batch, source) if node is not None else None
        rewritten, matches = _re2_matches(source)
        if matches:
            batch = cel.compile(rewritten)
        flat = _flat_self(rewritten) if node is not None and node.type == "object" else None
        return cls(rules, batch, any(r.extended for r in rules), projection, matches, *(flat or (None, ())))

    def evaluate(self, seen: Any) -> Any:
        """The batch's results for ``seen`` (the value as projected): a list of each rule's verdict.
        Raises what the CEL library raises when a rule does."""
        flat = self.flat if type(seen) is dict else None
        variables = {name: seen[f] for f, name in self.fields if f in seen} if flat is not None else {}
        for match in self.matches:
            match.bind(seen, variables)
        program = self.batch if flat is None else flat
        return program.execute(_activation(seen, self.extended, variables, flat is not None))

    def check(self, value: Any, path: Path, type_name: str) -> list[_Problem]:
        """The rules' problems with ``value`` (none, without a generator, for a value remembered)."""
        seen = value if self.projection is None else self.projection(value)
        text = repr(seen)
        key = text if len(text) <= self.MEMO_CHARS else digest.blake2b_128(text.encode(errors="surrogatepass"))
        if key in self.passed:
            return []
        try:
            results = self.evaluate(seen)
        except _CEL_ERRORS:  # one rule raised: re-run them one by one to say which
            results = [None] * len(self.rules)
        if all(r is True for r in results):
            if len(self.passed) >= self.MEMO_ENTRIES:
                self.passed.clear()
            self.passed.add(key)
            return []
        where = _fmt_path(path)
        found = []
        for rule, result in zip(self.rules, results, strict=True):
            if result is True:
                continue
            problem = rule.check(value, where, type_name) if result is None else rule.failure(value, where, type_name)
            if problem is not None:
                found.append(problem)
        return found


def _cel_check(value: Any, node: _Node, path: Path, problems: list[_Problem]) -> Any:
    """Evaluate every rule in this subtree and return ``value`` as CEL sees it (names escaped).

    Children go first so that each node's ``self`` is assembled from already escaped children,
    escaping the object once; a node's problems still precede its children's, in the server's
    order. Absent nodes are never visited, so their rules cost nothing.
    """
    if value is None or not node.cel_visit:
        return value
    call = _state.call if node.memo else None
    if call is not None and (vouched := call.trusted.get(id(value))) is not None and vouched[0] is node:
        return vouched[1]
    start = len(problems)
    seen: Any = value
    if node.cel_same:  # only the rules below to evaluate; CEL sees the value itself
        _cel_rules_below(value, node, path, problems)
    elif isinstance(value, dict):
        # The walk's hottest loop: a child with nothing to check or escape below is taken as it
        # is, without a call (most leaves: names, ports, types).
        properties, additional, names = node.properties, node.additional, node.cel_names
        seen = {}
        for k, v in value.items():
            sub = properties.get(k) or additional
            if sub is None:
                continue
            seen[names.get(k, k)] = _cel_check(v, sub, (*path, k), problems) if sub.cel_visit else v
    elif isinstance(value, list):
        item = node.items
        if item is None:
            seen = []
        elif item.cel_visit:
            seen = [_cel_check(v, item, (*path, i), problems) for i, v in enumerate(value)]
    if node.rules is not None:
        if found := node.rules.check(seen, path, node.type or "object"):
            problems[start:start] = found
    if call is not None:
        call.seen[id(value)] = seen
    return seen


def _cel_rules_below(value: Any, node: _Node, path: Path, problems: list[_Problem]) -> None:
    """``_cel_check`` of a ``cel_same`` node's children, whose values CEL sees as they are."""
    if isinstance(value, dict):
        properties, additional = node.properties, node.additional
        for k, v in value.items():
            sub = properties.get(k) or additional
            if sub is not None and sub.cel_below:
                _cel_check(v, sub, (*path, k), problems)
    elif isinstance(value, list) and node.items is not None and node.items.cel_below:
        item = node.items
        for i, v in enumerate(value):
            _cel_check(v, item, (*path, i), problems)


# --- metadata ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NameFormat:
    regex: re.Pattern[str]
    max_length: int
    message: str


_DNS1123_SUBDOMAIN = _NameFormat(
    re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"),
    253,
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    r"for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
)
_DNS1123_LABEL = _NameFormat(
    re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"),
    63,
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
)
_DNS1035_LABEL = _NameFormat(
    re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?"),
    63,
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
)


def _name_problems(field_name: str, value: Any, fmt: _NameFormat) -> Iterator[_Problem]:
    invalid = f"{field_name}: Invalid value: {_fmt_value(value)}"
    if not isinstance(value, str):
        yield _Problem(f"{invalid}: must be a string", blocking=True)
        return
    if len(value) > fmt.max_length:
        yield _Problem(f"{invalid}: must be no more than {fmt.max_length} characters")
    if not fmt.regex.fullmatch(value):
        yield _Problem(f"{invalid}: {fmt.message}")


def _metadata_problems(body: dict[str, Any], name_format: _NameFormat, namespaced: bool) -> Iterator[_Problem]:
    """ObjectMeta checks the server runs for every kind: a well-formed name and namespace.

    The namespace of a cluster-scoped object is cleared on create rather than checked.
    """
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        yield _Problem(f'metadata: Invalid value: "{_GO_TYPES.get(type(meta))}": must be an object', blocking=True)
        return
    meta = meta or {}
    if not meta.get("name"):
        yield _Problem("metadata.name: Required value: name or generateName is required", blocking=True)
    else:
        yield from _name_problems("metadata.name", meta["name"], name_format)
    if namespaced and meta.get("namespace"):
        yield from _name_problems("metadata.namespace", meta["namespace"], _DNS1123_LABEL)


# --- schemas per kind --------------------------------------------------------------------------


@dataclass(eq=False)
class _KindSchema:
    """Everything needed to validate one apiVersion/kind, compiled once."""

    root: _Node
    openapi: dict[str, Any]  # what jsonschema checks
    fast: Check | None
    name_format: _NameFormat
    namespaced: bool

    @classmethod
    def build(cls, schema: dict[str, Any], *, strict: bool, name_format: _NameFormat, namespaced: bool) -> _KindSchema:
        openapi = _to_jsonschema(schema)
        root = _compile_node(schema, strict)
        return cls(root, openapi, _fast_validator(openapi, root), name_format, namespaced)

    @functools.cached_property
    def validator(self) -> Any:
        return _validator_class()(self.openapi)

    def problems(self, body: dict[str, Any]) -> list[_Problem]:
        found = list(_metadata_problems(body, self.name_format, self.namespaced))
        if not _structurally_valid(self.fast, body):
            found += (p for err in self.validator.iter_errors(body) for p in _schema_problems(err))
        found += _list_type_problems(body, self.root, ())
        if any(p.blocking for p in found):
            return [*found, _CEL_SKIPPED] if self.root.cel_below else found
        _cel_check(body, self.root, (), found)
        return found


def _read_crd(kind: str) -> dict[str, Any]:
    text = (importlib.resources.files(__package__) / "crds" / _CRD_FILES[kind]).read_text(encoding="utf-8")
    crd: dict[str, Any] = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return crd


@dataclass(frozen=True)
class _Crd:
    group: str
    versions: dict[str, dict[str, Any]]  # served version name -> openAPIV3Schema
    namespaced: bool


@functools.cache
def _crd(kind: str) -> _Crd:
    spec = _read_crd(kind)["spec"]
    versions = {v["name"]: v["schema"]["openAPIV3Schema"] for v in spec["versions"] if v.get("served")}
    return _Crd(spec["group"], versions, spec["scope"] == "Namespaced")


def _crd_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """The version's schema with metadata and status left alone, as on create.

    The server validates ObjectMeta itself (see _metadata_problems) and drops status on create
    of a kind with a status subresource, so neither gets CRD validation or defaults here.
    """
    props = dict(openapi["properties"], metadata={}, status={})
    return dict(openapi, properties=props)


def _strings(**extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "string", **extra}}


_PROTOCOL = {"type": "string", "enum": ["TCP", "UDP", "SCTP"], "default": "TCP"}


@dataclass(frozen=True)
class _CoreKind:
    schema: dict[str, Any]
    name_format: _NameFormat
    namespaced: bool = True


_CORE_KINDS: dict[tuple[str, str], _CoreKind] = {
    ("v1", "Service"): _CoreKind({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
                 "default": "ClusterIP"},
        "externalName": {"type": "string"},
        "selector": _strings(),
        "ports": {"type": "array", "items": {"type": "object", "required": ["port"], "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "name": {"type": "string"},
            "protocol": _PROTOCOL,
            "appProtocol": {"type": "string"},
            "targetPort": {"x-kubernetes-int-or-string": True},
        }}},
    }}}}, _DNS1035_LABEL),
    ("discovery.k8s.io/v1", "EndpointSlice"): _CoreKind({"type": "object", "required": ["addressType"], "properties": {
        "addressType": {"type": "string", "enum": ["IPv4", "IPv6", "FQDN"]},
        # The server sends `endpoints: null` for an empty slice; readers want a list.
        "endpoints": {"type": "array", "maxItems": 1000, "default": [], "items": {
            "type": "object", "required": ["addresses"], "properties": {
                "addresses": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "string"}},
                "conditions": {"type": "object", "properties": {
                    c: {"type": "boolean"} for c in ("ready", "serving", "terminating")}},
            }}},
        "ports": {"type": "array", "maxItems": 100, "items": {"type": "object", "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "name": {"type": "string", "default": ""},
            "protocol": _PROTOCOL,
            "appProtocol": {"type": "string"},
        }}},
    }}, _DNS1123_SUBDOMAIN),
    ("v1", "Secret"): _CoreKind({"type": "object", "properties": {
        "type": {"type": "string", "default": "Opaque"},
        "data": _strings(format="byte"),
        "stringData": _strings(),
    }}, _DNS1123_SUBDOMAIN),
    ("v1", "Namespace"): _CoreKind({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"labels": _strings()}},
    }}, _DNS1123_LABEL, namespaced=False),
}  # fmt: skip


@functools.cache
def _compiled(api_version: str, kind: str) -> _KindSchema:
    core = _CORE_KINDS.get((api_version, kind))
    if core is not None:
        return _KindSchema.build(core.schema, strict=False, name_format=core.name_format, namespaced=core.namespaced)
    crd = _crd(kind)
    openapi = crd.versions[api_version.removeprefix(f"{crd.group}/")]
    return _KindSchema.build(
        _crd_schema(openapi), strict=True, name_format=_DNS1123_SUBDOMAIN, namespaced=crd.namespaced
    )


# --- public API --------------------------------------------------------------------------------


def supported(api_version: str, kind: str) -> bool:
    """Whether ``validate`` knows this apiVersion/kind, so that callers can skip other objects."""
    if (api_version, kind) in _CORE_KINDS:
        return True
    group, _, version = api_version.partition("/")
    return kind in _CRD_FILES and group == _crd(kind).group and version in _crd(kind).versions


def _supported_list() -> str:
    gateway = [f"{_crd(k).group}/{v} {k}" for k in _CRD_FILES for v in _crd(k).versions]
    return ", ".join(gateway + [f"{v} {k}" for v, k in _CORE_KINDS])


# --- validating many objects: the fields they repeat, validated once ---------------------------


class Memo:
    """The object and array fields of objects found valid, by content, for the objects of one load.

    A field's problems are a function of its schema node and its value alone: no rule of a
    file's objects sees anything else (transition rules are left out on create). So a field
    value seen before in an object found valid, decoded to the same value, has none; the same
    ``backendRefs``, ``filters`` and ``parentRefs`` repeat over the rules and routes of most
    configurations. :func:`validate` within ``remembering()`` takes such a value's decoded
    copy from the Memo (shared between the objects: they are read only, as the store's always
    are) and skips every check at and below it (the fast check, list types, CEL), each of which
    would pass; the rules above it see it as before. An object with any problem adds nothing,
    so an error in a repeated field is found, and worded with its path, wherever it is.

    A value is known by ``marshal``'s bytes of it (version 2, without back-references): equal
    bytes are equal values of equal types (``1``, ``1.0`` and ``true`` apart), whole, not a
    digest. A value marshal cannot write (a date) or whose bytes are over ``KEY_BYTES`` is
    validated as always. Bounded: ``ENTRIES`` values at most, forgotten all at once when full,
    and a field whose values rarely repeat (names, paths, whole rules) is no longer looked up
    after ``TRIES`` tries with under one hit in ``HIT_RATE``, so that it costs no more than
    writing its bytes a few dozen times.
    """

    ENTRIES: ClassVar[int] = 2048
    KEY_BYTES: ClassVar[int] = 1024
    TRIES: ClassVar[int] = 64
    HIT_RATE: ClassVar[int] = 8

    def __init__(self) -> None:
        self.entries: dict[tuple[_Node, bytes], tuple[Any, Any]] = {}  # → (decoded value, as CEL sees it)
        self.tries: dict[_Node, list[int]] = {}  # node → [lookups, hits]
        self.hits = 0

    def key(self, value: Any, node: _Node) -> bytes | None:
        """``value``'s key, or None where it is not to be looked up."""
        counts = self.tries.get(node)
        if counts is None:
            counts = self.tries[node] = [0, 0]
        elif counts[0] >= self.TRIES and counts[1] * self.HIT_RATE < counts[0]:
            return None
        try:
            key = marshal.dumps(value, 2)
        except ValueError:
            return None
        if len(key) > self.KEY_BYTES:
            return None
        counts[0] += 1
        return key

    def add(self, node: _Node, key: bytes, decoded: Any, seen: Any) -> None:
        if len(self.entries) >= self.ENTRIES:
            self.entries.clear()
        self.entries.setdefault((node, key), (decoded, seen))


class _Call:
    """One :func:`validate` with a Memo: the values it took from the Memo, and those it may add."""

    def __init__(self, memo: Memo) -> None:
        self.memo = memo
        self.trusted: dict[int, tuple[_Node, Any]] = {}  # id of a value the Memo gave → (its node, CEL's view)
        self.pending: list[tuple[_Node, bytes, Any]] = []  # looked up, not found: added if the object is valid
        self.seen: dict[int, Any] = {}  # id of a value → as CEL saw it (the CEL walk's)

    def vouches(self, value: Any, node: _Node) -> bool:
        vouched = self.trusted.get(id(value))
        return vouched is not None and vouched[0] is node

    def decode(self, value: Any, node: _Node, path: Path, unknown: list[str]) -> Any:
        key = self.memo.key(value, node)
        if key is None:
            return _decode(value, node, path, unknown)
        hit = self.memo.entries.get((node, key))
        if hit is not None:
            self.memo.tries[node][1] += 1
            self.memo.hits += 1
            self.trusted[id(hit[0])] = (node, hit[1])
            return hit[0]
        decoded = _decode(value, node, path, unknown)
        self.pending.append((node, key, decoded))
        return decoded

    def valid(self) -> None:
        """The object had no problem: what it looked up and did not find is known valid now."""
        for node, key, decoded in self.pending:
            self.memo.add(node, key, decoded, self.seen.get(id(decoded), decoded))


class _State(threading.local):
    memo: Memo | None = None  # this thread's, within ``remembering()``
    call: _Call | None = None  # the validate() with a Memo running in this thread


_state = _State()


@contextlib.contextmanager
def remembering() -> Iterator[Memo]:
    """Within this block, this thread's validations share a :class:`Memo` (a load's objects)."""
    outer, _state.memo = _state.memo, Memo()
    try:
        yield _state.memo
    finally:
        _state.memo = outer


def validate(body: dict[str, Any]) -> dict[str, Any]:
    """Return a defaulted deep copy of body, or raise ValidationError.

    The caller's dict is never modified: the same parsed file may be validated again on reload.
    Within ``remembering()``, fields seen before in a valid object are taken from its Memo:
    their values are then shared with the objects validated before (see :class:`Memo`).
    """
    memo = _state.memo
    if memo is None:
        return _validate(body)
    call = _state.call = _Call(memo)
    try:
        out = _validate(body)
        call.valid()
        return out
    finally:
        _state.call = None


def _validate(body: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("", "", [f"Object must be a mapping, not {type(body).__name__}"])
    kind, api_version = body.get("kind"), body.get("apiVersion")
    meta = body.get("metadata")
    name = str(meta.get("name") or "") if isinstance(meta, dict) else ""
    if not (isinstance(kind, str) and kind and isinstance(api_version, str) and api_version):
        missing = [f"{key} not set" for key, value in (("apiVersion", api_version), ("kind", kind)) if not value]
        raise ValidationError(str(kind or ""), name, missing or ["apiVersion and kind must be strings"])
    if not supported(api_version, kind):
        detail = f'no matches for kind "{kind}" in version "{api_version}"'
        raise ValidationError(kind, name, [f"{detail} (supported: {_supported_list()})"])
    compiled = _compiled(api_version, kind)
    unknown: list[str] = []
    out: dict[str, Any] = _decode(body, compiled.root, (), unknown)
    if unknown:  # strict decoding fails the request before any validation runs
        raise ValidationError(kind, name, [f'unknown field "{path}"' for path in unknown])
    problems = compiled.problems(out)
    if problems:
        raise ValidationError(kind, name, [p.line for p in problems])
    return out
