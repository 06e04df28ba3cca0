"""hostfit's decode-speed estimates (compiler/speed.py) beside llmfit's, model by model, as ratios.

    python tests/bench/speed_bench.py        (also part of `make bench`; llmfit comes from PyPI)

llmfit runs offline on hardware it is told about: its bundled profiles for an Apple M3 Max and an
AMD Ryzen AI Max+ 395, and `--ram 32G --cpu-cores 8` for a CPU-only desktop (that one assumes the
bench machine has no GPU llmfit can detect). For each model llmfit picks a quantization and a
context (`best_quant`, `assumed_context`) and reports `estimated_tps`; hostfit estimates the same
model, quantization, context and placement (llmfit's `run_mode`) on the matching host, from the
model as `hostfit import llmfit` writes it (tests/data/hf_models.json).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from compiler import speed  # noqa: E402
from compiler.hosts import GIB_IN_MB, Gpu, Host  # noqa: E402

MODELS = ("meta-llama/Llama-3.2-3B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3",
          "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-8B", "google/gemma-2-9b-it", "microsoft/phi-4",
          "Qwen/Qwen2.5-Coder-14B-Instruct", "Qwen/Qwen2.5-32B-Instruct", "openai/gpt-oss-20b",
          "mistralai/Mixtral-8x7B-Instruct-v0.1")
# (label, llmfit's flags, the same hardware as a hostfit host)
PROFILES = (
    ("Apple M3 Max 128 GB", ["--profile", "apple-m3-max-128gb"],
     Host("m3-max", 128 * GIB_IN_MB, (Gpu("Apple M3 Max", 128 * GIB_IN_MB, "apple"),), unified_memory=True)),
    ("Ryzen AI Max+ 395 128 GB", ["--profile", "ryzen-ai-max-plus-395"],
     Host("ai-max", 128 * GIB_IN_MB, (Gpu("Radeon 8060S", 128 * GIB_IN_MB, "amd"),), unified_memory=True,
          memory_bandwidth_gbs=256.0)),  # 256-bit LPDDR5X-8000, llmfit's profile figure
    ("CPU-only 32 GB (ddr4 default)", ["--ram", "32G", "--cpu-cores", "8"], Host("cpu-32", 32 * GIB_IN_MB)),
)
PLACEMENT = {"GPU": "gpu", "CPU": "cpu"}


def llmfit_exe() -> str | None:
    beside = Path(sys.executable).parent / "llmfit"
    return str(beside) if beside.exists() else shutil.which("llmfit")


def imported_models(hostfit: str, work: Path, env: dict) -> dict:
    out = work / "speed-llmfit.yaml"
    subprocess.run([hostfit, "import", "llmfit", str(REPO / "tests" / "data" / "hf_models.json"), "-o", str(out)],
                   env=env, capture_output=True, text=True, check=True, timeout=600)
    return yaml.safe_load(out.read_text())["models"]


def run(hostfit: str, work: Path, env: dict) -> list[tuple] | str:
    """(profile, model, quantization, context, placement, hostfit tok/s, llmfit tok/s) rows, or why none."""
    exe = llmfit_exe()
    if exe is None:
        return "llmfit is not installed (pip install llmfit): speed comparison skipped"
    models = imported_models(hostfit, work, env)
    rows = []
    for label, flags, host in PROFILES:
        for name in MODELS:
            done = subprocess.run([exe, *flags, "--json", "info", name], env=env, capture_output=True, text=True,
                                  timeout=60)
            if done.returncode != 0:
                rows.append((label, name, "-", 0, "-", None, None))
                continue
            theirs = next(m for m in json.loads(done.stdout)["models"] if m["name"] == name)
            placement = PLACEMENT.get(theirs["run_mode"])
            context = theirs["estimate_basis"]["assumed_context"]
            model = dict(models[name.lower()], quantization=theirs["best_quant"])
            ours = speed.estimate(model, host, placement, context).tokens_per_s if placement else None
            rows.append((label, name, theirs["best_quant"], context, placement or theirs["run_mode"], ours,
                         theirs["estimated_tps"]))
    return rows


def report(rows: list[tuple] | str) -> str:
    if isinstance(rows, str):
        return rows
    lines = [f"{'decode speed (tok/s)':<30} {'model':<36} {'quant':<7} {'context':>7} {'where':<5} "
             f"{'hostfit':>8} {'llmfit':>8} {'ratio':>6}"]
    by_profile: dict[str, list[float]] = {}
    for label, name, quant, context, where, ours, theirs in rows:
        ratio = ours / theirs if ours and theirs else None
        if ratio:
            by_profile.setdefault(label, []).append(ratio)
        lines.append(f"{label:<30} {name:<36} {quant:<7} {context:>7,} {where:<5} "
                     f"{ours if ours is not None else '-':>8} {theirs if theirs is not None else '-':>8} "
                     f"{f'{ratio:.2f}x' if ratio else '-':>6}")
    for label, ratios in by_profile.items():
        mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        lines.append(f"{label}: hostfit/llmfit geometric mean {mean:.2f}x over {len(ratios)} models "
                     f"(range {min(ratios):.2f}x-{max(ratios):.2f}x)")
    return "\n".join(lines)


if __name__ == "__main__":
    import os
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="hostfit-speed-"))
    try:
        print(report(run(str(Path(sys.executable).parent / "hostfit"), scratch, dict(os.environ))))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
