"""Memory estimation: how many MiB a model needs to run at a given context length.

    needed   = max(declared memory.ram_mb, estimate)                 ("declared" when the declaration is higher)
    estimate = weights + kv_cache + overhead                         ("gguf" / "estimated")
    weights  = artifact size (every file's size_bytes, summed)        ("gguf": the files are loaded whole)
             | max(tied, untied) + vocab_size * TOKENIZER_BYTES      ("estimated", bits from QUANT_BITS)
      tied   = (params - E) * body + E * output                      E = vocab_size * hidden_size: one matrix;
      untied = (params - 2E) * body + E * embedding + E * output         the larger of the two, as catalogs rarely
                                                                         say whether the output reuses the embedding
    kv_cache = 2 * kv_heads * head_dim * bytes * (full layers * cells + sliding layers * SWA cells)  ("exact")
             | KV_BOUND_KIB * sqrt(params_b) * cells * bytes / 2     ("heuristic": an upper bound, without arch)
      cells  = context rounded up to a multiple of 256               (llama.cpp pads n_ctx so before sizing the cache)
    overhead = compute_buffer + runtime_overhead_mb                   (selection.runtime_overhead_mb, default 128)
             + gpu_runtime_overhead_mb per discrete GPU               (selection.gpu_runtime_overhead_mb, default 600)
    compute_buffer = max(logits, attention) + scratch                 (llama.cpp's graph buffer, n_ubatch tokens a step)
    logits    = vocab_size * n_ubatch * 4
    attention = (heads + 1) * cells * n_ubatch * 4                    (scores and mask, flash attention off)
              | cells * n_ubatch * 2                                  (f16 mask only, flash attention on: flat)
    scratch   = 6 * hidden_size * n_ubatch * 4                        (the layer's activations beside them)

The compute buffer is at most 16 MiB above what llama.cpp (llama-cpp-python 0.3.36) reports on CPU,
never below (tests/test_llamacpp_memory.py: Qwen2.5-0.5B and Llama-3.2-1B shapes at 4k-32k), and the
H100 figures of issue 10 for a Llama-3.1-8B shape: 312 / 2,160 MiB estimated vs 300 / 2,148 MiB
reported at 4k / 32k without flash attention, 299 vs 258.5 MiB with it. The GPU runtime's part is
what nvidia-smi showed beyond llama.cpp's buffers there (597 MiB at every context: the CUDA context
and libraries); a CPU process needs only its own code and libraries (41 MiB measured).

Weights. llama.cpp does not quantize every tensor alike: the output projection (or the token
embedding standing in for it when tied) is kept at Q6_K (Q8_0 where the row length is not a
multiple of 256, and at the file's own type for Q8_0 and above), 1-D tensors at F32, and the
K-quant mixes raise some layers' attn_v/ffn_down. AWQ/GPTQ/FP8 checkpoints keep the embedding and
lm_head at 16 bits. So a Q4_0 file averages 4.6+ bits per weight, and a small model with a big
vocabulary much more. QUANT_BITS gives, per quantization, the bits of the body (repeating layers),
the token embedding and the output, and of the body and output when hidden_size is not a multiple
of 256 (K-quant blocks are 256 wide; llama.cpp falls back to a legacy type). Without vocab_size
and hidden_size, E is EMBEDDING_SHARE of the parameters, at most EMBEDDING_PARAMS. Calibrated on
GPT4All's 32 real GGUF files (tests/data/gpt4all_calibration.yaml, README "Memory").

KV cache. bytes per element from the cache type (KV_CACHE_BYTES, ggml block sizes; a role's or
the selection's kv_cache_type, else f16, or arch.kv_bytes where that is more). Layers using a sliding window
(arch.sliding_window_layers of them, window arch.sliding_window) keep window + n_ubatch cells,
padded to 256, as llama.cpp does without --swa-full. Without arch the bound grows as the square
root of the parameter count (a transformer has params >= 12 * layers * hidden^2 and caches
4 * layers * hidden bytes per token, so the cache <= 4 * sqrt(layers * params / 12)), scaled to
cover every architecture in llmfit's hf_models.json; it takes total parameters, so it stays safe
for a mixture of experts, whose total still bounds its attention, without growing linearly with them.

A declaration is a hint, never a replacement: importers fill it from weights-only figures (llmfit's
min_ram_gb is the weights at Q4), so it may raise the need but never lower it. Only a measured
figure (sources/measured/<host>.yaml, compiler/measured.py) replaces the estimate, above or below it
and above a declaration ("measured", `measured`): the figure at its context C plus what the context-dependent
part of the estimate (KV cache + compute buffer) adds from C to the role's context, never less where
the KV term is only a bound. Cloud models need no local memory ("cloud").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from .artifacts import files_of

MIB = 1024 * 1024
LOCAL_PROVIDERS = frozenset(("local", "ollama", "huggingface"))  # any other provider is a cloud service
# The runtime's own memory beside the buffers llama.cpp reports. Its process: 41 MiB for Python with
# llama-cpp-python loaded (measured), with room for Ollama's server. A model a GPU holds adds the GPU
# runtime's: 597 MiB with CUDA on an H100 (nvidia-smi minus model, KV and compute buffers, the same
# at 4k and 32k context; issue 10).
RUNTIME_OVERHEAD_MB = 128
GPU_RUNTIME_OVERHEAD_MB = 600
DEFAULT_CONTEXT = 4096


class Bits(NamedTuple):
    """Bits per weight of one quantization, by tensor group (see the module docstring)."""

    body: float
    embedding: float
    output: float
    body_unaligned: float  # hidden_size % 256 != 0: K-quant tensors fall back (Q4_K -> Q5_0, Q6_K -> Q8_0...)
    output_unaligned: float


Q6_K, Q8_0 = 6.5625, 8.5  # ggml: 210 bytes per 256 weights; 34 bytes per 32


def _legacy(bits: float) -> Bits:
    """A 32-wide block type (Q4_0..Q5_1): its own bits everywhere but the output, Q6_K (Q8_0 unaligned)."""
    return Bits(bits, bits, Q6_K, bits, Q8_0)


def _whole(bits: float) -> Bits:
    """One type for every tensor (F32, F16, Q8_0: llama.cpp does not lower the output below it)."""
    return Bits(bits, bits, bits, bits, bits)


def _sixteen_bit_ends(bits: float) -> Bits:
    """Safetensors quantizations (AWQ, GPTQ, FP8...): the embedding and lm_head stay at 16 bits."""
    return Bits(bits, 16.0, 16.0, bits, 16.0)


# Block formats are exact from their ggml layout (Q4_0: 32 weights in 18 bytes = 4.5). A K-quant
# mix's body is its base type plus llama.cpp's raises (Q4_K_M: attn_v and ffn_down at Q6_K in half
# the layers, about 30% of the body), rounded up; its token embedding stays at the base type.
# AWQ/GPTQ 4-bit: 4 bits plus an fp16 scale and a 4-bit zero per 128 weights (4.16), rounded up.
QUANT_BITS: dict[str, Bits] = {
    "F32": _whole(32.0), "F16": _whole(16.0), "BF16": _whole(16.0), "Q8_0": _whole(Q8_0),
    "Q6_K": Bits(Q6_K, Q6_K, Q6_K, Q8_0, Q8_0),
    "Q5_1": _legacy(6.0), "Q5_0": _legacy(5.5), "Q4_1": _legacy(5.0), "Q4_0": _legacy(4.5),
    "Q5_K_M": Bits(5.7, 5.5, Q6_K, 6.2, Q8_0), "Q5_K_S": Bits(5.55, 5.5, Q6_K, 6.05, Q8_0),
    "Q4_K_M": Bits(4.85, 4.5, Q6_K, 5.85, Q8_0), "Q4_K_S": Bits(4.6, 4.5, Q6_K, 5.6, Q8_0),
    "Q3_K_L": Bits(4.3, 3.4375, Q6_K, 5.4, Q8_0), "Q3_K_M": Bits(3.9, 3.4375, Q6_K, 5.0, Q8_0),
    "Q3_K_S": Bits(3.5, 3.4375, Q6_K, 4.6, Q8_0), "Q2_K": Bits(3.0, 2.625, Q6_K, 4.9, Q8_0),
    "IQ4_XS": Bits(4.25, 4.25, Q6_K, 4.5, Q8_0), "IQ4_NL": _legacy(4.5),
    # gpt-oss: experts in MXFP4 (4.25), attention, embedding and output at Q8_0: 4.4 over both sizes' bodies
    "MXFP4": Bits(4.4, Q8_0, Q8_0, 4.4, Q8_0),
    "AWQ_4BIT": _sixteen_bit_ends(4.25), "GPTQ_INT4": _sixteen_bit_ends(4.25),
    "AUTOROUND_4BIT": _sixteen_bit_ends(4.25), "W4A16": _sixteen_bit_ends(4.25),
    "AWQ_8BIT": _sixteen_bit_ends(8.25), "GPTQ_INT8": _sixteen_bit_ends(8.25), "W8A8": _sixteen_bit_ends(8.25),
    "FP8": _sixteen_bit_ends(8.0), "NVFP4": _sixteen_bit_ends(4.5), "BNB_4BIT": _sixteen_bit_ends(4.5),
    # MLX affine quantization, embedding and output included: a 16-bit scale and bias per 64 weights
    **{f"MLX_{bits}BIT": _whole(bits + 0.5) for bits in range(1, 9)},
}
UNKNOWN_QUANT_BPW = 16.0  # unquantized weights: the safe assumption
UNKNOWN_QUANT = _whole(UNKNOWN_QUANT_BPW)
K_BLOCK = 256  # K-quant block width: a row length that is not a multiple falls back to another type
# Without vocab_size and hidden_size: the share of parameters assumed to be the embedding matrix, and
# its largest size. Models of 1B and more in llmfit's list stay within 0.3 (Gemma 3 1B: 0.30), drafts
# for speculative decoding aside; the largest matrices are about 2.1B (Llama 3.1 405B), but above
# 1.1B they are under 1% of their model.
EMBEDDING_SHARE = 0.3
EMBEDDING_PARAMS = 1.1e9
TOKENIZER_BYTES = 80  # per vocabulary entry: the GGUF's token strings, scores, types and merges

# bytes per cached element, from ggml's block sizes (q8_0: 34 bytes per 32 values)
KV_CACHE_BYTES: dict[str, float] = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
    "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32,
}
DEFAULT_KV_CACHE = "f16"
SWA_UBATCH = 512  # llama.cpp's default n_ubatch: a sliding-window layer keeps window + n_ubatch cells
KV_PAD = 256  # ... rounded up to a multiple of 256, as is the context itself (llama-context.cpp pads n_ctx)
# The f16 cache bound without arch, in KiB per token per sqrt(billion parameters): the highest ratio
# among llmfit's 1,542 architectures is 535 (UnfilteredAI/NSFW-flash, 800 KiB at 2.24B); a
# 128-layer dense model by the derivation above reaches 403. Llama 2 7B (512 KiB) gets 1,412.
KV_BOUND_KIB = 544
# A declaration this far below the estimate is reported (W301): it most likely counts weights only.
DECLARED_SHORTFALL_WARN = 0.15
# llama.cpp's compute buffer. Both llama-cpp-python and llama-server evaluate 512 tokens a step
# (n_ubatch); activations, logits and attention scores are f32.
N_UBATCH = 512
F32_BYTES = 4
F16_BYTES = 2
# Floats per hidden unit and batch token live beside the largest tensor (activations, Q/K/V views):
# llama.cpp reports 5.3 (Qwen2.5-0.5B shape) and 5.4 (Llama-3.2-1B shape); rounded up.
SCRATCH_PER_HIDDEN = 6
# When arch does not say: the largest vocabulary in common use (Gemma 3's 262,144 tokens), 64 query
# heads (Llama-3-70B, Qwen2.5-72B) and a hidden size of 8,192 (Llama-3-70B), so unknown models are
# never under-counted; with a known hidden size and head dim, heads = hidden_size / head_dim.
FALLBACK_VOCAB = 262_144
FALLBACK_HEADS = 64
FALLBACK_HIDDEN = 8192
# KV cache types llama.cpp stores unquantized; a quantized V cache needs flash attention there.
UNQUANTIZED_KV = ("f32", "f16", "bf16")


@dataclass(frozen=True)
class Estimate:
    mb: int
    method: str  # declared | gguf | estimated | cloud
    weights_mb: int = 0
    kv_mb: int = 0
    overhead_mb: int = 0
    kv_method: str = ""  # exact | heuristic
    context: int = 0
    declared_mb: int = 0  # memory.ram_mb when the model declares it (0: none)
    kv_cache_type: str = DEFAULT_KV_CACHE
    measured_mb: int = 0  # method "measured": the figure the host measured, at measured_context tokens
    measured_context: int = 0

    @property
    def estimated_mb(self) -> int:
        """hostfit's own figure, whichever won."""
        return self.weights_mb + self.kv_mb + self.overhead_mb

    def to_dict(self) -> dict:
        out = {"mb": self.mb, "method": self.method, "weights_mb": self.weights_mb, "kv_mb": self.kv_mb,
               "overhead_mb": self.overhead_mb, "kv_method": self.kv_method, "context": self.context}
        if self.declared_mb:  # only then: outputs of catalogs without declarations stay as they were
            out["declared_mb"] = self.declared_mb
        if self.kv_cache_type != DEFAULT_KV_CACHE:  # likewise
            out["kv_cache_type"] = self.kv_cache_type
        if self.measured_mb:  # likewise
            out["measured_mb"], out["measured_context"] = self.measured_mb, self.measured_context
        return out


def is_cloud(model: dict) -> bool:
    return model.get("provider", "local") not in LOCAL_PROVIDERS


def size_unknown(model: dict) -> bool:
    """A local model with no figure for its weights (no params_b, file size or memory.ram_mb): it cannot be
    sized, and counting its weights as 0 would under-count it by all of them."""
    return (not is_cloud(model) and not model.get("params_b") and not artifact_size(model.get("artifact"))
            and not (model.get("memory") or {}).get("ram_mb"))


def quant_bits(quantization: str | None) -> Bits:
    """The bits per weight of a quantization by tensor group; unknown: unquantized (16)."""
    return QUANT_BITS.get((quantization or "").upper(), UNKNOWN_QUANT)


def bits_per_weight(quantization: str | None) -> float:
    """The body's bits per weight (the figure W300 and listings quote)."""
    return quant_bits(quantization).body


def estimate(model: dict, context: int, overhead_mb: int = RUNTIME_OVERHEAD_MB,
             kv_cache_type: str | None = None, *, flash_attention: bool = True) -> Estimate:
    """What the model needs at `context`: the larger of its declaration and hostfit's estimate.
    (A measured figure, when the host has one, replaces it: `measured`.)"""
    if is_cloud(model):
        return Estimate(0, "cloud", context=context)
    computed = _computed(model, context, overhead_mb, kv_cache_type, flash_attention)
    declared = int((model.get("memory") or {}).get("ram_mb") or 0)
    if declared > computed.mb:
        return replace(computed, mb=declared, method="declared", declared_mb=declared)
    return replace(computed, declared_mb=declared)


def measured(model: dict, need: Estimate, measured_mb: int, measured_context: int,
             measured_kv_cache_type: str | None = None, *, flash_attention: bool = True) -> Estimate:
    """`need` (the estimate at the role's context) replaced by a figure measured at `measured_context`
    tokens: the measurement plus the estimate's context-dependent part at the role's context less that
    part at the measured one (weights and the runtime's fixed part cancel). The KV bound of a model
    without arch is never subtracted: it may be far above the real cache."""
    window = model.get("context_window")
    at = min(measured_context, window) if window else measured_context
    cache = None if need.kv_cache_type == DEFAULT_KV_CACHE else need.kv_cache_type
    delta = (_context_mib(model, need.context, cache, flash_attention)
             - _context_mib(model, at, measured_kv_cache_type, flash_attention))
    if delta < 0 and need.kv_method == "heuristic":
        delta = 0.0
    return replace(need, mb=max(1, _ceil(measured_mb + delta)), method="measured", measured_mb=measured_mb,
                   measured_context=at)


def _context_mib(model: dict, context: int, kv_cache_type: str | None, flash_attention: bool) -> float:
    """What grows with the context: the KV cache and llama.cpp's compute buffer."""
    return kv_mib(model, context, kv_cache_type)[0] + compute_buffer_mib(model, context, flash_attention)


def declared_shortfall(need: Estimate) -> bool:
    """True when a declaration is more than DECLARED_SHORTFALL_WARN below the estimate."""
    return bool(need.declared_mb) and need.declared_mb < need.estimated_mb * (1 - DECLARED_SHORTFALL_WARN)


def _computed(model: dict, context: int, overhead_mb: int, kv_cache_type: str | None = None,
              flash_attention: bool = True) -> Estimate:
    """weights + KV cache + overhead, from what the catalog says of the model."""
    window = model.get("context_window")
    if window:
        context = min(context, window)
    weights, method = weights_mib(model)
    kv, kv_method = kv_mib(model, context, kv_cache_type)
    overhead = overhead_mib(model, context, overhead_mb, flash_attention=flash_attention)
    weights_mb, kv_mb, overhead_mb = _ceil(weights), _ceil(kv), _ceil(overhead)
    return Estimate(weights_mb + kv_mb + overhead_mb, method, weights_mb, kv_mb, overhead_mb, kv_method, context,
                    kv_cache_type=kv_cache_type or DEFAULT_KV_CACHE)


def artifact_size(artifact: dict | None) -> int | None:
    """Bytes of the artifact, every file of it, when the catalog knows each one's size (None: unknown,
    so the weights are estimated: a sum that missed a shard would under-count)."""
    artifact = artifact or {}
    files = files_of(artifact)
    if not files:  # no file named (an Ollama tag): its size, when given, is still the weights'
        return artifact.get("size_bytes") or None
    sizes = [item.get("size_bytes") for item in files]
    return sum(sizes) if all(sizes) else None


def weights_mib(model: dict) -> tuple[float, str]:
    """The weights in MiB and how they were found: the artifact's size ("gguf"), else an estimate."""
    size = artifact_size(model.get("artifact"))
    if size:
        return size / MIB, "gguf"
    return estimated_weight_bytes(model) / MIB, "estimated"


def estimated_weight_bytes(model: dict) -> float:
    """params x bits per weight, by tensor group (module docstring): never below llama.cpp's file."""
    params = (model.get("params_b") or 0) * 1e9
    arch = model.get("arch") or {}
    vocab, hidden = arch.get("vocab_size"), arch.get("hidden_size")
    bits = quant_bits(model.get("quantization"))
    if vocab and hidden:
        matrix = min(float(vocab * hidden), params)
        tokenizer = vocab * TOKENIZER_BYTES
    else:
        matrix = min(EMBEDDING_SHARE * params, EMBEDDING_PARAMS)
        tokenizer = 0
    body, output = bits.body, bits.output
    if hidden and hidden % K_BLOCK:
        body, output = bits.body_unaligned, bits.output_unaligned
    tied = (params - matrix) * body + matrix * output
    untied = (params - 2 * matrix) * body + matrix * (bits.embedding + output) if 2 * matrix <= params else 0
    return max(tied, untied) / 8 + tokenizer


def kv_bytes_per_element(model: dict, kv_cache_type: str | None) -> float:
    """The cache type the runtime is given; without one it runs f16, which arch.kv_bytes may raise but
    never lower (nothing passes it to the runtime)."""
    if kv_cache_type:
        return KV_CACHE_BYTES[kv_cache_type]
    return max((model.get("arch") or {}).get("kv_bytes") or 0, KV_CACHE_BYTES[DEFAULT_KV_CACHE])


def kv_mib(model: dict, context: int, kv_cache_type: str | None = None) -> tuple[float, str]:
    """The KV cache in MiB at `context` tokens, and whether it is exact (from arch) or a bound."""
    arch = model.get("arch") or {}
    context = kv_cells(context)
    element = kv_bytes_per_element(model, kv_cache_type)
    head_dim = arch.get("head_dim")
    if not head_dim and arch.get("hidden_size") and arch.get("heads"):
        head_dim = arch["hidden_size"] // arch["heads"]  # config.json's default when it states none
    if arch.get("layers") and arch.get("kv_heads") and head_dim:
        layers = arch["layers"]
        sliding = min(arch.get("sliding_window_layers") or 0, layers) if arch.get("sliding_window") else 0
        cells = (layers - sliding) * context + sliding * swa_cells(arch.get("sliding_window") or 0, context)
        return 2 * arch["kv_heads"] * head_dim * element * cells / MIB, "exact"
    params_b = model.get("params_b") or 0
    return KV_BOUND_KIB * math.sqrt(params_b) * context * element / 2 / 1024, "heuristic"


def kv_cells(context: int) -> int:
    """Cells llama.cpp allocates for `context` tokens: n_ctx rounded up to a multiple of 256."""
    return -(-context // KV_PAD) * KV_PAD


def swa_cells(window: int, context: int) -> int:
    """Cells a sliding-window layer keeps: llama.cpp's min(n_ctx, pad(n_swa + n_ubatch, 256))."""
    return min(context, -(-(window + SWA_UBATCH) // KV_PAD) * KV_PAD)


def overhead_mib(model: dict, context: int, overhead_mb: int, *, flash_attention: bool = True) -> float:
    """What the runtime needs beside weights and KV cache: llama.cpp's compute buffer and the
    runtime's own fixed part (`overhead_mb`: selection.runtime_overhead_mb, plus
    selection.gpu_runtime_overhead_mb when a GPU holds the model)."""
    return compute_buffer_mib(model, context, flash_attention) + overhead_mb


def compute_buffer_mib(model: dict, context: int, flash_attention: bool = True) -> float:
    """llama.cpp's compute buffer in MiB: the graph allocator reuses memory between operations, so
    the buffer is the largest tensor alive at once (the logits, or without flash attention the
    attention scores, which grow with context) plus the activations beside it."""
    arch = model.get("arch") or {}
    ubatch = min(N_UBATCH, kv_cells(context))  # llama.cpp never evaluates more tokens a step than the (padded) context
    hidden = arch.get("hidden_size") or FALLBACK_HIDDEN
    logits = (arch.get("vocab_size") or FALLBACK_VOCAB) * ubatch * F32_BYTES
    attended = _attended(arch, context)
    if flash_attention:  # scores are computed in tiles; only the f16 mask spans the context
        attention = attended * ubatch * F16_BYTES
    else:  # every head's scores, in place through softmax, and the f32 mask
        attention = (_heads(arch) + 1) * attended * ubatch * F32_BYTES
    scratch = SCRATCH_PER_HIDDEN * hidden * ubatch * F32_BYTES
    return (max(logits, attention) + scratch) / MIB


def _heads(arch: dict) -> int:
    if arch.get("heads"):
        return arch["heads"]
    if arch.get("hidden_size") and arch.get("head_dim"):
        return max(1, arch["hidden_size"] // arch["head_dim"])
    return FALLBACK_HEADS


def _attended(arch: dict, context: int) -> int:
    """Cells the widest attention layer sees: the padded context, unless every layer has a sliding window
    (llama.cpp then keeps the window plus one batch, padded)."""
    window, windowed = arch.get("sliding_window"), arch.get("sliding_window_layers")
    if window and arch.get("layers") and windowed is not None and windowed >= arch["layers"]:
        return swa_cells(window, kv_cells(context))
    return kv_cells(context)


def _ceil(value: float) -> int:
    whole = int(value)
    return whole if whole == value else whole + 1


def expert_weights_mib(model: dict, weights_mb: float) -> float:
    """A mixture of experts' routed-expert weights in MiB (0 for a dense model): the parameters not
    active on a token (params - active_params) at the body's bits, at most the weights. A lower bound
    (the experts a token uses are experts too), so what stays beside them is never under-counted."""
    arch = model.get("arch") or {}
    params, active = model.get("params_b") or 0, arch.get("active_params_b") or 0
    if (arch.get("experts") or 0) < 2 or not 0 < active < params:
        return 0.0
    bits = quant_bits(model.get("quantization"))
    return min(float(weights_mb), (params - active) * 1e9 * bits.body / 8 / MIB)


def routed_active_params_b(model: dict) -> float | None:
    """The routed-expert parameters a token reads (billions): the idle experts (params - active) are
    experts - experts_used of them, so each expert is (params - active) / (experts - experts_used) and
    a token reads experts_used of them. None for a dense model or where experts_used is not given."""
    arch = model.get("arch") or {}
    params, active = model.get("params_b") or 0, arch.get("active_params_b") or 0
    experts, used = arch.get("experts") or 0, arch.get("experts_used") or 0
    if experts < 2 or not 0 < used < experts or not 0 < active < params:
        return None
    return min(active, (params - active) * used / (experts - used))
