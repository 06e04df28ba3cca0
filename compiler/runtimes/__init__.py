"""The runtime registry (one line per runtime; each declared in its own module) and the pure functions
that match a model's format to the runtimes and hardware of a host.

Adding a runtime: write compiler/runtimes/<name>.py declaring `RUNTIME = Runtime(...)`, then add it to
REGISTRY below. Hosts may then name it in `runtimes:`, and selection considers it in host order.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from . import llamacpp, mlx, ollama, transformers, vllm
from .base import CONTAINERS, HARDWARE, METHODS, PLACEMENTS, Format, Runtime
from .formats import infer, model_format, sources

REGISTRY: dict[str, Runtime] = {runtime.name: runtime for runtime in (
    llamacpp.RUNTIME,
    ollama.RUNTIME,
    mlx.RUNTIME,
    vllm.RUNTIME,
    transformers.RUNTIME,
)}

# The runtimes `hostfit load` can load with (the others are named with the command to run them).
LOADABLE = tuple(name for name, runtime in REGISTRY.items() if runtime.loader)

# A declared host without `runtimes:`: these, plus DEFAULT_APPLE on a host with an Apple GPU.
DEFAULT = ("llamacpp", "ollama")
DEFAULT_APPLE = ("mlx",)
# The GPU backend each `vendor` brings. A GPU declared without a vendor is taken as NVIDIA, the
# common case; Intel GPUs bring none that these runtimes use.
VENDOR_HARDWARE = {"nvidia": "cuda", "amd": "rocm", "apple": "metal", None: "cuda"}
HARDWARE_NAMES = {"cpu": "CPU", "cuda": "CUDA", "rocm": "ROCm", "metal": "Metal"}
FORMAT_NAMES = {"gguf": "GGUF", "mlx": "MLX", "safetensors": "safetensors", "pytorch": "PyTorch", "onnx": "ONNX",
                "awq": "AWQ", "gptq": "GPTQ", "fp8": "FP8", "bnb": "bitsandbytes", "w4a16": "W4A16",
                "w8a8": "W8A8", "autoround": "AutoRound", "nvfp4": "NVFP4"}

__all__ = ["CONTAINERS", "HARDWARE", "LOADABLE", "METHODS", "PLACEMENTS", "REGISTRY", "Format", "Runtime", "Available",
           "available", "default_names", "detect", "hardware", "infer", "match", "model_format", "rejection",
           "serve_command", "sources"]


def hardware(gpus) -> frozenset:
    """What a host with these GPUs (hosts.Gpu) runs on: a CPU, plus each GPU's backend."""
    return frozenset({"cpu", *(VENDOR_HARDWARE[g.vendor] for g in gpus if g.vendor in VENDOR_HARDWARE)})


def default_names(hardware_: frozenset) -> tuple[str, ...]:
    """The documented default runtimes of a declared host that does not list them."""
    return DEFAULT + (DEFAULT_APPLE if "metal" in hardware_ else ())


def detect(hardware_: frozenset) -> tuple[str, ...]:
    """The registered runtimes installed or reachable on this machine, in registry order."""
    return tuple(name for name, runtime in REGISTRY.items() if runtime.detect(hardware_))


@dataclass(frozen=True)
class Available:
    """What one host can run: its runtimes in its order, and its hardware."""

    host: str
    runtimes: tuple[Runtime, ...]
    hardware: frozenset


def available(host) -> Available:
    """A hosts.Host's runtimes (its declaration, else the default for its hardware) and hardware."""
    hw = hardware(host.gpus)
    names = host.runtimes if host.runtimes is not None else default_names(hw)
    return Available(host.name, tuple(REGISTRY[n] for n in names if n in REGISTRY), hw)


def placements(runtime: Runtime, hw: frozenset) -> tuple[str, ...]:
    """The placements `runtime` can use on a host with `hw`: none when it cannot run there; GPU
    placements only when it has a backend for the host's GPUs."""
    if not set(runtime.hardware) & hw:
        return ()
    gpu = bool(set(runtime.hardware) & hw - {"cpu"})
    return tuple(p for p in runtime.placements if p == "cpu" or gpu)


def match(fmt: Format, offers: frozenset, host: Available) -> tuple[tuple[Runtime, tuple[str, ...]], ...]:
    """(runtime, its placements) for each runtime of the host, in host order, that loads the format
    from what the model offers and runs on the host's hardware."""
    out = []
    for runtime in host.runtimes:
        if runtime.accepts(fmt, offers):
            usable = placements(runtime, host.hardware)
            if usable:
                out.append((runtime, usable))
    return tuple(out)


def describe(fmt: Format, offers: frozenset = frozenset({"file"})) -> str:
    """`AWQ`, `GGUF`, `safetensors`, `GGUF from Ollama`: a format as a reason names it."""
    name = FORMAT_NAMES.get(fmt.method if fmt.method != "plain" else fmt.container, fmt.method)
    if fmt.method != "plain" and fmt.container != "safetensors":
        name += f" in {FORMAT_NAMES.get(fmt.container, fmt.container)}"
    return name + (" from Ollama" if "file" not in offers else "")


def _needs(runtime: Runtime) -> str:
    if "cpu" in runtime.hardware:
        return runtime.name
    return f"{runtime.name} on " + " or ".join(HARDWARE_NAMES[h] for h in runtime.hardware)


def rejection(fmt: Format, offers: frozenset, host: Available) -> str:
    """Why no runtime of the host can run a model of this format, e.g.
    `AWQ needs vllm on CUDA; laptop-16 has llamacpp, ollama`."""
    if not offers:  # provider ollama without its name in Ollama: no runtime has anything to load
        have = ", ".join(r.name for r in host.runtimes) or "no runtimes"
        return f"provider ollama, but no ollama.name: nothing for Ollama to run ({host.host} has {have})"
    subject = describe(fmt, offers)
    able = [r for r in REGISTRY.values() if r.accepts(fmt, offers)]
    if not able:
        return f"no runtime hostfit knows loads {subject}"
    needs = " or ".join(_needs(r) for r in able)
    present = [r for r in able if r in host.runtimes]  # it loads the format, but not on this hardware
    if present:
        missing = sorted({h for r in present for h in r.hardware} - host.hardware)
        lack = " or ".join(HARDWARE_NAMES[h] for h in missing)
        return f"{subject} needs {needs}; {host.host} has {', '.join(r.name for r in present)} but no {lack} GPU"
    have = ", ".join(r.name for r in host.runtimes) or "no runtimes"
    return f"{subject} needs {needs}; {host.host} has {have}"


def serve_command(runtime: Runtime, model_id: str, model: dict, context: int, host: dict | None = None) -> str | None:
    """The command that runs the model on `runtime` by hand, for runtimes hostfit cannot load; on a
    compiled host (models.json's `host`) with GPUs, spread over them and held to the model's need."""
    if not runtime.serve:
        return None
    repo = (model.get("artifact") or {}).get("repo") or model_id
    command = runtime.serve.format(repo=shlex.quote(repo), context=int(context))
    gpus, vram = len((host or {}).get("gpus") or ()), (host or {}).get("vram_mb") or 0
    if runtime.serve_gpus and gpus and vram:
        need = model.get("memory_mb")
        share = math.ceil(100 * need / vram) / 100 if need else 0.9  # 0.9: vLLM's own default
        command += " " + runtime.serve_gpus.format(gpus=gpus, share=min(share, 1.0))
    return command
