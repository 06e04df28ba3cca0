"""Fetch, lock and cache against a file server on 127.0.0.1 that the tests start and stop.
Every fault test asserts the final state (file hash, manifest, leftovers) and what was requested."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler import net
from compiler.executor import download as downloader
from compiler.executor.cache import Cache

from conftest import add_layer, run_cli
from httpserver import FileServer

BLOB = b"GGUF" + bytes((i * 7 + i // 251) % 256 for i in range(3 * 1024 * 1024 + 12345))  # ~3 MiB, not repetitive
SHA = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture
def server():
    srv = FileServer().start()
    srv.files["tiny.gguf"] = BLOB
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, tmp_path):
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))


def compiled(base_catalog: Path, server: FileServer, sha: str | None = SHA, size: int | None = len(BLOB),
             file: str = "tiny.gguf") -> Path:
    artifact = {"url": server.url("tiny.gguf"), "file": file}
    if sha:
        artifact["sha256"] = sha
    if size:
        artifact["size_bytes"] = size
    add_layer(base_catalog, "20-served.yaml",
              "models:\n  small-chat:\n    artifact: " + json.dumps(artifact) + "\n"
              "roles:\n  chat: {prefer: [small-chat]}\n")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output
    return base_catalog


def cached(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "small-chat" / "tiny.gguf"


def manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "cache" / "manifest.json").read_text())["artifacts"]


def leftovers(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / ".downloading"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def fetch(catalog: Path, *extra: str):
    return run_cli("-C", str(catalog), "fetch", "--host", "box-8", *extra)


def test_fetch_verifies_caches_and_pins(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA
    entry = manifest(tmp_path)["small-chat"]
    assert (entry["size"], entry["sha256"], entry["use_count"]) == (len(BLOB), SHA, 1)
    lock = json.loads((catalog / "out" / "box-8" / "models.lock").read_text())
    assert lock["artifacts"]["small-chat"] == {"url": server.url("tiny.gguf"), "final_url": server.url("tiny.gguf"),
                                               "revision": None, "file": "tiny.gguf", "size": len(BLOB),
                                               "sha256": SHA}
    again = fetch(catalog)
    assert again.exit_code == 0 and "small-chat: cached" in again.stderr
    assert len(server.log) == 1, "a cached artifact is not downloaded again"
    assert manifest(tmp_path)["small-chat"]["use_count"] == 2 and leftovers(tmp_path) == []


def test_first_download_pins_and_later_fetches_verify(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server, sha=None, size=None)
    assert fetch(catalog).exit_code == 0
    assert json.loads((catalog / "out" / "box-8" / "models.lock").read_text())["artifacts"]["small-chat"]["sha256"] == SHA
    cached(tmp_path).unlink()
    (tmp_path / "cache" / "manifest.json").unlink()
    server.faults["wrong"] = True
    result = fetch(catalog)
    assert result.exit_code == 3
    assert f"expected {SHA}" in result.stderr and "the partial download was deleted" in result.stderr
    assert not cached(tmp_path).exists() and leftovers(tmp_path) == []


def test_dropped_connection_resumes_with_range(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["drop_after"] = 1_000_000
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    assert [(e["range"], e["status"]) for e in server.log] == [(None, 200), ("bytes=1000000-", 206)]
    assert server.log[1]["sent"] == len(BLOB) - 1_000_000, "only the missing bytes were requested"
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA and leftovers(tmp_path) == []


def test_server_ignoring_range_restarts_from_zero(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults.update(drop_after=500_000, ignore_range=True)
    assert fetch(catalog).exit_code == 0
    assert [(e["range"], e["status"]) for e in server.log] == [(None, 200), ("bytes=500000-", 200)]
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA


def test_416_for_a_complete_partial_needs_no_download(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    part = tmp_path / "cache" / ".downloading" / "small-chat%2Ftiny.gguf.part"
    Cache(tmp_path / "cache")  # a cache hostfit made, then a partial download left in it
    part.parent.mkdir()
    part.write_bytes(BLOB)
    assert fetch(catalog).exit_code == 0
    assert [(e["range"], e["status"], e["sent"]) for e in server.log] == [(f"bytes={len(BLOB)}-", 416, 0)]
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA and not part.exists()


def test_416_for_an_incomplete_partial_restarts(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    part = tmp_path / "cache" / ".downloading" / "small-chat%2Ftiny.gguf.part"
    Cache(tmp_path / "cache")  # a cache hostfit made, then a partial download left in it
    part.parent.mkdir()
    part.write_bytes(BLOB[:1000])
    server.faults["always_416"] = True
    result = fetch(catalog)
    server.faults.clear()
    assert result.exit_code == 0, result.output
    assert [e["status"] for e in server.log] == [416, 200]
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA


def test_5xx_is_retried(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["fail"] = 2
    assert fetch(catalog).exit_code == 0
    assert [e["status"] for e in server.log] == [500, 500, 200]


def test_persistent_failure_exits_3_after_bounded_retries(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["fail"] = 100
    result = fetch(catalog)
    assert result.exit_code == 3 and "could not download tiny.gguf" in result.stderr
    assert len(server.log) == downloader.ATTEMPTS


def test_mirrors_are_tried_in_order(base_catalog, server, tmp_path):
    mirror = FileServer().start()
    try:
        mirror.files["tiny.gguf"] = BLOB
        add_layer(base_catalog, "20-served.yaml",
                  "models:\n  small-chat:\n    artifact: " + json.dumps(
                      {"url": server.url("missing.gguf"), "file": "tiny.gguf", "sha256": SHA,
                       "mirrors": [mirror.url("tiny.gguf")]}) + "\nroles:\n  chat: {prefer: [small-chat]}\n")
        assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
        assert fetch(base_catalog).exit_code == 0
        assert [e["status"] for e in server.log] == [404] and [e["status"] for e in mirror.log] == [200]
    finally:
        mirror.stop()


def test_truncated_body_then_hash_mismatch_leave_nothing_behind(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server, sha="0" * 64)
    result = fetch(catalog)
    assert result.exit_code == 3 and "sha256" in result.stderr
    assert not cached(tmp_path).exists() and leftovers(tmp_path) == []
    assert "small-chat" not in manifest(tmp_path) if (tmp_path / "cache" / "manifest.json").exists() else True


def test_not_enough_disk_fails_before_downloading(base_catalog, server, tmp_path, monkeypatch):
    catalog = compiled(base_catalog, server)
    monkeypatch.setattr(downloader, "free_bytes", lambda path: 1000)
    result = fetch(catalog)
    assert result.exit_code == 3 and "not enough free disk" in result.stderr
    assert not cached(tmp_path).exists() and leftovers(tmp_path) == [], "refused before writing a byte"


def test_a_corrupt_manifest_is_rebuilt_with_a_warning(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    assert fetch(catalog).exit_code == 0
    (tmp_path / "cache" / "manifest.json").write_text("{not json")
    result = run_cli("-C", str(catalog), "cache", "list")
    assert result.exit_code == 0 and "small-chat" in result.stdout
    assert "manifest.json was unreadable; rebuilt it from the 1 cached file(s)" in result.stderr
    assert manifest(tmp_path)["small-chat"]["sha256"] == SHA
    assert len(server.log) == 1


def test_require_pinned_fails_on_anything_unpinned(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server, sha=None)
    result = fetch(catalog, "--require-pinned")
    assert result.exit_code == 1 and "not pinned: small-chat" in result.stderr and server.log == []
    assert run_cli("-C", str(catalog), "lock", "--host", "box-8").exit_code == 0
    assert fetch(catalog, "--require-pinned").exit_code == 0


def test_names_that_would_escape_the_cache_are_refused(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    compiled_path = catalog / "out" / "box-8" / "models.json"
    document = json.loads(compiled_path.read_text())
    document["models"]["small-chat"]["artifact"]["file"] = "../../escaped.gguf"
    compiled_path.write_text(json.dumps(document))
    result = fetch(catalog)
    assert result.exit_code == 1 and "error[E209]" in result.stderr
    assert not (tmp_path / "escaped.gguf").exists() and server.log == []
    compiled_path.unlink()
    assert run_cli("-C", str(catalog), "build", "--host", "box-8").exit_code == 0
    lock = catalog / "out" / "box-8" / "models.lock"
    lock.write_text(json.dumps({"lock_version": 1, "host": "box-8", "artifacts": {
        "small-chat": {"url": server.url("tiny.gguf"), "file": "/etc/passwd", "size": 1, "sha256": SHA}}}))
    result = run_cli("-C", str(catalog), "lock", "--host", "box-8")
    assert result.exit_code == 1 and "error[E210]: unreadable lock file: refusing artifact file '/etc/passwd'" \
        in result.stderr
    assert server.log == [] and not Path("/etc/passwd.part").exists()


def test_json_progress_events(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    result = fetch(catalog, "--json")
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert events[-1]["sha256"] == SHA and events[-1]["downloaded"] is True


def test_cache_commands(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    assert fetch(catalog).exit_code == 0
    listed = run_cli("-C", str(catalog), "cache", "list")
    assert "small-chat" in listed.stdout and "pinned" in listed.stdout
    assert run_cli("-C", str(catalog), "cache", "verify").exit_code == 0
    prune = run_cli("-C", str(catalog), "cache", "prune", "--max-size", "1M")
    assert "evicted 0 artifact(s)" in prune.stderr and cached(tmp_path).exists(), "pinned artifacts stay"
    (catalog / "out" / "box-8" / "models.lock").unlink()
    prune = run_cli("-C", str(catalog), "cache", "prune", "--max-size", "1M")
    assert "evicted 1 artifact(s): small-chat" in prune.stderr and not cached(tmp_path).exists()
    stale = tmp_path / "cache" / ".downloading" / "old.part"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    clean = run_cli("-C", str(catalog), "cache", "clean")
    assert "1 stale partial download(s)" in clean.stderr and not stale.exists()
    cached(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    assert fetch(catalog).exit_code == 0
    cached(tmp_path).write_bytes(b"tampered")
    assert run_cli("-C", str(catalog), "cache", "verify").exit_code == 3


def _fetch_process(catalog: Path, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "HOSTFIT_CACHE": str(tmp_path / "cache"), "HOSTFIT_BACKOFF_BASE": "0.01",
           "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    return subprocess.Popen([sys.executable, "-m", "compiler.cli", "-C", str(catalog), "fetch", "--host", "box-8"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_kill_9_mid_transfer_then_resume(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["throttle"] = 0.02  # ~3 MiB/s: the kill lands mid-transfer
    process = _fetch_process(catalog, tmp_path)
    part = tmp_path / "cache" / ".downloading" / "small-chat%2Ftiny.gguf.part"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 300_000):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    had = part.stat().st_size
    assert 0 < had < len(BLOB)
    server.faults.clear()
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    resumed = server.log[-1]
    assert resumed["range"] == f"bytes={had}-" and resumed["status"] == 206
    assert resumed["sent"] == len(BLOB) - had, "resumed, not restarted"
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA and leftovers(tmp_path) == []


def test_two_processes_fetching_one_artifact_download_it_once(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["throttle"] = 0.005
    first, second = _fetch_process(catalog, tmp_path), _fetch_process(catalog, tmp_path)
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
    assert [e["status"] for e in server.log] == [200]
    assert hashlib.sha256(cached(tmp_path).read_bytes()).hexdigest() == SHA
    assert manifest(tmp_path)["small-chat"]["use_count"] == 2


def test_every_fetched_artifact_is_pinned(base_catalog, server, tmp_path):
    server.files["other.gguf"] = b"GGUF" + BLOB[:3:-1]
    add_layer(base_catalog, "20-served.yaml", "models:\n"
              f"  small-chat:\n    artifact: {{url: '{server.url('tiny.gguf')}', file: tiny.gguf}}\n"
              f"  big-chat:\n    artifact: {{url: '{server.url('other.gguf')}', file: other.gguf}}\n"
              "roles:\n  chat: {prefer: [big-chat]}\n  summarization: {prefer: [small-chat]}\n")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    assert fetch(base_catalog).exit_code == 0
    pins = json.loads((base_catalog / "out" / "box-8" / "models.lock").read_text())["artifacts"]
    assert pins["small-chat"]["sha256"] == SHA
    assert pins["big-chat"]["sha256"] == hashlib.sha256(b"GGUF" + BLOB[:3:-1]).hexdigest()


# --- hostile servers: every download is bounded, honest, and ends in exit 3 without a traceback

def pins(catalog: Path) -> dict:
    lock = catalog / "out" / "box-8" / "models.lock"
    return json.loads(lock.read_text())["artifacts"] if lock.exists() else {}


def test_an_endless_body_is_cut_at_the_declared_size(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server, sha=None)
    server.faults["endless"] = 64 << 20  # no Content-Length; far more than the 3 MiB declared
    result = fetch(catalog)
    assert result.exit_code == 3, result.output
    assert f"the body goes on past the declared {len(BLOB):,} bytes" in result.stderr
    assert len(server.log) == 1 and server.log[0]["sent"] < 32 << 20, "the client hung up, it did not read on"
    assert not cached(tmp_path).exists() and leftovers(tmp_path) == [] and pins(catalog) == {}


def test_a_gzip_bomb_is_refused_not_inflated(base_catalog, server, tmp_path):
    import gzip

    catalog = compiled(base_catalog, server, sha=None)
    server.faults["gzip"] = gzip.compress(b"GGUF" + bytes(64 << 20), compresslevel=9)  # ~64 KB -> 64 MiB
    result = fetch(catalog)
    assert result.exit_code == 3, result.output
    assert "refused a compressed body from the server (Content-Encoding: gzip)" in result.stderr
    assert [e["accept_encoding"] for e in server.log] == ["identity"], "identity asked for, one request"
    assert not cached(tmp_path).exists() and leftovers(tmp_path) == [] and pins(catalog) == {}


@pytest.mark.parametrize("content_type, says", [
    ("text/html; charset=utf-8", "the server sent an HTML page (Content-Type: text/html)"),
    ("application/octet-stream", "not a GGUF file (it starts with b'<!DOCTYPE html><')")])
def test_an_html_page_served_with_200_is_neither_cached_nor_pinned(base_catalog, server, tmp_path, content_type,
                                                                    says):
    catalog = compiled(base_catalog, server, sha=None, size=None)  # nothing to check it against but its format
    server.faults.update(html=True, content_type=content_type)
    result = fetch(catalog)
    assert result.exit_code == 3, result.output
    assert says in result.stderr
    assert not cached(tmp_path).exists() and leftovers(tmp_path) == [] and pins(catalog) == {}
    assert run_cli("-C", str(catalog), "lock", "--host", "box-8").exit_code == 3 and pins(catalog) == {}


def test_a_redirect_to_plain_http_elsewhere_is_refused(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    port = server.base.rsplit(":", 1)[1]
    server.faults["redirect"] = {"tiny.gguf": f"http://192.0.2.10:{port}/tiny.gguf"}  # never contacted
    result = fetch(catalog)
    assert result.exit_code == 3, result.output
    assert (f"refused the redirect to http://192.0.2.10:{port}/tiny.gguf: plain http is allowed only to loopback"
            in result.stderr)
    assert [e["status"] for e in server.log] == [302], "refused at once: no retry of a policy refusal"
    assert not cached(tmp_path).exists() and pins(catalog) == {}


def test_a_redirect_loop_exits_3_with_a_message(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server)
    server.faults["redirect"] = {"tiny.gguf": "/loop.gguf", "loop.gguf": "/tiny.gguf"}
    result = fetch(catalog)
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert f"more than {net.MAX_REDIRECTS} redirects (a redirect loop?)" in result.stderr
    assert len(server.log) == net.MAX_REDIRECTS + 1


def test_the_final_url_after_redirects_is_pinned(base_catalog, server, tmp_path):
    server.files["moved.gguf"] = BLOB
    catalog = compiled(base_catalog, server, sha=None)
    server.faults["redirect"] = {"tiny.gguf": "/moved.gguf"}
    result = fetch(catalog)
    assert result.exit_code == 0, result.output
    pin = pins(catalog)["small-chat"]
    assert (pin["url"], pin["final_url"], pin["sha256"]) == (server.url("tiny.gguf"), server.url("moved.gguf"), SHA)
    assert fetch(catalog).exit_code == 0 and pins(catalog)["small-chat"] == pin, "a cached fetch keeps the pin"


def test_a_slow_loris_server_ends_at_the_deadline(base_catalog, server, tmp_path, monkeypatch):
    catalog = compiled(base_catalog, server)
    monkeypatch.setenv("HOSTFIT_DOWNLOAD_DEADLINE", "1.5")
    server.faults.update(trickle=0.1, trickle_for=4.0)  # 10 bytes/s, then it hangs up
    started = time.monotonic()
    result = fetch(catalog)
    took = time.monotonic() - started
    assert result.exit_code == 3 and "gave up after the 1.5 s deadline" in result.stderr, result.output
    assert took < 4.0, f"took {took:.1f} s"
    assert cached(tmp_path).exists() is False and pins(catalog) == {}


def test_a_trickle_below_the_minimum_speed_is_retried_then_fails(base_catalog, server, tmp_path, monkeypatch):
    catalog = compiled(base_catalog, server)
    monkeypatch.setattr(downloader, "SPEED_WINDOW", 0.3)
    server.faults.update(trickle=0.01, trickle_for=4.0)  # ~100 bytes/s, far below 32 KiB/s
    started = time.monotonic()
    result = fetch(catalog)
    assert result.exit_code == 3 and "slower than 32,768 bytes/s for 0.3 s" in result.stderr, result.output
    assert len(server.log) == downloader.ATTEMPTS and time.monotonic() - started < 4.0
    assert server.log[0]["range"] is None and all(e["range"] for e in server.log[1:]), "each retry resumes"


def test_attempts_are_capped_across_mirrors(base_catalog, server, tmp_path):
    mirrors = [server.url(f"missing-{i}.gguf") for i in range(1000)]
    add_layer(base_catalog, "20-served.yaml",
              "models:\n  small-chat:\n    artifact: " + json.dumps(
                  {"url": server.url("missing.gguf"), "file": "tiny.gguf", "sha256": SHA, "mirrors": mirrors})
              + "\nroles:\n  chat: {prefer: [small-chat]}\n")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    result = fetch(base_catalog)
    assert result.exit_code == 3 and f"gave up after {downloader.MAX_REQUESTS} requests" in result.stderr
    assert len(server.log) == downloader.MAX_REQUESTS, "1,001 failing URLs cost 20 requests, not 1,001"
    server.log.clear()
    server.faults["fail"] = 10_000  # 5xx: retried, but still within the cap
    assert fetch(base_catalog).exit_code == 3 and len(server.log) == downloader.MAX_REQUESTS


def test_credentials_in_urls_never_reach_the_lock_or_the_output(base_catalog, server, tmp_path):
    secret_url = server.url("tiny.gguf").replace("http://", "http://admin:S3CRET@") + "?token=T0KEN"
    add_layer(base_catalog, "20-served.yaml",
              "models:\n  small-chat:\n    artifact: " + json.dumps({"url": secret_url, "file": "tiny.gguf"})
              + "\nroles:\n  chat: {prefer: [small-chat]}\n")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    result = fetch(base_catalog, "--json")
    assert result.exit_code == 0, result.output
    lock = (base_catalog / "out" / "box-8" / "models.lock").read_text()
    assert "S3CRET" not in lock and "T0KEN" not in lock and "S3CRET" not in result.output
    assert pins(base_catalog)["small-chat"]["url"] == server.url("tiny.gguf").replace("http://", "http://***@") \
        + "?token=***"
    assert fetch(base_catalog).exit_code == 0 and len(server.log) == 1, "the redacted pin still matches"
    cached(tmp_path).unlink()
    (tmp_path / "cache" / "manifest.json").unlink()
    server.faults["fail"] = 100
    failed = fetch(base_catalog)
    assert failed.exit_code == 3 and "S3CRET" not in failed.output and "T0KEN" not in failed.output


def with_memory(catalog: Path, need_mb: int) -> None:
    """Make small-chat's estimate (models.json's memory_mb) need_mb, then rebuild: a declared
    memory.ram_mb cannot lower it, so the model is made tiny (1 MiB of weights rounded up, 1 MiB
    of KV cache rounded up, a compute buffer of a few bytes that rounds up with the runtime
    overhead) and the runtime overhead is the rest."""
    add_layer(catalog, "30-memory.yaml",
              "models:\n  small-chat:\n    params_b: 0.000001\n    context_window: 1\n"
              "    arch: {layers: 1, kv_heads: 1, head_dim: 1, heads: 1, hidden_size: 1, vocab_size: 1}\n"
              f"selection: {{runtime_overhead_mb: {need_mb - 3}}}\n")
    result = run_cli("-C", str(catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output


def test_an_endless_body_of_unknown_size_is_cut_at_the_memory_ceiling(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server, sha=None, size=None)  # no size_bytes (like the shipped catalog)
    with_memory(catalog, 8)  # memory_mb 8: the weights file is smaller, the ceiling is 2 x 8 MiB
    server.faults["endless"] = 256 << 20  # no Content-Length; before the ceiling the client read all of it
    result = fetch(catalog)
    assert result.exit_code == 3, result.output
    assert "the body goes on past 16,777,216 bytes, the ceiling for an artifact of unknown size" in result.stderr
    assert len(server.log) == 1 and server.log[0]["sent"] < 64 << 20, "the client hung up, it did not read on"
    assert not cached(tmp_path).exists() and leftovers(tmp_path) == [] and pins(catalog) == {}


def test_an_unsized_artifact_under_its_ceiling_downloads(base_catalog, server, tmp_path):
    catalog = compiled(base_catalog, server, sha=None, size=None)
    with_memory(catalog, 3)  # 6 MiB ceiling, the 3 MiB file fits (3 MiB: the smallest need, 1 MiB a term)
    assert fetch(catalog).exit_code == 0
    assert cached(tmp_path).read_bytes() == BLOB


def test_a_content_length_over_the_ceiling_is_refused_before_writing(base_catalog, server, tmp_path, monkeypatch):
    catalog = compiled(base_catalog, server, sha=None, size=None)
    monkeypatch.setenv("HOSTFIT_MAX_UNSIZED", str(1 << 20))  # overrides the memory-derived ceiling
    result = fetch(catalog)
    assert result.exit_code == 3, result.output
    assert f"the server offers {len(BLOB):,} bytes, over the 1,048,576-byte ceiling" in result.stderr
    assert not cached(tmp_path).exists() and leftovers(tmp_path) == [] and pins(catalog) == {}


def test_the_ceiling_comes_from_memory_mb_else_a_default(base_catalog, server, monkeypatch):
    from compiler.executor.fetch import plan

    catalog = compiled(base_catalog, server, sha=None, size=None)
    with_memory(catalog, 8)
    [artifact] = plan(catalog / "out" / "box-8").artifacts
    assert artifact.memory_mb == 8 and downloader.size_ceiling(artifact.memory_mb) == 16 << 20
    assert downloader.size_ceiling(None) == downloader.CEILING_DEFAULT == 16 << 30
    monkeypatch.setenv("HOSTFIT_MAX_UNSIZED", "5000")
    assert downloader.size_ceiling(8) == downloader.size_ceiling(None) == 5000
    monkeypatch.setenv("HOSTFIT_MAX_UNSIZED", "lots")
    with pytest.raises(downloader.UsageError):
        downloader.size_ceiling(None)


@pytest.mark.parametrize("variable", ["HOSTFIT_BACKOFF_BASE", "HOSTFIT_MIN_SPEED", "HOSTFIT_DOWNLOAD_DEADLINE"])
def test_a_download_setting_that_is_not_a_positive_number_is_a_usage_error(base_catalog, server, monkeypatch,
                                                                          variable):
    catalog = compiled(base_catalog, server)
    server.faults["fail"] = 1  # one 500, so the backoff before the retry is computed too
    monkeypatch.setenv(variable, "abc")
    result = fetch(catalog)
    assert result.exit_code == 2 and f"{variable}='abc': expected a positive number" in result.stderr
