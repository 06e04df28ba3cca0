"""Same inputs, same bytes: other folders, other working directories, other hash seeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, copy_catalog, tree_bytes


def build(catalog: Path, cwd: Path, seed: str, cache: Path) -> None:
    env = {**os.environ, "PYTHONHASHSEED": seed, "XDG_CACHE_HOME": str(cache), "LC_ALL": "C", "TZ": "UTC"}
    subprocess.run([sys.executable, "-m", "compiler.cli", "-C", str(catalog), "build", "--all", "--quiet"],
                   cwd=cwd, env=env, check=True, timeout=120)


def test_two_builds_in_different_places_give_identical_bytes(tmp_path: Path):
    one = copy_catalog(REPO, tmp_path / "one")
    two = copy_catalog(REPO, tmp_path / "somewhere" / "else" / "two")
    build(one, cwd=one, seed="1", cache=tmp_path / "cache-one")
    build(two, cwd=tmp_path, seed="4242", cache=tmp_path / "cache-two")
    outputs = [{k: v for k, v in tree_bytes(c / "out").items() if not k.startswith(".cache")} for c in (one, two)]
    assert outputs[0] == outputs[1]
    assert len([k for k in outputs[0] if k.endswith("models.json")]) == 5
    assert all(str(tmp_path).encode() not in data for data in outputs[0].values()), "no absolute paths in output"
