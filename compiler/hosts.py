"""Hosts: the declared inventory (sources/hosts.yaml) and the facts detected on this machine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import paths

GIB_IN_MB = 1024
LOCAL = "local"  # the output folder of a machine that is not declared (ignored by git)
# The share of RAM macOS lets an Apple silicon GPU wire (Metal's recommendedMaxWorkingSetSize, the
# default of the iogpu.wired_limit_mb sysctl): about two thirds up to 36 GB, three quarters above.
# A host's `gpu_memory_fraction` overrides it (e.g. after raising the sysctl).
UNIFIED_GPU_SHARE = ((36 * GIB_IN_MB, 2 / 3), (None, 3 / 4))  # (up to this much RAM, share); None: above
DETECT_SECONDS = 5.0  # each GPU tool asked once, briefly: a build must not wait on a hung driver


@dataclass(frozen=True)
class Gpu:
    name: str
    vram_mb: int
    vendor: str | None = None

    def to_dict(self) -> dict:
        out = {"name": self.name, "vram_mb": self.vram_mb}
        if self.vendor:
            out["vendor"] = self.vendor
        return out


@dataclass(frozen=True)
class Host:
    name: str
    ram_mb: int
    gpus: tuple[Gpu, ...] = ()
    profiles: tuple[str, ...] = ()
    max_loaded_models: int | None = None
    ram_reserve_gb: float | None = None
    unified_memory: bool = False
    detected: bool = False
    available_mb: int | None = None
    user: tuple[str, ...] = ()
    exports: tuple[str, ...] | None = None  # None: every built-in export
    runtimes: tuple[str, ...] | None = None  # registry names in preference order; None: the default (runtimes/)
    gpu_memory_fraction: float | None = None  # unified memory: the share of RAM the GPU may use; None: default
    memory_bandwidth_gbs: float | None = None  # RAM (or unified memory) bandwidth; None: speed.py's tables
    memory_class: str | None = None  # speed.CPU_BANDWIDTH_GBS key; None: speed.DEFAULT_MEMORY_CLASS
    hostnames: tuple[str, ...] = field(default=(), compare=False)
    mirrors: tuple[str, ...] = ()  # team mirrors' base URLs, tried before an artifact's own (executor/fetch.py)

    @property
    def vram_mb(self) -> int:
        return sum(gpu.vram_mb for gpu in self.gpus)

    @property
    def gpu_share_mb(self) -> int:
        """Unified memory: the part of the RAM its GPU may use (0 on other hosts)."""
        if not self.unified_memory:
            return 0
        fraction = self.gpu_memory_fraction
        if fraction is None:
            fraction = next(share for limit, share in UNIFIED_GPU_SHARE if limit is None or self.ram_mb <= limit)
        return int(self.ram_mb * fraction)


def members(name: str, spec: dict) -> list[str]:
    """The hosts one inventory entry declares: the host `name`, or for a class (hosts sharing its facts
    and profiles) its `names`, or `count` hosts numbered <name>-1 ... <name>-N (zero-padded to N's width)."""
    if spec.get("names"):
        return list(spec["names"])
    count = spec.get("count")
    if count:
        return [f"{name}-{index:0{len(str(count))}d}" for index in range(1, count + 1)]
    return [name]


def declared_hosts(hosts: dict) -> dict[str, Host]:
    out = {}
    for entry, spec in sorted(hosts.items()):
        for name in members(entry, spec):
            out[name] = _declared(name, spec)
    return dict(sorted(out.items()))


def _declared(name: str, spec: dict) -> Host:
    return Host(
        name=name,
        ram_mb=int(round(spec["ram_gb"] * GIB_IN_MB)),
        gpus=tuple(Gpu(g.get("name", "gpu"), int(round(g["vram_gb"] * GIB_IN_MB)), g.get("vendor"))
                   for g in spec.get("gpus") or ()),
        profiles=tuple(spec.get("profiles") or ()),
        max_loaded_models=spec.get("max_loaded_models"),
        ram_reserve_gb=spec.get("ram_reserve_gb"),
        # Apple silicon's GPU has no memory of its own: its `vram_gb` is the RAM, counted once
        unified_memory=bool(spec.get("unified_memory",
                                     any(g.get("vendor") == "apple" for g in spec.get("gpus") or ()))),
        user=tuple(spec.get("user") or ()),
        exports=tuple(spec["exports"]) if spec.get("exports") is not None else None,
        hostnames=tuple(h.lower() for h in spec.get("hostnames") or ()),
        runtimes=tuple(spec["runtimes"]) if spec.get("runtimes") is not None else None,
        gpu_memory_fraction=spec.get("gpu_memory_fraction"),
        memory_bandwidth_gbs=spec.get("memory_bandwidth_gbs"),
        memory_class=spec.get("memory_class"),
        mirrors=tuple(spec.get("mirrors") or ()),
    )


def machine_name() -> str:
    """This machine's short host name, lower-cased (`HOST` in the environment overrides it)."""
    if paths.env(paths.HOST):
        name = paths.env(paths.HOST)
    elif hasattr(os, "uname"):
        name = os.uname().nodename
    else:  # pragma: no cover - Windows
        import socket
        name = socket.gethostname()
    return name.split(".")[0].lower()


def find_declared(name: str, hosts: dict[str, Host]) -> Host | None:
    name = name.lower()
    for host in hosts.values():
        if host.name.lower() == name or name in host.hostnames:
            return host
    return None


def detect(name: str = LOCAL, profiles: tuple[str, ...] = (), with_runtimes: bool = True) -> Host:
    """This machine's RAM, GPUs and (unless told not to) the runtimes installed or reachable here."""
    import psutil

    from . import runtimes

    memory = psutil.virtual_memory()
    ram_mb = memory.total // (1024 * 1024)
    unified = apple_silicon()
    gpus = tuple(detect_apple_gpu(ram_mb) if unified else detect_gpus())
    # none found: the documented default (None), which the build warns about (W403)
    found = (runtimes.detect(runtimes.hardware(gpus)) or None) if with_runtimes else None
    return Host(name=name, ram_mb=ram_mb, gpus=gpus, profiles=profiles, unified_memory=unified,
                detected=True, available_mb=memory.available // (1024 * 1024), runtimes=found)


def apple_silicon() -> bool:
    import platform
    import sys

    return sys.platform == "darwin" and platform.machine() == "arm64"


def _ask(argv: list[str], timeout: float) -> str | None:
    """A GPU tool's output, or None when it is not installed, fails or hangs: no GPU, not a failure."""
    import shutil
    import subprocess

    exe = shutil.which(argv[0])
    if not exe:
        return None
    try:
        return subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None


def detect_gpus(timeout: float = DETECT_SECONDS) -> list[Gpu]:
    """Discrete GPUs: NVIDIA through nvidia-smi, AMD through rocm-smi, each when installed."""
    return nvidia_gpus(_ask(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                            timeout)) + amd_gpus(_ask(["rocm-smi", "--showproductname", "--showmeminfo", "vram",
                                                       "--json"], timeout))


def nvidia_gpus(csv: str | None) -> list[Gpu]:
    """nvidia-smi's `name, MiB` lines."""
    gpus = []
    for line in (csv or "").splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            gpus.append(Gpu(name.strip(), int(mib.strip()), "nvidia"))
    return gpus


def amd_gpus(text: str | None) -> list[Gpu]:
    """rocm-smi --json: {"card0": {"VRAM Total Memory (B)": "...", "Card series": "..."}, ...}; cards
    without a VRAM total (or output that is not that JSON) are skipped."""
    import json

    try:
        cards = json.loads(text or "{}")
    except ValueError:
        return []
    gpus = []
    for key, card in sorted(cards.items()) if isinstance(cards, dict) else ():
        if not key.startswith("card") or not isinstance(card, dict):
            continue
        total = str(card.get("VRAM Total Memory (B)", "")).strip()
        if total.isdigit() and int(total) > 0:
            name = card.get("Card Series") or card.get("Card series") or card.get("Card model") or "AMD GPU"
            gpus.append(Gpu(str(name).strip(), int(total) // (1024 * 1024), "amd"))
    return gpus


def detect_apple_gpu(ram_mb: int, timeout: float = DETECT_SECONDS) -> tuple[Gpu, ...]:
    """Apple silicon: one GPU computing out of the RAM (sysctl hw.memsize when psutil saw none), named
    by system_profiler when it answers."""
    if not ram_mb:
        size = (_ask(["sysctl", "-n", "hw.memsize"], timeout) or "").strip()
        ram_mb = int(size) // (1024 * 1024) if size.isdigit() else 0
    return (Gpu(apple_gpu_name(_ask(["system_profiler", "SPDisplaysDataType", "-json"], timeout)), ram_mb, "apple"),)


def apple_gpu_name(text: str | None) -> str:
    """The chipset model from system_profiler's JSON (e.g. "Apple M3 Pro"), else a generic name."""
    import json

    try:
        displays = json.loads(text or "{}").get("SPDisplaysDataType") or []
        name = next((d.get("sppci_model") for d in displays if isinstance(d, dict) and d.get("sppci_model")), None)
    except (ValueError, AttributeError):
        name = None
    return str(name) if name else "Apple silicon GPU"


def disagreement(declared: Host, detected: Host) -> str | None:
    """A warning when this machine's RAM differs from its declaration by more than 10%."""
    if not detected.ram_mb:
        return None
    diff = abs(detected.ram_mb - declared.ram_mb) / declared.ram_mb
    if diff > 0.10:
        return (f"host {declared.name!r} is declared with {declared.ram_mb / GIB_IN_MB:.1f} GiB RAM but this machine "
                f"has {detected.ram_mb / GIB_IN_MB:.1f} GiB ({diff:.0%} apart); compiling the declared facts")
    return None
