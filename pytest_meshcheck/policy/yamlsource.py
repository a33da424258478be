"""Split YAML text into documents, keeping the line of every field and the text of every document.

PyYAML's composed nodes carry marks; walking them (instead of ``safe_load_all``) gives the 1-based line of
each dotted field path, which issues and reports show. The walk also rejects what Kubernetes' YAML decoder
would not turn into JSON (non-string keys, duplicate keys, explicit tags) and guards against alias bombs
and recursive aliases, which would otherwise hang or crash the loader.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from pytest_meshcheck.policy.reader import child, describe, item

# Generous for any real policy, small enough that an alias bomb fails fast.
MAX_NODES = 200_000
MAX_DEPTH = 100
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


@dataclass
class RawDocument:
    """One YAML document: its data (``None`` when empty), field lines and text.

    ``problems`` lists ``(path, message, fix, line)`` for what could not be converted (``line`` is ``None``
    when the path's own line applies).
    """

    index: int
    data: Any
    line: int
    text: str
    field_lines: dict[str, int] = field(default_factory=dict)
    problems: list[tuple[str, str, str, int | None]] = field(default_factory=list)

    def problem(self, path: str, message: str, fix: str, line: int | None = None) -> None:
        """Record something that Kubernetes' YAML decoding would reject."""
        self.problems.append((path, message, fix, line))


class _TooBig(Exception):
    pass


class _Converter:
    """Turns a composed node tree into plain Python data, recording each path's line."""

    def __init__(self, doc: RawDocument) -> None:
        self.doc = doc
        self.constructor = SafeConstructor()
        self.budget = MAX_NODES
        self.stack: set[int] = set()

    def convert(self, node: Node, path: str, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooBig
        if depth > MAX_DEPTH:
            self.doc.problem(path, f"nested more than {MAX_DEPTH} levels deep", "flatten the document")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self.stack:
            self.doc.problem(
                path,
                "a YAML alias refers to its own ancestor (a recursive structure)",
                "replace the alias with a plain value",
            )
            return None
        self.stack.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._check_tag(node, _SEQ_TAG, path)
                out: list[Any] = []
                for i, sub in enumerate(node.value):
                    p = item(path, i)
                    self.doc.field_lines.setdefault(p, sub.start_mark.line + 1)
                    out.append(self.convert(sub, p, depth + 1))
                return out
            if isinstance(node, MappingNode):
                return self._mapping(node, path, depth)
        finally:
            self.stack.discard(id(node))
        return None  # pragma: no cover - PyYAML only composes the three node kinds

    def _check_tag(self, node: Node, expected: str, path: str) -> None:
        if node.tag != expected:
            self.doc.problem(
                path,
                f"YAML tag {node.tag!r} is not allowed in a Kubernetes resource",
                "remove the tag",
                node.start_mark.line + 1,
            )

    def _scalar(self, node: ScalarNode, path: str) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            message = f"cannot read the value {node.value!r}: {exc}".replace("\n", " ")
            self.doc.problem(path, message, "write a plain string, number or boolean", node.start_mark.line + 1)
            return None

    def _mapping(self, node: MappingNode, path: str, depth: int) -> dict[str, Any]:
        self._check_tag(node, _MAP_TAG, path)
        try:
            # Resolves '<<' merge keys in place, as Kubernetes' YAML decoder does.
            self.constructor.flatten_mapping(node)
        except (yaml.YAMLError, RecursionError) as exc:
            message = f"invalid YAML merge key ('<<'): {exc}".replace("\n", " ")
            self.doc.problem(path, message, "merge only mappings, or write the fields out", node.start_mark.line + 1)
            return {}
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self.convert(key_node, path, depth + 1) if isinstance(key_node, ScalarNode) else key_node
            if not isinstance(key, str):
                shown = describe(key) if not isinstance(key, Node) else "a mapping or list"
                self.doc.problem(
                    path,
                    f"a key is {shown}, not a string",
                    "quote the key (YAML reads yes/no/on/off and numbers as non-strings)",
                    line,
                )
                continue
            p = child(path, key)
            if key in out:
                self.doc.problem(
                    p, f"duplicate key {key!r}", "remove one of the two; kubectl rejects duplicate keys", line
                )
                continue
            self.doc.field_lines[p] = line
            out[key] = self.convert(value_node, p, depth + 1)
        return out


def _document_text(lines: list[str], node: Node) -> str:
    start, end = node.start_mark.line, node.end_mark.line
    if node.end_mark.column > 0:
        end += 1
    return "\n".join(lines[start:end]).rstrip()


def _convert(node: Node, index: int, lines: list[str]) -> RawDocument:
    doc = RawDocument(index, None, node.start_mark.line + 1, _document_text(lines, node))
    doc.field_lines[""] = doc.line
    try:
        doc.data = _Converter(doc).convert(node, "", 0)
    except _TooBig:
        doc.problem(
            "",
            f"the document expands to more than {MAX_NODES} YAML nodes (alias bomb?)",
            "write the document without deeply nested aliases",
        )
    return doc


def read_documents(text: str) -> Iterator[RawDocument | tuple[int, int | None, str]]:
    """Yield each document of ``text`` in order.

    A YAML error ends the stream: it is yielded as ``(document index, line, message)``.
    """
    lines = text.splitlines()
    index = 0
    loader: yaml.SafeLoader | None = None
    try:
        # The reader checks for unprintable characters as soon as it is built, so build it inside the try.
        loader = yaml.SafeLoader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield _convert(node, index, lines)
            index += 1
    except yaml.YAMLError as exc:
        yield index, _error_line(exc, text), _yaml_message(exc)
    except RecursionError:
        yield index, None, "invalid YAML: nested too deeply to parse"
    finally:
        if loader is not None:
            loader.dispose()


def _error_line(exc: yaml.YAMLError, text: str) -> int | None:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return mark.line + 1 if mark is not None else None
    if isinstance(exc, ReaderError):
        return text.count("\n", 0, exc.position) + 1
    return None


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        context = exc.context or ""
        if context and exc.context_mark is not None:
            context += f" (started on line {exc.context_mark.line + 1})"
        parts = [p for p in (context, exc.problem) if p]
        return "invalid YAML: " + ", ".join(parts) if parts else "invalid YAML"
    if isinstance(exc, ReaderError):
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        return f"invalid YAML: character {char} is not allowed ({exc.reason})"
    return f"invalid YAML: {exc}".replace("\n", " ")


def plain_document(data: Any, index: int) -> RawDocument:
    """Wrap already-parsed data (no line information) as a :class:`RawDocument`, checking it as YAML would."""
    try:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()
    except (yaml.YAMLError, RecursionError, TypeError, ValueError):
        text = "<this document cannot be shown as YAML>"
    doc = RawDocument(index, None, 1, text)
    doc.data = _check_plain(data, "", doc, 0, set())
    return doc


def _check_plain(value: Any, path: str, doc: RawDocument, depth: int, stack: set[int]) -> Any:
    if depth > MAX_DEPTH:
        doc.problem(path, f"nested more than {MAX_DEPTH} levels deep", "flatten the document")
        return None
    if isinstance(value, Mapping | list):
        if id(value) in stack:
            doc.problem(path, "the data contains itself (a recursive structure)", "pass plain data")
            return None
        stack = stack | {id(value)}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                doc.problem(path, f"a key is {describe(k)}, not a string", "use string keys")
                continue
            out[k] = _check_plain(v, child(path, k), doc, depth + 1, stack)
        return out
    if isinstance(value, list | tuple):
        return [_check_plain(v, item(path, i), doc, depth + 1, stack) for i, v in enumerate(value)]
    return value
