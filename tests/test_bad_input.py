"""The bad-input suite: each case in tests/fixtures/bad/ overlays the base catalog with broken
files; expected.txt lists the exact `file:line:col: error[CODE]` of every diagnostic, in order."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli, tree_bytes

CASES = sorted(p for p in (FIXTURES / "bad").iterdir() if p.is_dir())


def overlay(case: Path, catalog: Path) -> None:
    for path in case.rglob("*"):
        if path.is_file() and path.name != "expected.txt":
            target = catalog / path.relative_to(case)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


@pytest.mark.parametrize("command", [("build", "--all"), ("validate",)], ids=["build", "validate"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_reported_at_its_position(case: Path, command, base_catalog: Path):
    overlay(case, base_catalog)
    out = base_catalog / "out"
    (out / "box-8").mkdir(parents=True)
    (out / "box-8" / "models.json").write_text("previous build\n")
    before = tree_bytes(out)

    result = run_cli("-C", str(base_catalog), *command)

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    reported = [line for line in result.stderr.splitlines() if "error[" in line]
    expected = (case / "expected.txt").read_text().splitlines()
    assert len(reported) == len(expected), result.stderr
    for line, prefix in zip(reported, expected):
        assert line.startswith(prefix + ": "), (line, prefix)
    assert tree_bytes(out) == before, "a failed build must leave out/ untouched"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_messages(case: Path, base_catalog: Path, snapshot):
    """The full text (messages and hints) is reviewed through these snapshots."""
    overlay(case, base_catalog)
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.stderr == snapshot


def test_every_problem_in_every_file_is_reported_in_source_order(base_catalog: Path):
    (base_catalog / "sources" / "20-a.yaml").write_text(
        "schema_version: 2\nkind: catalog\nmodels:\n  x: {provider: local, workloads: [chat], params_b: big}\n"
        "  y: {provider: Local Box, workloads: [chat]}\n")
    (base_catalog / "sources" / "30-b.yaml").write_text("schema_version: 2\nkind: catalog\nmodels: {a: {a: 1}, a: 2}\n")
    (base_catalog / "sources" / "40-c.yaml").write_text("schema_version: 9\nkind: catalog\n")
    result = run_cli("-C", str(base_catalog), "validate", "--format", "json")
    import json
    report = json.loads(result.stdout)
    assert result.exit_code == 1
    where = [(e["path"], e["line"], e["col"], e["code"]) for e in report["errors"]]
    assert where == [
        ("sources/20-a.yaml", 4, 43, "E100"),
        ("sources/20-a.yaml", 5, 7, "E103"),
        ("sources/30-b.yaml", 3, 21, "E003"),
        ("sources/40-c.yaml", 1, 1, "E011"),
    ]


def test_error_cap_says_how_many_more(base_catalog: Path):
    lines = ["schema_version: 2", "kind: catalog", "models:"]
    lines += [f"  m{i}: {{provider: local, workloads: [chat], priority: x{i}}}" for i in range(30)]
    (base_catalog / "sources" / "20-many.yaml").write_text("\n".join(lines) + "\n")
    result = run_cli("-C", str(base_catalog), "validate", "--max-errors", "10")
    assert result.exit_code == 1
    assert result.stderr.count("error[E100]") == 10
    assert "... and 20 more" in result.stderr
    assert "30 errors" in result.stderr
