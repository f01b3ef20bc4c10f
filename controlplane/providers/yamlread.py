"""Bytes of a YAML file → its documents, within limits a hostile file cannot get around.

A file is untrusted input. PyYAML alone lets a few hundred bytes of nested aliases ("billion
laughs") expand into gigabytes once anything walks the result, and lets deep nesting reach
Python's recursion limit in whatever walks it next (the schema validator, the model). So the
parser's events are checked, cheaply, before the nodes they count are built:

- the file's size (``Limits.max_bytes``), before it is even read whole;
- the nesting depth (``Limits.max_depth``), counting what an alias expands to where it is used;
- the number of nodes once every alias is expanded (``Limits.max_nodes``): each anchor's expanded
  size is remembered, and an alias adds that size, so the check costs one integer per event
  however large the expansion would be.

First the file is cut (``chunks``) before every line that starts a document, by a string search
that parses nothing, and each chunk is hashed. The caller reads (``load``) only chunks it has not
seen before: an edit to one object in a 10,000-route file costs a search, a hash of the file,
and reading that one document, not a pass over the file.

A chunk is built in the same pass over libyaml's events that checks the limits (``_build``),
at about a third of what ``yaml.load_all`` costs. A chunk with anchors, aliases or tags goes
through a pass that only checks (``_check``) and is then built by PyYAML. libyaml's C parser
(``yaml.CSafeLoader``) does the parsing when PyYAML was built with it; the pure-Python parser is
the fallback. Both are state machines (no recursion), and libyaml itself refuses nesting beyond
1,000 levels. ``python -m benchmarks.loading`` measures it; docs/loading.md has the figures.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from sys import intern
from typing import Any

import yaml

from .. import digest

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

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason, line)  # these args let the exception pickle
        self.reason = reason
        self.line = line  # 0-based, of the file

    def __str__(self) -> str:
        return self.reason if self.line is None else f"{self.reason} (line {self.line + 1})"


def file_digest(data: bytes) -> bytes:
    """A file's bytes as the file provider tells versions apart (and its load helper, the bytes it read)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def items(doc: Any) -> list[Any]:
    """The objects of a document: a ``List``'s items, or the document itself (none if empty)."""
    if doc is None:
        return []
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return doc["items"]  # type: ignore[no-any-return]
    return [doc]


def is_object(item: Any) -> bool:
    """Whether a document's item is a Kubernetes object at all (apiVersion and kind are required)."""
    return isinstance(item, dict) and "kind" in item and "apiVersion" in item


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
        raise RejectedError(
            f"not {codec.upper().removesuffix('-SIG')} text: byte {exc.start} is {data[exc.start : exc.start + 1]!r}"
        ) from None


# Line breaks as YAML counts them, and the start of a document as both parsers see it: "---" at
# the start of a line, followed by a blank or the end of the file.
_BREAKS = "\r\n\x85\u2028\u2029"
_DOCUMENT_START = re.compile(r"---(?=[ \t\r\n\x85\u2028\u2029]|\Z)")
_DIRECTIVE = re.compile(r"(?:\A|(?<=[\r\n\x85\u2028\u2029]))%")
_LINES = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


# A file is cut into at most this many chunks: a chunk is at least 1/MAX_CHUNKS of the file (128
# bytes of an 8 MiB file), so a file of two million empty documents costs neither two million
# chunks in memory nor two million parsers. Real documents are longer: each stays a chunk.
MAX_CHUNKS = 65_536


@dataclass(frozen=True)
class Chunk:
    """A slice of a file that reads alone as it reads in the file: from one document start to the next."""

    start: int  # offset of its first character in the file's text
    text: str
    digest: bytes  # of ``text``: equal digests, equal documents


def chunks(text: str, limits: Limits = Limits()) -> list[Chunk]:
    """Cut ``text`` before every line that starts a document, without parsing it.

    A "---" at the start of a line always starts a document, whatever precedes it: libyaml and
    PyYAML end a plain or block scalar there (a block scalar is indented at least one column),
    and refuse it inside a quoted scalar or a flow collection. Anchors do not reach across
    documents. So each chunk, read alone, gives the documents it gives within the file, and a
    file that does not parse has a chunk that does not parse (possibly with another message,
    when the error is the cut itself, such as an unclosed quote). Directives (``%YAML``,
    ``%TAG``) are the exception, as they belong to the document after them: a file with any is
    one chunk.
    """
    if len(text) > limits.max_bytes:  # text handed in directly; files are measured before reading
        raise RejectedError(f"larger than {limits.max_bytes} bytes")
    cuts = [0]
    if "%" not in text or not _DIRECTIVE.search(text):  # the first test is 100x faster
        shortest = len(text) // MAX_CHUNKS
        for m in _DOCUMENT_START.finditer(text):
            if m.start() - cuts[-1] > shortest and text[m.start() - 1] in _BREAKS:
                cuts.append(m.start())
    cuts.append(len(text))
    return [
        Chunk(a, text[a:b], digest.blake2b_128(text[a:b].encode("utf-8", "surrogatepass")))
        for a, b in zip(cuts, cuts[1:], strict=False)
    ]


def load(chunk: Chunk, text: str, limits: Limits = Limits(), budget: int | None = None) -> tuple[int, list[Any]]:
    """The documents of one chunk of ``text``, and how many nodes they expand to.

    No node is built beyond a limit; a chunk PyYAML builds is checked whole first. ``budget``
    is what the file's other chunks left of ``limits.max_nodes``. Raises RejectedError or
    yaml.YAMLError, with lines counted from the start of the file.
    """
    budget = limits.max_nodes if budget is None else budget
    try:
        try:
            return _build(chunk.text, limits, budget)
        except _Unusual:
            return _check(chunk.text, limits, budget), list(yaml.load_all(chunk.text, Loader=Loader))
    except (yaml.YAMLError, RejectedError) as exc:
        offset = len(_LINES.findall(text, 0, chunk.start))
        if offset:
            for name in ("context_mark", "problem_mark"):
                if (mark := getattr(exc, name, None)) is not None:  # libyaml's marks are read-only
                    moved = yaml.Mark(mark.name, mark.index + chunk.start, mark.line + offset, mark.column, None, 0)
                    setattr(exc, name, moved)
            if isinstance(exc, RejectedError) and exc.line is not None:
                raise RejectedError(exc.reason, exc.line + offset) from None
        raise


class _Unusual(Exception):  # noqa: N818 - not an error: the chunk needs PyYAML's own constructor
    """What ``_build`` leaves to PyYAML: anchors and aliases, tags, merge keys, collections as keys."""


# The tags a plain scalar may resolve to that ``_build`` constructs itself (with PyYAML's code).
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "timestamp")}
_RESOLVERS: dict[Any, list[tuple[str, re.Pattern[str]]]] = Loader.yaml_implicit_resolvers
_ANY_FIRST = tuple(_RESOLVERS.get(None, ()))  # resolvers whatever the first character (none in PyYAML 6)
_BY_FIRST = {first: (*resolvers, *_ANY_FIRST) for first, resolvers in _RESOLVERS.items() if first is not None}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_PLAINS: dict[str, Any] = {}  # plain scalars already resolved to something other than a string
# The first characters of a plain scalar some resolver looks at (None: any, never so in PyYAML 6).
_RESOLVED_FIRST = None if _ANY_FIRST else frozenset(_BY_FIRST)


def _plain(value: str) -> Any:
    """A plain scalar as PyYAML's resolver and SafeConstructor make it (``Resolver.resolve``)."""
    resolvers = _BY_FIRST.get(value[:1], _ANY_FIRST)
    if not resolvers:  # most names and paths: nothing to resolve
        return value
    if value in _PLAINS:
        return _PLAINS[value]
    for tag, regexp in resolvers:
        if regexp.match(value):
            if tag not in _PLAIN_TAGS:
                raise _Unusual(tag)
            built = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, value))
            if len(_PLAINS) < 10_000 and len(value) <= 32:  # null, booleans, ports, percentages: a few
                _PLAINS[value] = built
            return built
    return value


def _events(text: str) -> Iterator[tuple[type[yaml.Event], Any]]:
    """libyaml's events for ``text``, with their type."""
    loader = Loader(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            yield type(event), event
    finally:
        loader.dispose()


def _build(text: str, limits: Limits, budget: int) -> tuple[int, list[Any]]:
    """Check the limits and build the documents in the same pass over the parser's events.

    What ``yaml.load_all`` does in two (libyaml composes nodes, then PyYAML's constructor walks
    them in Python), at about a third of its cost, for the YAML Kubernetes manifests are made
    of: mappings, sequences, and untagged scalars resolved by PyYAML's own resolver and
    constructors. Anything else raises _Unusual before it is built, and the chunk is left to
    PyYAML. Without anchors a node is counted once, so the limits are simpler than in _check.
    """
    loader = Loader(text)
    try:
        # The parser's events until it has none, without a generator's frame per event.
        events = iter(loader.get_event, None)
        return _build_from(events, limits, budget)
    finally:
        loader.dispose()


def _build_from(events: Iterator[Any], limits: Limits, budget: int) -> tuple[int, list[Any]]:
    """``_build``'s pass over the events."""
    docs: list[Any] = []
    # Per open collection: the collection, and for a mapping the key waiting for its value.
    stack: list[list[Any]] = []
    root: Any = None
    count = 0
    for event in events:
        kind = type(event)
        if kind is yaml.ScalarEvent:
            if event.anchor or event.tag is not None:
                raise _Unusual("anchor or tag")
            value = event.value
            # Most names and paths start with a character no resolver looks at: they stay strings.
            if event.implicit[0] and (_RESOLVED_FIRST is None or value[:1] in _RESOLVED_FIRST):
                value = _plain(value)
            count += 1
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if event.anchor or event.tag is not None:
                raise _Unusual("anchor or tag")
            value = {} if kind is yaml.MappingStartEvent else []
            count += 1
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            stack.pop()
            continue
        elif kind is yaml.DocumentEndEvent:
            docs.append(root)
            continue
        elif kind is yaml.AliasEvent:
            raise _Unusual("alias")
        else:  # stream and document starts
            continue
        if count > budget:
            raise RejectedError(f"more than {limits.max_nodes} nodes once aliases are expanded")
        if not stack:
            root = value
        else:
            top = stack[-1]
            if type(top[0]) is list:
                top[0].append(value)
            elif top[1] is _NO_KEY:
                if type(value) is dict or type(value) is list:
                    raise _Unusual("a collection as a key")
                top[1] = intern(value) if type(value) is str else value  # keys repeat in every object
            else:
                top[0][top[1]] = value
                top[1] = _NO_KEY
        if type(value) is dict or type(value) is list:
            stack.append([value, _NO_KEY])
            if len(stack) > limits.max_depth:
                raise RejectedError(f"nested deeper than {limits.max_depth} levels", event.start_mark.line)
    return count, docs


_NO_KEY: Any = object()


def _check(text: str, limits: Limits, budget: int) -> int:
    """One pass over the parser's events: the limits, before anything is built. Returns the nodes."""
    # Per open collection: its anchor, the node count when it opened, its height so far.
    stack: list[list[Any]] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor → (expanded nodes, height)
    count = 0
    for kind, event in _events(text):
        if kind is yaml.ScalarEvent:
            count += 1
            if event.anchor:
                anchors[event.anchor] = (1, 0)
        elif kind is yaml.AliasEvent:
            if event.anchor not in anchors:
                raise RejectedError(f"alias *{event.anchor} names no anchor", event.start_mark.line)
            size, height = anchors[event.anchor]
            count += size
            if len(stack) + height > limits.max_depth:
                raise RejectedError(
                    f"alias *{event.anchor} nests deeper than {limits.max_depth} levels", event.start_mark.line
                )
            if stack:
                stack[-1][2] = max(stack[-1][2], height)
        elif kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
            stack.append([event.anchor, count, 0])
            count += 1
            if len(stack) > limits.max_depth:
                raise RejectedError(f"nested deeper than {limits.max_depth} levels", event.start_mark.line)
        elif kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
            anchor, opened, height = stack.pop()
            if anchor:
                anchors[anchor] = (count - opened, height + 1)
            if stack:
                stack[-1][2] = max(stack[-1][2], height + 1)
        elif kind is yaml.DocumentStartEvent:
            anchors = {}
        if count > budget:
            raise RejectedError(f"more than {limits.max_nodes} nodes once aliases are expanded")
    return count


SUFFIXES = (".yaml", ".yml")


def yaml_files(root: Path) -> list[Path]:
    """Every YAML file under root (recursively), in a stable order: later files win duplicates."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())
