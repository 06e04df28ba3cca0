"""A clone is all the tests and the tools need (issue 9, finding 11: without a `shared` folder
beside the checkout 31 tests skipped and `make bench` crashed). The real catalogs live in
tests/data, unmodified, with their origin and licence in tests/data/SOURCES.md."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from conftest import REPO

DATA = REPO / "tests" / "data"
# what may read files: the package, the tests and benchmarks, the build and CI, and the docs
SCANNED = ("compiler", "tests", ".ci", "Makefile", "pyproject.toml", ".pre-commit-hooks.yaml",
           "README.md", "ARCHITECTURE.md")
# a path to the folder beside the checkout, or a climb out of the repository from its root
OUTSIDE = re.compile(r"\.\./shared|\bshared/(realdata|DESIGN|GPU)|REPO\.parent|\bREPO\s*/\s*['\"]\.\.|/work/")


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = REPO / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts
                  and p.parent != DATA and p.resolve() != Path(__file__).resolve()]
    return files


def test_nothing_reads_outside_the_repository():
    files = scanned_files()
    assert {REPO / "Makefile", REPO / "tests" / "test_importers.py", REPO / "tests" / "bench" / "run.py"} <= set(files)
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in files
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []


def recorded_digests() -> dict[str, str]:
    """The `| file | sha256 |` table of tests/data/SOURCES.md."""
    rows = re.findall(r"^\| `([\w.-]+)` \| `([0-9a-f]{64})` \|", (DATA / "SOURCES.md").read_text(), re.M)
    return dict(rows)


def test_real_catalogs_are_present_unmodified_and_accounted_for():
    digests = recorded_digests()
    assert sorted(digests) == sorted(p.name for p in DATA.glob("*.json"))
    assert {"hf_models.json", "model_prices_and_context_window.json", "models3.json",
            "openrouter_models.json"} <= set(digests)
    for name, digest in digests.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, f"{name} was modified"

