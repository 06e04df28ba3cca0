"""Builds that never interfere (issue 9, findings 5 and 6, and output modes).

Crash consistency and concurrency run real `hostfit build --all` processes: killed with SIGKILL at
random moments, or two at once. After each, every host's out/<host>/ must be the complete old or
the complete new state (compared with trees built beforehand), and the next build must leave
nothing behind. The counts are modest by default; the issue's acceptance (50 kills, 40 pairs) is

    HOSTFIT_KILLS=50 HOSTFIT_PAIRS=40 .venv/bin/python -m pytest -q tests/test_build_safety.py
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, add_layer, copy_catalog, run_cli

KILLS = int(os.environ.get("HOSTFIT_KILLS", "12"))
PAIRS = int(os.environ.get("HOSTFIT_PAIRS", "8"))
COPIES = 2  # the shipped hosts, twice over: a write phase long enough to be hit
OLD_NAME = "name: Qwen2.5 0.5B Instruct (Q4_K_M)"
OLD_FILE = "file: qwen2.5-0.5b-instruct-q4_k_m.gguf"


def host_tree(folder: Path) -> dict[str, bytes]:
    """What a build owns in out/<host>/: models.json, explain.json and exports/."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and (p.name in ("models.json", "explain.json") or "exports" in p.relative_to(folder).parts
                                or p.name.endswith(".tmp"))}


def leftovers(out: Path) -> list[str]:
    """Anything an interrupted build may leave: staging folders, temporary files."""
    found = [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp")]
    cache = out / ".cache"
    found += [p.name for p in cache.iterdir() if p.name.startswith("staging")] if cache.is_dir() else []
    return found


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory):
    """A catalog of 10 hosts, and its out/ built from the old and from the new sources, where the
    new sources change models.json and exports (files added and changed) of every host."""
    work = tmp_path_factory.mktemp("safety")
    catalog = copy_catalog(REPO, work / "catalog")
    hosts = yaml.safe_load((catalog / "sources" / "hosts.yaml").read_text())
    hosts["hosts"] = {f"{name}-{i}": facts for i in range(COPIES) for name, facts in hosts["hosts"].items()}
    (catalog / "sources" / "hosts.yaml").write_text(json.dumps(hosts))
    models = catalog / "sources" / "00-models.yaml"
    old_text = models.read_text()
    new_text = old_text.replace(OLD_NAME, OLD_NAME + " v2").replace(OLD_FILE, OLD_FILE.replace(".gguf", "-v2.gguf"))
    assert new_text != old_text
    env = {**os.environ, "XDG_CONFIG_HOME": str(work / "xdg"), "XDG_CACHE_HOME": str(work / "xdg-cache"),
           "HOST": "test-machine"}
    trees = {}
    for label, text in (("old", old_text), ("new", new_text)):
        models.write_text(text)
        out = work / f"out-{label}"
        done = subprocess.run([sys.executable, "-m", "compiler.cli", "-C", str(catalog), "build", "--all", "-q",
                               "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        trees[label] = {name: host_tree(out / name) for name in hosts["hosts"]}
    for name in hosts["hosts"]:  # every host changes, in models.json and in its exports
        old, new = trees["old"][name], trees["new"][name]
        assert old["models.json"] != new["models.json"]
        assert {k: v for k, v in old.items() if k.startswith("exports")} != \
            {k: v for k, v in new.items() if k.startswith("exports")}
    return {"catalog": catalog, "env": env, "old": trees["old"], "new": trees["new"], "old_out": work / "out-old"}


def reset_to_old(states, out: Path) -> None:
    """out/ as the old build left it (the no-op cache record included)."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(states["old_out"], out, symlinks=True)


def check_each_host_old_or_new(states, out: Path) -> dict[str, int]:
    seen = {"old": 0, "new": 0}
    for name in states["old"]:
        tree = host_tree(out / name)
        if tree == states["old"][name]:
            seen["old"] += 1
        elif tree == states["new"][name]:
            seen["new"] += 1
        else:
            changed = sorted(k for k in set(tree) | set(states["new"][name])
                             if tree.get(k) != states["new"][name].get(k))
            raise AssertionError(f"out/{name} is neither the old nor the new state; differs from new in {changed}")
    return seen


def start_build(states, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compiler.cli", "-C", str(states["catalog"]), "build", "--all",
                             "-q", "--out", str(out)], env=states["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_kill_9_during_build_leaves_each_host_old_or_new_and_the_next_build_cleans_up(states, tmp_path: Path):
    out = tmp_path / "out"
    reset_to_old(states, out)
    started = time.monotonic()
    calibration = start_build(states, out)
    assert calibration.wait(timeout=120) == 0, calibration.stderr.read()
    duration = time.monotonic() - started  # kills land from mid-compile to just past the end
    rng = random.Random(int(os.environ.get("HOSTFIT_SEED", "9")))
    totals = {"old": 0, "new": 0, "mid-publish": 0, "staging left": 0}
    for _ in range(KILLS):
        reset_to_old(states, out)
        build = start_build(states, out)
        time.sleep(rng.uniform(0.4, 1.1) * duration)
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=60)
        seen = check_each_host_old_or_new(states, out)
        totals["old"] += seen["old"]
        totals["new"] += seen["new"]
        totals["mid-publish"] += bool(seen["old"] and seen["new"])
        totals["staging left"] += bool(leftovers(out))
        after = run_cli("-C", str(states["catalog"]), "build", "--all", "-q", "--out", str(out))
        assert after.exit_code == 0, after.output
        assert check_each_host_old_or_new(states, out)["new"] == len(states["new"])
        assert leftovers(out) == []
    print(f"{KILLS} kills: {totals['old']} hosts found old, {totals['new']} new; "
          f"{totals['mid-publish']} kills left hosts of both; {totals['staging left']} left a staging folder "
          "or temporary file behind")


CRASH_AFTER_SWAPS = """
import os, sys
from compiler import cli, publish
real, done = publish._swap, [0]
def swap(*args):
    real(*args)
    done[0] += 1
    if done[0] == int(os.environ["SWAPS"]):
        os._exit(137)  # as a kill -9 right after this host's folder was swapped in
publish._swap = swap
cli.main(sys.argv[1:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the one-rename swap is Linux's renameat2")
@pytest.mark.parametrize("swaps", [1, 6])
def test_a_build_killed_between_two_hosts_swaps_leaves_both_complete(states, tmp_path: Path, swaps):
    """Random kills rarely land in the few microseconds of the swaps: die right after the n-th one."""
    out = tmp_path / "out"
    reset_to_old(states, out)
    died = subprocess.run([sys.executable, "-c", CRASH_AFTER_SWAPS, "-C", str(states["catalog"]), "build", "--all",
                           "-q", "--out", str(out)], env={**states["env"], "SWAPS": str(swaps)},
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == 137, died.stderr
    assert check_each_host_old_or_new(states, out) == {"new": swaps, "old": len(states["old"]) - swaps}
    after = run_cli("-C", str(states["catalog"]), "build", "--all", "-q", "--out", str(out))
    assert after.exit_code == 0, after.output
    assert check_each_host_old_or_new(states, out)["new"] == len(states["new"])
    assert leftovers(out) == []


def test_two_builds_at_once_both_succeed_with_complete_results(states, tmp_path: Path):
    out = tmp_path / "out"
    for _ in range(PAIRS):
        reset_to_old(states, out)
        builds = [start_build(states, out), start_build(states, out)]
        for build in builds:
            assert build.wait(timeout=120) == 0, build.stderr.read()
        assert check_each_host_old_or_new(states, out)["new"] == len(states["new"])
        assert leftovers(out) == []


def test_a_full_disk_leaves_the_previous_outputs_in_place(states, tmp_path: Path, monkeypatch):
    """ENOSPC once half the new bytes are written: exit 3, out/ exactly as before, nothing left."""
    out = tmp_path / "out"
    reset_to_old(states, out)
    before = {name: host_tree(out / name) for name in states["old"]}
    budget = [sum(len(b) for tree in states["new"].values() for b in tree.values()) // 2]

    def spend(count: int) -> None:
        if count > budget[0]:
            budget[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= count

    real_write, real_fdopen = os.write, os.fdopen

    def write(fd, data):
        if fd > 2:
            spend(len(data))
        return real_write(fd, data)

    class Full:  # a file object from os.fdopen that spends the same budget
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            spend(len(data))
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    (states["catalog"] / "sources" / "00-models.yaml").touch()  # whatever the cache says
    result = run_cli("-C", str(states["catalog"]), "build", "--all", "-q", "--out", str(out))
    monkeypatch.undo()
    assert result.exit_code == 3, result.output
    assert "No space left on device" in result.stderr and "Traceback" not in result.output
    assert {name: host_tree(out / name) for name in states["old"]} == before
    assert leftovers(out) == []


def test_without_rename_exchange_a_build_killed_between_its_two_renames_is_undone(base_catalog: Path, monkeypatch):
    from compiler import publish

    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    out = base_catalog / "out"
    before = host_tree(out / "box-8")
    # what a build on a system without RENAME_EXCHANGE leaves when killed between its two renames
    dead = out / ".cache" / "staging-dead"
    (dead / "old").mkdir(parents=True)
    shutil.copytree(out / "box-8", dead / "new" / "box-8")
    (dead / "new" / "box-8" / "models.json").write_text("{}\n")
    os.rename(out / "box-8", dead / "old" / "box-8")
    assert run_cli("-C", str(base_catalog), "build", "--all", "--check").exit_code == 1  # out/box-8 is missing
    monkeypatch.setattr(publish, "_renameat2", False)
    roles = base_catalog / "sources" / "10-roles.yaml"
    roles.write_text(roles.read_text().replace("prefer: [small-chat]", "prefer: [big-chat, small-chat]"))
    with publish.locked(out):  # the next build puts the old folder back first
        assert host_tree(out / "box-8") == before and not dead.exists()
        result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 0 and "out/box-8/models.json (updated)" in result.stdout, result.output
    assert json.loads((out / "box-8" / "models.json").read_text())["roles"]["summarization"]["model"] == "big-chat"
    assert leftovers(out) == []


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_a_build_that_waits_too_long_for_the_lock_exits_3_and_writes_nothing(base_catalog: Path, monkeypatch):
    import fcntl

    from compiler import publish

    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    out = base_catalog / "out"
    roles = base_catalog / "sources" / "10-roles.yaml"
    roles.write_text(roles.read_text().replace("prefer: [small-chat]", "prefer: [big-chat, small-chat]"))
    before = {name: host_tree(out / name) for name in ("box-8", "box-32")}
    monkeypatch.setattr(publish, "LOCK_WAIT_S", 0.3)
    with open(out / ".cache" / "build.lock", "r+") as other:  # as another build process holds it
        other.write("4242\n")
        other.flush()
        fcntl.flock(other, fcntl.LOCK_EX)
        result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 3, result.output
    assert "waiting for another build (pid 4242)" in result.stderr
    assert "another build (pid 4242) has held" in result.stderr and "try again" in result.stderr
    assert {name: host_tree(out / name) for name in ("box-8", "box-32")} == before


# ---------------------------------------------------------------------------------------- finding 6

def test_editing_a_hosts_user_file_rebuilds(base_catalog: Path):
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-32: {ram_gb: 32, profiles: [base]}",
                                               "box-32: {ram_gb: 32, profiles: [base], user: [people/ann.yaml]}"))
    people = base_catalog / "people"
    people.mkdir()
    add_layer(base_catalog, "ann.yaml", "roles:\n  chat: {prefer: [small-chat]}\n", folder="people")
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    target = base_catalog / "out" / "box-32" / "models.json"
    assert json.loads(target.read_text())["roles"]["chat"]["model"] == "small-chat"
    add_layer(base_catalog, "ann.yaml", "roles:\n  chat: {prefer: [big-chat, small-chat]}\n", folder="people")
    again = run_cli("-C", str(base_catalog), "build", "--all")
    assert again.exit_code == 0 and "out/box-32/models.json (updated)" in again.stdout, again.stdout
    assert json.loads(target.read_text())["roles"]["chat"]["model"] == "big-chat"
    assert run_cli("-C", str(base_catalog), "build", "--all", "--check").exit_code == 0


def test_editing_a_file_in_a_symlinked_source_folder_rebuilds(base_catalog: Path, tmp_path: Path):
    shared = tmp_path / "shared-staging"
    shared.mkdir()
    layer = shared / "50-try.yaml"
    layer.write_text("schema_version: 2\nkind: catalog\nroles:\n  chat: {prefer: [small-chat]}\n")
    (base_catalog / "sources" / "staging").symlink_to(shared, target_is_directory=True)
    build = ("-C", str(base_catalog), "build", "--all", "--with-staging")
    assert run_cli(*build).exit_code == 0
    target = base_catalog / "out" / "box-32" / "models.json"
    assert json.loads(target.read_text())["roles"]["chat"]["model"] == "small-chat"
    layer.write_text("schema_version: 2\nkind: catalog\nroles:\n  chat: {prefer: [big-chat, small-chat]}\n")
    again = run_cli(*build)
    assert again.exit_code == 0 and "out/box-32/models.json (updated)" in again.stdout, again.stdout
    assert json.loads(target.read_text())["roles"]["chat"]["model"] == "big-chat"
    assert run_cli(*build, "--check").exit_code == 0


def test_a_link_loop_under_sources_is_fingerprinted_once(base_catalog: Path):
    staging = base_catalog / "sources" / "staging"
    staging.mkdir()
    (staging / "loop").symlink_to("..", target_is_directory=True)
    build = ("-C", str(base_catalog), "build", "--all", "--with-staging")
    assert run_cli(*build).exit_code == 0
    assert "unchanged" in run_cli(*build).stdout


def test_a_dangling_link_under_sources_is_no_traceback(base_catalog: Path):
    """The cache cannot stat it, so it stands aside (main raised FileNotFoundError from the cache)."""
    (base_catalog / "sources" / "zz.yaml").symlink_to(base_catalog / "nowhere.yaml")
    result = run_cli("-C", str(base_catalog), "build", "--all")  # CliRunner re-raises any exception
    assert result.exit_code in (0, 1) and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------- modes, mtimes

@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, plain, script", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_honour_the_umask_and_the_script_is_executable(shipped_catalog: Path, umask, mask, plain, script):
    umask(mask)
    assert run_cli("-C", str(shipped_catalog), "build", "--all").exit_code == 0
    folder = shipped_catalog / "out" / "edge-4"
    modes = {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}
    assert modes.pop("exports/llama-server.sh") == script
    assert set(modes.values()) == {plain}, modes
    assert "exports/MODELS.md" in modes and "models.json" in modes


def test_atomic_writes_honour_the_umask_and_keep_an_existing_mode(tmp_path: Path, umask):
    from compiler.emit import write_atomic

    umask(0o022)
    fresh, kept = tmp_path / "models.lock", tmp_path / "kept.yaml"
    write_atomic(fresh, b"{}\n")
    kept.write_text("old\n")
    kept.chmod(0o640)
    write_atomic(kept, b"new\n")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new\n"


def test_unchanged_outputs_keep_their_files_and_files_the_build_does_not_own_survive(base_catalog: Path):
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    out = base_catalog / "out"
    (out / "box-8" / "models.lock").write_text('{"pinned": true}\n')  # written by `hostfit lock`, not build
    files = [p for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts]
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    shutil.rmtree(out / ".cache")  # no shortcut: the build compares bytes
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files} == stamps
    roles = base_catalog / "sources" / "10-roles.yaml"
    roles.write_text(roles.read_text().replace("prefer: [small-chat]", "prefer: [big-chat, small-chat]"))
    assert "updated" in run_cli("-C", str(base_catalog), "build", "--all").stdout
    now = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files if p.exists()}
    same_bytes = [p for p in now if now[p][2] == stamps[p][2]]
    assert out / "box-8" / "models.lock" in same_bytes and len(same_bytes) < len(files)  # some changed, some not
    assert {p: now[p] for p in same_bytes} == {p: stamps[p] for p in same_bytes}  # same inode, same mtime
