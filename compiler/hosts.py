"""Hosts: the declared inventory (sources/hosts.yaml) and the facts detected on this machine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import paths

GIB_IN_MB = 1024
LOCAL = "local"  # the output folder of a machine that is not declared (ignored by git)


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
    memory_bandwidth_gbs: float | None = None  # RAM (or unified memory) bandwidth; None: speed.py's tables
    memory_class: str | None = None  # speed.CPU_BANDWIDTH_GBS key; None: speed.DEFAULT_MEMORY_CLASS
    hostnames: tuple[str, ...] = field(default=(), compare=False)

    @property
    def vram_mb(self) -> int:
        return sum(gpu.vram_mb for gpu in self.gpus)


def declared_hosts(hosts: dict) -> dict[str, Host]:
    out = {}
    for name, spec in sorted(hosts.items()):
        out[name] = Host(
            name=name,
            ram_mb=int(round(spec["ram_gb"] * GIB_IN_MB)),
            gpus=tuple(Gpu(g.get("name", "gpu"), int(round(g["vram_gb"] * GIB_IN_MB)), g.get("vendor"))
                       for g in spec.get("gpus") or ()),
            profiles=tuple(spec.get("profiles") or ()),
            max_loaded_models=spec.get("max_loaded_models"),
            ram_reserve_gb=spec.get("ram_reserve_gb"),
            unified_memory=bool(spec.get("unified_memory", False)),
            user=tuple(spec.get("user") or ()),
            exports=tuple(spec["exports"]) if spec.get("exports") is not None else None,
            hostnames=tuple(h.lower() for h in spec.get("hostnames") or ()),
            runtimes=tuple(spec["runtimes"]) if spec.get("runtimes") is not None else None,
            memory_bandwidth_gbs=spec.get("memory_bandwidth_gbs"),
            memory_class=spec.get("memory_class"),
        )
    return out


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
    gpus = tuple(detect_gpus())
    unified = apple_silicon()
    if unified:  # its GPU computes out of the RAM: one pool, which select counts as RAM
        gpus += (Gpu("Apple silicon GPU", ram_mb, "apple"),)
    # none found: the documented default (None), which the build warns about (W403)
    found = (runtimes.detect(runtimes.hardware(gpus)) or None) if with_runtimes else None
    return Host(name=name, ram_mb=ram_mb, gpus=gpus, profiles=profiles, unified_memory=unified,
                detected=True, available_mb=memory.available // (1024 * 1024), runtimes=found)


def apple_silicon() -> bool:
    import platform
    import sys

    return sys.platform == "darwin" and platform.machine() == "arm64"


def detect_gpus(timeout: float = 5.0) -> list[Gpu]:
    """NVIDIA GPUs through nvidia-smi, when it is installed; an error means no GPU, not a failure."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        result = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in result.stdout.splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            gpus.append(Gpu(name.strip(), int(mib.strip()), "nvidia"))
    return gpus


def disagreement(declared: Host, detected: Host) -> str | None:
    """A warning when this machine's RAM differs from its declaration by more than 10%."""
    if not detected.ram_mb:
        return None
    diff = abs(detected.ram_mb - declared.ram_mb) / declared.ram_mb
    if diff > 0.10:
        return (f"host {declared.name!r} is declared with {declared.ram_mb / GIB_IN_MB:.1f} GiB RAM but this machine "
                f"has {detected.ram_mb / GIB_IN_MB:.1f} GiB ({diff:.0%} apart); compiling the declared facts")
    return None
