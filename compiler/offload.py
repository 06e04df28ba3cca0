"""Offload: a role's placement as llama.cpp's GPU settings (layers on the GPU, expert tensors kept in
RAM, the share of each GPU), computed once here so `hostfit load` and every export pass the same figures.

    gpu        every layer on the GPU(s)                            gpu_layers = -1 (all)
    split      the first N layers on the GPU                         gpu_layers = layers * (VRAM - overhead)
                                                                                      / (weights + KV)
               mixture of experts, where llama-server runs it:      cpu_moe_layers = ceil(layers * (need - VRAM)
               every layer on the GPU, the expert tensors of the                      / expert weights)
               first M layers in RAM (attention, shared weights and KV stay on the GPU; only when those fit
               beside the overhead). Runtimes without expert offload (llama-cpp-python, Ollama) take gpu_layers.
    several GPUs  tensor_split: each GPU's VRAM in MiB (llama.cpp takes the proportions)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .memory import Estimate, expert_weights_mib

ALL_LAYERS = -1  # llama-cpp-python's n_gpu_layers for "every layer" (llama-server: -ngl 999)


@dataclass(frozen=True)
class Offload:
    gpu_layers: int  # ALL_LAYERS, or how many repeating layers the GPU holds (a split by layers)
    cpu_moe_layers: int | None = None  # MoE split: -ngl all, the first M layers' experts in RAM (--n-cpu-moe)
    tensor_split: tuple[int, ...] = ()  # several GPUs: each one's VRAM in MiB (--tensor-split, tensor_split)
    why: str = field(default="", compare=False)  # the arithmetic, for explain

    def to_dict(self) -> dict:
        out: dict = {"gpu_layers": self.gpu_layers}
        if self.cpu_moe_layers is not None:
            out["cpu_moe_layers"] = self.cpu_moe_layers
        if self.tensor_split:
            out["tensor_split"] = list(self.tensor_split)
        return out


def offload(model: dict, need: Estimate, placement: str | None, vram_mb: int, gpu_vram: tuple[int, ...]
            ) -> Offload | None:
    """The settings for `model` placed at `placement` with `vram_mb` usable VRAM (None: no GPU holds it).
    `gpu_vram`: each GPU's VRAM in MiB, in the host's order."""
    if placement not in ("gpu", "split"):
        return None
    shares = tuple(gpu_vram) if len(gpu_vram) > 1 else ()
    across = f"; tensors split {':'.join(map(str, shares))} over {len(shares)} GPUs" if shares else ""
    if placement == "gpu":
        return Offload(ALL_LAYERS, None, shares, f"every layer on the GPU ({need.mb:,} <= {vram_mb:,} MiB){across}")
    layers = (model.get("arch") or {}).get("layers") or 0
    experts = expert_weights_mib(model, need.weights_mb)
    gpu_layers = split_layers(layers, need, vram_mb)
    why = (f"{gpu_layers} of {layers} layers on the GPU: {layers} x ({vram_mb:,} VRAM - {need.overhead_mb:,} overhead)"
           f" / {need.mb - need.overhead_mb:,} weights and KV" if layers else "layers unknown: none on the GPU")
    moe = None
    if layers and experts and need.mb - experts <= vram_mb:
        moe = min(layers, math.ceil(layers * (need.mb - vram_mb) / experts))
        why = (f"every layer on the GPU but the experts of the first {moe}: ceil({layers} x ({need.mb:,} need - "
               f"{vram_mb:,} VRAM) / {experts:,.0f} expert weights); without expert offload {why}")
    return Offload(gpu_layers, moe, shares, why + across)


def split_layers(layers: int, need: Estimate, vram_mb: int) -> int:
    """Repeating layers the GPU holds: the share of weights and KV cache (spread evenly over the layers)
    that fits the VRAM left beside the overhead (compute buffer and GPU runtime, which stay on the GPU);
    0 when the catalog does not say how many layers there are."""
    per_layer = (need.mb - need.overhead_mb) / layers if layers else 0
    if per_layer <= 0:
        return 0
    return max(0, min(layers, int((vram_mb - need.overhead_mb) / per_layer)))
