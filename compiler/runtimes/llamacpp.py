"""llama.cpp through llama-cpp-python: GGUF files on CPU, CUDA, ROCm or Metal, whole or split across GPU and RAM."""

from __future__ import annotations

from .base import Runtime, installed


def detect(hardware: frozenset) -> bool:
    return installed("llama_cpp")


RUNTIME = Runtime(
    name="llamacpp",
    title="llama.cpp",
    loads={"gguf": ("plain",)},
    hardware=("cpu", "cuda", "rocm", "metal"),
    placements=("gpu", "split", "cpu"),
    detect=detect,
    sources=("file",),
    loader="llamacpp",
    exports=("llamacpp",),
    offload=True,
    expert_offload=True,  # its export, llama-server, takes --n-cpu-moe
)
