"""Hugging Face transformers (PyTorch): unquantized safetensors or PyTorch checkpoints, on CPU or a GPU
(accelerate's device_map offloads what VRAM cannot hold)."""

from __future__ import annotations

from .base import Runtime, installed


def detect(hardware: frozenset) -> bool:
    return installed("transformers") and installed("torch")


RUNTIME = Runtime(
    name="transformers",
    title="transformers",
    loads={"safetensors": ("plain",), "pytorch": ("plain",)},
    hardware=("cpu", "cuda", "rocm", "metal"),
    placements=("gpu", "split", "cpu"),
    detect=detect,
    serve="python -c 'from transformers import pipeline; print(pipeline(model=\"{repo}\"))'",
)
