"""vLLM: Hugging Face checkpoints, plain or quantized (AWQ, GPTQ, FP8, bitsandbytes, compressed-tensors,
AutoRound, NVFP4), on NVIDIA GPUs, the whole model in VRAM."""

from __future__ import annotations

from .base import Runtime, installed


def detect(hardware: frozenset) -> bool:
    return "cuda" in hardware and installed("vllm")


RUNTIME = Runtime(
    name="vllm",
    title="vLLM",
    loads={"safetensors": ("plain", "awq", "gptq", "fp8", "bnb", "w4a16", "w8a8", "autoround", "nvfp4"),
           "pytorch": ("plain",)},
    # ROCm builds exist, but which quantization kernels each has is not modelled: CUDA only for now
    hardware=("cuda",),
    placements=("gpu",),
    detect=detect,
    serve="vllm serve {repo} --max-model-len {context}",
    # vLLM runs on one GPU unless told to shard, and takes 90% of it whatever the model needs
    serve_gpus="--tensor-parallel-size {gpus} --gpu-memory-utilization {share}",
)
