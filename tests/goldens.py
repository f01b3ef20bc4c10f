"""The golden files: what each case under tests/golden/ and tests/golden-xds/ must contain, and
the one command that rewrites them.

Two stages, as Envoy Gateway's testdata: a case under tests/golden/ goes from Gateway API YAML
(input/) to the IR (ir.json, the checkpoint between the two translators), Envoy resources
(xds.json), status (status.json) and load errors (errors.json); a case under tests/golden-xds/
goes from a hand-written IR (ir.json, the input) to Envoy resources (xds.json) through the xDS
translator alone.

tests/test_golden.py only compares; rewriting is this separate command, so an update can never
count as a passing test run:

    make golden        # = .venv/bin/python -m tests.goldens
    git diff tests/golden

Every accepted GatewayClass carries the whole supportedFeatures list. It lives once, in
tests/golden/supported-features.json; each status.json names that file instead, so adding a
feature changes one golden file, not one per case.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from controlplane import ir
from controlplane.gatewayapi.translator import translate
from controlplane.offline import translate_folder
from controlplane.providers.files import FileProvider
from controlplane.xds.jsonview import resources_to_json
from controlplane.xds.translator import build_resources

GOLDEN = Path(__file__).resolve().parent / "golden"
GOLDEN_XDS = Path(__file__).resolve().parent / "golden-xds"
FEATURES = GOLDEN / "supported-features.json"
FEATURES_REF = "see tests/golden/supported-features.json"


# -- the IR as JSON and back ----------------------------------------------------------------------
#
# A field equal to its default is left out, so a new IR field with a default changes no golden
# file; reading fills the defaults back in. PEM bytes are written as text.

T = TypeVar("T")


def to_json(value: Any) -> Any:
    """A JSON value (dicts, lists, str, int, bool, None) for an IR object."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.default is not dataclasses.MISSING and v == f.default:
                continue
            if f.default_factory is not dataclasses.MISSING and v == f.default_factory():
                continue
            out[f.name] = to_json(v)
        return out
    if isinstance(value, tuple):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("ascii")
    return value


def from_json(cls: type[T], data: Any) -> T:
    """The IR object of type ``cls`` that :func:`to_json` turned into ``data``."""
    return typing.cast(T, _read(cls, data))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(ir))


def _read(tp: Any, data: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        assert isinstance(tp, type)
        hints = _hints(tp)
        unknown = set(data) - hints.keys()
        assert not unknown, f"{tp.__name__} has no field {sorted(unknown)}"
        return tp(**{name: _read(hints[name], value) for name, value in data.items()})
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if data is None:
            return None
        [inner] = [a for a in args if a is not type(None)]
        return _read(inner, data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_read(args[0], v) for v in data)
        return tuple(_read(a, v) for a, v in zip(args, data, strict=True))
    if origin is Literal:
        assert data in args, f"{data!r} is not one of {args}"
        return data
    if tp is bytes:
        return data.encode("ascii")
    assert isinstance(data, tp), f"expected {tp}, got {data!r}"
    return data


# -- the cases ---------------------------------------------------------------------------------------


def cases() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def xds_cases() -> list[str]:
    return sorted(p.name for p in GOLDEN_XDS.iterdir() if p.is_dir())


def gateway_irs(case: str) -> dict[str, ir.GatewayIR]:
    """The IR of every Gateway of a tests/golden case, by ``namespace/name``."""
    return dict(sorted(translate(FileProvider(GOLDEN / case / "input").load()).gateways.items()))


def xds_case_ir(case: str) -> ir.GatewayIR:
    """The hand-written IR of a tests/golden-xds case."""
    return from_json(ir.GatewayIR, json.loads((GOLDEN_XDS / case / "ir.json").read_text()))


def rendered_xds(case: str) -> dict[Path, object]:
    """A tests/golden-xds case's output as it must be."""
    return {GOLDEN_XDS / case / "xds.json": resources_to_json(build_resources(xds_case_ir(case)))}


def dump(value: object) -> str:
    return json.dumps(value, indent=2) + "\n"


def rendered(case: str) -> tuple[dict[Path, object], list[object]]:
    """The case's golden files as they must be, and the supportedFeatures lists factored out of them."""
    out = translate_folder(GOLDEN / case / "input")
    features: list[object] = []
    status = out["status"]
    for key, body in status.items():
        if key.startswith("GatewayClass/") and "supportedFeatures" in body:
            features.append(body["supportedFeatures"])
            status[key] = {**body, "supportedFeatures": FEATURES_REF}
    files = {GOLDEN / case / "ir.json": {key: to_json(gw) for key, gw in gateway_irs(case).items()},
             GOLDEN / case / "xds.json": out["gateways"], GOLDEN / case / "status.json": status,
             GOLDEN / case / "errors.json": out["errors"]}  # fmt: skip
    return files, features


def update() -> list[Path]:
    """Rewrite every golden file; returns the ones whose content changed."""
    wanted: dict[Path, object] = {}
    features: list[object] = []
    for case in cases():
        files, found = rendered(case)
        wanted.update(files)
        features += found
    for case in xds_cases():
        wanted.update(rendered_xds(case))
    distinct = {dump(f) for f in features}
    if len(distinct) > 1:
        raise SystemExit("golden: GatewayClasses disagree on supportedFeatures; the translator must claim one list")
    if distinct:
        wanted[FEATURES] = features[0]
    changed = []
    for path, value in wanted.items():
        text = dump(value)
        # Equal content is left alone: the key order of a protobuf Struct (metadata) varies from
        # one process to the next, and a rewrite for it alone would be noise in `git diff`.
        if not path.exists() or (path.read_text() != text and json.loads(path.read_text()) != json.loads(text)):
            path.write_text(text)
            changed.append(path)
    return changed


def main() -> int:
    if os.environ.get("CI"):
        print(
            "golden: refusing to rewrite golden files with CI set; run `make golden` locally and commit the diff",
            file=sys.stderr,
        )
        return 2
    changed = update()
    root = GOLDEN.parent.parent
    for path in changed:
        print(f"golden.rewritten file={path.relative_to(root)}")
    review = "review with `git diff tests/golden tests/golden-xds`; `make test` compares"
    print(f"golden.done changed={len(changed)} ({review})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
