"""MLX (mlx-lm): MLX-converted models on Apple silicon, in unified memory."""

from __future__ import annotations

from .base import Runtime, installed


def detect(hardware: frozenset) -> bool:
    return "metal" in hardware and installed("mlx_lm")  # hosts.detect adds Metal on Apple silicon


RUNTIME = Runtime(
    name="mlx",
    title="MLX",
    loads={"mlx": ("plain",)},
    hardware=("metal",),
    # MLX computes on the GPU, within the share of the unified RAM macOS lets it wire
    placements=("gpu",),
    detect=detect,
    serve="mlx_lm.server --model {repo}",
)
