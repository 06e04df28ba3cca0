"""Speed: an estimate of a model's decode tokens per second on a host, from memory bandwidth.

Decoding one token reads every active weight and the whole KV cache once, so on a single stream
decode is bound by memory bandwidth, not compute:

    tokens/s    = 1 / (gpu_bytes / (gpu_gbs * GPU_EFFICIENCY) + cpu_bytes / (ram_gbs * CPU_EFFICIENCY))
    bytes/token = active parameters * bits per weight / 8           (memory.QUANT_BITS; arch.active_params_b
                + KV cache at the role's context                      for a mixture of experts; memory.kv_mib)
    gpu share   = 1 on `gpu`, 0 on `cpu`, on `split` what the compiled offload (offload.py) leaves on
                  the GPUs: by layers, gpu_layers / layers of the bytes; with the experts of the first
                  M layers in RAM (--n-cpu-moe), the CPU reads only the experts a token routes to in
                  those M layers (memory.routed_active_params_b; all active weights of them when the
                  catalog does not give arch.experts_used) and the GPUs the rest, KV included

The KV term is the cache full at the role's context: the speed at the end of a long conversation,
the slowest point a user meets. Several GPUs hold layers in proportion to their VRAM and run one
after another for each token, so their times add like the GPU and CPU parts of a split.

Bandwidths: the host's `memory_bandwidth_gbs` (RAM, or unified memory) when declared; a GPU's from
GPU_BANDWIDTH_GBS by name (one line per GPU, the vendor's published figure), else GPU_DEFAULT_GBS;
RAM from the host's `memory_class` in CPU_BANDWIDTH_GBS (default DEFAULT_MEMORY_CLASS), or on Apple
silicon the chip's unified memory (its GPU's entry). The efficiencies are what llama.cpp reaches of
the peak on a single stream: 8B Q4_K_M at about 140 tok/s on an RTX 4090 (0.7 of 1,008 GB/s over its
4.9 GB) and CPU decode at 0.5-0.65 of a dual-channel desktop's theoretical bandwidth.

A speed the host measured (sources/measured/<host>.yaml) on the same runtime and placement replaces
the estimate (`measured`): the measured tokens/s at its context C, scaled to the role's context by the
estimate's own ratio (the bytes a token reads at C over those at the role's context).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

from .hosts import Host
from .memory import MIB, bits_per_weight, kv_mib, routed_active_params_b
from .offload import ALL_LAYERS, Offload

GB = 1e9
SPEED_FLOOR = 5.0  # selection.speed_floor's default, tok/s: about reading speed; best_fit prefers candidates this fast
GPU_EFFICIENCY = 0.7
CPU_EFFICIENCY = 0.6

# Memory bandwidth in GB/s by GPU name (matched case-insensitively, longest name first, so
# "RTX 3090 Ti" wins over "RTX 3090"). Vendors' published figures; Apple entries are the chip's
# unified memory, which its CPU reads too.
GPU_BANDWIDTH_GBS: dict[str, float] = {
    # NVIDIA GeForce
    "RTX 5090": 1792, "RTX 5080": 960, "RTX 4090": 1008, "RTX 4080": 716.8, "RTX 4070 Ti": 504,
    "RTX 4070": 504, "RTX 4060 Ti": 288, "RTX 4060": 272, "RTX 3090 Ti": 1008, "RTX 3090": 936,
    "RTX 3080 Ti": 912, "RTX 3080": 760, "RTX 3070": 448, "RTX 3060": 360, "RTX 2080 Ti": 616,
    # NVIDIA data centre and workstation
    "H200": 4800, "H100 PCIe": 2000, "H100": 3350, "A100 80GB": 2039, "A100": 1555, "A10": 600,
    "L40S": 864, "L40": 864, "L4": 300, "T4": 320, "V100": 900, "RTX 6000 Ada": 960, "RTX A6000": 768,
    # AMD
    "RX 7900 XTX": 960, "RX 7900 XT": 800, "RX 6900 XT": 512, "MI300X": 5300, "MI250X": 3277,
    # Apple silicon (unified memory)
    "M1": 68.25, "M1 Pro": 200, "M1 Max": 400, "M1 Ultra": 800,
    "M2": 100, "M2 Pro": 200, "M2 Max": 400, "M2 Ultra": 800,
    "M3": 100, "M3 Pro": 150, "M3 Max": 400, "M3 Ultra": 819,
    "M4": 120, "M4 Pro": 273, "M4 Max": 546,
}
GPU_DEFAULT_GBS = 300.0  # a GPU the table does not know: an entry-level data-centre card (L4)

# System RAM by class: channels x 8 bytes x transfer rate. A host says which with `memory_class`.
CPU_BANDWIDTH_GBS: dict[str, float] = {
    "ddr4": 51.2,  # dual-channel DDR4-3200: most desktops and laptops of 2018-2022
    "ddr5": 89.6,  # dual-channel DDR5-5600: current desktops
    "lpddr5": 102.4,  # LPDDR5-6400, 128-bit: thin laptops
    "ddr5-server": 307.2,  # 8-channel DDR5-4800: a workstation or server socket
    "apple": 100.0,  # Apple silicon whose chip the GPU table does not name: the base M2/M3's
}
DEFAULT_MEMORY_CLASS = "ddr4"  # undeclared: the slowest common class, so a speed_min is not met by luck


@dataclass(frozen=True)
class Speed:
    tokens_per_s: float
    bytes_per_token: int  # weights read per token plus the KV cache at `context`
    weights_bytes: int
    kv_bytes: int
    active_params_b: float
    bits_per_weight: float
    gpu_share: float  # the part of the bytes the GPUs read (0..1)
    gpu_gbs: float  # the GPUs' bandwidth as one (0: no GPU part)
    ram_gbs: float
    bandwidth_source: str  # where the figures came from
    measured_tokens_per_s: float = 0.0  # a measured speed (tokens_per_s is it, scaled): what the host measured,
    measured_context: int = 0  # at this context; 0: an estimate
    estimated_tokens_per_s: float = 0.0  # the estimate it replaced

    @property
    def method(self) -> str:
        return "measured" if self.measured_tokens_per_s else "estimated"

    @property
    def rate(self) -> str:
        """The speed as reasons word it: "~12.5 tok/s" estimated, "measured 12.5 tok/s"."""
        return f"{'measured ' if self.measured_tokens_per_s else '~'}{self.tokens_per_s:g} tok/s"

    def to_dict(self) -> dict:
        out = {"tokens_per_s": self.tokens_per_s, "bytes_per_token": self.bytes_per_token,
               "weights_bytes": self.weights_bytes, "kv_bytes": self.kv_bytes,
               "active_params_b": self.active_params_b, "bits_per_weight": self.bits_per_weight,
               "gpu_share": self.gpu_share, "gpu_gbs": self.gpu_gbs, "ram_gbs": self.ram_gbs,
               "gpu_efficiency": GPU_EFFICIENCY, "cpu_efficiency": CPU_EFFICIENCY,
               "bandwidth": self.bandwidth_source}
        if self.measured_tokens_per_s:  # only then: explain.json of unmeasured hosts stays as it was
            out.update(method="measured", measured_tokens_per_s=self.measured_tokens_per_s,
                       measured_context=self.measured_context, estimated_tokens_per_s=self.estimated_tokens_per_s)
        return out


def gpu_bandwidth(name: str) -> float | None:
    """The table's figure for a GPU name: the longest entry that is a whole word sequence of it."""
    words = name.upper().replace("-", " ").split()
    best = None
    for entry, gbs in GPU_BANDWIDTH_GBS.items():
        key = entry.upper().split()
        if any(words[i:i + len(key)] == key for i in range(len(words) - len(key) + 1)):
            if best is None or len(key) > len(best[0]):
                best = (key, gbs)
    return best[1] if best else None


@cache
def host_bandwidths(host: Host) -> tuple[float, float, str]:
    """(GPU GB/s as one device, RAM GB/s, where they came from) for a host: once per host (a Host is
    frozen), not once per candidate each role judges on it (it matches every GPU name against the table)."""
    sources = []
    gpu_gbs = 0.0
    unified = host.memory_bandwidth_gbs if host.unified_memory else None  # one memory: the GPU reads it too
    if host.gpus and host.vram_mb and unified:
        gpu_gbs = float(unified)
        sources.append(f"unified memory {gpu_gbs:g} GB/s (declared memory_bandwidth_gbs)")
    elif host.gpus and host.vram_mb:
        # layers proportional to VRAM, each GPU in turn: time per byte adds by share
        seconds = 0.0
        for gpu in host.gpus:
            known = gpu_bandwidth(gpu.name)
            sources.append(f"{gpu.name}: {known:g} GB/s" if known else f"{gpu.name}: default {GPU_DEFAULT_GBS:g} GB/s")
            seconds += (gpu.vram_mb / host.vram_mb) / (known or GPU_DEFAULT_GBS)
        gpu_gbs = round(1 / seconds, 1)
    if host.memory_bandwidth_gbs:
        ram_gbs, ram_source = float(host.memory_bandwidth_gbs), "declared memory_bandwidth_gbs"
    elif host.unified_memory and host.gpus:
        ram_gbs = gpu_gbs if any(gpu_bandwidth(g.name) for g in host.gpus) else CPU_BANDWIDTH_GBS["apple"]
        ram_source = "unified memory"
    else:
        memory_class = host.memory_class or DEFAULT_MEMORY_CLASS
        ram_gbs, ram_source = CPU_BANDWIDTH_GBS[memory_class], f"RAM class {memory_class}"
    sources.append(f"RAM {ram_gbs:g} GB/s ({ram_source})")
    return gpu_gbs, ram_gbs, "; ".join(sources)


def split_share(model: dict, layout: Offload, experts_in_ram: bool, weights: float, kv: float) -> float:
    """The part of the bytes a token reads that the GPUs hold under a split's compiled `layout`;
    `experts_in_ram`: the runtime keeps the experts of layout.cpu_moe_layers layers in RAM."""
    arch = model.get("arch") or {}
    layers = arch.get("layers") or 0
    if layout.gpu_layers == ALL_LAYERS and layout.cpu_moe_layers is None:
        return 1.0
    if not layers:
        return 0.0  # offload.py puts no layer on the GPU when it does not know how many there are
    if experts_in_ram and layout.cpu_moe_layers is not None:
        routed = routed_active_params_b(model)
        active = arch.get("active_params_b") or model.get("params_b") or 0
        per_token = routed if routed is not None else active  # unknown routing: all active weights, as a layer split
        cpu = weights * (per_token / active if active else 1.0) * min(layout.cpu_moe_layers, layers) / layers
        return max(0.0, 1 - cpu / (weights + kv)) if weights + kv else 0.0
    return max(0, min(layout.gpu_layers, layers)) / layers


def estimate(model: dict, host: Host, placement: str, context: int, kv_cache_type: str | None = None,
             gpu_share: float | None = None, layout: Offload | None = None, experts_in_ram: bool = False) -> Speed:
    """Decode tokens/s of `model` placed on `host` at `context` tokens (module docstring).
    `gpu_share`: the part a split places on the GPUs (default: the whole on `gpu`, none on `cpu`);
    `layout`: a split's compiled offload, which gives that part instead (`experts_in_ram`: see split_share)."""
    arch = model.get("arch") or {}
    active = arch.get("active_params_b") or model.get("params_b") or 0
    bits = bits_per_weight(model.get("quantization"))
    weights = active * 1e9 * bits / 8
    kv = kv_mib(model, min(context, model.get("context_window") or context), kv_cache_type)[0] * MIB
    total = weights + kv
    gpu_gbs, ram_gbs, source = host_bandwidths(host)
    if placement == "split" and layout is not None:
        gpu_share = split_share(model, layout, experts_in_ram, weights, kv)
    if gpu_share is None:
        gpu_share = 1.0 if placement == "gpu" else 0.0
    if not gpu_gbs:
        gpu_share = 0.0
    seconds = 0.0
    if gpu_share:
        seconds += total * gpu_share / (gpu_gbs * GB * GPU_EFFICIENCY)
    if gpu_share < 1:
        seconds += total * (1 - gpu_share) / (ram_gbs * GB * CPU_EFFICIENCY)
    tokens = round(1 / seconds, 1) if seconds else 0.0
    return Speed(tokens, int(total), int(weights), int(kv), active, bits, round(gpu_share, 3), gpu_gbs, ram_gbs,
                 source)


def measured(at_role: Speed, at_measured: Speed, tokens_per_s: float, context: int) -> Speed:
    """`at_role` (the estimate at the role's context) replaced by `tokens_per_s` measured at `context`
    tokens on the same runtime and placement, scaled by the estimate's ratio between the two contexts
    (`at_measured`: the estimate at `context`), so a longer role context reads the larger cache."""
    scale = at_role.tokens_per_s / at_measured.tokens_per_s if at_measured.tokens_per_s else 1.0
    return replace(at_role, tokens_per_s=round(tokens_per_s * scale, 1), measured_tokens_per_s=tokens_per_s,
                   measured_context=context, estimated_tokens_per_s=at_role.tokens_per_s)
