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
    # the host's RAM: on Apple silicon the GPU computes out of that one unified pool
    placements=("cpu",),
    detect=detect,
    serve="mlx_lm.server --model {repo}",
)
