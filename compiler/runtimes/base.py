"""The record every runtime module declares, and the vocabularies its fields draw from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple

# The container a model's files are in (`artifact.format`).
CONTAINERS = ("gguf", "mlx", "safetensors", "pytorch", "onnx")
# What the weights inside a safetensors/pytorch container are quantized with (`artifact.quant_method`).
# GGUF and MLX carry their own quantization (`quantization: Q4_K_M`, MLX's 4-bit): "plain" there.
# w4a16/w8a8 and nvfp4 are compressed-tensors schemes.
METHODS = ("plain", "awq", "gptq", "fp8", "bnb", "w4a16", "w8a8", "autoround", "nvfp4")
# What a host has: every host a CPU, plus the GPU backends of its GPUs (hosts' `vendor`).
HARDWARE = ("cpu", "cuda", "rocm", "metal")
# Memory pools, as select's Budget names them: VRAM, VRAM + RAM (partial offload), RAM alone. On a
# unified-memory host `gpu` is the share of the one pool its GPU may use, and there is no `split`.
PLACEMENTS = ("gpu", "split", "cpu")
# Where a runtime takes the weights from: a file the executor fetches (artifact), or a name in
# Ollama's library or store (`ollama.name`).
SOURCES = ("file", "ollama")


class Format(NamedTuple):
    container: str
    method: str


@dataclass(frozen=True)
class Runtime:
    name: str  # as hosts.yaml and models.json write it
    title: str
    loads: Mapping[str, tuple[str, ...]]  # container -> the quantization methods it loads in that container
    hardware: tuple[str, ...]  # it runs on a host that has any of these
    placements: tuple[str, ...]  # the memory pools it can put a model in
    detect: Callable[[frozenset], bool]  # is it installed/reachable here? given this machine's hardware
    sources: tuple[str, ...] = ("file",)
    loader: str | None = None  # the executor's backend that loads it (executor/loaders.py); None: none yet
    exports: tuple[str, ...] = ()  # the exports (exports.BUILTINS) that carry its roles
    serve: str | None = None  # the command to run it by hand when hostfit has no loader ({repo} {context})
    # appended to `serve` on a host with GPUs: {gpus} their count, {share} the fraction of their memory
    # the compiled model needs (a runtime that takes a fixed share by default must keep to the plan)
    serve_gpus: str | None = None
    offload: bool = False  # takes llama.cpp's GPU settings (layers, expert offload, tensor split; offload.py)
    expert_offload: bool = False  # runs a MoE split with its experts in RAM (offload.cpu_moe_layers), not by layers

    def accepts(self, fmt: Format, offers: frozenset) -> bool:
        """It loads this format from a source the model offers."""
        return fmt.method in self.loads.get(fmt.container, ()) and any(s in offers for s in self.sources)


def installed(module: str) -> bool:
    """The module is importable here (found, not imported: importing torch or vllm takes seconds)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
