"""Every network call outside the artifact downloads (test_fetch.py) is bounded too: Ollama's pull
stream line by line, discovery and ingest by a total deadline and a body size; and a password in
OLLAMA_HOST or a catalog URL reaches no output. Servers on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from compiler.discover import ingest, ollama
from compiler.executor import loaders
from compiler.net import redact_url

from conftest import add_layer, run_cli, tree_bytes
from jsonserver import JsonServer
from ollama_server import FakeOllama

SETTINGS = loaders.Settings(context=128, threads=1, gpu_layers=0)


@pytest.fixture
def fake():
    server = FakeOllama(installed={"llama3.1:8b": {"size": 4920753328, "show": {"model_info": {}}}}).start()
    yield server
    server.stop()


def with_password(base: str) -> str:
    return base.replace("http://", "http://admin:S3CRET@")


def test_a_pull_stream_without_newlines_fails_at_the_line_bound(fake, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake.base)
    fake.pull_unbroken = 64 << 20
    with pytest.raises(loaders.LoadFailure, match="a streamed line grew over 1,048,576 bytes without a newline"):
        loaders.ollama_load("llama3.1:8b", SETTINGS, "hi")
    assert fake.pull_sent < 16 << 20, f"the client read {fake.pull_sent:,} bytes of one line before giving up"


def test_a_slow_ollama_ends_at_the_deadline(fake, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake.base)
    monkeypatch.setenv("HOSTFIT_OLLAMA_AUTO_START", "0")
    monkeypatch.setattr(loaders, "OLLAMA_ASK", 0.5, raising=False)
    fake.trickle = 0.05  # 20 bytes/s: every read returns in time, the whole never does
    started = time.monotonic()
    with pytest.raises(loaders.RuntimeFailure, match="no Ollama server answers"):
        loaders.ollama_load("llama3.1:8b", SETTINGS, "hi")
    assert time.monotonic() - started < 3.0


def test_discovery_of_a_slow_loris_ollama_ends_at_its_promised_deadline(fake):
    fake.trickle = 0.05
    started = time.monotonic()
    found = ollama.discover("box-8", fake.base, timeout=0.5)
    took = time.monotonic() - started
    assert found.models == {} and "did not answer within 0.5 s" in found.warnings[0]
    assert took < 2.0, f"took {took:.1f} s for a 0.5 s deadline"


def test_ingest_bounds_time_and_body_size(monkeypatch):
    server = JsonServer({"/models": lambda query: (200, {"data": [{"id": f"m-{i}"} for i in range(200)]}, {})})
    try:
        monkeypatch.setenv("OPENROUTER_BASE_URL", server.base.replace("http://", "http://user:S3CRET@"))
        monkeypatch.setattr(ingest, "MAX_BODY", 1000, raising=False)
        harvest = ingest.from_openrouter(refresh=True)
        assert harvest.candidates == [] and "over the 1,000-byte limit" in harvest.warnings[0]
        assert "S3CRET" not in harvest.warnings[0] and "http://***@127.0.0.1" in harvest.warnings[0]
        monkeypatch.setattr(ingest, "MAX_BODY", 1 << 20, raising=False)
        monkeypatch.setattr(ingest, "TIMEOUT", 0.5)
        server.trickle = 0.05
        started = time.monotonic()
        harvest = ingest.from_openrouter(refresh=True)
        assert harvest.candidates == [] and "did not answer within 0.5 s" in harvest.warnings[0]
        assert time.monotonic() - started < 2.0
    finally:
        server.stop()


def test_a_password_in_ollama_host_reaches_no_output(base_catalog: Path, fake, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", with_password(fake.base))
    built = run_cli("-C", str(base_catalog), "build", "--discover")
    assert built.exit_code == 0, built.output
    written = tree_bytes(base_catalog / "out")
    assert any(b"<ollama at http://***@127.0.0.1" in body for body in written.values()), "named, redacted"
    assert [name for name, body in written.items() if b"S3CRET" in body] == []
    listed = run_cli("-C", str(base_catalog), "discover")
    assert listed.exit_code == 0 and "llama3.1:8b" in listed.stdout and "S3CRET" not in listed.output


def test_a_password_in_ollama_host_is_not_in_messages(base_catalog: Path, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://admin:S3CRET@127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HOSTFIT_OLLAMA_AUTO_START", "0")
    discovered = run_cli("-C", str(base_catalog), "discover")
    assert "no Ollama at http://***@127.0.0.1:9" in discovered.stderr and "S3CRET" not in discovered.output
    with pytest.raises(loaders.RuntimeFailure) as failure:
        loaders.ollama_load("llama3.1:8b", SETTINGS, "hi")
    assert "http://***@127.0.0.1:9" in str(failure.value) and "S3CRET" not in str(failure.value)


@pytest.mark.parametrize("url, shown", [
    ("http://admin:S3CRET@127.0.0.1:11434", "http://***@127.0.0.1:11434"),
    ("admin:S3CRET@127.0.0.1:11434", "***@127.0.0.1:11434"),  # OLLAMA_HOST without a scheme
    ("https://cdn.example/m.gguf?X-Amz-Signature=abc&X-Amz-Credential=k&part=2",
     "https://cdn.example/m.gguf?X-Amz-Signature=***&X-Amz-Credential=***&part=2"),
    ("https://host.example/m.gguf", "https://host.example/m.gguf"),
    ("http://admin:S3CRET@[broken", "http://***@[broken"),  # redacted even when it does not parse
    # the review's misses: a fragment, a ;parameter, hmac=, pwd=; names are matched case-insensitively
    ("https://h.example/m.gguf#token=S3CRET", "https://h.example/m.gguf#token=***"),
    ("https://h.example/m.gguf#/cb?access_token=S3CRET&state=1",
     "https://h.example/m.gguf#/cb?access_token=***&state=1"),
    ("https://h.example/m.gguf;token=S3CRET?part=2", "https://h.example/m.gguf;token=***?part=2"),
    ("https://h.example/d;Part=1;AUTH=S3CRET/m.gguf", "https://h.example/d;Part=1;AUTH=***/m.gguf"),
    ("https://h.example/m.gguf?hmac=S3CRET;pwd=S3CRET&a=b%20c+d",
     "https://h.example/m.gguf?hmac=***;pwd=***&a=b%20c+d"),
    ("https://h.example/m.gguf?sessionid=S3CRET&jwt=S3CRET", "https://h.example/m.gguf?sessionid=***&jwt=***"),
    ("https://h.example/m.gguf?Password=S3CRET&apikey=S3CRET&sig=S3CRET&x=1",
     "https://h.example/m.gguf?Password=***&apikey=***&sig=***&x=1"),
    ("https://h.example/m.gguf?%74oken=S3CRET", "https://h.example/m.gguf?%74oken=***")])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert json.dumps(redact_url(url)).count("S3CRET") == 0


def test_a_password_in_a_refused_catalog_url_is_not_printed(base_catalog: Path):
    add_layer(base_catalog, "20-secret.yaml", "models:\n  small-chat:\n    artifact: "
              "{url: 'http://admin:S3CRET@mirror.example/m.gguf', file: m.gguf}\n")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1 and "error[E205]: download URL 'http://***@mirror.example/m.gguf'" in result.output
    assert "S3CRET" not in result.output


def test_pull_progress_survives_odd_events_and_stays_bounded():
    said: list[str] = []
    progress = loaders._pull_progress(said.append, "m")
    for event in ({"status": "pulling", "total": "100", "completed": 5}, {"status": ["x"], "total": 0},
                  {"status": "pulling", "total": 100, "completed": 1e400}, {"status": "s" * 10_000}):
        progress(event)
    for i in range(5000):
        progress({"status": f"layer {i}"})
    assert len(said) == loaders.MAX_STATUSES and max(map(len, said)) <= 250


# ------------------------------------------- a bad Ollama URL or answer is a message, never a traceback

@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:11434\n", "http://127.0.0.1:1\nX: y", "ftp://x"])
def test_an_unusable_ollama_url_is_a_usage_error(base_catalog: Path, monkeypatch, url):
    monkeypatch.setenv("HOSTFIT_OLLAMA_AUTO_START", "0")
    result = run_cli("-C", str(base_catalog), "discover", "--ollama", url)
    assert result.exit_code == 2 and "--ollama:" in result.stderr and "is not a usable server URL" in result.stderr
    monkeypatch.setenv("OLLAMA_HOST", url.replace("http://", "http://admin:S3CRET@"))
    for args in (("discover",), ("build", "--discover")):
        result = run_cli("-C", str(base_catalog), *args)
        assert result.exit_code == 2 and "OLLAMA_HOST:" in result.stderr, (args, result.output, result.exception)
        assert "S3CRET" not in result.output
    with pytest.raises(loaders.UsageError, match="OLLAMA_HOST: .* is not a usable server URL"):
        loaders.ollama_load("llama3.1:8b", SETTINGS, "hi")


DEEP = b"[" * 200_000 + b"]" * 200_000  # valid JSON, 640 KB, nested past the interpreter's recursion limit


@pytest.mark.parametrize("answer, says", [
    (b'{"models": ' + DEEP + b"}", "nested too deeply"),
    (DEEP, "nested too deeply"),
    (b'{"models": 5}', "not a list of objects"),
    (b'{"models": "abc"}', "not a list of objects"),
    (b"[1, 2]", "not a JSON object"),
    (b"\xff{", "not JSON")])
def test_a_malformed_api_tags_answer_is_a_warning(answer, says):
    server = JsonServer({"/api/tags": lambda query: (200, answer, {"Content-Type": "application/json"})})
    try:
        found = ollama.discover("box-8", server.base)
    finally:
        server.stop()
    assert found.models == {} and len(found.warnings) == 1 and says in found.warnings[0], found.warnings


def test_a_deeply_nested_ollama_answer_fails_the_load_cleanly(fake, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake.base)
    real = loaders._ask

    def ask(client, method, path, *args, **kwargs):
        status, body = real(client, method, path, *args, **kwargs)
        return (status, DEEP) if path == "/api/ps" else (status, body)

    monkeypatch.setattr(loaders, "_ask", ask)
    with pytest.raises(loaders.LoadFailure, match="nested too deeply"):
        loaders.ollama_load("llama3.1:8b", SETTINGS, "hi")


def test_a_deeply_nested_index_answer_is_a_warning(monkeypatch):
    server = JsonServer({"/models": lambda query: (200, DEEP, {})})
    try:
        monkeypatch.setenv("OPENROUTER_BASE_URL", server.base)
        harvest = ingest.from_openrouter(refresh=True)
    finally:
        server.stop()
    assert harvest.candidates == [] and "nested too deeply" in harvest.warnings[0], harvest.warnings
