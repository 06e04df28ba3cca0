"""Cache integrity on every use (a file's size, mtime_ns and inode against the manifest, re-hashed when any
changed), cache.max_size with LRU prune after a fetch, the cache-full error and `cache clear`, against a file
server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.executor import fetch as fetcher
from compiler.executor.cache import Cache

from conftest import run_cli
from test_fetch import BLOB, SHA, cached, compiled, fetch, manifest, server  # noqa: F401 - fixtures

BAD = b"GGUF" + bytes(len(BLOB) - 4)  # same size, other bytes
BAD_SHA = hashlib.sha256(BAD).hexdigest()
MIB = 2**20


@pytest.fixture(autouse=True)
def homes(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")


@pytest.fixture
def hashes(monkeypatch) -> list[Path]:
    """Every file fetch hashes, in order."""
    seen: list[Path] = []
    real = fetcher.sha256_file

    def counting(path, *args):
        seen.append(Path(path))
        return real(path, *args)
    monkeypatch.setattr(fetcher, "sha256_file", counting)
    return seen


def fetched(base_catalog: Path, server) -> Path:  # noqa: F811
    catalog = compiled(base_catalog, server)
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert len(server.log) == 1
    return catalog


def corrupt(path: Path, how: str) -> None:
    """Same size, other bytes: written in place (a new mtime), or as a new file (a new inode) given the old
    mtime back, or in place with the old mtime back (what a stat cannot see)."""
    before = os.stat(path)
    if how == "new-file":
        fresh = path.with_name(path.name + ".new")
        fresh.write_bytes(BAD)
        fresh.replace(path)
    else:
        with open(path, "r+b") as handle:
            handle.write(BAD)
    if how in ("new-file", "in-place-same-mtime"):
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert after.st_size == before.st_size
    if how == "new-file":
        assert after.st_ino != before.st_ino and after.st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("how", ["in-place", "new-file"])
def test_fetch_downloads_a_same_size_corruption_again(base_catalog, server, tmp_path, how):  # noqa: F811
    catalog = fetched(base_catalog, server)
    corrupt(cached(tmp_path), how)
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert f"is corrupt: sha256 {BAD_SHA}, expected {SHA}" in result.stderr
    assert str(cached(tmp_path)) in result.stderr and "downloading it again" in result.stderr
    assert len(server.log) == 2, "downloaded again"
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA
    seen = manifest(tmp_path)["small-chat"]["seen"]["tiny.gguf"]
    stat = os.stat(cached(tmp_path))
    assert seen == [stat.st_size, stat.st_mtime_ns, stat.st_ino], "the new file's stat is recorded"


def test_an_unchanged_file_is_not_hashed_and_a_touched_one_is_hashed_not_downloaded(base_catalog, server, tmp_path,  # noqa: F811
                                                                                    hashes):
    catalog = fetched(base_catalog, server)
    assert fetch(catalog).exit_code == 0
    assert hashes == [], "size, mtime and inode unchanged: the manifest's hash still holds"
    os.utime(cached(tmp_path), ns=(1, 1_000_000_000))
    result = fetch(catalog)
    assert result.exit_code == 0 and "small-chat: cached" in result.stderr
    assert hashes == [cached(tmp_path)] and len(server.log) == 1, "re-hashed, not downloaded"
    assert manifest(tmp_path)["small-chat"]["seen"]["tiny.gguf"][1] == 1_000_000_000
    assert fetch(catalog).exit_code == 0 and len(hashes) == 1, "the new mtime was recorded: no third hash"


def test_verify_hashes_always_and_catches_what_the_stat_cannot(base_catalog, server, tmp_path, hashes):  # noqa: F811
    catalog = fetched(base_catalog, server)
    corrupt(cached(tmp_path), "in-place-same-mtime")
    assert fetch(catalog).exit_code == 0 and hashes == [], "the documented limit of the stat check"
    result = fetch(catalog, "--verify")
    assert result.exit_code == 0, result.output
    assert hashes == [cached(tmp_path)] and "is corrupt" in result.stderr and len(server.log) == 2
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA


def test_an_old_manifest_without_stat_records_is_hashed_once(base_catalog, server, tmp_path, hashes):  # noqa: F811
    catalog = fetched(base_catalog, server)
    path = tmp_path / "cache" / "manifest.json"
    body = json.loads(path.read_text())
    del body["artifacts"]["small-chat"]["seen"]
    path.write_text(json.dumps(body))
    corrupt(cached(tmp_path), "in-place-same-mtime")
    result = fetch(catalog)
    assert result.exit_code == 0 and "is corrupt" in result.stderr and len(server.log) == 2
    assert "seen" in manifest(tmp_path)["small-chat"]


@pytest.mark.parametrize("how", ["in-place", "new-file"])
def test_apply_refuses_a_corrupt_cached_file(base_catalog, server, tmp_path, how):  # noqa: F811
    catalog = fetched(base_catalog, server)
    corrupt(cached(tmp_path), how)
    result = run_cli("-C", str(catalog), "apply", "--host", "box-8")
    assert result.exit_code == 3
    assert f"{cached(tmp_path)} is corrupt: sha256 {BAD_SHA}, expected {SHA}" in result.stderr
    assert "`hostfit fetch` downloads it again" in result.stderr
    assert not (tmp_path / "data" / "hostfit" / "models.json").exists(), "nothing installed"
    assert cached(tmp_path).read_bytes() == BAD and len(server.log) == 1, "refused, not replaced"
    assert fetch(catalog).exit_code == 0
    assert run_cli("-C", str(catalog), "apply", "--host", "box-8").exit_code == 0, "fetch repaired it"


def test_bundle_refuses_a_corrupt_cached_file(base_catalog, server, tmp_path):  # noqa: F811
    catalog = fetched(base_catalog, server)
    corrupt(cached(tmp_path), "in-place")
    output = tmp_path / "box-8.tar"
    result = run_cli("-C", str(catalog), "bundle", "box-8", "-o", str(output))
    assert result.exit_code == 3 and f"sha256 {BAD_SHA}, expected {SHA}" in result.stderr
    assert not output.exists() and len(server.log) == 1


def test_apply_and_bundle_with_verify_refuse_what_the_stat_cannot_see(base_catalog, server, tmp_path):  # noqa: F811
    catalog = fetched(base_catalog, server)
    corrupt(cached(tmp_path), "in-place-same-mtime")
    output = tmp_path / "box-8.tar"
    assert run_cli("-C", str(catalog), "bundle", "box-8", "-o", str(output), "--verify").exit_code == 3
    assert run_cli("-C", str(catalog), "apply", "--host", "box-8", "--verify").exit_code == 3
    assert not output.exists() and not (tmp_path / "data" / "hostfit" / "models.json").exists()


def test_load_refuses_a_corrupt_cached_file(base_catalog, server, tmp_path):  # noqa: F811
    catalog = fetched(base_catalog, server)
    corrupt(cached(tmp_path), "new-file")
    result = run_cli("-C", str(catalog), "load", "chat", "--host", "box-8", "--backend", "llamacpp")
    assert result.exit_code == 3
    assert f"small-chat could not be fetched: small-chat: cached file {cached(tmp_path)} is corrupt" in result.stderr
    assert cached(tmp_path).read_bytes() == BAD and len(server.log) == 1


# ------------------------------------------------------------------------------- size limit

def configure(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "hostfit" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def stored(cache_root: Path, model_id: str, size: int, last_used: str) -> None:
    """An artifact in the cache as a fetch leaves it, last used at `last_used`."""
    store = Cache(cache_root)
    path = store.artifact_path(model_id, f"{model_id}.gguf")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model_id.encode() * (size // len(model_id))
    path.write_bytes(data)
    store.record(model_id, [(path, len(data), hashlib.sha256(data).hexdigest())], downloaded=True)

    def stamp(entries):
        entries[model_id].last_used = last_used
    store.update(stamp)


def lock_pinning(catalog: Path, host: str, cache_root: Path, *model_ids: str) -> None:
    entries = Cache(cache_root).entries()
    folder = catalog / "out" / host
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.lock").write_text(json.dumps({"lock_version": 1, "host": host, "artifacts": {
        m: {"url": f"http://127.0.0.1/{m}.gguf", "revision": None, "file": f"{m}.gguf", "size": entries[m].size,
            "sha256": entries[m].sha256} for m in model_ids}}))


def test_fetch_prunes_least_recently_used_to_the_configured_size(base_catalog, server, tmp_path):  # noqa: F811
    root = tmp_path / "cache"
    for model_id, used in (("old-a", "2020-01-01T00:00:00Z"), ("mid-b", "2021-01-01T00:00:00Z"),
                           ("new-c", "2022-01-01T00:00:00Z")):
        stored(root, model_id, MIB, used)
    configure(tmp_path, "cache:\n  max_size: 5.5 MiB\n")  # ~3 MiB fetched + 3 x 1 MiB: one must go
    catalog = compiled(base_catalog, server)
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert "evicted 1 least recently used artifact(s): old-a" in result.stderr
    assert sorted(manifest(tmp_path)) == ["mid-b", "new-c", "small-chat"]
    assert not (root / "old-a").exists() or not any((root / "old-a").iterdir())
    configure(tmp_path, "cache: {max_size: 4.5M}\n")
    assert fetch(catalog).exit_code == 0
    assert sorted(manifest(tmp_path)) == ["new-c", "small-chat"], "the next least recently used"


def test_a_use_refreshes_the_last_use_so_prune_keeps_it(base_catalog, server, tmp_path):  # noqa: F811
    catalog = compiled(base_catalog, server)
    assert fetch(catalog).exit_code == 0
    Cache(tmp_path / "cache").update(lambda entries: setattr(entries["small-chat"], "last_used",
                                                             "2019-01-01T00:00:00Z"))
    stored(tmp_path / "cache", "other", MIB, "2020-01-01T00:00:00Z")
    configure(tmp_path, "cache:\n  max_size: 3.5MiB\n")
    result = fetch(catalog)  # uses small-chat (now the most recent), then prunes
    assert result.exit_code == 0, result.output
    assert sorted(manifest(tmp_path)) == ["small-chat"]


def test_pinned_artifacts_are_never_evicted(base_catalog, server, tmp_path):  # noqa: F811
    root = tmp_path / "cache"
    stored(root, "old-pinned", MIB, "2020-01-01T00:00:00Z")
    stored(root, "old-installed", MIB, "2020-06-01T00:00:00Z")
    stored(root, "newer", MIB, "2021-01-01T00:00:00Z")
    catalog = compiled(base_catalog, server)
    lock_pinning(catalog, "other-host", root, "old-pinned")
    entry = Cache(root).entries()["old-installed"]
    installed = tmp_path / "data" / "hostfit" / "models.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps({"models": {"old-installed": {"artifact": {"sha256": entry.sha256}}}}))
    configure(tmp_path, "cache:\n  max_size: 6M\n")
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert sorted(manifest(tmp_path)) == ["old-installed", "old-pinned", "small-chat"], \
        "the least recently used unpinned one went; a lock's and the installed catalog's stayed"


def test_cache_full_when_the_pinned_set_alone_exceeds_the_limit(base_catalog, server, tmp_path):  # noqa: F811
    root = tmp_path / "cache"
    stored(root, "unpinned", MIB, "2020-01-01T00:00:00Z")
    config = configure(tmp_path, "cache:\n  max_size: 2G\n")
    catalog = compiled(base_catalog, server)
    assert fetch(catalog).exit_code == 0
    configure(tmp_path, "cache:\n  max_size: 2M\n")
    result = fetch(catalog)
    assert result.exit_code == 3
    assert "E721 cache full" in result.stderr and "over cache.max_size 0.00 GiB" in result.stderr
    assert str(config) in result.stderr
    assert sorted(manifest(tmp_path)) == ["small-chat"], "unpinned evicted, the pinned one kept"
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA


@pytest.mark.parametrize("value, where", [("lots", "2:3:.*E720.*not a size"), ("-5", "2:3:.*E103.*>= 0"), ("[1]", "2:3:.*E100")])
def test_a_bad_max_size_is_a_diagnostic_before_anything_is_fetched(base_catalog, server, tmp_path, value,  # noqa: F811
                                                                   where):
    config = configure(tmp_path, f"cache:\n  max_size: {value}\n")
    catalog = compiled(base_catalog, server)
    result = fetch(catalog)
    assert result.exit_code == 1 and re.search(re.escape(f"{config}:") + where, result.stderr), result.output
    assert server.log == [] and not (tmp_path / "cache").exists()


def test_an_unknown_cache_setting_is_named(base_catalog, server, tmp_path):  # noqa: F811
    configure(tmp_path, "cache:\n  max_sise: 20G\n")
    result = fetch(compiled(base_catalog, server))
    assert result.exit_code == 1 and "unknown field 'max_sise'" in result.stderr


@pytest.mark.parametrize("text, expected", [("200G", 200 * 2**30), ("500 GiB", 500 * 2**30), ("1.5T", int(1.5 * 2**40)),
                                            ("1048576", 2**20), ("12 MB", 12 * 2**20), ("0G", 0)])
def test_max_size_units(tmp_path, text, expected):
    from compiler.executor.config import cache_max_size

    assert cache_max_size(configure(tmp_path, f"cache:\n  max_size: {text}\n")) == expected
    assert cache_max_size(configure(tmp_path, "ollama: {auto_start: true}\n")) is None


def test_a_comment_only_config_sets_nothing_for_fetch_and_cache(base_catalog, server, tmp_path):  # noqa: F811
    """`profile activate` keeps config.yaml's comments; one that holds only comments is a settings file that
    sets nothing, for every reader of it (fetch's mirrors and cache limit as much as profiles)."""
    from compiler.executor import config

    configure(tmp_path, "# my settings, none yet\n\n")
    assert config.read()[1] == {} and config.document() is None
    catalog = fetched(base_catalog, server)
    listed = run_cli("-C", str(catalog), "cache", "list")
    assert listed.exit_code == 0, listed.output


# --------------------------------------------------------------------------------- clear

def test_cache_clear_asks_unless_yes_and_deletes_everything(base_catalog, server, tmp_path):  # noqa: F811
    root = tmp_path / "cache"
    catalog = fetched(base_catalog, server)
    stored(root, "other", MIB, "2020-01-01T00:00:00Z")
    (root / ".downloading" / "x%2Fy.gguf.part").write_bytes(b"partial")
    (root / ".downloading" / "x%2Fy.gguf.part.ranges").write_bytes(b"{}")  # a ranged partial's sidecar
    refused = run_cli("-C", str(catalog), "cache", "clear")
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    assert sorted(manifest(tmp_path)) == ["other", "small-chat"], "nothing deleted without confirmation"
    result = run_cli("-C", str(catalog), "cache", "clear", "--yes")
    assert result.exit_code == 0, result.output
    assert "removed 2 artifact(s) and 1 partial download(s)" in result.stderr
    assert manifest(tmp_path) == {} and (root / ".hostfit-cache").is_file()
    assert sorted(p.name for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")) == \
        [".hostfit-cache", "manifest.json"]
    assert fetch(catalog).exit_code == 0 and len(server.log) == 2, "the next fetch downloads again"


def test_cache_clear_outside_a_cache_creates_nothing(tmp_path):
    assert run_cli("cache", "clear", "--yes").exit_code == 0
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- concurrency

HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1], timeout=5)
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
"""


@contextlib.contextmanager
def busy_and_idle(root: Path):
    """A cache of two artifacts, the older ("busy") held by another process as a fetch holds it, until exit."""
    stored(root, "busy", MIB, "2020-01-01T00:00:00Z")
    stored(root, "idle", MIB, "2021-01-01T00:00:00Z")
    store = Cache(root)
    lock = str(store.part_path("busy", "busy.gguf")) + ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, lock], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield store
    finally:
        holder.communicate("\n", timeout=10)


def test_prune_and_clear_skip_an_artifact_a_fetch_holds(tmp_path):
    from compiler.executor.cache import clear, prune

    with busy_and_idle(tmp_path / "cache") as store:
        evicted, _ = prune(store, 0, set())
        assert evicted == ["idle"] and set(store.entries()) == {"busy"}
        removed, parts = clear(store)
        assert removed == [] and set(store.entries()) == {"busy"}
    assert prune(store, 0, set())[0] == ["busy"]


def test_clean_skips_an_artifact_a_fetch_holds(tmp_path):
    from compiler.executor.cache import clean

    root = tmp_path / "cache"
    with busy_and_idle(root) as store:
        removed, _ = clean(store, 0, set())
        assert removed == ["idle"] and set(store.entries()) == {"busy"}
        assert (root / "busy" / "busy.gguf").is_file()
    assert clean(store, 0, set())[0] == ["busy"]


def test_clean_keeps_an_artifact_used_since_it_was_listed(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    stored(root, "a", MIB, "2020-01-01T00:00:00Z")
    store = Cache(root)
    from compiler.executor import cache as cache_module

    real = cache_module.age_seconds

    def used_meanwhile(stamp):  # another process fetches `a` right after clean listed it as old
        store.update(lambda entries: setattr(entries["a"], "last_used", "2030-01-01T00:00:00Z"))
        return real(stamp)
    monkeypatch.setattr(cache_module, "age_seconds", used_meanwhile)
    assert cache_module.clean(store, 60, set())[0] == [] and "a" in store.entries()
    assert (root / "a" / "a.gguf").is_file()


def test_prune_keeps_an_artifact_used_since_it_was_listed(tmp_path):
    root = tmp_path / "cache"
    stored(root, "a", MIB, "2020-01-01T00:00:00Z")
    store = Cache(root)
    listed = store.entries()["a"]
    store.update(lambda entries: setattr(entries["a"], "last_used", "2030-01-01T00:00:00Z"))  # another process used it
    assert store.evict(listed) is False and "a" in store.entries()
    listed = store.entries()["a"]
    store.update(lambda entries: setattr(entries["a"], "use_count", listed.use_count + 1))  # used within the second
    assert store.evict(listed) is False and "a" in store.entries()
    assert store.evict(store.entries()["a"]) is True and store.entries() == {}


# ------------------------------------------------------------------------------ file sets

def test_a_corrupt_shard_of_a_set_is_named_refused_by_apply_and_fetched_again(base_catalog, tmp_path, monkeypatch):
    import test_filesets as sets
    from tinygguf import write_tiny_llama

    folder = tmp_path / "written"
    folder.mkdir()
    write_tiny_llama(folder / "tiny-llama.gguf", split_max_tensors=8)
    shards = {path.name: path.read_bytes() for path in folder.iterdir()}
    srv = sets.FileServer().start()
    srv.files.update(shards)
    try:
        catalog = sets.catalog_with(base_catalog, srv)
        assert sets.cli(catalog, "fetch", "--host", "box-8").exit_code == 0
        second = tmp_path / "cache" / "tiny-split" / sets.SHARDS[1]
        good = second.read_bytes()
        second.write_bytes(bytes(len(good)))
        refused = sets.cli(catalog, "apply", "--host", "box-8")
        assert refused.exit_code == 3
        assert f"{second} is corrupt: sha256 {hashlib.sha256(bytes(len(good))).hexdigest()}, " \
               f"expected {hashlib.sha256(good).hexdigest()}" in refused.stderr
        assert len(srv.log) == 3
        repaired = sets.cli(catalog, "fetch", "--host", "box-8")
        assert repaired.exit_code == 0, repaired.output
        assert sets.requested(srv)[3:] == [sets.SHARDS[1]], "only the corrupt shard is downloaded again"
        assert second.read_bytes() == good
        assert sets.cli(catalog, "apply", "--host", "box-8").exit_code == 0
    finally:
        srv.stop()
