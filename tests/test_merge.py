"""Merge: RFC 7386 semantics, whole-layer and per-entry replacement, provenance, --set."""

from __future__ import annotations

import pytest

from compiler.errors import UsageError
from compiler.load import load_yaml_text
from compiler.merge import Layer, merge_layers, merge_patch, origin, parse_set, provenance

# The examples of RFC 7386, appendix A: (target, patch, result).
RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("target, patch, result", RFC7386)
def test_rfc7386_examples(target, patch, result):
    before = repr(target)
    assert merge_patch(target, patch) == result
    assert repr(target) == before, "merge must not mutate its input"


def test_dollar_merge_replace_restates_one_entry():
    target = {"m": {"a": 1, "b": {"c": 2}}, "n": {"x": 1}}
    assert merge_patch(target, {"m": {"$merge": "replace", "b": {"d": 3}}}) == {"m": {"b": {"d": 3}}, "n": {"x": 1}}


def layer(name: str, text: str) -> Layer:
    return Layer(name, load_yaml_text(text, f"{name}.yaml"))


LOW = layer("low", "schema_version: 2\nkind: catalog\nmodels:\n  m:\n    priority: 1\n    tags: [a]\n  gone: {priority: 5}\n")
MID = layer("mid", "schema_version: 2\nkind: catalog\nmodels:\n  m:\n    priority: 2\n  gone: null\n")
TOP = layer("top", "schema_version: 2\nkind: catalog\nmodels:\n  m: {priority: 3}\n")


def test_layers_merge_in_order_and_null_deletes():
    merged = merge_layers([LOW, MID, TOP])
    assert merged.data["models"] == {"m": {"priority": 3, "tags": ["a"]}}


def test_provenance_lists_every_layer_that_touched_a_value():
    chain = provenance((LOW, MID, TOP), ("models", "m", "priority"))
    assert [(s.layer, s.line, s.col, s.action, s.value) for s in chain] == [
        ("low", 5, 5, "set", 1), ("mid", 5, 5, "set", 2), ("top", 4, 7, "set", 3)]
    deleted = provenance((LOW, MID, TOP), ("models", "gone", "priority"))
    assert [(s.layer, s.action) for s in deleted] == [("low", "set"), ("mid", "delete")]
    assert origin((LOW, MID, TOP), ("models", "m", "tags", 0)) == ("low.yaml", 6, 12)


def test_merge_replace_layer_discards_everything_below():
    replace = layer("replace", "schema_version: 2\nkind: catalog\nmerge: replace\nmodels:\n  only: {priority: 9}\n")
    merged = merge_layers([LOW, MID, replace])
    assert merged.data == {"models": {"only": {"priority": 9}}}
    chain = provenance((LOW, replace), ("models", "m", "priority"))
    assert [s.action for s in chain] == ["set", "replace"]


def test_set_paths_dotted_quoted_and_pointer():
    (dotted,) = parse_set(['models."qwen2.5-coder-7b".priority=5'])
    assert dotted.doc.data["models"] == {"qwen2.5-coder-7b": {"priority": 5}}
    (pointer,) = parse_set(["/models/org~1name/tags=[a, b]"])
    assert pointer.doc.data["models"] == {"org/name": {"tags": ["a", "b"]}}
    (deletion,) = parse_set(["roles.chat.prefer="])
    assert deletion.doc.data["roles"] == {"chat": {"prefer": None}}
    merged = merge_layers([LOW, *parse_set(["models.m.priority=7", "models.m.tags=null"])])
    assert merged.data["models"]["m"] == {"priority": 7}


@pytest.mark.parametrize("bad", ["noequals", "=1", "models..x=1", 'models."open.x=1', "hosts_x.y=1"])
def test_bad_set_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        parse_set([bad])
