"""Memory vs llama.cpp itself: real model geometries loaded by llama-cpp-python on CPU, the buffers it
reports against hostfit's estimate; and the compute buffer formula against issue 10's H100 figures."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from compiler.memory import (GPU_RUNTIME_OVERHEAD_MB, MIB, RUNTIME_OVERHEAD_MB, compute_buffer_mib, estimate,
                             overhead_mib)

from shapedgguf import LLAMA32_1B, QWEN25_05B, Shape, llama_log, write_shaped

CONTEXTS = (4096, 16384, 32768)
TOLERANCE = 0.10
BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output) buffer size =\s*([\d.]+) MiB")


def _model(shape: Shape, size_bytes: int | None = None) -> dict:
    model = {"provider": "local", "params_b": 1.0, "context_window": 131072, "arch": shape.catalog_arch}
    if size_bytes:
        model["artifact"] = {"format": "gguf", "size_bytes": size_bytes}
    return model


# ----------------------------------------------------------------------- the formula, no llama.cpp

def test_flash_attention_keeps_the_compute_buffer_flat_and_without_it_scores_grow_with_context():
    model = _model(LLAMA32_1B)
    flat = [compute_buffer_mib(model, context, flash_attention=True) for context in CONTEXTS]
    growing = [compute_buffer_mib(model, context, flash_attention=False) for context in CONTEXTS]
    assert flat[0] == flat[-1]
    assert growing[0] < growing[1] < growing[2]
    # without flash attention the 32 heads' f32 scores for 512 tokens of the batch dominate: 2 GiB at 32k
    assert growing[2] > 32 * 32768 * 512 * 4 / MIB > flat[2]
    assert overhead_mib(model, 4096, 100) == compute_buffer_mib(model, 4096) + 100


def test_unknown_geometry_falls_back_to_figures_at_least_as_large_as_known_ones():
    bare = {"provider": "local", "params_b": 1.0}
    for shape in (QWEN25_05B, LLAMA32_1B):
        for flash in (True, False):
            assert compute_buffer_mib(bare, 8192, flash) >= compute_buffer_mib(_model(shape), 8192, flash)
    # heads follow from hidden size and head dim when only those are known
    derived = {"arch": {"hidden_size": 2048, "head_dim": 64}}
    assert compute_buffer_mib(derived, 32768, False) == compute_buffer_mib(
        {"arch": {"hidden_size": 2048, "head_dim": 64, "heads": 32}}, 32768, False)


# Issue 10's reference: llama-cpp-python 0.3.36 on an H100, every layer offloaded, MiB. The nvidia-smi
# figure is the GPU's whole use; the token embedding (1,002 MiB of the 8B shape) stays in RAM.
LLAMA31_8B = Shape("Llama-3.1-8B", "llama", 32, 4096, 32, 8, 128, 14336, 128256, False)
H100 = [  # context, flash attention, compute buffer reported, nvidia-smi
    (4096, False, 300, 15723), (32768, False, 2148, 21155), (4096, True, 258.5, 15683), (32768, True, 258.5, 19267),
]


@pytest.mark.parametrize(("context", "flash", "compute", "smi"), H100)
def test_the_estimate_matches_the_h100_reference_figures(context: int, flash: bool, compute: float, smi: int):
    model_buffer, in_ram = 15317, 1002
    fixed = RUNTIME_OVERHEAD_MB + GPU_RUNTIME_OVERHEAD_MB  # what select charges where a GPU holds the model
    need = estimate(_model(LLAMA31_8B, model_buffer * MIB), context, fixed, flash_attention=flash)
    assert need.kv_mb == 512 * context // 4096  # the reported KV cache, exactly
    estimated = compute_buffer_mib(need_model := _model(LLAMA31_8B), context, flash)
    assert compute <= estimated <= compute * 1.2, (estimated, compute)
    used = smi + in_ram
    assert used <= need.mb <= used * (1 + TOLERANCE), (need.mb, used)
    assert need.overhead_mb == math.ceil(overhead_mib(need_model, context, fixed, flash_attention=flash))
    # without the GPU runtime's part the estimate would fall short of what the GPU and RAM held
    assert estimate(_model(LLAMA31_8B, model_buffer * MIB), context, flash_attention=flash).mb < used


# ------------------------------------------------------------------------ llama.cpp on this machine

def _reported(path: Path, context: int, flash: bool) -> dict[str, float]:
    """MiB per buffer kind (model, KV, compute, output) that llama.cpp logs while creating the context."""
    llama_cpp = pytest.importorskip("llama_cpp")
    with llama_log() as lines:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=context, n_gpu_layers=0, flash_attn=flash,
                              swa_full=False, n_threads=1, verbose=False)  # as hostfit load passes it
        llm.close()
    found: dict[str, float] = {}
    for _, kind, mib in BUFFER.findall("".join(lines)):
        found[kind] = found.get(kind, 0.0) + float(mib)
    assert {"model", "KV", "compute"} <= found.keys(), "".join(lines)[-2000:]
    return found


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    """The four files, written as sparse holes (no disk, no time), removed afterwards."""
    pytest.importorskip("llama_cpp")
    folder = tmp_path_factory.mktemp("shaped")
    files = {(shape.name, quant): write_shaped(folder / f"{shape.name}-{quant}.gguf", shape, quant)
             for shape in (QWEN25_05B, LLAMA32_1B) for quant in ("F16", "Q8_0")}
    yield files
    for path in files.values():
        path.unlink()


def test_the_estimate_is_within_ten_percent_of_what_llama_cpp_allocates(shaped):
    psutil = pytest.importorskip("psutil")
    # the largest case maps 2.4 GB of weights and allocates 1 GiB of KV cache and 2.1 GiB of compute buffer
    if psutil.virtual_memory().available < 6 << 30:
        pytest.skip("needs 6 GiB of free RAM to create a 32k context of the Llama-3.2-1B shape")
    shapes = {shape.name: shape for shape in (QWEN25_05B, LLAMA32_1B)}
    rows, failures = [], []
    for (name, quant), path in shaped.items():
        model = _model(shapes[name], path.stat().st_size)
        flat = {}
        for flash in (False, True):
            for context in CONTEXTS:
                got = _reported(path, context, flash)
                need = estimate(model, context, flash_attention=flash)
                buffers = need.mb - RUNTIME_OVERHEAD_MB  # the part llama.cpp reports: weights, KV, compute
                total = sum(got.values())
                error = buffers / total - 1
                rows.append(f"{name:<13} {quant:<5} {context:>6} {'on' if flash else 'off':<3} "
                            f"{got['model']:>8.1f} {got['KV']:>7.1f} {got['compute']:>8.1f} {total:>8.1f} "
                            f"{need.weights_mb:>8} {need.kv_mb:>7} {need.overhead_mb - RUNTIME_OVERHEAD_MB:>8} "
                            f"{buffers:>8} {error:>+7.1%}")
                if not (0 <= error <= TOLERANCE and abs(need.kv_mb - got["KV"]) < 1
                        and got["compute"] <= need.overhead_mb - RUNTIME_OVERHEAD_MB <= got["compute"] * 1.1):
                    failures.append(rows[-1])
                if flash:
                    flat[context] = got["compute"]
        assert len(set(flat.values())) == 1, f"llama.cpp's compute buffer with flash attention grew: {flat}"
    print("\nmodel         quant   ctx   fa  reported: model      KV  compute    total  hostfit: weights   KV "
          " compute  buffers  error\n" + "\n".join(rows))
    assert not failures, "\n".join(failures)


def test_a_context_off_the_256_grid_is_sized_as_llama_cpp_pads_it(shaped):
    """llama.cpp allocates n_ctx rounded up to 256 cells: 4,100 tokens hold 4,352 (KV and attention scores)."""
    path = shaped[(QWEN25_05B.name, "Q8_0")]
    model = _model(QWEN25_05B, path.stat().st_size)
    for context in (4100, 5000):
        for flash in (False, True):
            got = _reported(path, context, flash)
            need = estimate(model, context, flash_attention=flash)
            assert abs(need.kv_mb - got["KV"]) < 1, (context, flash, need.kv_mb, got["KV"])
            assert got["compute"] <= need.overhead_mb - RUNTIME_OVERHEAD_MB, (context, flash, need, got)


def _write_gemma3(path: Path, layers: int, window: int) -> Path:
    """A small Gemma-3-shaped GGUF (F16 zeros): llama.cpp gives 5 of every 6 layers the sliding window."""
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    hidden, heads, kv_heads, head_dim, ffn, vocab = 256, 4, 2, 64, 512, 1000
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_name("hostfit zero-weight gemma3 shape")
    writer.add_context_length(32768)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_sliding_window(window)
    writer.add_rope_freq_base(1e6)
    writer.add_file_type(1)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
    tokens += [f"t{i}" for i in range(vocab - len(tokens))]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 259))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def tensor(name: str, shape: tuple, norm: bool = False) -> None:
        writer.add_tensor(name, np.zeros(tuple(reversed(shape)), dtype=np.float32 if norm else np.float16))

    tensor("token_embd.weight", (hidden, vocab))
    tensor("output_norm.weight", (hidden,), True)
    for layer in range(layers):
        p = f"blk.{layer}"
        for norm in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            tensor(f"{p}.{norm}.weight", (hidden,), True)
        tensor(f"{p}.attn_q_norm.weight", (head_dim,), True)
        tensor(f"{p}.attn_k_norm.weight", (head_dim,), True)
        tensor(f"{p}.attn_q.weight", (hidden, heads * head_dim))
        tensor(f"{p}.attn_k.weight", (hidden, kv_heads * head_dim))
        tensor(f"{p}.attn_v.weight", (hidden, kv_heads * head_dim))
        tensor(f"{p}.attn_output.weight", (heads * head_dim, hidden))
        tensor(f"{p}.ffn_gate.weight", (hidden, ffn))
        tensor(f"{p}.ffn_up.weight", (hidden, ffn))
        tensor(f"{p}.ffn_down.weight", (ffn, hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_sliding_window_facts_from_the_header_size_the_cache_llama_cpp_allocates(tmp_path: Path):
    """The header's facts (facts.arch_facts: 7 of 8 Gemma 3 layers windowed) and kv_mib give exactly the
    KV buffers llama.cpp reports: the full context on one layer, pad256(window + 512) cells on the rest."""
    from compiler import facts, gguf_header
    from compiler.memory import kv_mib

    pytest.importorskip("llama_cpp")
    path = _write_gemma3(tmp_path / "gemma3.gguf", 8, 512)
    found = gguf_header.parse(path.read_bytes(), complete=True, file_size=path.stat().st_size)
    arch = facts.arch_facts(found)
    assert (arch["sliding_window"], arch["sliding_window_layers"]) == (512, 7)
    for context in (4096, 8192, 5000):
        got = _reported(path, context, True)
        assert kv_mib({"arch": arch}, context) == (pytest.approx(got["KV"]), "exact"), (context, got)
