"""Discovery from a stand-in Ollama on 127.0.0.1 (several models: an unusual quantization, one whose
show fails, a cloud model), no server at all, and a server that hangs; and `hostfit models`."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import yaml

from compiler.discover import ollama

from conftest import run_cli
from ollama_server import FakeOllama

LLAMA_SHOW = {"details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
              "model_info": {"general.architecture": "llama", "general.parameter_count": 8030261248,
                             "llama.context_length": 131072, "llama.block_count": 32,
                             "llama.attention.head_count_kv": 8, "llama.attention.head_count": 32,
                             "llama.embedding_length": 4096},
              "capabilities": ["completion", "tools"]}
INSTALLED = {
    "llama3.1:8b": {"size": 4920753328, "details": {"quantization_level": "Q4_K_M"}, "show": LLAMA_SHOW},
    "qwen3:4b-iq3": {"size": 1900000000, "show": {
        "details": {"quantization_level": "IQ3_XXS"},
        "model_info": {"general.architecture": "qwen3", "general.parameter_count": 4022468096,
                       "qwen3.context_length": 40960, "qwen3.block_count": 36}, "capabilities": ["completion"]}},
    "broken:latest": {"size": 1000, "details": {"quantization_level": "Q8_0"}, "show": None},
    "gpt-oss:120b-cloud": {"size": 384, "remote_host": "https://ollama.com:443", "show": {
        "details": {}, "model_info": {}, "capabilities": ["completion", "tools"]}},
    "nomic-embed-text:latest": {"size": 274302450, "show": {
        "details": {"quantization_level": "F16"},
        "model_info": {"general.architecture": "nomic-bert", "general.parameter_count": 136727040,
                       "nomic-bert.context_length": 2048}, "capabilities": ["embedding"]}},
}


@pytest.fixture
def fake():
    server = FakeOllama(installed=INSTALLED).start()
    yield server
    server.stop()


def test_discovery_reads_tags_and_show(fake):
    found = ollama.discover("box-8", fake.base, {"llama3.1:8b": "big-chat"})
    assert sorted(found.models) == ["big-chat", "broken:latest", "gpt-oss:120b-cloud", "nomic-embed-text:latest",
                                    "qwen3:4b-iq3"]
    llama = found.models["big-chat"]
    assert llama["ollama"] == {"name": "llama3.1:8b"} and llama["installed_on"] == ["box-8"]
    assert (llama["params_b"], llama["context_window"], llama["quantization"]) == (8.0303, 131072, "Q4_K_M")
    assert llama["arch"] == {"layers": 32, "heads": 32, "kv_heads": 8, "hidden_size": 4096, "head_dim": 128}
    assert llama["capabilities"] == {"tools": True, "vision": False}
    assert found.models["qwen3:4b-iq3"]["quantization"] == "IQ3_XXS"
    assert found.models["gpt-oss:120b-cloud"]["provider"] == "ollama-cloud"
    assert "artifact" not in found.models["gpt-oss:120b-cloud"]
    assert found.models["nomic-embed-text:latest"]["workloads"] == ["embedding"]
    assert found.models["broken:latest"]["quantization"] == "Q8_0", "a failing show falls back to the tags"
    assert found.warnings == ["ollama: no details for broken:latest (HTTPStatusError); using what /api/tags says"]


def test_no_server_is_a_warning():
    found = ollama.discover("box-8", "http://127.0.0.1:9")
    assert found.models == {} and "no Ollama at http://127.0.0.1:9" in found.warnings[0]


def test_a_hanging_server_times_out_quickly():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, never answers
    try:
        found = ollama.discover("box-8", f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        assert found.models == {} and "did not answer within 0.5 s" in found.warnings[0]
    finally:
        listener.close()


def test_discover_write_and_build_with_discover(base_catalog: Path, fake, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake.base)
    monkeypatch.setenv("HOST", "box-8")
    add = base_catalog / "sources" / "00-models.yaml"
    add.write_text(add.read_text().replace("  big-chat:\n", "  big-chat:\n    ollama: {name: \"llama3.1:8b\"}\n"))
    result = run_cli("-C", str(base_catalog), "discover", "--write")
    assert result.exit_code == 0, result.output
    assert "big-chat  (llama3.1:8b, ollama, 8.0303B, Q4_K_M, ctx 131072)" in result.stdout
    written = yaml.safe_load((base_catalog / "sources" / "discovered" / "box-8.yaml").read_text())
    assert written["models"]["big-chat"]["installed_on"] == ["box-8"]
    listing = run_cli("-C", str(base_catalog), "models", "--host", "box-8")
    row = next(line for line in listing.stdout.splitlines() if "big-chat" in line)
    assert row.rstrip().endswith("yes"), "installed models are marked"
    built = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert built.exit_code == 0, built.output
    compiled = (base_catalog / "out" / "box-8" / "models.json").read_text()
    assert '"installed_on": [\n        "box-8"' in compiled, "discovered facts reach the compiled output"


def test_build_discover_survives_a_missing_ollama(base_catalog: Path, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    result = run_cli("-C", str(base_catalog), "build", "--discover")
    assert result.exit_code == 0 and "warning[W500]: no Ollama at http://127.0.0.1:9" in result.stderr


def test_models_filters_and_aliases(base_catalog: Path):
    result = run_cli("-C", str(base_catalog), "models", "--host", "box-8", "--provider", "openai", "--json")
    import json
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["cloud-mini"] and rows[0]["fit"] == "cloud"
    embed = run_cli("-C", str(base_catalog), "models", "--workload", "summarization", "--host", "box-32")
    assert "small-chat" in embed.stdout and "big-chat" not in embed.stdout
    aliases = run_cli("-C", str(base_catalog), "models", "--show-aliases")
    assert aliases.stdout.strip() == "tiny -> small-chat"


def test_a_discovering_build_is_never_reused_by_a_plain_one(base_catalog: Path, fake, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake.base)
    assert run_cli("-C", str(base_catalog), "build").exit_code == 0
    local = base_catalog / "out" / "local" / "models.json"
    plain = local.read_bytes()
    assert run_cli("-C", str(base_catalog), "build", "--discover").exit_code == 0
    assert local.read_bytes() != plain, "the discovered models are in"
    again = run_cli("-C", str(base_catalog), "build")
    assert again.exit_code == 0 and local.read_bytes() == plain, "a plain build compiles without them again"
