"""GGUFs with the geometry of real models and all-zero weights, written with gguf's GGUFWriter: the
header is real, the tensor data a sparse hole, so a 2.5 GB F16 file costs no disk and no time."""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

Q8_0_BLOCK, Q8_0_BYTES = 32, 34  # 32 weights: an f16 scale and 32 int8 (ggml's block_q8_0)


@dataclass(frozen=True)
class Shape:
    name: str
    arch: str  # llama.cpp architecture name
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    qkv_bias: bool  # Qwen2 has biases on Q, K and V

    @property
    def catalog_arch(self) -> dict:
        """The model's `arch` as a hostfit catalog declares it."""
        return {"layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                "hidden_size": self.hidden, "heads": self.heads, "vocab_size": self.vocab}


# Published configurations (config.json of Qwen/Qwen2.5-0.5B-Instruct and meta-llama/Llama-3.2-1B);
# both tie the output projection to the token embedding.
QWEN25_05B = Shape("Qwen2.5-0.5B", "qwen2", 24, 896, 14, 2, 64, 4864, 151936, True)
LLAMA32_1B = Shape("Llama-3.2-1B", "llama", 16, 2048, 32, 8, 64, 8192, 128256, False)


def _tensors(shape: Shape):
    """(name, ggml shape with the row length first, quantizable) for every tensor of the model."""
    h, q, kv, ffn = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.ffn
    yield "token_embd.weight", (h, shape.vocab), True
    yield "output_norm.weight", (h,), False
    for layer in range(shape.layers):
        p = f"blk.{layer}"
        yield f"{p}.attn_norm.weight", (h,), False
        yield f"{p}.attn_q.weight", (h, q), True
        yield f"{p}.attn_k.weight", (h, kv), True
        yield f"{p}.attn_v.weight", (h, kv), True
        if shape.qkv_bias:
            yield f"{p}.attn_q.bias", (q,), False
            yield f"{p}.attn_k.bias", (kv,), False
            yield f"{p}.attn_v.bias", (kv,), False
        yield f"{p}.attn_output.weight", (q, h), True
        yield f"{p}.ffn_norm.weight", (h,), False
        yield f"{p}.ffn_gate.weight", (h, ffn), True
        yield f"{p}.ffn_up.weight", (h, ffn), True
        yield f"{p}.ffn_down.weight", (ffn, h), True


def write_shaped(path: Path, shape: Shape, quant: str) -> Path:
    """Write `shape` as an F16 or Q8_0 GGUF (norms and biases F32, as llama.cpp's converter keeps them)."""
    import gguf
    import numpy as np

    types = {"F16": (gguf.GGMLQuantizationType.F16, 1), "Q8_0": (gguf.GGMLQuantizationType.Q8_0, 7)}
    qtype, file_type = types[quant]
    writer = gguf.GGUFWriter(str(path), shape.arch)
    writer.add_name(f"hostfit zero-weight {shape.name} shape")
    writer.add_context_length(32768)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(1e6)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(file_type)
    writer.add_vocab_size(shape.vocab)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
    token_types = [2, 3, 3] + [6] * 256  # SentencePiece byte fallback: llama.cpp requires all 256
    tokens += [f"▁t{i}" for i in range(shape.vocab - len(tokens))]
    token_types += [1] * (shape.vocab - len(token_types))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * shape.vocab)
    writer.add_token_types(token_types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    data = 0
    for name, dims, quantizable in _tensors(shape):
        count = int(np.prod(dims))
        if quantizable and qtype == gguf.GGMLQuantizationType.Q8_0:
            nbytes, dtype = count // Q8_0_BLOCK * Q8_0_BYTES, qtype
        elif quantizable:
            nbytes, dtype = count * 2, qtype
        else:
            nbytes, dtype = count * 4, gguf.GGMLQuantizationType.F32
        # raw_dtype with a float dtype keeps the shape as given (GGUFWriter reverses it to ggml order)
        writer.add_tensor_info(name, tuple(reversed(dims)), np.dtype(np.float32), nbytes, raw_dtype=dtype)
        data += writer.ggml_pad(nbytes, writer.data_alignment)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    start = writer.ggml_pad(fout.tell(), writer.data_alignment)
    fout.truncate(start + data)  # zeros without writing them: a sparse hole on any common filesystem
    writer.close()
    return path


@contextmanager
def llama_log():
    """The lines llama.cpp logs inside the block (llama-cpp-python's own callback restored after)."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
