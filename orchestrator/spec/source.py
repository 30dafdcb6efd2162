"""Reading a workflow file: the only ruamel.yaml import. Bytes in, plain data and a SourceMap out.

The file is checked before parsing (exists, a regular file, at most 10 MB, no NUL
bytes, valid UTF-8). ruamel's C-backed parser (pure Python when ruamel.yaml.clib
is missing) gives events; this module composes them itself with an explicit stack,
so nesting depth, alias expansion, recursive aliases, tags and duplicate keys are
checked as the tree is built and no input can reach a RecursionError. Scalars are
resolved by the YAML 1.2 core schema (``0755`` is 755, ``no`` and ``on`` are text).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ruamel.yaml import YAML
from ruamel.yaml import events as ev
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from ..errors import Location, Problem, UnreadableWorkflow, WorkflowError, YAMLSyntaxError
from ..jsontext import MAX_INT_DIGITS, number_problem

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "Source",
    "SourceMap",
    "parse_source",
    "read_source",
    "read_stream",
]

#: Files larger than this are refused before parsing.
MAX_BYTES = 10 * 1024 * 1024
#: Mappings and lists nested deeper than this are refused (aliases included).
MAX_DEPTH = 100
#: Aliases may add at most this many nodes to the document (alias bombs).
MAX_ALIAS_NODES = 1_000_000
#: At most this many parser events (keys, values, collection starts and ends) per file;
#: a 10,000-phase workflow has about 250,000.
MAX_NODES = 1_000_000

JsonPath = tuple[str | int, ...]

_CORE = "tag:yaml.org,2002:"
_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_INT = re.compile(r"[-+]?[0-9]+\Z")
_OCT = re.compile(r"0o[0-7]+\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)\Z")
_MAYBE_NOT_TEXT = frozenset("-+.0123456789~nNtTfF")
_NAN = re.compile(r"\.(nan|NaN|NAN)\Z")
_INT_LIMIT = 10**MAX_INT_DIGITS  # stands for any decimal integer too long to read


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def data_path(path: tuple[Any, ...]) -> str:
    """A path in the data as Python-ish text: ``phases[0].with.text``, ``outputs["a b"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part), ensure_ascii=False)}]"
    return out


@dataclass(slots=True)
class SourceMap:
    """Where each part of the document is: a JSON path -> Location (1-based).

    ``keys`` holds the location of a mapping key, ``values`` that of the value
    (or list item). Paths inside content reached through an alias are absent;
    ``value``/``key`` then fall back to the nearest recorded ancestor.
    """

    path: str
    keys: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    values: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    #: Locations name their path in the data (``Location.at``), not only lines: the
    #: text was laid out by orch from a mapping, the user never saw its lines.
    by_path: bool = False

    def value(self, path: JsonPath) -> Location:
        """The location of the value at ``path``, or of its nearest recorded ancestor."""
        p = tuple(path)
        while p:
            lc = self.values.get(p)
            if lc is not None:
                return self._at(p, lc)
            p = p[:-1]
        return self._at((), self.values.get((), (1, 1)))

    def key(self, path: JsonPath) -> Location:
        """The location of the key of ``path`` (the item itself for list items)."""
        lc = self.keys.get(tuple(path))
        return self._at(tuple(path), lc) if lc is not None else self.value(path)

    def _at(self, path: tuple[Any, ...], lc: tuple[int, int]) -> Location:
        return Location(self.path, *lc, at=data_path(path) if self.by_path else None)

    def has(self, path: JsonPath) -> bool:
        """Whether ``path`` itself (not an ancestor) has a recorded location."""
        return tuple(path) in self.values


@dataclass(frozen=True, slots=True)
class Source:
    """A parsed workflow file: its plain data (dicts, lists, scalars) and where each part is."""

    path: str
    data: Any
    source_map: SourceMap
    sha256: str
    text: str
    #: Problems that did not stop the parse (duplicate keys: the first value is kept).
    problems: tuple[Problem, ...] = ()


def read_source(path: str | Path, *, kind: str = "workflow", keep_going: bool = False) -> Source:
    """Read, check and parse a workflow file (or another YAML/JSON file: ``kind`` names it).

    Raises UnreadableWorkflow (missing, a directory, too large, binary, not UTF-8,
    empty, alias bomb, too deep) or YAMLSyntaxError (anything the YAML parser
    refuses, duplicate keys, tags, bad aliases), each located at 1-based line:col.
    With ``keep_going`` every duplicate key is a problem in ``Source.problems``
    (the first value is kept) instead of an exception.
    """
    name = str(path)
    p = Path(path)
    top = Location(name)
    try:
        if not p.exists() and p.is_symlink():
            raise UnreadableWorkflow(
                f"'{name}' is a symbolic link to '{os.readlink(p)}', which does not exist",
                location=top,
                hint="fix or remove the link",
            )
        if not p.exists():
            raise UnreadableWorkflow(
                f"no such file '{name}'", location=top, hint="check the path and the spelling"
            )
        if p.is_dir():
            raise UnreadableWorkflow(
                f"'{name}' is a directory, not {_article(_file_kind(kind))}",
                location=top,
                hint="give the path of a .yaml file"
                if kind == "workflow"
                else "give the path of a YAML or JSON file",
            )
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise UnreadableWorkflow(
                f"the file is too large ({size:,} bytes; at most {MAX_BYTES:,})", location=top
            )
        with p.open("rb") as fh:
            return read_stream(fh, name, kind=kind, keep_going=keep_going)
    except OSError as exc:
        raise UnreadableWorkflow(
            f"cannot read '{name}': {exc.strerror or exc}", location=top
        ) from exc


def read_stream(
    stream: BinaryIO, name: str, *, kind: str = "workflow", keep_going: bool = False
) -> Source:
    """Read and parse a workflow from an open binary stream (a file, standard input).

    Raises like read_source; ``name`` stands for the file in locations (``<stdin>``).
    An OSError while reading is left to the caller, who knows what it was reading.
    """
    top = Location(name)
    raw = stream.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise UnreadableWorkflow(
            f"the file is too large (more than {MAX_BYTES:,} bytes)", location=top
        )
    return parse_source(raw, name, kind=kind, keep_going=keep_going)


def _file_kind(kind: str) -> str:
    """``workflow`` -> ``workflow file``; ``inputs file`` stays as it is."""
    return kind if kind.endswith("file") else f"{kind} file"


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def parse_source(
    raw: bytes, name: str = "<memory>", *, kind: str = "workflow", keep_going: bool = False
) -> Source:
    """Check and parse the bytes of a workflow file; raises like read_source.

    A ``.json`` file that the YAML parser refuses (JSON allows escapes YAML does
    not, such as surrogate pairs for emoji) is read again as JSON, without positions.
    """
    text = _decode(raw, name, kind)
    try:
        composer = _Composer(name, kind)
        data, smap = composer.compose(text)
    except YAMLSyntaxError:
        if not name.lower().endswith(".json"):
            raise
        data, smap = _parse_json(text, name), SourceMap(name)
        composer = _Composer(name, kind)
    if composer.duplicates and not keep_going:
        first = composer.duplicates[0]
        raise YAMLSyntaxError(first.message, location=first.location, hint=first.hint)
    return Source(
        name, data, smap, hashlib.sha256(raw).hexdigest(), text, tuple(composer.duplicates)
    )


def _parse_json(text: str, name: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key '{key}'")
            out[key] = value
        return out

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"the number {_clip(text)} is too large (JSON numbers are finite)")
        return value

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON (JSON has no NaN or Infinity)")

    try:
        return json.loads(
            text, object_pairs_hook=no_duplicates, parse_float=finite, parse_constant=constant
        )
    except json.JSONDecodeError as exc:
        raise YAMLSyntaxError(
            f"invalid JSON: {exc.msg}", location=Location(name, exc.lineno, exc.colno)
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise YAMLSyntaxError(f"invalid JSON: {exc}", location=Location(name)) from exc


def _decode(raw: bytes, name: str, kind: str = "workflow") -> str:
    nul = raw.find(b"\x00")
    if nul >= 0:
        line, col = _line_col_of_byte(raw, nul)
        raise UnreadableWorkflow(
            f"the file is binary (it holds a NUL byte), not {_article('YAML ' + kind)}",
            location=Location(name, line, col),
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col_of_byte(raw, exc.start)
        raise UnreadableWorkflow(
            f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
            location=Location(name, line, col),
            hint="save the file as UTF-8",
        ) from exc
    if not text.strip():
        need = "; a workflow needs at least 'name' and 'phases'" if kind == "workflow" else ""
        what = "file" if kind == "workflow" else kind
        raise UnreadableWorkflow(f"the {what} is empty{need}", location=Location(name))
    return text


def _line_col_of_byte(raw: bytes, offset: int) -> tuple[int, int]:
    start = raw.rfind(b"\n", 0, offset) + 1
    col = len(raw[start:offset].decode("utf-8", errors="replace")) + 1
    return raw.count(b"\n", 0, offset) + 1, col


def _line_col_of_char(text: str, offset: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - start + 1


#: Line breaks in YAML 1.1 only.
_OLD_BREAKS = "\x85\u2028\u2029"


def _break_stand_ins(text: str) -> dict[int, str]:
    """For each YAML-1.1-only line break in ``text``, a private-use character it does not hold."""
    found = [c for c in _OLD_BREAKS if c in text]
    if not found:
        return {}
    free = (chr(c) for c in range(0xF8FF, 0xE000, -1) if chr(c) not in text)
    return {ord(c): next(free) for c in found}


def _put_back(value: Any, table: dict[int, str]) -> Any:
    """``value`` with the stand-ins of _break_stand_ins translated back (keys included)."""
    if isinstance(value, str):
        return value.translate(table)
    if isinstance(value, dict):
        return {_put_back(k, table): _put_back(v, table) for k, v in value.items()}
    if isinstance(value, list):
        return [_put_back(v, table) for v in value]
    return value


def _events(text: str) -> tuple[Iterator[Any], Callable[[], None]]:
    """The parser's events (the StreamEnd event may come last) and how to free the parser."""
    try:
        from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]
    except ImportError:  # no ruamel.yaml.clib: the pure-Python parser gives the same events
        return iter(YAML(typ="safe", pure=True).parse(text)), lambda: None
    parser = CParser(text)
    # iter(callable, sentinel) runs in C: a generator here cost ~0.2 s on 10,000 phases
    return iter(parser.get_event, None), parser.dispose


@dataclass(slots=True)
class _Frame:
    container: dict[str, Any] | list[Any]
    path: JsonPath
    anchor: str | None
    loc: tuple[int, int]
    depth: int  # this collection's nesting level (the root is 1)
    height: int = 1  # levels of nesting from here down, aliases included
    size: int = 1  # nodes, aliases expanded
    key: str | None = None
    key_loc: tuple[int, int] | None = None
    skip_value: bool = False  # the pending key is a duplicate: parse its value, drop it
    merge_key: bool = False  # the pending key is a plain << (a quoted "<<" is a plain key)
    merges: list[tuple[dict[str, Any], tuple[int, int]]] = field(default_factory=list)


@dataclass(slots=True)
class _Anchor:
    value: Any
    size: int
    height: int
    done: bool


class _Composer:
    """Builds plain data and a SourceMap from parser events, checking as it goes."""

    def __init__(self, name: str, kind: str = "workflow") -> None:
        self.name = name
        self.kind = kind
        self.duplicates: list[Problem] = []
        self.smap = SourceMap(name)
        self.anchors: dict[str, _Anchor] = {}
        self.alias_nodes = 0

    def loc(self, mark: Any) -> tuple[int, int]:
        # ruamel's marks are 0-based; this is the one place that adds 1.
        return (mark.line + 1, mark.column + 1)

    def at(self, lc: tuple[int, int]) -> Location:
        return Location(self.name, *lc)

    def compose(self, text: str) -> tuple[Any, SourceMap]:
        # YAML 1.2 does not treat U+0085, U+2028 and U+2029 as line breaks, but the
        # parser does (YAML 1.1): every later line number would be off, and a plain
        # or block scalar holding one is refused. They stand in as private-use
        # characters the text does not hold, and are put back in every string.
        swap = _break_stand_ins(text)
        if swap:
            text = text.translate(swap)
            data, smap = self._compose_text(text)
            back = {ord(v): chr(k) for k, v in swap.items()}
            return _put_back(data, back), smap
        return self._compose_text(text)

    def _compose_text(self, text: str) -> tuple[Any, SourceMap]:
        try:
            events, dispose = _events(text)
            try:
                return self._compose(events)
            finally:
                dispose()
        except WorkflowError:
            raise
        except MarkedYAMLError as exc:
            raise self._syntax_error(exc, text) from exc
        except ReaderError as exc:
            pos, char = int(exc.position), int(exc.character)
            if 0 <= pos < len(text) and ord(text[pos]) == char:  # the pure parser: a str index
                line, col = _line_col_of_char(text, pos)
            else:  # libyaml: a byte offset into the UTF-8 text
                line, col = _line_col_of_byte(text.encode("utf-8"), pos)
            raise YAMLSyntaxError(
                f"the file holds a control character (#x{int(exc.character):04x}) "
                "that YAML does not allow",
                location=Location(self.name, line, col),
            ) from exc
        except YAMLError as exc:
            raise YAMLSyntaxError(
                f"invalid YAML: {' '.join(str(exc).split())}", location=Location(self.name)
            ) from exc
        except (RecursionError, MemoryError) as exc:
            raise UnreadableWorkflow(
                "the file is too deeply nested or too large to read", location=Location(self.name)
            ) from exc

    def _syntax_error(self, exc: MarkedYAMLError, text: str) -> YAMLSyntaxError:
        """The parser's error in plain words, with a hint where the cause is elsewhere."""
        mark = exc.problem_mark or exc.context_mark
        where = self.at(self.loc(mark)) if mark is not None else Location(self.name)
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        if mark is not None and (
            _char_at(text, mark.line, mark.column) == "\t" or "tab" in problem
        ):
            return YAMLSyntaxError(
                "tabs are not allowed for indentation in YAML",
                location=where,
                hint="indent with spaces",
            )
        hint = None
        context = str(exc.context or "")
        cmark = exc.context_mark
        opener = next((o for c, o in _OPENERS if c in context), None)
        if opener is not None and cmark is not None and exc.problem_mark is not None:
            line, col = self.loc(cmark)
            hint = f"the {opener} opened at line {line}, column {col} is not closed"
        return YAMLSyntaxError(f"invalid YAML: {problem}", location=where, hint=hint)

    def _compose(self, events: Iterator[Any]) -> tuple[Any, SourceMap]:
        stack: list[_Frame] = []
        root: list[Any] = []
        documents = 0
        values, keys = self.smap.values, self.smap.keys
        scalar_event = ev.ScalarEvent
        budget = MAX_NODES
        for event in events:
            budget -= 1  # every event counts: a cheap bound on the values in the file
            if budget < 0:
                raise UnreadableWorkflow(
                    f"the file holds too many values (over {MAX_NODES:,} keys, values and"
                    f" collections); split the {self.kind}",
                    location=self.at(self.loc(event.start_mark)),
                )
            # The fast path, for the bulk of a big file: a plain scalar without tag
            # or anchor, as a new key or as a value; anything else takes _scalar.
            if type(event) is scalar_event and stack and event.anchor is None and not event.tag:
                top = stack[-1]
                mark = event.start_mark
                container = top.container
                text = event.value
                if isinstance(container, dict):
                    key = top.key
                    if key is None:
                        if text not in container and text != "<<":
                            top.key, top.key_loc = text, (mark.line + 1, mark.column + 1)
                            top.skip_value = False
                            continue
                    elif not top.merge_key and not top.skip_value:
                        value = _resolve_plain(text) if event.implicit[0] else text
                        if type(value) is int or type(value) is float:
                            self._check_number(value, text, (mark.line + 1, mark.column + 1))
                        container[key] = value
                        path = top.path + (key,)
                        keys[path] = top.key_loc  # type: ignore[assignment]
                        values[path] = (mark.line + 1, mark.column + 1)
                        top.key = None
                        top.size += 1
                        continue
                else:
                    values[top.path + (len(container),)] = (mark.line + 1, mark.column + 1)
                    value = _resolve_plain(text) if event.implicit[0] else text
                    if type(value) is int or type(value) is float:
                        self._check_number(value, text, (mark.line + 1, mark.column + 1))
                    container.append(value)
                    top.size += 1
                    continue
            if isinstance(event, ev.ScalarEvent):
                self._scalar(event, stack, root)
            elif isinstance(event, (ev.MappingStartEvent, ev.SequenceStartEvent)):
                self._start(event, stack, root)
            elif isinstance(event, (ev.MappingEndEvent, ev.SequenceEndEvent)):
                self._end(stack, root)
            elif isinstance(event, ev.AliasEvent):
                self._alias(event, stack, root)
            elif isinstance(event, ev.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise YAMLSyntaxError(
                        "the file holds more than one YAML document;"
                        f" {_article(self.kind)} is one document",
                        location=self.at(self.loc(event.start_mark)),
                        hint="remove the '---' line and what follows, or split the file",
                    )
        if not root:
            need = (
                "; a workflow needs at least 'name' and 'phases'" if self.kind == "workflow" else ""
            )
            what = "file" if self.kind == "workflow" else self.kind
            raise UnreadableWorkflow(f"the {what} is empty{need}", location=Location(self.name))
        return root[0], self.smap

    # -- events ---------------------------------------------------------------

    def _scalar(self, event: Any, stack: list[_Frame], root: list[Any]) -> None:
        loc = self.loc(event.start_mark)
        top = stack[-1] if stack else None
        value: Any
        if top is not None and isinstance(top.container, dict) and top.key is None:
            self._check_tag(event.tag, "str", loc)
            value = str(event.value)
            self._set_key(top, value, loc, merge=value == "<<" and bool(event.implicit[0]))
        else:
            value = self._resolve(event, loc)
            self._add(value, loc, 1, 0, stack, root)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(value, 1, 0, True)

    def _start(self, event: Any, stack: list[_Frame], root: list[Any]) -> None:
        loc = self.loc(event.start_mark)
        is_map = isinstance(event, ev.MappingStartEvent)
        self._check_tag(event.tag, "map" if is_map else "seq", loc)
        top = stack[-1] if stack else None
        if top is not None and isinstance(top.container, dict) and top.key is None:
            raise YAMLSyntaxError(
                "a mapping key must be a plain value, not a " + ("mapping" if is_map else "list"),
                location=self.at(loc),
            )
        depth = len(stack) + 1
        if depth > MAX_DEPTH:
            raise UnreadableWorkflow(
                f"the document is nested more than {MAX_DEPTH} levels deep", location=self.at(loc)
            )
        path = self._child_path(top)
        container: dict[str, Any] | list[Any] = {} if is_map else []
        stack.append(_Frame(container, path, event.anchor, loc, depth))
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(container, 1, 1, False)

    def _end(self, stack: list[_Frame], root: list[Any]) -> None:
        frame = stack.pop()
        if frame.merges and isinstance(frame.container, dict):
            for merged, mloc in frame.merges:
                for k, v in merged.items():
                    if k not in frame.container:
                        frame.container[k] = v
                        self.smap.keys.setdefault(frame.path + (k,), mloc)
        if frame.anchor is not None:
            self.anchors[frame.anchor] = _Anchor(frame.container, frame.size, frame.height, True)
        self._add(frame.container, frame.loc, frame.size, frame.height, stack, root, record=False)

    def _alias(self, event: Any, stack: list[_Frame], root: list[Any]) -> None:
        loc = self.loc(event.start_mark)
        anchor = self.anchors.get(event.anchor)
        if anchor is None:
            raise YAMLSyntaxError(
                f"unknown alias '*{event.anchor}'",
                location=self.at(loc),
                hint="define the anchor '&name' before using '*name'",
            )
        if not anchor.done:
            raise YAMLSyntaxError(
                f"recursive alias '*{event.anchor}': it is used inside its own anchor",
                location=self.at(loc),
            )
        top = stack[-1] if stack else None
        if top is not None and isinstance(top.container, dict) and top.key is None:
            if isinstance(anchor.value, (dict, list)):
                raise YAMLSyntaxError("a mapping key must be a plain value", location=self.at(loc))
            self._set_key(top, str(anchor.value), loc)
            return
        self.alias_nodes += anchor.size
        if self.alias_nodes > MAX_ALIAS_NODES:
            raise UnreadableWorkflow(
                f"aliases expand the document past {MAX_ALIAS_NODES:,} nodes (an alias bomb)",
                location=self.at(loc),
                hint="use fewer nested aliases",
            )
        if len(stack) + anchor.height > MAX_DEPTH:
            raise UnreadableWorkflow(
                f"alias '*{event.anchor}' nests the document more than {MAX_DEPTH} levels deep",
                location=self.at(loc),
            )
        self._add(anchor.value, loc, anchor.size, anchor.height, stack, root)

    # -- helpers --------------------------------------------------------------

    def _child_path(self, top: _Frame | None) -> JsonPath:
        if top is None:
            return ()
        if isinstance(top.container, dict):
            if top.skip_value:  # the value of a duplicate key: kept out of the source map
                return top.path + (f"{top.key}\x00duplicate",)
            return top.path + (top.key if top.key is not None else "",)
        return top.path + (len(top.container),)

    def _set_key(self, top: _Frame, key: str, loc: tuple[int, int], *, merge: bool = False) -> None:
        assert isinstance(top.container, dict)
        top.key, top.key_loc = key, loc
        top.skip_value = False
        top.merge_key = merge
        if key in top.container and not merge:
            # reported, not raised: the first value is kept and the parse goes on
            first = self.smap.keys.get(top.path + (key,))
            where = f" (first at line {first[0]})" if first is not None else ""
            top.skip_value = True
            self.duplicates.append(
                YAMLSyntaxError(
                    f"duplicate key '{key}'{where}",
                    location=self.at(loc),
                    hint="a key may appear once in a mapping; remove or rename one",
                ).to_problem()
            )

    def _add(
        self,
        value: Any,
        loc: tuple[int, int],
        size: int,
        height: int,
        stack: list[_Frame],
        root: list[Any],
        *,
        record: bool = True,
    ) -> None:
        top = stack[-1] if stack else None
        if top is None:
            root.append(value)
            self.smap.values[()] = loc
            return
        top.size += size
        top.height = max(top.height, height + 1)
        if isinstance(top.container, list):
            path = top.path + (len(top.container),)
            top.container.append(value)
            self.smap.values[path] = loc
            return
        key = top.key
        assert key is not None and top.key_loc is not None
        if top.merge_key:
            self._merge(top, value, top.key_loc)
            top.merge_key = False
        elif not top.skip_value:
            top.container[key] = value
            path = top.path + (key,)
            self.smap.keys[path] = top.key_loc
            self.smap.values[path] = loc
        top.key = None

    def _merge(self, top: _Frame, value: Any, loc: tuple[int, int]) -> None:
        sources = value if isinstance(value, list) else [value]
        for src in sources:
            if not isinstance(src, dict):
                raise YAMLSyntaxError(
                    "a merge key '<<' needs a mapping or a list of mappings", location=self.at(loc)
                )
            top.merges.append((src, loc))

    def _check_tag(self, tag: str | None, kind: str, loc: tuple[int, int]) -> None:
        if tag is None or tag == "!" or tag == _CORE + kind:
            return
        if kind == "str" and tag in (_CORE + t for t in ("int", "float", "bool", "null")):
            return
        raise YAMLSyntaxError(_tag_problem(tag), location=self.at(loc))

    def _resolve(self, event: Any, loc: tuple[int, int]) -> Any:
        value = self._resolve_value(event, loc)
        if type(value) is int or type(value) is float:
            self._check_number(value, event.value, loc)
        return value

    def _check_number(self, value: float, text: str, loc: tuple[int, int]) -> None:
        """Refuse a number that JSON cannot carry (every output orch writes is JSON)."""
        problem = number_problem(value)
        if problem is not None:
            raise YAMLSyntaxError(
                f"the number '{_clip(text)}' is {problem}",
                location=self.at(loc),
                hint="use a smaller, finite number, or quote it to keep it as text",
            )

    def _resolve_value(self, event: Any, loc: tuple[int, int]) -> Any:
        tag: str | None = event.tag
        text: str = event.value
        if tag is None and event.implicit[0]:
            value = _resolve_plain(text)
        elif tag is None or tag in ("!", _CORE + "str"):
            value = text
        elif tag in (_CORE + "int", _CORE + "float", _CORE + "bool", _CORE + "null"):
            value = _resolve_plain(text)
            want = tag[len(_CORE) :]
            got = {bool: "bool", int: "int", float: "float", type(None): "null"}.get(type(value))
            if got != want and not (want == "float" and got == "int"):
                raise YAMLSyntaxError(
                    f"the value '{text}' is not a valid !!{want}", location=self.at(loc)
                )
            if want == "float":  # float() of a huge int raises: it is infinite, say so
                value = float(value) if abs(value) <= 1e300 else math.inf
        else:
            raise YAMLSyntaxError(_tag_problem(tag), location=self.at(loc))
        return value


_OPENERS = (
    ("flow sequence", "'['"),
    ("flow mapping", "'{'"),
    ("quoted scalar", "quote"),
)


def _char_at(text: str, line: int, column: int) -> str:
    """The character at a 0-based line and column of ``text`` ('' when out of range)."""
    lines = text.split("\n")
    if 0 <= line < len(lines) and 0 <= column < len(lines[line]):
        return lines[line][column]
    return ""


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _tag_problem(tag: str) -> str:
    short = "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag
    if "python/" in tag:
        return f"the tag '{short}' is not allowed: workflow files cannot create Python objects"
    return f"unknown tag '{short}'; workflow files use plain YAML values without tags"


def _resolve_plain(text: str) -> Any:
    """A plain scalar by the YAML 1.2 core schema, as ruamel's safe loader reads it."""
    if text and text[0] not in _MAYBE_NOT_TEXT:
        return text
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.match(text):
        if len(text.lstrip("+-")) > MAX_INT_DIGITS:  # int() refuses it; the caller says why
            return _INT_LIMIT
        return int(text, 10)
    if _OCT.match(text):
        return int(text[2:], 8)
    if _HEX.match(text):
        return int(text[2:], 16)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text
