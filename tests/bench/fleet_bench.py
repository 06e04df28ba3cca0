"""The fleet benchmark: `hostfit build --all` for a generated inventory of 1,000 and 10,000 hosts.

The inventory (`inventory`) is seeded and varied: 16-256 GB of RAM, five GPU kinds or none, the
shipped profiles and runtimes' defaults, compiled over the shipped catalog (sources/, profiles/).
Each figure is the best wall-clock time of REPEAT fresh processes into an empty out/, with the peak
summed RSS of the process tree (the build and its workers, sampled). A sample of hosts is then built one at a time
into another out/ and compared byte for byte with the fleet build.

    .venv/bin/python tests/bench/fleet_bench.py [COUNT ...]     (default 1000 10000)
"""

from __future__ import annotations

import filecmp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
SAMPLE = int(os.environ.get("BENCH_SAMPLE", "12"))
TARGETS_S = {1000: 6.0, 10000: 60.0}  # issue 14
RSS_LIMIT_MB = 1024

RAM_GB = (16, 24, 32, 48, 64, 96, 128, 192, 256)
# five GPU kinds (name, VRAM in GB, vendor); None: no GPU. Apple's GPU shares the RAM (its vram_gb is the RAM)
GPUS = (None, ("RTX 4090", 24, "nvidia"), ("RTX 3060", 12, "nvidia"), ("A100 80GB", 80, "nvidia"),
        ("RX 7900 XTX", 24, "amd"), ("M3 Max", None, "apple"))
PROFILES = (["base"], ["coding"], ["writing"], ["research"], ["coding", "writing"])
MEMORY_CLASSES = (None, "ddr4", "ddr5", "lpddr5", "ddr5-server")


def inventory(count: int, seed: int = 14) -> str:
    """hosts.yaml for `count` varied hosts, the same text for the same seed."""
    rng = random.Random(seed)
    lines = ["schema_version: 2", "kind: hosts", "hosts:"]
    for i in range(count):
        ram = rng.choice(RAM_GB)
        gpu = rng.choice(GPUS)
        fields = [f"ram_gb: {ram}", f"profiles: [{', '.join(rng.choice(PROFILES))}]",
                  f"max_loaded_models: {rng.choice((1, 2, 3))}"]
        if gpu is not None:
            name, vram, vendor = gpu
            cards = 1 if vendor == "apple" else rng.choice((1, 1, 1, 2))
            gpus = ", ".join(f"{{name: {name}, vram_gb: {vram or ram}, vendor: {vendor}}}" for _ in range(cards))
            fields.append(f"gpus: [{gpus}]")
        memory_class = rng.choice(MEMORY_CLASSES)
        if memory_class and (gpu is None or gpu[2] != "apple"):
            fields.append(f"memory_class: {memory_class}")
        lines.append(f"  node-{i:05d}: {{{', '.join(fields)}}}")
    return "\n".join(lines) + "\n"


def catalog(folder: Path, count: int) -> Path:
    """A catalog folder: the shipped sources and profiles, with `count` generated hosts."""
    (folder / "sources").mkdir(parents=True)
    for path in (REPO / "sources").iterdir():
        if path.is_file() and path.name != "hosts.yaml":
            shutil.copy2(path, folder / "sources" / path.name)
    shutil.copytree(REPO / "profiles", folder / "profiles")
    (folder / "sources" / "hosts.yaml").write_text(inventory(count))
    return folder


def _tree_rss_kb(pid: int) -> int:
    """The summed RSS of a process and its descendants (Linux /proc), in KiB; 0 once it is gone."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def measured(argv: list[str], env: dict, cwd: Path) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall seconds, and the peak of the summed RSS (MB) of the command and its workers, sampled every
    20 ms (pages the workers share with the parent after fork are counted in each: an upper bound)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kb(process.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    out, err = process.communicate()
    return seconds, peak // 1024, subprocess.CompletedProcess(argv, process.returncode, out, err)


def same_tree(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two folders (missing on one side, or other bytes)."""
    files_a = {str(p.relative_to(a)) for p in a.rglob("*") if p.is_file()}
    files_b = {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()}
    differ = sorted(files_a ^ files_b)
    differ += [name for name in sorted(files_a & files_b) if not filecmp.cmp(a / name, b / name, shallow=False)]
    return differ


def run(counts: list[int], work: Path, env: dict) -> list[dict]:
    hostfit = str(BIN / "hostfit")
    rows = []
    for count in counts:
        folder = catalog(work / f"fleet-{count}", count)
        times, peaks = [], []
        for _ in range(REPEAT):
            shutil.rmtree(folder / "out", ignore_errors=True)
            os.sync()  # the removal's writes are not the build's
            seconds, rss, done = measured([hostfit, "-C", str(folder), "build", "--all", "--quiet"], env, work)
            assert done.returncode == 0, done.stderr[-2000:]
            times.append(seconds)
            peaks.append(rss)
        names = sorted(p.name for p in (folder / "out").iterdir() if p.name != ".cache")
        assert len(names) == count, f"{len(names)} host folders for {count} hosts"
        sample = random.Random(count).sample(names, min(SAMPLE, count))
        single = work / f"single-{count}"
        differ = []
        for name in sample:
            done = subprocess.run([hostfit, "-C", str(folder), "build", "--host", name, "--quiet", "--out",
                                   str(single)], env=env, cwd=work, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
            differ += [f"{name}/{path}" for path in same_tree(folder / "out" / name, single / name)]
        rows.append({"hosts": count, "best_s": min(times), "times": times, "rss_mb": max(peaks),
                     "sampled": len(sample), "differ": differ})
    return rows


def report(rows: list[dict]) -> str:
    lines = [f"fleet build (`hostfit build --all` into an empty out/), best of {REPEAT}, {os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.1f} at the end:"]
    for row in rows:
        target = TARGETS_S.get(row["hosts"])
        verdict = "" if target is None else "ok" if row["best_s"] <= target else "MISSED"
        rss = "ok" if row["rss_mb"] < RSS_LIMIT_MB else "MISSED"
        same = "identical" if not row["differ"] else f"DIFFER: {', '.join(row['differ'][:5])}"
        runs = ", ".join(f"{t:.2f}" for t in row["times"])
        lines.append(f"  {row['hosts']:>6,} hosts: {row['best_s']:7.2f} s (runs {runs}; target <= {target} s {verdict});"
                     f" peak RSS {row['rss_mb']} MB (< {RSS_LIMIT_MB} MB {rss}); {row['sampled']} sampled hosts"
                     f" built alone: {same}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    counts = [int(a) for a in argv] or [1000, 10000]
    work = Path(tempfile.mkdtemp(prefix="hostfit-fleet-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "XDG_CONFIG_HOME": str(work / "config"),
           "HOST": "bench-host"}
    try:
        rows = run(counts, work, env)
        print(report(rows))
        return 0 if all(not r["differ"] for r in rows) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
