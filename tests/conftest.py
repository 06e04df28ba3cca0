"""Shared fixtures: catalog folders copied into tmp_path, and the CLI through click's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import main

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def copy_catalog(source: Path, target: Path) -> Path:
    for name in ("sources", "profiles"):
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name)
    return target


@pytest.fixture
def base_catalog(tmp_path: Path) -> Path:
    """The small catalog of tests/fixtures/base: three models, two roles, two hosts."""
    return copy_catalog(FIXTURES / "base", tmp_path / "catalog")


@pytest.fixture
def shipped_catalog(tmp_path: Path) -> Path:
    """A copy of the catalog this repository ships (sources/, profiles/)."""
    return copy_catalog(REPO, tmp_path / "shipped")


LOOPBACK = {"127.0.0.1", "localhost", "::1", None}


@pytest.fixture(autouse=True)
def no_internet(monkeypatch: pytest.MonkeyPatch):
    """Tests talk to servers on 127.0.0.1 only: resolving any other name fails the test loudly."""
    import socket

    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in LOOPBACK and not str(host).startswith("127."):
            raise AssertionError(f"a test tried to reach {host!r}: tests never leave 127.0.0.1")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No test reads the developer's ~/.config or writes their ~/.cache; the host name is fixed."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("HOSTFIT_STATE", raising=False)
    monkeypatch.setenv("HOST", "test-machine")


def add_layer(catalog: Path, name: str, body: str, folder: str = "sources") -> Path:
    """Write a catalog layer (the schema_version/kind header is added) into the catalog."""
    path = catalog / folder / name
    path.write_text("schema_version: 2\nkind: catalog\n" + body)
    return path


def run_cli(*args: str):
    """Invoke hostfit in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (empty if it does not exist), to prove a command wrote nothing."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def stage_candidates(catalog: Path, *candidates: dict) -> Path:
    """Write sources/staging/candidates.json as ingest would, holding `candidates`; returns its path."""
    staging = catalog / "sources" / "staging"
    staging.mkdir()
    path = staging / "candidates.json"
    path.write_text(json.dumps({"schema_version": 2, "kind": "candidates", "fetched_at": "2026-11-22T00:00:00Z",
                                "candidates": list(candidates)}))
    return path
