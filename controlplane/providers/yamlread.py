"""Bytes of a YAML file → its documents, within limits a hostile file cannot get around.

A file is untrusted input. PyYAML alone lets a few hundred bytes of nested aliases ("billion
laughs") expand into gigabytes once anything walks the result, and lets deep nesting reach
Python's recursion limit in whatever walks it next (the schema validator, the model). So before
any document is built, one pass over the parser's events checks, cheaply and without building
anything:

- the file's size (``Limits.max_bytes``), before it is even read whole;
- the nesting depth (``Limits.max_depth``), counting what an alias expands to where it is used;
- the number of nodes once every alias is expanded (``Limits.max_nodes``): each anchor's expanded
  size is remembered, and an alias adds that size, so the check costs one integer per event
  however large the expansion would be.

The same pass records where each document starts and ends. The caller hashes those slices and
builds (``construct``) only documents it has not seen before, which is what keeps an edit to one
object in a large file from re-validating all the others.

libyaml's C parser (``yaml.CSafeLoader``) does the parsing when PyYAML was built with it; the
pure-Python parser is the fallback. Both are state machines (no recursion), and libyaml itself
refuses nesting beyond 1,000 levels. The event pass costs about half of what ``yaml.load_all``
with the C loader costs on the same file (``python -m benchmarks.loading``; docs/loading.md).
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

# libyaml when PyYAML has it (10x faster than the pure-Python loader on the same file).
Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Limits:
    """What one file may hold; the defaults are documented in docs/loading.md."""

    max_bytes: int = 8 * 1024 * 1024  # a Kubernetes object is at most 1.5 MiB in etcd
    max_depth: int = 64  # the Gateway API CRDs nest about 12 levels
    max_nodes: int = 1_000_000  # after expanding aliases; an 8 MiB file has about 500,000


class RejectedError(ValueError):
    """The whole file is refused; the message says why in a user's words."""


@dataclass(frozen=True)
class Document:
    index: int  # 0-based position in the file
    text: str  # the document's own source, directives included
    digest: bytes  # of ``text``: equal digests, equal objects


def decode(data: bytes) -> str:
    """YAML's encodings: UTF-8 (with or without BOM), or UTF-16/UTF-32 with a BOM."""
    boms = (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    )
    codec = next((c for bom, c in boms if data.startswith(bom)), "utf-8")
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise RejectedError(f"not {codec.upper().removesuffix('-SIG')} text: byte {exc.start} is {data[exc.start:exc.start + 1]!r}") from None


def split(text: str, limits: Limits = Limits()) -> list[Document]:
    """The documents of ``text``; raises RejectedError or yaml.YAMLError for the whole file."""
    if len(text) > limits.max_bytes:  # text handed in directly; files are measured before reading
        raise RejectedError(f"larger than {limits.max_bytes} bytes")
    loader = Loader(text)
    spans: list[tuple[int, int]] = []
    # Per open collection: its anchor, the node count when it opened, its height so far.
    stack: list[list[Any]] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor → (expanded nodes, height)
    count = start = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                count += 1
                if event.anchor:
                    anchors[event.anchor] = (1, 0)
            elif kind is yaml.AliasEvent:
                if event.anchor not in anchors:
                    raise RejectedError(f"alias *{event.anchor} names no anchor (line {event.start_mark.line + 1})")
                size, height = anchors[event.anchor]
                count += size
                if len(stack) + height > limits.max_depth:
                    raise RejectedError(f"alias *{event.anchor} nests deeper than {limits.max_depth} levels (line {event.start_mark.line + 1})")
                if stack:
                    stack[-1][2] = max(stack[-1][2], height)
            elif kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
                stack.append([event.anchor, count, 0])
                count += 1
                if len(stack) > limits.max_depth:
                    raise RejectedError(f"nested deeper than {limits.max_depth} levels (line {event.start_mark.line + 1})")
            elif kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
                anchor, opened, height = stack.pop()
                if anchor:
                    anchors[anchor] = (count - opened, height + 1)
                if stack:
                    stack[-1][2] = max(stack[-1][2], height + 1)
            elif kind is yaml.DocumentStartEvent:
                start, anchors = event.start_mark.index, {}
            elif kind is yaml.DocumentEndEvent:
                spans.append((start, event.end_mark.index))
            if count > limits.max_nodes:
                raise RejectedError(f"more than {limits.max_nodes} nodes once aliases are expanded")
    finally:
        loader.dispose()
    return [Document(i, text[a:b], hashlib.blake2b(text[a:b].encode("utf-8", "surrogatepass"), digest_size=16).digest()) for i, (a, b) in enumerate(spans)]


def construct(text: str, documents: Sequence[Document], wanted: Sequence[Document]) -> list[Any]:
    """Build ``wanted`` (some of ``documents``, all split from ``text``) into Python objects.

    One ``load_all`` of the whole file when most documents are wanted (a first load), otherwise
    one small load per wanted document: a loader costs about 0.1 ms to set up.
    """
    if len(wanted) * 2 > len(documents):
        every = list(yaml.load_all(text, Loader=Loader))
        return [every[d.index] for d in wanted]
    return [yaml.load(d.text, Loader=Loader) for d in wanted]


def check_tree(value: Any, limits: Limits = Limits()) -> None:
    """Apply the same limits to an object that did not come from YAML (a Kubernetes API answer):
    depth, nodes, and the characters of its strings standing in for its size. Iterative, so a
    deep object cannot exhaust the stack checking it."""
    nodes = chars = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        nodes += 1
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            chars += len(item) if isinstance(item, str) else 8
            continue
        if depth > limits.max_depth:
            raise RejectedError(f"nested deeper than {limits.max_depth} levels")
        pending += ((c, depth + 1) for c in children)
        if nodes + len(pending) > limits.max_nodes or chars > limits.max_bytes:
            raise RejectedError(f"larger than {limits.max_nodes} nodes or {limits.max_bytes} bytes")
