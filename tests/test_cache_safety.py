"""The cache owns only what it created (issue 9, finding 1 and its minor findings), and every path and
environment variable is defined once in compiler/paths.py (issue 9, item 10).

Each test builds the situation a user or an attacker would: HOSTFIT_CACHE at an ordinary folder, a
manifest entry pointing beside the cache, a symlink out of it, a file or a read-only folder as the cache.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler import paths
from compiler.executor.cache import Cache

from conftest import REPO, run_cli, tree_bytes
from test_fetch import SHA, compiled, fetch, server  # noqa: F401 - fixture

OLD = time.time() - 90 * 86400  # older than any --older-than a test uses
MARK = "hostfit-cache 1\n"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")


def home_like(folder: Path) -> Path:
    """An ordinary folder a typo could name: a thesis and a project, last touched months ago."""
    for name, text in (("Documents/thesis.txt", "chapter one\n"), ("Projects/main.py", "print('hi')\n"),
                       ("notes.txt", "remember\n")):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (OLD, OLD))
    return folder


def old_manifest(cache: Path, entries: dict[str, str]) -> None:
    """A manifest (as hostfit writes it) whose entries were last used long ago: {id: path}."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(OLD))
    artifacts = {model_id: {"id": model_id, "path": path, "size": 10, "sha256": "0" * 64, "downloaded_at": stamp,
                            "last_used": stamp, "use_count": 1} for model_id, path in entries.items()}
    (cache / "manifest.json").write_text(json.dumps({"manifest_version": 1, "artifacts": artifacts}))


def marked(folder: Path) -> Path:
    """A cache folder hostfit made (the marker written by hand, so the test means the same on old code)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".hostfit-cache").write_text(MARK)
    return folder


# ------------------------------------------------------------------ a folder hostfit did not make

COMMANDS = [("cache", "list"), ("cache", "info"), ("cache", "verify"), ("cache", "clean", "--older-than", "30d"),
            ("cache", "prune", "--max-size", "0"), ("cache", "remove", "Documents")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[1:3]))
def test_no_cache_command_touches_a_folder_hostfit_did_not_make(tmp_path, monkeypatch, command):
    home = home_like(tmp_path / "home")
    before = tree_bytes(home)
    monkeypatch.setenv("HOSTFIT_CACHE", str(home))
    result = run_cli(*command)
    assert result.exit_code == 2, result.output
    assert "E220" in result.stderr and str(home) in result.stderr and "HOSTFIT_CACHE" in result.stderr
    assert "Documents" not in result.stdout, "foreign files are never listed as artifacts"
    assert tree_bytes(home) == before and sorted(p.name for p in home.iterdir()) == ["Documents", "Projects",
                                                                                      "notes.txt"]


def test_fetch_writes_nothing_into_a_folder_hostfit_did_not_make(base_catalog, server, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    home = home_like(tmp_path / "home")
    before = tree_bytes(home)
    monkeypatch.setenv("HOSTFIT_CACHE", str(home))
    result = fetch(compiled(base_catalog, server))
    assert result.exit_code == 2 and "E220" in result.stderr and server.log == []
    assert tree_bytes(home) == before and sorted(p.name for p in home.iterdir()) == ["Documents", "Projects",
                                                                                      "notes.txt"]


def test_an_older_unmarked_cache_is_never_advised_to_be_marked(tmp_path, monkeypatch):
    """REVIEW 3: the E220 hint said `touch .hostfit-cache` whenever a manifest.json was there; in a
    $HOME-like folder following it made the user's projects prunable. It now advises a new folder."""
    home = home_like(tmp_path / "home")
    (home / "manifest.json").write_text("{}")
    monkeypatch.setenv("HOSTFIT_CACHE", str(home))
    result = run_cli("cache", "list")
    assert result.exit_code == 2 and "E220" in result.stderr
    assert "touch" not in result.stderr and ".hostfit-cache" in result.stderr
    assert "new, empty folder" in result.stderr


def test_a_marked_home_like_folder_loses_nothing_to_prune_or_clean(tmp_path, monkeypatch):
    """REVIEW 3: had the user marked such a folder anyway, the manifest rebuild took every lower-case
    folder for a model folder and `cache prune --max-size 0` deleted projects/main.py. A rebuild now takes
    only hostfit's exact layout: one model-artifact file alone in a model folder."""
    home = marked(tmp_path / "home")
    files = {"projects/main.py": "print('hi')\n", "notes/todo.gguf": "x", "notes/more.txt": "y",
             "weights/model.gguf": "GGUF", "docs/readme": "z"}
    for name, text in files.items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(text)
        os.utime(home / name, (OLD, OLD))
    (home / "manifest.json").write_text("{}")
    monkeypatch.setenv("HOSTFIT_CACHE", str(home))
    listed = run_cli("cache", "list", "--json")
    assert listed.exit_code == 0 and [e["id"] for e in json.loads(listed.stdout)] == ["weights"]
    assert run_cli("cache", "clean", "--older-than", "1d").exit_code == 0
    assert run_cli("cache", "prune", "--max-size", "0").exit_code == 0
    assert all((home / name).read_text() == text for name, text in files.items() if name != "weights/model.gguf")
    assert not (home / "weights" / "model.gguf").exists(), "hostfit's own layout is still its to evict"


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_missing_or_empty_folder_becomes_a_cache_on_first_fetch_without_a_warning(
        base_catalog, server, tmp_path, monkeypatch, state):  # noqa: F811
    cache = tmp_path / "new" / "cache"
    if state == "empty":
        cache.mkdir(parents=True)
    monkeypatch.setenv("HOSTFIT_CACHE", str(cache))
    result = fetch(compiled(base_catalog, server))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "missing" not in result.stderr, result.stderr
    assert (cache / ".hostfit-cache").read_text().startswith("hostfit-cache 1\n")
    assert json.loads((cache / "manifest.json").read_text())["artifacts"]["small-chat"]["sha256"] == SHA


def test_cache_commands_create_nothing_where_there_is_no_cache(tmp_path, monkeypatch):
    cache = tmp_path / "nowhere"
    monkeypatch.setenv("HOSTFIT_CACHE", str(cache))
    for command in COMMANDS:
        result = run_cli(*command)
        assert result.exit_code in (0, 1), result.output  # remove: "not in the cache" is exit 1
    assert not cache.exists()


# ---------------------------------------------------------------- manifest paths stay in the cache

def test_a_manifest_entry_pointing_beside_the_cache_deletes_nothing(tmp_path, monkeypatch):
    cache = marked(tmp_path / "cache")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    old_manifest(cache, {"victim": "../victim.txt", "abs": str(victim)})
    monkeypatch.setenv("HOSTFIT_CACHE", str(cache))
    for command in (("cache", "clean", "--older-than", "30d"), ("cache", "prune", "--max-size", "0"),
                    ("cache", "remove", "victim", "abs")):
        result = run_cli(*command)
        assert result.exit_code in (0, 1), result.output
        assert victim.read_text() == "keep me", command
    listed = run_cli("cache", "list", "--json")
    assert json.loads(listed.stdout) == [], "the stray entries are dropped when the manifest is rebuilt"


def test_symlinks_out_of_the_cache_are_never_followed_to_delete(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "thesis.txt").write_text("keep me")
    (outside / "old.part").write_text("keep me too")
    os.utime(outside / "old.part", (OLD, OLD))
    cache = marked(tmp_path / "cache")
    (cache / "evil").symlink_to(outside)  # a model folder that is a link out of the cache
    (cache / ".downloading").symlink_to(outside)  # the partial downloads' folder, too
    old_manifest(cache, {"evil": "evil/thesis.txt"})
    monkeypatch.setenv("HOSTFIT_CACHE", str(cache))
    for command in (("cache", "clean", "--older-than", "30d"), ("cache", "prune", "--max-size", "0"),
                    ("cache", "remove", "evil")):
        result = run_cli(*command)
        assert result.exit_code in (0, 1), result.output
        assert (outside / "thesis.txt").read_text() == "keep me" and (outside / "old.part").exists(), command
        if command[1] == "clean":
            assert "'evil' points outside the cache" in result.stderr and "0 stale partial" in result.stderr
            assert "refused to delete" in result.stderr and "old.part: it is outside the cache" in result.stderr


def test_fetch_never_writes_through_a_link_out_of_the_cache(base_catalog, server, tmp_path,  # noqa: F811
                                                            monkeypatch):
    catalog = compiled(base_catalog, server)
    outside = tmp_path / "outside"
    outside.mkdir()
    cache = marked(tmp_path / "cache")
    (cache / "small-chat").symlink_to(outside)
    monkeypatch.setenv("HOSTFIT_CACHE", str(cache))
    result = fetch(catalog)
    assert result.exit_code == 3 and "E222" in result.stderr and "remove the link" in result.stderr
    assert list(outside.iterdir()) == [] and server.log == []


def test_a_missing_manifest_is_rebuilt_only_from_the_caches_own_layout(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.gguf").write_text("not the cache's")
    cache = marked(tmp_path / "cache")
    (cache / "small-chat").mkdir()
    (cache / "small-chat" / "tiny.gguf").write_bytes(b"GGUF")
    (cache / "Documents").mkdir()  # not a name hostfit gives a model folder
    (cache / "Documents" / "thesis.txt").write_text("a foreign file")
    (cache / "linked").symlink_to(outside)
    (cache / "stray.txt").write_text("top level")
    monkeypatch.setenv("HOSTFIT_CACHE", str(cache))
    result = run_cli("cache", "list", "--json")
    assert result.exit_code == 0 and [e["id"] for e in json.loads(result.stdout)] == ["small-chat"]
    assert "rebuilt it from the 1 cached file(s)" in result.stderr
    assert run_cli("cache", "prune", "--max-size", "0").exit_code == 0
    assert not (cache / "small-chat" / "tiny.gguf").exists()
    assert (cache / "Documents" / "thesis.txt").exists() and (outside / "secret.gguf").exists()
    assert (cache / "stray.txt").exists()


@pytest.mark.parametrize("change", [{"size": "big"}, {"last_used": "yesterday"}, {"last_used": "2026-13-01T00:00:00Z"},
                                    {"id": "other"}, {"path": "small-chat/../small-chat/tiny.gguf"}, {"sha256": None}],
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_a_wrongly_shaped_manifest_entry_is_rebuilt_not_a_traceback(tmp_path, monkeypatch, change):
    cache = marked(tmp_path / "cache")
    (cache / "small-chat").mkdir()
    (cache / "small-chat" / "tiny.gguf").write_bytes(b"GGUF")
    old_manifest(cache, {"small-chat": "small-chat/tiny.gguf"})
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["artifacts"]["small-chat"].update(change)
    (cache / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("HOSTFIT_CACHE", str(cache))
    results = [run_cli(*command) for command in (("cache", "clean", "--older-than", "30d"),
                                                  ("cache", "prune", "--max-size", "1G"), ("cache", "list"))]
    assert [r.exit_code for r in results] == [0, 0, 0], results[0].output
    assert "rebuilt it from the 1 cached file(s)" in results[0].stderr
    assert "small-chat" in results[2].stdout and (cache / "small-chat" / "tiny.gguf").exists()


def test_deletion_is_guarded_in_one_place(tmp_path):
    store = Cache(tmp_path / "cache")
    beside = tmp_path / "beside.txt"
    beside.write_text("x")
    (store.root / "folder").mkdir()
    for path in (beside, store.root / ".." / "beside.txt", store.root / "folder", store.root / ".hostfit-cache"):
        assert store.delete(path) is False and path.exists()
    assert len(store.warnings) == 4
    inside = store.root / "small-chat" / "tiny.gguf"
    inside.parent.mkdir()
    inside.write_bytes(b"x")
    assert store.delete(inside) is True and not inside.exists()
    source = (REPO / "compiler" / "executor" / "cache.py").read_text()
    assert source.count(".unlink(") == 1, "Cache.delete is the cache's only unlink"


# ---------------------------------------------------------------- a cache that cannot be one

def test_a_cache_that_is_a_file_is_a_diagnostic_not_a_traceback(base_catalog, server, tmp_path,  # noqa: F811
                                                                 monkeypatch):
    file = tmp_path / "cache-file"
    file.write_text("I am a file")
    monkeypatch.setenv("HOSTFIT_CACHE", str(file))
    for command in (("cache", "list"), ("cache", "clean")):
        result = run_cli(*command)
        assert result.exit_code == 3 and "E221" in result.stderr and "not a folder" in result.stderr
    result = fetch(compiled(base_catalog, server))
    assert result.exit_code == 3 and "E221" in result.stderr and server.log == []
    assert file.read_text() == "I am a file"


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only: chmod, or, for root (whom permissions do not stop), refuse the
    system calls that create or write files below it, as a read-only folder would."""
    made = []

    def make(folder: Path) -> Path:
        made.append(folder)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return folder
        real_open, real_mkdir = os.open, os.mkdir

        def below(path) -> bool:
            return Path(os.path.abspath(path)).is_relative_to(folder)

        def guarded_open(path, flags, *args, **kwargs):
            if below(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        def guarded_mkdir(path, *args, **kwargs):
            if below(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded_open)
        monkeypatch.setattr(os, "mkdir", guarded_mkdir)
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


def test_a_read_only_cache_is_a_diagnostic_not_a_traceback(base_catalog, server, tmp_path, monkeypatch,  # noqa: F811
                                                           read_only):
    catalog = compiled(base_catalog, server)
    (tmp_path / "empty").mkdir()
    empty = read_only(tmp_path / "empty")
    monkeypatch.setenv("HOSTFIT_CACHE", str(empty))
    result = fetch(catalog)
    assert result.exit_code == 3 and "E221" in result.stderr and "Permission denied" in result.stderr
    assert server.log == [] and list(empty.iterdir()) == []


def test_a_read_only_cache_still_lists_and_refuses_writes_cleanly(base_catalog, server, tmp_path,  # noqa: F811
                                                                  monkeypatch, read_only):
    catalog = compiled(base_catalog, server)
    cache = tmp_path / "cache"
    monkeypatch.setenv("HOSTFIT_CACHE", str(cache))
    assert fetch(catalog).exit_code == 0
    (cache / "small-chat" / "tiny.gguf").unlink()  # the next fetch must write
    read_only(cache)
    read_only(cache / ".downloading")
    assert run_cli("cache", "list").exit_code == 0
    result = fetch(catalog)
    assert result.exit_code == 3 and "Permission denied" in result.stderr, result.output


# ------------------------------------------------------------------------------------- paths

XDG = sorted(paths.XDG_DEFAULTS)


@pytest.mark.parametrize("variable", XDG)
def test_relative_and_empty_xdg_values_are_ignored(tmp_path, monkeypatch, variable):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    default = tmp_path / "home" / paths.XDG_DEFAULTS[variable]
    for value in ("relative/dir", "./dot", "", "~/tilde"):
        monkeypatch.setenv(variable, value)
        assert paths.xdg_home(variable) == default, value
    monkeypatch.setenv(variable, str(tmp_path / "absolute"))
    assert paths.xdg_home(variable) == tmp_path / "absolute"


def test_relative_xdg_values_do_not_move_what_hostfit_writes(tmp_path, monkeypatch):
    from compiler.runtime import installed_path

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOSTFIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "rel-cache")
    monkeypatch.setenv("XDG_DATA_HOME", "rel-data")
    assert installed_path() == tmp_path / "home" / ".local" / "share" / "hostfit" / "models.json"
    result = run_cli("cache", "info")
    assert result.exit_code == 0 and f"cache:     {tmp_path / 'home' / '.cache' / 'hostfit' / 'models'}\n" \
        in result.stdout
    assert not (tmp_path / "rel-cache").exists() and not (tmp_path / "rel-data").exists()


def test_hostfit_cache_overrides_the_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("HOSTFIT_CACHE", raising=False)
    assert paths.artifact_cache() == tmp_path / "xdg" / "hostfit" / "models"
    monkeypatch.setenv("HOSTFIT_CACHE", "")
    assert paths.artifact_cache() == tmp_path / "xdg" / "hostfit" / "models", "empty is unset"
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "mine"))
    assert paths.artifact_cache() == tmp_path / "mine"
    result = run_cli("cache", "info")
    assert result.exit_code == 0 and f"cache:     {tmp_path / 'mine'}" in result.stdout


def test_ollama_host_default_and_bare_host_port(monkeypatch):
    from compiler.discover.ollama import base_url
    from compiler.executor.loaders import ollama_base

    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ollama_base() == base_url() == paths.OLLAMA_DEFAULT == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5:11434")
    assert ollama_base() == base_url() == "http://10.0.0.5:11434"
    assert base_url("https://ollama.example:443") == "https://ollama.example:443", "an explicit host wins"


def test_the_environment_is_read_in_paths_only():
    """Every environment variable and home-relative path is looked up in compiler/paths.py."""
    offenders = []
    for path in sorted((REPO / "compiler").rglob("*.py")):
        if path.name == "paths.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"os\.environ|getenv|expanduser|Path\.home\(|XDG_[A-Z]+_HOME\"", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_paths_is_standard_library_only_and_the_readme_documents_every_variable():
    tree = ast.parse((REPO / "compiler" / "paths.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Paths and environment variables"):]
    table = table[:table.index("\n## ")]
    variables = [value for name, value in vars(paths).items() if name.isupper() and isinstance(value, str)
                 and value == name]
    for name in variables + XDG:
        assert f"`{name}`" in table, name
    for url in (paths.OLLAMA_DEFAULT, paths.HF_DEFAULT, paths.OPENROUTER_DEFAULT):
        assert url in table, url


# ------------------------------------------------ special files in the cache (REVIEW problem I)

def hostfit(*args: str, cache: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    """hostfit in a child process, so a command that blocks on a FIFO fails the test instead of hanging it."""
    env = {**os.environ, "HOSTFIT_CACHE": str(cache), "HOSTFIT_BACKOFF_BASE": "0.01"}
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def fifo_cache(tmp_path: Path, where: str) -> Path:
    """A marked cache whose manifest lists small-chat, with a FIFO at `where` (relative to the cache)."""
    cache = marked(tmp_path / "cache")
    (cache / "small-chat").mkdir()
    (cache / ".downloading").mkdir()
    os.mkfifo(cache / where)
    old_manifest(cache, {"small-chat": "small-chat/tiny.gguf"})
    return cache


@pytest.mark.parametrize("where", ["small-chat/tiny.gguf", ".downloading/small-chat%2Ftiny.gguf.part"])
def test_a_fifo_in_the_cache_is_refused_by_fetch_not_opened(base_catalog, server, tmp_path, where):  # noqa: F811
    catalog = compiled(base_catalog, server)
    cache = fifo_cache(tmp_path, where)
    for command in ("fetch", "bundle"):
        args = ("fetch", "--host", "box-8") if command == "fetch" else ("bundle", "box-8", "-o",
                                                                           str(tmp_path / "b.tar"))
        result = hostfit("-C", str(catalog), *args, cache=cache)
        assert result.returncode == 3, result.stderr
        assert f"{cache / where} is not a regular file" in result.stderr and "Traceback" not in result.stderr
        assert stat.S_ISFIFO(os.lstat(cache / where).st_mode), "reported, left as it is"
    assert not (tmp_path / "b.tar").exists()


def test_cache_verify_reports_a_fifo_without_opening_it(tmp_path):
    cache = fifo_cache(tmp_path, "small-chat/tiny.gguf")
    result = hostfit("cache", "verify", cache=cache)
    assert result.returncode == 3, result.stderr
    assert "small-chat: missing" in result.stderr and "0 ok, 1 bad" in result.stderr
    assert "tiny.gguf is not a regular file; it was not read" in result.stderr


def test_bundle_packs_artifacts_only_from_regular_files(base_catalog, server, tmp_path):  # noqa: F811
    from compiler.errors import DiskError
    from compiler.executor import apply as applier
    from compiler.executor.fetch import Fetched, FetchedFile, plan
    from compiler.executor.lock import Lock

    catalog = compiled(base_catalog, server)
    folder = catalog / "out" / "box-8"
    planned = plan(folder)
    fifo = tmp_path / "swapped.gguf"  # what the cache held when bundle came to read it
    os.mkfifo(fifo)
    fetched = [Fetched(planned.artifacts[0], (FetchedFile("tiny.gguf", fifo, 10, SHA, False),))]
    with pytest.raises(DiskError, match="is not a regular file"):
        applier.bundle(planned, Lock(folder / "models.lock", "box-8"), fetched, tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists()


@pytest.mark.parametrize("manifest", ["fifo", "nested"])
def test_a_manifest_that_is_a_fifo_or_nested_too_deep_is_rebuilt_not_a_hang_or_traceback(tmp_path, manifest):
    cache = marked(tmp_path / "cache")
    (cache / "small-chat").mkdir()
    (cache / "small-chat" / "tiny.gguf").write_bytes(b"GGUF")
    if manifest == "fifo":
        (cache / "manifest.json").unlink(missing_ok=True)
        os.mkfifo(cache / "manifest.json")
    else:
        (cache / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    for command in (("cache", "list"), ("cache", "verify"), ("cache", "prune", "--max-size", "1G")):
        result = hostfit(*command, cache=cache)  # a child process with a timeout: a hang fails the test
        assert "Traceback" not in result.stderr, result.stderr
        if manifest == "fifo":  # never opened, never replaced: the user is told what it is
            assert result.returncode == 3 and "manifest.json: it is a FIFO" in result.stderr, result.stderr
        else:
            assert result.returncode == 0, result.stderr
    if manifest == "nested":
        assert "small-chat" in hostfit("cache", "list", cache=cache).stdout
        assert stat.S_ISREG(os.lstat(cache / "manifest.json").st_mode), "rebuilt as a regular file"


def test_verify_does_not_call_an_artifact_removed_meanwhile_bad(tmp_path, monkeypatch):
    """`cache verify` beside `cache remove`: an entry gone from the manifest by the time it is reported
    was removed, not corrupted."""
    from compiler.executor import cache as cachemod

    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    store = Cache()
    (store.root / "small-chat").mkdir()
    artifact = store.root / "small-chat" / "tiny.gguf"
    artifact.write_bytes(b"GGUF")
    store.record("small-chat", [(artifact, 4, cachemod.sha256_file(artifact))], downloaded=True)
    real = cachemod.regular

    def removed_meanwhile(path):  # another process's `cache remove` runs while verify reads
        store.remove("small-chat")
        return real(path)

    monkeypatch.setattr(cachemod, "regular", removed_meanwhile)
    assert cachemod.verify(Cache()) == []
