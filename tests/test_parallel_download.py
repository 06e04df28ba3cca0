"""Ranged downloads over several connections against a file server on 127.0.0.1: every part resumes
after kill -9, a server ignoring Range is read as one stream, a part failing PART_ATTEMPTS times fails
the fetch (exit 3), and memory stays bounded whatever the file's size."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from compiler.executor import download as downloader

from conftest import REPO, add_layer, run_cli
from httpserver import FileServer
from test_fetch import BLOB, SHA, server  # noqa: F401 - fixtures; BLOB is 13 parts of 256 KiB

PART = 256 << 10
KEY = "small-chat%2Ftiny.gguf.part"


@pytest.fixture(autouse=True)
def settings(monkeypatch, tmp_path):
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    configure(tmp_path, "download: {connections: 4, part_size: 256K}\n")


def configure(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "xdg-config" / "hostfit" / "config.yaml"  # conftest points XDG_CONFIG_HOME there
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    return config


def compiled(base_catalog: Path, server: FileServer, blob: bytes = BLOB, sized: bool = True) -> Path:
    artifact = {"url": server.url("tiny.gguf"), "file": "tiny.gguf", "sha256": hashlib.sha256(blob).hexdigest()}
    if sized:
        artifact["size_bytes"] = len(blob)
    add_layer(base_catalog, "20-served.yaml", "models:\n  small-chat:\n    artifact: " + json.dumps(artifact) + "\n"
              "roles:\n  chat: {prefer: [small-chat]}\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output
    return base_catalog


def fetch(catalog: Path):
    return run_cli("-C", str(catalog), "fetch", "--host", "box-8")


def cached(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "small-chat" / "tiny.gguf"


def downloading(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / ".downloading"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def parts_of(size: int, span: int = PART) -> list[tuple[int, int]]:
    return [(start, min(size, start + span)) for start in range(0, size, span)]


def test_a_large_file_comes_in_ranges_over_several_connections(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["throttle"] = 0.002  # slow enough that the connections overlap
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA
    asked = sorted(e["range"] for e in server.log)
    assert asked == sorted(f"bytes={a}-{b - 1}" for a, b in parts_of(len(BLOB))), "each part once, nothing else"
    assert {e["status"] for e in server.log} == {206} and sum(e["sent"] for e in server.log) == len(BLOB)
    assert 1 < len({e["port"] for e in server.log}) <= 4, "several connections, at most download.connections"
    assert downloading(tmp_path) == [], "no partial and no sidecar left"


def test_a_file_of_unknown_size_comes_in_ranges_when_the_server_offers_them(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server, sized=False)  # no size_bytes: the first answer's Content-Length says
    server.faults["fail_range"] = {PART * 2: 5}
    assert fetch(catalog).exit_code == 3
    first, *ranges = server.log
    assert (first["range"], first["status"]) == (None, 200)
    assert {e["range"] for e in ranges} == {f"bytes={a}-{b - 1}" for a, b in parts_of(len(BLOB))}, \
        "its body left unread: every part asked for"
    server.faults.clear()
    server.log.clear()
    result = fetch(catalog)  # the sidecar knows the size: no plain GET, only the missing bytes
    assert result.exit_code == 0, result.output
    assert all(e["range"] and e["status"] == 206 for e in server.log)
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA and downloading(tmp_path) == []
    pin = json.loads((catalog / "out" / "box-8" / "models.lock").read_text())["artifacts"]["small-chat"]
    assert (pin["size"], pin["sha256"]) == (len(BLOB), SHA)


def test_a_file_of_unknown_size_without_ranges_is_one_stream(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server, sized=False)
    server.faults["ignore_range"] = True  # and no Accept-Ranges
    assert fetch(catalog).exit_code == 0
    assert [(e["range"], e["status"], e["sent"]) for e in server.log] == [(None, 200, len(BLOB))]
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA and downloading(tmp_path) == []


def test_one_connection_or_a_small_file_is_one_stream(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    configure(tmp_path, "download: {connections: 1}\n")
    assert fetch(catalog).exit_code == 0
    assert [(e["range"], e["status"]) for e in server.log] == [(None, 200)]
    cached(tmp_path).unlink()
    (tmp_path / "cache" / "manifest.json").unlink()
    server.log.clear()
    configure(tmp_path, "download: {connections: 8, part_size: 2M}\n")  # 3 MiB: under two parts
    assert fetch(catalog).exit_code == 0
    assert [(e["range"], e["status"]) for e in server.log] == [(None, 200)]


def test_a_server_ignoring_range_is_read_as_one_stream(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["ignore_range"] = True
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert [(e["range"], e["status"], e["sent"]) for e in server.log] == [(f"bytes=0-{PART - 1}", 200, len(BLOB))], \
        "the first answer, the whole file, is kept: no second request"
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA and downloading(tmp_path) == []


def test_a_ranged_partial_then_a_server_ignoring_range_starts_over(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["fail_range"] = {PART * 5: 5}  # part 6 fails: the others stay, with their sidecar
    assert fetch(catalog).exit_code == 3
    assert downloading(tmp_path) == [KEY, KEY + ".ranges"]
    server.faults.clear()
    server.log.clear()
    server.faults["ignore_range"] = True
    assert fetch(catalog).exit_code == 0
    assert [e["status"] for e in server.log] == [200]
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA and downloading(tmp_path) == []


@pytest.mark.parametrize("failures, code", [(downloader.PART_ATTEMPTS - 1, 0), (downloader.PART_ATTEMPTS, 3)])
def test_a_part_failing_five_times_fails_the_fetch(base_catalog, server, tmp_path, failures, code):
    catalog = compiled(base_catalog, server)
    start = PART * 3
    server.faults["fail_range"] = {start: failures}
    started = time.monotonic()
    result = fetch(catalog)
    assert result.exit_code == code, result.output
    tries = [e for e in server.log if e["range"] == f"bytes={start}-{start + PART - 1}"]
    assert [e["status"] for e in tries] == [500] * failures + ([206] if code == 0 else [])
    assert time.monotonic() - started < 20, "retries are bounded in time"
    if code == 0:
        assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA
        return
    assert "Traceback" not in result.output and not cached(tmp_path).exists()
    assert f"part 4 of 13 (bytes {start:,}-{start + PART - 1:,}) failed 5 times; the last: HTTP 500" in result.stderr
    state = json.loads((tmp_path / "cache" / ".downloading" / (KEY + ".ranges")).read_text())
    assert state["done"][3] == 0 and sum(state["done"]) > 0, "what the other parts wrote is kept"
    server.log.clear()
    assert fetch(catalog).exit_code == 0
    assert sum(e["sent"] for e in server.log) == len(BLOB) - sum(state["done"]), "only the missing bytes"
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA and downloading(tmp_path) == []


def test_kill_9_mid_transfer_then_every_part_resumes(base_catalog, server, tmp_path):
    blob = b"GGUF" + os.urandom((8 << 20) - 4)  # 32 parts of 256 KiB
    server.files["tiny.gguf"] = blob
    catalog = compiled(base_catalog, server, blob)
    server.faults["throttle"] = 0.1  # 64 KiB per 100 ms per connection: 2.5 MiB/s over 4, sidecar saved each second
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "compiler.cli", "-C", str(catalog), "fetch", "--host", "box-8"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecar = tmp_path / "cache" / ".downloading" / (KEY + ".ranges")
    spans = parts_of(len(blob))
    state = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                state = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                state = None
            # a few parts complete and several begun: each must resume where it was
            if state and sum(d == b - a for d, (a, b) in zip(state["done"], spans)) >= 2 \
                    and sum(0 < d < b - a for d, (a, b) in zip(state["done"], spans)) >= 2:
                break
            time.sleep(0.01)
    finally:
        finished = process.poll()
        if finished is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert finished is None, f"the fetch ended (exit {finished}) before the kill; sidecar: {state}"
    state = json.loads(sidecar.read_text())  # as the killed process last saved it
    done = state["done"]
    begun = [i for i, (d, (a, b)) in enumerate(zip(done, spans)) if 0 < d < b - a]
    assert len(begun) >= 2 and sum(done) < len(blob), f"the kill landed mid-transfer: {done}"
    # the server logs a request once its handler ends: those of the killed fetch end when their next write
    # finds the socket gone (throttled: within 0.1 s each); wait until the log has been still for 0.5 s
    settled, seen = time.monotonic() + 10, (-1, time.monotonic())
    while time.monotonic() < settled:
        if len(server.log) != seen[0]:
            seen = (len(server.log), time.monotonic())
        elif time.monotonic() - seen[1] >= 0.5:
            break
        time.sleep(0.05)
    server.faults.clear()
    server.log.clear()
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    wanted = sorted(f"bytes={a + d}-{b - 1}" for d, (a, b) in zip(done, spans) if d < b - a)
    assert sorted(e["range"] for e in server.log) == wanted, "every unfinished part from where it was, no other"
    assert {e["status"] for e in server.log} == {206}
    assert sum(e["sent"] for e in server.log) == len(blob) - sum(done)
    assert f"resumed at {sum(done):,} bytes" in result.stderr
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == hashlib.sha256(blob).hexdigest()
    assert downloading(tmp_path) == []


def test_memory_stays_bounded_for_a_64_mib_file(server, tmp_path):
    blob = b"GGUF" + os.urandom((64 << 20) - 4)
    server.files["big.gguf"] = blob
    sha = hashlib.sha256(blob).hexdigest()
    folder = tmp_path / "dl"
    tracemalloc.start()
    try:
        outcome = downloader.download([server.url("big.gguf")], folder / "big.part", folder / "big.gguf", len(blob),
                                      sha, parallel=downloader.Parallel(8, 4 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.sha256 == sha and len(server.log) == 16
    assert peak < 16 << 20, f"peak {peak:,} bytes of Python memory for a {len(blob):,}-byte file"


@pytest.mark.parametrize("text, says", [
    ("download: {part_size: 1K}\n", "error[E840]: download.part_size '1K' is not a size of at least 64K"),
    ("download: {part_size: lots}\n", "error[E840]: download.part_size 'lots' is not a size of at least 64K"),
    ("download: {connections: 0}\n", "connections")])
def test_bad_download_settings_are_diagnostics(base_catalog, server, tmp_path, text, says):
    catalog = compiled(base_catalog, server)
    config = configure(tmp_path, text)
    result = fetch(catalog)
    assert result.exit_code == 1 and says in result.stderr and f"{config}:1:" in result.stderr, result.output
    assert server.log == [] and "Traceback" not in result.output


@pytest.mark.parametrize("sha", [SHA, None], ids=["pinned", "unpinned"])
def test_a_ranged_partial_of_other_parts_is_not_taken_for_a_prefix(server, tmp_path, sha):
    """A sidecar that no longer describes the download (download.part_size changed) leaves a sparse file
    at full size: it must start over, not count every byte as written (holes hashed as the file's bytes)."""
    folder = tmp_path / "dl"
    part, final = folder / "tiny.part", folder / "tiny.gguf"
    server.faults["fail_range"] = {PART * 5: 5}  # part 6 never comes: the partial keeps a hole there
    with pytest.raises(downloader.DownloadError):
        downloader.download([server.url("tiny.gguf")], part, final, len(BLOB), SHA,
                            parallel=downloader.Parallel(4, PART))
    assert part.stat().st_size == len(BLOB) and downloader.sidecar_path(part).exists()
    server.faults.clear()
    outcome = downloader.download([server.url("tiny.gguf")], part, final, len(BLOB), sha,
                                  parallel=downloader.Parallel(4, 2 * PART))
    assert outcome.sha256 == SHA and final.read_bytes() == BLOB
    assert not part.exists() and not downloader.sidecar_path(part).exists()


def test_deleting_a_ranged_partial_never_leaves_it_without_its_sidecar(server, tmp_path, monkeypatch):
    """Interrupted between its two deletions, delete_part leaves the sidecar, never the sparse file alone
    (which the next download would take for a one-stream prefix)."""
    from compiler.executor.cache import Cache

    store = Cache(tmp_path / "store")
    part = store.part_path("small-chat", "tiny.gguf")
    server.faults["fail_range"] = {PART * 5: 5}
    with pytest.raises(downloader.DownloadError):
        downloader.download([server.url("tiny.gguf")], part, part.with_name("tiny.gguf"), len(BLOB), SHA,
                            parallel=downloader.Parallel(4, PART))
    assert part.exists() and downloader.sidecar_path(part).exists()
    delete = Cache.delete
    calls = []

    def interrupted(self, path):
        calls.append(path)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return delete(self, path)

    monkeypatch.setattr(Cache, "delete", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.delete_part(part)
    assert not (part.exists() and not downloader.sidecar_path(part).exists())
