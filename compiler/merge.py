"""Merge stage: ordered layers to one catalog by RFC 7386 JSON Merge Patch, with provenance.

Mappings merge key by key, `null` deletes, scalars and lists replace. A layer whose top says
`merge: replace` replaces everything below it; a mapping holding `$merge: replace` replaces
just that mapping (one model or role restated in full). Provenance is not stored per leaf:
it is a pure function of the layers and a path (`provenance()`), computed for the few values
someone asks about, so a 50,000-line catalog merges at the cost of one copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UsageError
from .load import Document, Positions, YamlPath, load_yaml_text

SECTIONS = ("models", "roles", "selection", "hosts")
MERGE_KEY = "$merge"


@dataclass(frozen=True)
class Layer:
    name: str  # discovered | facts | sources | staging | user | profile:<name> | --set
    doc: Document


@dataclass
class Merged:
    data: dict
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class Setting:
    """One layer's say on one path: set a value, delete it, or replace an ancestor wholesale."""

    layer: str
    file: str
    line: int
    col: int
    action: str  # set | delete | replace
    value: Any = None

    def to_dict(self) -> dict:
        return {"layer": self.layer, "file": self.file, "line": self.line, "col": self.col,
                "action": self.action, "value": self.value}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 with `$merge: replace`; never mutates its arguments."""
    if not isinstance(patch, dict):
        return patch
    if patch.get(MERGE_KEY) == "replace" or not isinstance(target, dict):
        target = {}
    result = dict(target)
    for key, value in patch.items():
        if key[:1] == "$":
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merge_patch(result.get(key), value)
        else:
            result[key] = value
    return result


def merge_layers(layers: list[Layer] | tuple[Layer, ...]) -> Merged:
    data: dict = {}
    for layer in layers:
        body = layer.doc.data
        if body.get("merge") == "replace":
            data = {}
        for section in SECTIONS:
            if section in body:
                patch = body[section]
                data[section] = merge_patch(data.get(section), patch) if patch is not None else {}
    return Merged(data, tuple(layers))


def provenance(layers: tuple[Layer, ...], path: YamlPath) -> list[Setting]:
    """Every layer that set, deleted or replaced the value at `path`, lowest priority first."""
    chain: list[Setting] = []
    path = tuple(path)
    for layer in layers:
        doc = layer.doc
        node: Any = doc.data
        if node.get("merge") == "replace" and chain:
            chain.append(_setting(layer, ("merge",), "replace"))
        for depth, key in enumerate(path):
            prefix = path[: depth + 1]
            if not isinstance(node, dict):
                break
            if key not in node:
                if node.get(MERGE_KEY) == "replace" and chain:
                    chain.append(_setting(layer, prefix[:-1] + (MERGE_KEY,), "delete"))
                break
            node = node[key]
            if node is None:
                chain.append(_setting(layer, prefix, "delete"))
                break
            if depth == len(path) - 1:
                chain.append(_setting(layer, prefix, "set", node))
            elif not isinstance(node, dict):
                chain.append(_setting(layer, prefix, "replace", node))
                break
    return chain


def origin(layers: tuple[Layer, ...], path: YamlPath) -> tuple[str, int, int]:
    """(file, line, col) of `path` in the last layer that holds it (or, failing that, an ancestor)."""
    path = tuple(path)
    for depth in range(len(path), -1, -1):
        prefix = path[:depth]
        for layer in reversed(layers):
            if _holds(layer.doc.data, prefix):
                return (layer.doc.path, *layer.doc.where(path))
    return ("<none>", 0, 0)


def _holds(data: Any, path: YamlPath) -> bool:
    node = data
    for key in path:
        if isinstance(node, dict) and key in node and node[key] is not None:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            return False
    return True


def _setting(layer: Layer, path: YamlPath, action: str, value: Any = None) -> Setting:
    line, col = layer.doc.where(path)
    if isinstance(value, (dict, list)):
        value = None if action == "replace" else value
    return Setting(layer.name, layer.doc.path, line, col, action, value)


# ------------------------------------------------------------------------- --set PATH=VALUE

def parse_set(assignments: list[str] | tuple[str, ...]) -> list[Layer]:
    """`--set roles.coder.prefer=[a, b]` or `--set /models/org~1name/priority=5`, one layer each.

    Dotted paths split on dots; a segment holding dots (model ids do) is double-quoted:
    `models."qwen2.5-coder-7b".priority=5`. VALUE is read as a YAML flow value."""
    layers = []
    for index, assignment in enumerate(assignments, 1):
        path_text, sep, value_text = assignment.partition("=")
        if not sep or not path_text:
            raise UsageError(f"--set {assignment!r}: expected PATH=VALUE")
        path = _parse_path(path_text, assignment)
        value = load_yaml_text(f"value: {value_text}\n" if value_text.strip() else "value: null\n",
                               f"--set #{index}").data["value"]
        data: Any = value
        for key in reversed(path):
            data = {key: data}
        if path[0] not in SECTIONS[:3]:
            raise UsageError(f"--set {assignment!r}: the path must start with one of {', '.join(SECTIONS[:3])}")
        positions = {(): (1, 1)}
        for depth in range(1, len(path) + 1):
            positions[path[:depth]] = (1, 1)
        doc = Document(f"--set {assignment}", {"schema_version": 2, "kind": "catalog", **data},
                       Positions(positions), layer="--set")
        layers.append(Layer("--set", doc))
    return layers


def _parse_path(text: str, assignment: str) -> tuple[str, ...]:
    if text.startswith("/"):
        return tuple(part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/"))
    parts, current, quoted, i = [], "", False, 0
    while i < len(text):
        char = text[i]
        if char == '"':
            quoted = not quoted
        elif char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    if quoted:
        raise UsageError(f"--set {assignment!r}: unbalanced quote in the path")
    parts.append(current)
    if any(not part for part in parts):
        raise UsageError(f"--set {assignment!r}: empty segment in the path")
    return tuple(parts)

