"""Load: positions of every key and item, YAML 1.2 scalars, refusals (duplicates, tags, bombs)."""

from __future__ import annotations

import io

import pytest
from ruamel.yaml import YAML

from compiler.errors import LoadError
from compiler.load import MAX_ALIAS_NODES, load_json_text, load_yaml_text


def load(text: str):
    return load_yaml_text(text, "f.yaml")


def codes(exc: LoadError):
    return [(d.line, d.col, d.code) for d in exc.diagnostics]


def test_positions_of_keys_and_items_block_and_flow():
    doc = load("schema_version: 2\nmodels:\n  a:\n    tags: [x, y]\n    list:\n      - 1\n      - {k: v}\n")
    assert doc.positions.exact(("models",)) == (2, 1)
    assert doc.positions.exact(("models", "a")) == (3, 3)
    assert doc.positions.exact(("models", "a", "tags", 1)) == (4, 15)
    assert doc.positions.exact(("models", "a", "list", 1)) == (7, 9)
    assert doc.positions.exact(("models", "a", "list", 1, "k")) == (7, 10)
    # an unknown path falls back to its nearest known ancestor
    assert doc.where(("models", "a", "tags", 7, "deep")) == (4, 5)


def test_json_positions_are_computed_on_demand():
    doc = load_json_text('{"schema_version": 2,\n "models": {"a": {"tags": ["x", {"k": 1}]}}}', "f.json")
    assert doc.data["models"]["a"]["tags"][1] == {"k": 1}
    assert doc.positions.exact(("models", "a", "tags", 1, "k")) == (2, 34)
    assert doc.positions.exact(("models", "a", "tags", 1)) == (2, 33)
    assert doc.positions.exact(("models",)) == (2, 2)


TRICKY_SCALARS = ["no", "yes", "on", "off", "y", "True", "FALSE", "~", "null", "0123", "0o17", "0x1F",
                  "1_000", "1e3", "1.5", "12:30", "'quoted'", '"7"', "+12"]


@pytest.mark.parametrize("scalar", TRICKY_SCALARS)
def test_scalars_resolve_like_ruamel_yaml_1_2(scalar):
    """The compile path and the edit path (ruamel.yaml round-trip) must read the same values."""
    ours = load(f"v: {scalar}\n").data["v"]
    theirs = YAML(typ="safe", pure=True).load(io.StringIO(f"v: {scalar}\n"))["v"]
    assert ours == theirs and type(ours) is type(theirs), (ours, theirs)


def test_dates_stay_strings():
    """JSON has no dates, so neither does a catalog (ruamel.yaml would build a datetime.date)."""
    assert load("released: 2024-07-23\n").data["released"] == "2024-07-23"


def test_merge_keys_explicit_keys_win():
    doc = load("base: &b {a: 1, b: 2}\nother: &o {b: 9, c: 3}\nm:\n  <<: [*b, *o]\n  a: 10\n")
    assert doc.data["m"] == {"a": 10, "b": 2, "c": 3}


def test_alias_reuses_value_and_position_points_at_the_alias():
    doc = load("arch: &q {layers: 28}\nmodels:\n  x: {arch: *q}\n")
    assert doc.data["models"]["x"]["arch"] == {"layers": 28}
    assert doc.where(("models", "x", "arch", "layers")) == (3, 7)


@pytest.mark.parametrize("text, where", [
    ("a: 1\nb: 2\na: 3\n", (3, 1, "E003")),
    ("a: !!python/object:os.system x\n", (1, 4, "E005")),
    ("a: !!binary aGk=\n", (1, 4, "E005")),
    ("a: !custom x\n", (1, 4, "E005")),
    ("a: 1\n---\nb: 2\n", (2, 1, "E002")),
    ("? [a]\n: 1\n", (1, 3, "E007")),
    ("a: *nowhere\n", (1, 4, "E002")),
    ("", (1, 1, "E008")),
    ("# only a comment\n", (1, 1, "E008")),
    ("- a\n- b\n", (1, 1, "E009")),
    ("just text\n", (1, 1, "E009")),
    ("a: !!int x1\n", (1, 4, "E006")),
])
def test_refusals(text, where):
    with pytest.raises(LoadError) as exc:
        load(text)
    assert codes(exc.value) == [where]


def test_every_duplicate_key_in_a_file_is_reported():
    with pytest.raises(LoadError) as exc:
        load("m:\n  a: 1\n  a: 2\nn: {b: 1, b: 2}\n")
    assert codes(exc.value) == [(3, 3, "E003"), (4, 11, "E003")]


def test_billion_laughs_is_refused_without_expanding_it():
    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(LoadError) as exc:
        load("\n".join(levels) + "\n")
    (diag,) = exc.value.diagnostics
    assert diag.code == "E004" and f"{MAX_ALIAS_NODES:,}" in diag.message


def test_deep_nesting_is_refused_not_a_crash():
    with pytest.raises(LoadError) as exc:
        load("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert exc.value.diagnostics[0].code == "E004"


def test_fifty_thousand_line_catalog_with_anchors_loads():
    lines = ["schema_version: 2", "kind: catalog", "shared: &arch {layers: 32, kv_heads: 8, head_dim: 128}", "models:"]
    for i in range(5000):
        lines += [f"  model-{i}:", "    provider: local", "    workloads: [chat, code]", f"    params_b: {1 + i % 70}",
                  "    quantization: Q4_K_M", "    context_window: 32768", "    arch: *arch",
                  "    capabilities: {reasoning: 0.5, coding: 0.5}", f"    aliases: [m{i}]", "    priority: 100"]
    doc = load("\n".join(lines) + "\n")
    assert len(lines) > 50_000
    assert len(doc.data["models"]) == 5000
    assert doc.data["models"]["model-4999"]["arch"] == {"layers": 32, "kv_heads": 8, "head_dim": 128}
    assert doc.positions.exact(("models", "model-4999", "aliases", 0)) == (len(lines) - 1, 15)
