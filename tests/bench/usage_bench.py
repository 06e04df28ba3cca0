"""The usage store's costs: what recording adds to one application call, and `hostfit stats` over 1,000,000 calls.

    python tests/bench/usage_bench.py        (also part of `make bench`)

Recording overhead is the median, over CALLS calls, of `with rt.call("chat") as call: call.tokens(...)`
with the store (WAL, one INSERT per call) minus the same without a store; goal under 0.2 ms.
`hostfit stats` runs in a fresh process, start-up included, over ROWS raw calls (50 model x role
groups, percentiles for each); goal under 1 s.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from compiler import usage  # noqa: E402
from compiler.runtime import Runtime  # noqa: E402

CALLS = int(os.environ.get("BENCH_USAGE_CALLS", "20000"))
ROWS = int(os.environ.get("BENCH_USAGE_ROWS", "1000000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
DOCUMENT = {"schema_version": 2, "host": {"name": "bench", "ram_mb": 0, "usable_mb": 0, "gpus": [], "detected": False},
            "profiles": [], "aliases": {},
            "roles": {"chat": {"model": "m", "fallbacks": [], "placement": "cpu", "memory_mb": 1}},
            "models": {"m": {"provider": "local", "workloads": ["chat"], "memory_mb": 1, "memory_method": "estimated"}}}


def per_call_ms(rt: Runtime, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with rt.call("chat") as call:
            call.tokens(100, 200)
        times.append((time.perf_counter() - start) * 1000)
    return times


def fill(path: Path, rows: int) -> None:
    """`rows` calls over the last 20 days: 10 models x 5 roles, 5% failures."""
    usage.Store(path).open().close()  # the current schema
    now, rng = time.time(), random.Random(12)
    db = sqlite3.connect(path, isolation_level=None)
    times = sorted(now - rng.random() * 20 * 86400 for _ in range(rows))  # in time order, as recorded
    # bulk load: the per-call trigger off, the days counted in one statement after (as a migration does)
    trigger = db.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'calls_count'").fetchone()[0]
    db.execute("BEGIN")
    db.execute("DROP TRIGGER calls_count")
    for first in range(0, rows, 50000):
        batch = []
        for i in range(first, min(rows, first + 50000)):
            ok = rng.random() > 0.05
            batch.append((times[i], f"role-{i % 5}", f"model-{i % 10}", "local", int(ok),
                          None if ok else "TimeoutError", rng.lognormvariate(6, 0.5), 100, 200, 0.0))
        db.executemany("INSERT INTO calls (ts, role, model, provider, ok, error, latency_ms, tokens_in,"
                       " tokens_out, cost_usd) VALUES (?,?,?,?,?,?,?,?,?,?)", batch)
    db.execute(f"INSERT INTO calls_daily ({usage._DAILY_COLUMNS}) {usage._DAILY_SELECT}")
    db.execute(trigger)
    db.execute("COMMIT")
    db.close()


def run(hostfit: str, work: Path, env: dict) -> dict:
    folder = work / "usage-bench"
    folder.mkdir(parents=True, exist_ok=True)
    with_store = Runtime(DOCUMENT, "bench", store=usage.Store(folder / "overhead.sqlite3"))
    without = Runtime(DOCUMENT, "bench", store=None)
    per_call_ms(with_store, 200)  # open, migrate, warm up
    bare = statistics.median(per_call_ms(without, CALLS))
    recorded = statistics.median(per_call_ms(with_store, CALLS))
    store = with_store.store
    raw_times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        store.record_call("chat", "m", "local", True, None, 1.0, 100, 200, 0.0)
        raw_times.append((time.perf_counter() - start) * 1000)
    store.close()
    big = folder / "million"
    big.mkdir(exist_ok=True)
    start = time.perf_counter()
    fill(big / "usage.sqlite3", ROWS)
    fill_s = time.perf_counter() - start
    stats_env = {**env, "HOSTFIT_STATE": str(big)}
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        done = subprocess.run([hostfit, "stats", "--format", "json"], env=stats_env, cwd=work, capture_output=True,
                              text=True, timeout=600)
        best = min(best, time.perf_counter() - start)
        assert done.returncode == 0, done.stderr
    in_process = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        groups = usage.Store(big / "usage.sqlite3").summary(since=time.time() - 7 * 86400)
        in_process = min(in_process, time.perf_counter() - start)
    return {"bare_ms": bare, "recorded_ms": recorded, "overhead_ms": recorded - bare,
            "record_call_ms": statistics.median(raw_times), "rows": ROWS, "fill_s": fill_s, "stats_s": best,
            "summary_7d_s": in_process, "groups": len(groups)}


def report(result: dict) -> str:
    verdict = "ok" if result["overhead_ms"] < 0.2 else "MISSED"
    stats_verdict = "ok" if result["stats_s"] < 1.0 else "MISSED"
    return "\n".join([
        f"usage store ({CALLS:,} calls each; medians):",
        f"  rt.call without a store            {result['bare_ms']:.4f} ms",
        f"  rt.call recording (WAL)            {result['recorded_ms']:.4f} ms",
        f"  recording overhead per call        {result['overhead_ms']:.4f} ms   goal <0.2 ms  {verdict}",
        f"  Store.record_call alone            {result['record_call_ms']:.4f} ms",
        f"  hostfit stats over {result['rows']:,} rows    {result['stats_s']:.3f} s    goal <1 s     {stats_verdict}"
        f"   (fresh process, best of {REPEAT}; filling took {result['fill_s']:.1f} s)",
        f"  Store.summary, last 7 days         {result['summary_7d_s']:.3f} s"
        f"    ({result['groups']} model x role groups)",
    ])


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="hostfit-usage-bench-"))
    try:
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "XDG_CONFIG_HOME": str(work / "config")}
        print(report(run(str(Path(sys.executable).parent / "hostfit"), work, env)))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
