"""The facts layer: `inspect --write` and `lock` record a GGUF header's facts as sources/facts/<model>.yaml,
which the pipeline reads below sources/*.yaml (hand-written values win; W290 when they disagree).

The GGUFs are written with gguf's GGUFWriter (test_inspect's writer: real geometry in the keys, small
tensors) and served from 127.0.0.1; the expected values are what those files hold, counted independently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import add_layer, run_cli, tree_bytes
from httpserver import FileServer

from compiler import facts, gguf_header

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

from test_inspect import QWEN, QWEN_PARAMETERS, qwen_tensors, write_gguf  # noqa: E402  (after the skips)

SMALL = "small-q4_k_m.gguf"  # the base catalog's small-chat artifact file


@pytest.fixture(scope="module")
def qwen_file(tmp_path_factory) -> Path:
    """A Qwen2.5-0.5B-shaped header with the name of small-chat's artifact."""
    return write_gguf(tmp_path_factory.mktemp("gguf") / SMALL, "qwen2", QWEN, 151936, qwen_tensors(), 7)


@pytest.fixture
def server():
    srv = FileServer().start()
    yield srv
    srv.stop()


def facts_file(catalog: Path, model_id: str) -> Path:
    return catalog / "sources" / "facts" / f"{model_id}.yaml"


def compiled_model(catalog: Path, model_id: str, host: str = "box-8") -> dict:
    return json.loads((catalog / "out" / host / "models.json").read_text())["models"][model_id]


def test_write_records_the_header_facts_and_the_build_reads_them(base_catalog: Path, qwen_file: Path):
    (base_catalog / "sources" / "05-geometry.yaml").unlink()  # small-chat as hand-written without a shape
    result = run_cli("-C", str(base_catalog), "inspect", str(qwen_file), "--write")
    assert result.exit_code == 0, result.output
    path = facts_file(base_catalog, "small-chat")
    assert "wrote sources/facts/small-chat.yaml (small-chat)" in result.stderr
    layer = yaml.safe_load(path.read_text())
    assert (layer["schema_version"], layer["kind"]) == (2, "catalog")
    entry = layer["models"]["small-chat"]
    assert entry["params_b"] == QWEN_PARAMETERS / 1e9
    assert (entry["context_window"], entry["quantization"]) == (QWEN["context_length"], "Q8_0")
    assert entry["arch"] == {"layers": 24, "heads": 14, "kv_heads": 2, "head_dim": 896 // 14, "hidden_size": 896,
                             "vocab_size": 151936}
    assert entry["artifact"] == {"format": "gguf", "size_bytes": qwen_file.stat().st_size}
    # the tensor mix is in the comment for the reviewer: Q8_0 holds 24 x 128 x 896 of the parameters
    assert f"Q8_0 {100 * 24 * 128 * 896 / QWEN_PARAMETERS:.1f}%" in path.read_text()

    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output
    model = compiled_model(base_catalog, "small-chat")
    # the facts fill what 00-models.yaml leaves out ...
    assert model["arch"] == entry["arch"] and model["artifact"]["size_bytes"] == qwen_file.stat().st_size
    assert model["memory_method"] == "gguf"
    # ... and never replace what it says
    assert (model["params_b"], model["context_window"], model["quantization"]) == (1.0, 8192, "Q4_K_M")


def test_write_again_is_a_no_op_and_a_served_copy_writes_the_same_bytes(base_catalog: Path, qwen_file: Path,
                                                                       server: FileServer):
    assert run_cli("-C", str(base_catalog), "inspect", str(qwen_file), "--write").exit_code == 0
    path = facts_file(base_catalog, "small-chat")
    first, stamp = path.read_bytes(), path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))  # an untouched file keeps this older time
    again = run_cli("-C", str(base_catalog), "inspect", str(qwen_file), "--write")
    assert again.exit_code == 0 and "unchanged: sources/facts/small-chat.yaml" in again.stderr
    assert path.read_bytes() == first and path.stat().st_mtime_ns == stamp - 10**9
    path.unlink()
    server.files[SMALL] = qwen_file.read_bytes()
    served = run_cli("-C", str(base_catalog), "inspect", server.url(SMALL) + "?token=abc", "--write")
    assert served.exit_code == 0, served.output
    assert path.read_bytes() == first  # the URL matched by its file name; no path, URL or date in the bytes
    assert sum(entry["sent"] for entry in server.log) < qwen_file.stat().st_size


def test_the_layer_is_below_the_hand_written_files_and_a_disagreement_is_a_warning(base_catalog: Path):
    # big-chat declares its shape (layers 32 ... vocab_size 128256) and params_b 8.0 in sources/00-models.yaml
    facts_dir = base_catalog / "sources" / "facts"
    facts_dir.mkdir()
    add_layer(base_catalog, "big-chat.yaml", "models:\n  big-chat:\n    params_b: 8.03\n"
              "    arch: {layers: 32, kv_heads: 8, head_dim: 128, heads: 32, hidden_size: 4096, vocab_size: 128256,\n"
              "           sliding_window: 4096, sliding_window_layers: 0}\n",
              folder="sources/facts")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-32")
    assert result.exit_code == 0, result.output
    assert "W290" not in result.stderr  # 8.0 against 8.03 is within a few percent
    model = compiled_model(base_catalog, "big-chat", "box-32")
    assert model["arch"] == {"layers": 32, "kv_heads": 8, "head_dim": 128, "heads": 32, "hidden_size": 4096,
                             "vocab_size": 128256, "sliding_window": 4096, "sliding_window_layers": 0}
    assert model["params_b"] == 8.0
    explain = json.loads((base_catalog / "out" / "box-32" / "explain.json").read_text())
    layers = [entry["layer"] for entry in explain["layers"]]
    assert layers.index("facts") < layers.index("sources")
    # what only the header gives comes from the facts; what both give, from the hand-written file
    assert explain["provenance"]["/models/big-chat/arch/sliding_window"][-1]["file"] == "sources/facts/big-chat.yaml"
    assert explain["provenance"]["/models/big-chat/arch/layers"][-1]["file"] == "sources/00-models.yaml"

    add_layer(base_catalog, "big-chat.yaml", "models:\n  big-chat:\n    arch: {layers: 30, kv_heads: 8}\n",
              folder="sources/facts")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-32")
    assert result.exit_code == 0, result.output
    models_yaml = (base_catalog / "sources" / "00-models.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(models_yaml, 1) if "layers: 32" in text)
    warning = next(text for text in result.stderr.splitlines() if "W290" in text)
    assert warning.startswith(f"sources/00-models.yaml:{line}:")
    assert "arch.layers is 32 here but 30 in its GGUF header (sources/facts/big-chat.yaml)" in warning
    assert compiled_model(base_catalog, "big-chat", "box-32")["arch"]["layers"] == 32  # the hand-written value


def test_facts_of_a_model_no_catalog_defines_are_left_out_with_a_warning(base_catalog: Path):
    (base_catalog / "sources" / "facts").mkdir()
    add_layer(base_catalog, "gone.yaml", "models:\n  gone-model:\n    params_b: 3.0\n    context_window: 4096\n",
              folder="sources/facts")
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert "sources/facts/gone.yaml:4:3: warning[W291]: facts for 'gone-model'" in result.stderr
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 0 and "W291" in result.stderr
    add_layer(base_catalog, "bad.yaml", "models: {small-chat: {arch: {layers: 0}}}\n",
              folder="sources/facts")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1 and "sources/facts/bad.yaml" in result.stderr


def test_a_changed_facts_file_is_seen_by_the_no_op_build(base_catalog: Path, qwen_file: Path):
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    before = compiled_model(base_catalog, "small-chat")
    assert "size_bytes" not in before["artifact"]
    assert run_cli("-C", str(base_catalog), "inspect", str(qwen_file), "--write").exit_code == 0
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    assert compiled_model(base_catalog, "small-chat")["artifact"]["size_bytes"] == qwen_file.stat().st_size


def test_model_choice_and_bad_files_are_clear_errors_that_write_nothing(base_catalog: Path, qwen_file: Path,
                                                                       tmp_path: Path):
    before = tree_bytes(base_catalog / "sources")
    other = tmp_path / "unknown-name.gguf"
    other.write_bytes(qwen_file.read_bytes())
    result = run_cli("-C", str(base_catalog), "inspect", str(other), "--write")
    assert result.exit_code == 2 and "no catalog model has an artifact named unknown-name.gguf" in result.stderr
    assert "--model ID" in result.stderr
    result = run_cli("-C", str(base_catalog), "inspect", str(other), "--write", "--model", "smal-chat")
    assert result.exit_code == 2 and "'smal-chat'" in result.stderr and "small-chat" in result.stderr
    result = run_cli("-C", str(base_catalog), "inspect", str(other), "--model", "small-chat")
    assert result.exit_code == 2 and "give --write too" in result.stderr
    truncated = tmp_path / SMALL
    truncated.write_bytes(qwen_file.read_bytes()[:5000])
    result = run_cli("-C", str(base_catalog), "inspect", str(truncated), "--write")
    assert result.exit_code == 1 and "E292]" in result.stderr
    not_gguf = tmp_path / "x" / SMALL
    not_gguf.parent.mkdir()
    not_gguf.write_bytes(b"PK\x03\x04" + bytes(100))
    result = run_cli("-C", str(base_catalog), "inspect", str(not_gguf), "--write")
    assert result.exit_code == 1 and "E290]" in result.stderr
    assert tree_bytes(base_catalog / "sources") == before
    # an alias names the model too
    result = run_cli("-C", str(base_catalog), "inspect", str(other), "--write", "--model", "TINY")
    assert result.exit_code == 0 and facts_file(base_catalog, "small-chat").is_file()


def test_lock_records_the_facts_of_the_verified_file(base_catalog: Path, qwen_file: Path, server: FileServer,
                                                     tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")
    server.files[SMALL] = qwen_file.read_bytes()
    add_layer(base_catalog, "20-served.yaml", f"models:\n  small-chat:\n    artifact: {{url: '{server.url(SMALL)}'}}\n"
              "roles:\n  chat: {prefer: [small-chat]}\n")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    result = run_cli("-C", str(base_catalog), "lock", "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert "small-chat: facts written to sources/facts/small-chat.yaml" in result.stderr
    written = facts_file(base_catalog, "small-chat").read_bytes()
    # the same writer as inspect --write: the same bytes
    facts_file(base_catalog, "small-chat").unlink()
    assert run_cli("-C", str(base_catalog), "inspect", str(qwen_file), "--write").exit_code == 0
    assert facts_file(base_catalog, "small-chat").read_bytes() == written
    again = run_cli("-C", str(base_catalog), "lock", "--host", "box-8")
    assert again.exit_code == 0 and "small-chat: facts unchanged in sources/facts/small-chat.yaml" in again.stderr
    # one download (the first lock's HEAD found no published sha256); the pinned file came from the cache
    assert [entry.get("method", "GET") for entry in server.log] == ["HEAD", "GET"]
    # a compile needs neither the file nor the network now
    server.stop()
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    assert compiled_model(base_catalog, "small-chat")["artifact"]["size_bytes"] == qwen_file.stat().st_size


def test_lock_reports_a_header_it_cannot_read_and_still_pins(base_catalog: Path, server: FileServer,
                                                             tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    server.files[SMALL] = b"GGUF" + bytes(4096)  # the magic, then version 0
    add_layer(base_catalog, "20-served.yaml", f"models:\n  small-chat:\n    artifact: {{url: '{server.url(SMALL)}'}}\n"
              "roles:\n  chat: {prefer: [small-chat]}\n")
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-8").exit_code == 0
    result = run_cli("-C", str(base_catalog), "lock", "--host", "box-8")
    assert result.exit_code == 0 and "small-chat: facts not recorded: GGUF version 0" in result.stderr
    assert "Traceback" not in result.output and not (base_catalog / "sources" / "facts").exists()
    assert "small-chat" in json.loads((base_catalog / "out" / "box-8" / "models.lock").read_text())["artifacts"]


# ----------------------------------------------------------------------------- sliding windows, experts

def swa_count(layers: int, period: int) -> int:
    """llama.cpp's set_swa_pattern(period), counted layer by layer: layer i is windowed unless i % period
    is period - 1."""
    return len([i for i in range(layers) if (i + 1) % period != 0])


@pytest.mark.parametrize("arch, layers, window, expected", [
    ("gemma3", 62, 1024, swa_count(62, 6)),  # Gemma 3 27B: 52 local, 10 global
    ("gemma2", 42, None, swa_count(42, 2)),  # no window in the header: llama.cpp's 4096
    ("gpt-oss", 36, 128, 18),
    ("cohere2", 32, 4096, 24),
    ("exaone4", 64, 4096, 48),
    ("exaone4", 30, 4096, 0),  # the 1.2B has no sliding window
    ("phi3", 32, 2047, 0),  # llama.cpp gives Phi-3 a full cache on every layer
    ("qwen2", 28, 32768, 0),  # an architecture llama.cpp never windows
])
def test_sliding_window_layers_follow_llama_cpp(arch, layers, window, expected):
    found, count = facts.sliding_layers(arch, layers, window, None)
    assert count == expected and found == (window or 4096)


def test_a_window_of_zero_turns_the_default_off():
    assert facts.sliding_layers("llama4", 48, None, None) == (8192, 36)  # llama.cpp's chunk when unnamed
    assert facts.sliding_layers("llama4", 48, 0, None) == (None, 0)
    shape = {"architecture": "llama4", "block_count": 48, "sliding_window": 0}
    assert "sliding_window" not in facts.arch_facts(shape)


def test_a_header_pattern_wins_over_the_architecture_default():
    flags = [True, True, True, False] * 6  # Gemma 4 names each layer
    assert facts.sliding_layers("gemma4", 24, 512, flags) == (512, 18)
    assert facts.sliding_layers("gpt-oss", 24, 128, 3) == (128, 16)
    # an architecture the table does not know, with a period: the fewer of llama.cpp's two phases
    assert facts.sliding_layers("newarch", 5, 256, 2) == (256, 2)


def test_a_moe_sliding_window_header_gives_experts_and_active_parameters(tmp_path: Path):
    keys = {"context_length": 131072, "embedding_length": 2880, "block_count": 24, "attention.head_count": 64,
            "attention.head_count_kv": 8, "attention.key_length": 64, "attention.sliding_window": 128,
            "expert_count": 32, "expert_used_count": 4}
    tensors = {"blk.0.ffn_gate_exps.weight": (np.zeros((32, 4, 64), dtype=np.float16), None),
               "blk.0.attn_q.weight": (np.zeros((64, 64), dtype=np.float16), None)}
    path = write_gguf(tmp_path / "gpt-oss-like.gguf", "gpt-oss", keys, 1000, tensors, 1)
    found = gguf_header.parse(path.read_bytes(), complete=True, file_size=path.stat().st_size)
    entry = facts.model_facts(found)
    routed, dense = 32 * 4 * 64, 64 * 64
    assert entry["params_b"] == (routed + dense) / 1e9
    assert entry["arch"]["active_params_b"] == (dense + routed * 4 / 32) / 1e9
    assert (entry["arch"]["experts"], entry["arch"]["experts_used"]) == (32, 4)
    assert (entry["arch"]["sliding_window"], entry["arch"]["sliding_window_layers"]) == (128, 12)
    assert entry["quantization"] == "F16" and entry["context_window"] == 131072


def test_a_shard_of_a_split_gguf_gives_no_parameter_count_or_size(qwen_file: Path):
    found = gguf_header.parse(qwen_file.read_bytes(), complete=True, file_size=qwen_file.stat().st_size)
    entry = facts.model_facts({**found, "split_count": 3})
    assert "params_b" not in entry and "artifact" not in entry and entry["arch"]["layers"] == 24


def test_ollama_model_info_is_read_as_a_header_is():
    from compiler.discover import ollama

    info = {"general.architecture": "gemma3", "general.parameter_count": 27432406640,
            "gemma3.context_length": 131072, "gemma3.block_count": 62, "gemma3.embedding_length": 5376,
            "gemma3.attention.head_count": 32, "gemma3.attention.head_count_kv": 16,
            "gemma3.attention.key_length": 128, "gemma3.attention.sliding_window": 1024,
            "tokenizer.ggml.tokens": None}
    _, model = ollama.facts("gemma3:27b", {"size": 17396936941}, {"model_info": info, "capabilities": ["completion"]},
                            "box", {})
    assert model["arch"] == {"layers": 62, "heads": 32, "kv_heads": 16, "head_dim": 128, "hidden_size": 5376,
                             "sliding_window": 1024, "sliding_window_layers": swa_count(62, 6)}
    assert model["params_b"] == round(27432406640 / 1e9, 4) and model["context_window"] == 131072


def test_write_replaces_a_broken_facts_file_but_not_past_a_broken_catalog(base_catalog: Path, qwen_file: Path):
    (base_catalog / "sources" / "facts").mkdir()
    broken = add_layer(base_catalog, "small-chat.yaml", "models: {small-chat: {arch: {layers: 0}}}\n",
                       folder="sources/facts")
    assert run_cli("-C", str(base_catalog), "validate").exit_code == 1
    result = run_cli("-C", str(base_catalog), "inspect", str(qwen_file), "--write")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(broken.read_text())["models"]["small-chat"]["arch"]["layers"] == 24
    assert run_cli("-C", str(base_catalog), "validate").exit_code == 0
    add_layer(base_catalog, "30-bad.yaml", "models: {small-chat: {params_b: -1}}\n")
    broken.write_bytes(b"")
    result = run_cli("-C", str(base_catalog), "inspect", str(qwen_file), "--write")
    assert result.exit_code == 1 and "sources/30-bad.yaml" in result.stderr and broken.read_bytes() == b""


def test_a_published_active_parameter_figure_is_not_flagged(base_catalog: Path):
    # gpt-oss-20b publishes 3.63B active without the embeddings; the header's count has them
    (base_catalog / "sources" / "facts").mkdir()
    add_layer(base_catalog, "20-moe.yaml", "models:\n  big-chat:\n    arch: {experts: 32, active_params_b: 3.63}\n")
    add_layer(base_catalog, "big-chat.yaml", "models:\n  big-chat:\n    arch: {experts: 32, active_params_b: 4.2}\n",
              folder="sources/facts")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 0 and "W290" not in result.stderr
    add_layer(base_catalog, "big-chat.yaml", "models:\n  big-chat:\n    arch: {experts: 64}\n", folder="sources/facts")
    result = run_cli("-C", str(base_catalog), "validate")
    assert "sources/20-moe.yaml:5:12:" in result.stderr and "arch.experts is 32 here but 64" in result.stderr


def test_a_hostile_file_name_or_architecture_stays_inside_the_comment(qwen_file: Path):
    found = gguf_header.parse(qwen_file.read_bytes(), complete=True, file_size=qwen_file.stat().st_size)
    text = facts.render("small-chat", {**found, "architecture": "qwen2\nroles: {x: {workload: chat}}"},
                        "a.gguf\nmerge: replace").decode()
    layer = yaml.safe_load(text)
    assert set(layer) == {"schema_version", "kind", "models"} and "a.gguf?merge: replace" in text


def test_a_file_set_model_takes_the_header_shape_but_not_one_file_size(base_catalog: Path, qwen_file: Path):
    """A model whose artifact is `files` (a GGUF beside its mmproj, or one listed file) sizes each file
    there: one file's size from its header is no figure for the set, and beside `files` it is E240."""
    add_layer(base_catalog, "30-set.yaml", "models:\n  small-chat:\n    artifact:\n      file: null\n"
              "      files:\n        - {name: small-q4_k_m.gguf}\n        - {name: mmproj-f16.gguf}\n")
    (base_catalog / "sources" / "05-geometry.yaml").unlink()
    result = run_cli("-C", str(base_catalog), "inspect", str(qwen_file), "--write")  # matched by its files entry
    assert result.exit_code == 0, result.output
    assert "wrote sources/facts/small-chat.yaml (small-chat)" in result.stderr
    for command in (["validate"], ["build", "--host", "box-8"]):
        result = run_cli("-C", str(base_catalog), *command)
        assert result.exit_code == 0, result.output + result.stderr
    model = compiled_model(base_catalog, "small-chat")
    assert model["arch"]["layers"] == 24 and "size_bytes" not in model["artifact"]
    assert model["memory_method"] == "estimated"  # the set's size is unknown: estimated, not one file's


def test_the_header_quantization_is_a_name_the_bits_table_knows():
    """gpt-oss GGUFs say MXFP4_MOE (llama_ftype 38): recorded as MXFP4, the table's gpt-oss mix, not an
    unknown name sized at 16 bits a weight (W300)."""
    from compiler.memory import QUANT_BITS

    assert facts.quantization({"file_type": gguf_header.FILE_TYPES[38]}) == "MXFP4"
    assert facts.quantization({"file_type": "ALL_F32"}) == "F32"
    known = {label for label in gguf_header.FILE_TYPES.values()
             if facts.quantization({"file_type": label}) in QUANT_BITS}
    assert {"F16", "BF16", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K", "MXFP4_MOE", "ALL_F32"} <= known
