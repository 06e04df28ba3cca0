"""Memory estimation: how many MiB a model needs to run at a given context length.

    needed   = max(declared memory.ram_mb, estimate)                 ("declared" when the declaration is higher)
    estimate = weights + kv_cache + overhead                         ("gguf" / "estimated")
    weights  = artifact size (every file's size_bytes, summed)        ("gguf": the files are loaded whole)
             | params_b * 1e9 * bits_per_weight(quantization) / 8    ("estimated")
    kv_cache = 2 * layers * context * kv_heads * head_dim * kv_bytes (exact, when `arch` is known)
             | KV_MIB_PER_BPARAM_PER_KTOKEN * params_b * context / 1024   (heuristic otherwise)
    overhead = compute_buffer + runtime_overhead_mb                   (selection.runtime_overhead_mb, default 128)
             + gpu_runtime_overhead_mb on a host with a GPU           (selection.gpu_runtime_overhead_mb, default 600)
    compute_buffer = max(logits, attention) + scratch                 (llama.cpp's graph buffer, n_ubatch tokens a step)
    logits    = vocab_size * n_ubatch * 4
    attention = (heads + 1) * context * n_ubatch * 4                  (scores and mask, flash attention off)
              | context * n_ubatch * 2                                (f16 mask only, flash attention on: flat)
    scratch   = 6 * hidden_size * n_ubatch * 4                        (the layer's activations beside them)

The compute buffer is at most 16 MiB above what llama.cpp (llama-cpp-python 0.3.36) reports on CPU,
never below (tests/test_llamacpp_memory.py: Qwen2.5-0.5B and Llama-3.2-1B shapes at 4k-32k), and the
H100 figures of issue 10 for a Llama-3.1-8B shape: 312 / 2,160 MiB estimated vs 300 / 2,148 MiB
reported at 4k / 32k without flash attention, 299 vs 258.5 MiB with it. The GPU runtime's part is
what nvidia-smi showed beyond llama.cpp's buffers there (597 MiB at every context: the CUDA context
and libraries); a CPU process needs only its own code and libraries (41 MiB measured).

A declaration is a hint, never a replacement: importers fill it from weights-only figures (llmfit's
min_ram_gb is the weights at Q4), so it may raise the need but never lower it. Only a measured
figure may be below the estimate (not built yet). Cloud models need no local memory ("cloud").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
# Llama-2-7B, which has no grouped-query attention, needs 2 GiB of f16 KV cache for 4,096
# tokens: about 76 MiB per billion parameters per 1,024 tokens. Models with GQA need less, so
# this over-estimates, which is the safe side for a fit decision.
KV_MIB_PER_BPARAM_PER_KTOKEN = 76

# Bits per weight. Block formats are exact from their ggml layout (Q4_0: 32 weights in 18
# bytes = 4.5); the K-quant mixes (_S/_M/_L) are llama.cpp's measured averages on LLaMA-7B.
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0,
    "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_1": 6.0, "Q5_0": 5.5, "Q5_K_M": 5.68, "Q5_K_S": 5.54,
    "Q4_1": 5.0, "Q4_0": 4.5, "Q4_K_M": 4.84, "Q4_K_S": 4.58, "MXFP4": 4.25,
    "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.5, "Q2_K": 2.625,
}
UNKNOWN_QUANT_BPW = 16.0  # unquantized weights: the safe assumption
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
UNQUANTIZED_KV = ("f16", "bf16")


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

    @property
    def estimated_mb(self) -> int:
        """hostfit's own figure, whichever won."""
        return self.weights_mb + self.kv_mb + self.overhead_mb

    def to_dict(self) -> dict:
        out = {"mb": self.mb, "method": self.method, "weights_mb": self.weights_mb, "kv_mb": self.kv_mb,
               "overhead_mb": self.overhead_mb, "kv_method": self.kv_method, "context": self.context}
        if self.declared_mb:  # only then: outputs of catalogs without declarations stay as they were
            out["declared_mb"] = self.declared_mb
        return out


def is_cloud(model: dict) -> bool:
    return model.get("provider", "local") not in LOCAL_PROVIDERS


def bits_per_weight(quantization: str | None) -> float:
    if not quantization:
        return UNKNOWN_QUANT_BPW
    return BITS_PER_WEIGHT.get(quantization.upper(), UNKNOWN_QUANT_BPW)


def estimate(model: dict, context: int, overhead_mb: int = RUNTIME_OVERHEAD_MB, *,
             flash_attention: bool = True) -> Estimate:
    """What the model needs at `context`: the larger of its declaration and hostfit's estimate.
    (A measured figure, when there is one, will be the one figure allowed below the estimate.)"""
    if is_cloud(model):
        return Estimate(0, "cloud", context=context)
    computed = _computed(model, context, overhead_mb, flash_attention)
    declared = int((model.get("memory") or {}).get("ram_mb") or 0)
    if declared > computed.mb:
        return replace(computed, mb=declared, method="declared", declared_mb=declared)
    return replace(computed, declared_mb=declared)


def declared_shortfall(need: Estimate) -> bool:
    """True when a declaration is more than DECLARED_SHORTFALL_WARN below the estimate."""
    return bool(need.declared_mb) and need.declared_mb < need.estimated_mb * (1 - DECLARED_SHORTFALL_WARN)


def _computed(model: dict, context: int, overhead_mb: int, flash_attention: bool = True) -> Estimate:
    """weights + KV cache + overhead, from what the catalog says of the model."""
    window = model.get("context_window")
    if window:
        context = min(context, window)
    weights, method = weights_mib(model)
    kv, kv_method = kv_mib(model, context)
    overhead = overhead_mib(model, context, overhead_mb, flash_attention=flash_attention)
    weights_mb, kv_mb, overhead_mb = _ceil(weights), _ceil(kv), _ceil(overhead)
    return Estimate(weights_mb + kv_mb + overhead_mb, method, weights_mb, kv_mb, overhead_mb, kv_method, context)


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
    params_b = model.get("params_b") or 0
    return params_b * 1e9 * bits_per_weight(model.get("quantization")) / 8 / MIB, "estimated"


def kv_mib(model: dict, context: int) -> tuple[float, str]:
    """The KV cache in MiB at `context` tokens, and whether it is exact (from arch) or a heuristic."""
    arch = model.get("arch") or {}
    if arch.get("layers") and arch.get("kv_heads") and arch.get("head_dim"):
        kv_bytes = arch.get("kv_bytes", 2)
        return 2 * arch["layers"] * context * arch["kv_heads"] * arch["head_dim"] * kv_bytes / MIB, "exact"
    return KV_MIB_PER_BPARAM_PER_KTOKEN * (model.get("params_b") or 0) * context / 1024, "heuristic"


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
    ubatch = min(N_UBATCH, context)  # llama.cpp never evaluates more tokens a step than the context
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
    """Tokens the widest attention layer sees: the context, unless every layer has a sliding window
    (llama.cpp then keeps the window plus one batch)."""
    window, windowed = arch.get("sliding_window"), arch.get("sliding_window_layers")
    if window and arch.get("layers") and windowed is not None and windowed >= arch["layers"]:
        return min(context, window + N_UBATCH)
    return context


def _ceil(value: float) -> int:
    whole = int(value)
    return whole if whole == value else whole + 1
