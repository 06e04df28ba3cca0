"""Loading: a real tiny GGUF through llama-cpp-python end to end (served over HTTP, compiled,
fetched, locked, loaded), the fallback chain on a load failure, and Ollama through its HTTP API."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import add_layer, run_cli
from httpserver import FileServer
from ollama_server import FakeOllama
from tinygguf import write_tiny_llama


def llama_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install the llama extra: the end-to-end test may not be skipped there")
        return False
    return True


@pytest.fixture
def served_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")
    blob = write_tiny_llama(tmp_path / "tiny-llama.gguf").read_bytes()
    server = FileServer().start()
    server.files["tiny-llama.gguf"] = blob
    server.files["broken.gguf"] = b"GGUF but not really" * 100
    yield server, blob
    server.stop()


def catalog_with(base_catalog: Path, server: FileServer, prefer: list[str]) -> Path:
    add_layer(base_catalog, "20-tiny.yaml", f"""models:
  tiny-llama:
    provider: local
    workloads: [chat]
    params_b: 0.0005
    quantization: F32
    context_window: 256
    arch: {{layers: 2, kv_heads: 2, head_dim: 16}}
    ollama: {{name: "tiny-llama:latest"}}
    artifact: {{url: "{server.url('tiny-llama.gguf')}", file: tiny-llama.gguf}}
  broken-model:
    provider: local
    workloads: [chat]
    params_b: 0.0005
    context_window: 256
    ollama: {{name: "broken:latest"}}
    artifact: {{url: "{server.url('broken.gguf')}", file: broken.gguf}}
roles:
  chat: {{prefer: {json.dumps(prefer)}, requires: {{context_min: 128}}}}
  summarization: {{prefer: [tiny-llama]}}
""")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output
    return base_catalog


def test_tiny_gguf_end_to_end_with_llama_cpp(base_catalog, served_tiny, tmp_path):
    if not llama_available():
        pytest.skip("llama-cpp-python is not installed (pip install 'hostfit[llama]')")
    server, blob = served_tiny
    catalog = catalog_with(base_catalog, server, ["tiny-llama"])
    fetched = run_cli("-C", str(catalog), "fetch", "--host", "box-8")
    assert fetched.exit_code == 0, fetched.output
    assert run_cli("-C", str(catalog), "lock", "--host", "box-8").exit_code == 0
    lock = json.loads((catalog / "out" / "box-8" / "models.lock").read_text())
    assert lock["artifacts"]["tiny-llama"]["sha256"] == hashlib.sha256(blob).hexdigest()
    result = run_cli("-C", str(catalog), "load", "chat", "--host", "box-8", "--prompt", "hello world")
    assert result.exit_code == 0, result.output
    assert "chat: tiny-llama loaded with llamacpp in " in result.stdout and "first token after" in result.stdout
    from compiler import usage

    [measured] = usage.Store().measurements(host="box-8")  # the load is recorded for `hostfit stats`
    assert (measured["model"], measured["runtime"], measured["source"]) == ("tiny-llama", "llamacpp", "load")
    assert measured["load_s"] > 0 and measured["ttft_s"] > 0 and measured["peak_rss_mib"] > 0
    assert len([e for e in server.log if e["path"] == "/tiny-llama.gguf"]) == 1, "fetched once, then cached"


def test_a_load_failure_falls_back_to_the_next_model(base_catalog, served_tiny):
    if not llama_available():
        pytest.skip("llama-cpp-python is not installed (pip install 'hostfit[llama]')")
    server, _ = served_tiny
    catalog = catalog_with(base_catalog, server, ["broken-model", "tiny-llama"])
    result = run_cli("-C", str(catalog), "load", "chat", "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert "chat: broken-model failed: llama.cpp could not load broken.gguf" in result.stderr
    assert "chat: trying fallback tiny-llama" in result.stderr
    assert "chat: tiny-llama loaded with llamacpp" in result.stdout


def test_ollama_pull_preload_and_confirm(base_catalog, served_tiny, monkeypatch):
    server, _ = served_tiny
    fake = FakeOllama(failing={"broken:latest"}).start()
    try:
        monkeypatch.setenv("OLLAMA_HOST", fake.base)
        catalog = catalog_with(base_catalog, server, ["broken-model", "tiny-llama"])
        result = run_cli("-C", str(catalog), "load", "chat", "--host", "box-8", "--backend", "ollama")
        assert result.exit_code == 0, result.output
        assert "broken-model failed: ollama pull broken:latest: pull model manifest" in result.stderr
        assert "chat: tiny-llama loaded with ollama in 0.120 s" in result.stdout
        assert "ollama pull tiny-llama:latest: pulling 0123abcd 100%" in result.stderr
        assert "ollama pull tiny-llama:latest: success" in result.stderr
        generate = [body for path, body in fake.requests if path == "/api/generate"]
        assert generate == [{"model": "tiny-llama:latest", "prompt": "Say hello in five words.", "stream": False,
                             "keep_alive": "30m", "options": {"num_ctx": 128, "num_predict": 8, "temperature": 0}}]
        assert ("/api/ps", {}) in fake.requests and fake.loaded == {"tiny-llama:latest": "30m"}
        assert server.log == [], "the Ollama backend pulls through Ollama, not through the cache"
    finally:
        fake.stop()


def test_ollama_is_never_started_without_consent(base_catalog, served_tiny, monkeypatch):
    server, _ = served_tiny
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HOSTFIT_OLLAMA_AUTO_START", "0")
    monkeypatch.setenv("PATH", "")  # and there is no ollama to start anyway
    catalog = catalog_with(base_catalog, server, ["tiny-llama"])
    result = run_cli("-C", str(catalog), "load", "chat", "--host", "box-8", "--backend", "ollama")
    assert result.exit_code == 3
    assert "no Ollama server answers at http://127.0.0.1:9" in result.stderr and "HOSTFIT_OLLAMA_AUTO_START=1" \
        in result.stderr
