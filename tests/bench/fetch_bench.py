"""Download benchmark: a 1 GiB artifact served by nginx on 127.0.0.1, fetched by `hostfit fetch`
(in ranges over download.connections, default 8; SHA-256, fsync, atomic rename) against `curl -o`
(no hashing), `curl | sha256sum` and `curl -o` then `sync`, in one run; then from a location where
nginx caps each connection (limit_rate), against one connection (curl) and `aria2c -x 8 -s 8`
(Debian's aria2; skipped, saying why, when it is not installed); plus hostfit's peak RSS and the tiny
model's load times.

    .venv/bin/python tests/bench/fetch_bench.py     the download rows alone"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SIZE = 1 << 30
SPEEDUP = "speed-up"
RATE = "32m"  # nginx limit_rate per connection for the capped rows: one connection takes ~32 s
NGINX_CONF = """daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    server {{ listen 127.0.0.1:{port}; root {root};
        location /capped/ {{ alias {root}/; limit_rate {rate}; }} }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def best(argv, env, runs, before=None, shell=False) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        result = subprocess.run(argv, env=env, shell=shell, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{argv} failed: {result.stderr[-500:]}")
        times.append(time.perf_counter() - start)
    return min(times)


def run(work: Path, hostfit: str, env: dict, runs: int) -> list[tuple]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        print("fetch benchmark skipped: nginx is not installed (Debian package nginx-light)")
        return []
    root = work / "www"
    root.mkdir()
    blob = root / "big.gguf"
    digest = hashlib.sha256()
    with open(blob, "wb") as handle:
        for i in range(SIZE >> 24):
            chunk = (b"GGUF" if i == 0 else b"") + os.urandom((1 << 24) - (4 if i == 0 else 0))  # fetch checks the magic
            digest.update(chunk)
            handle.write(chunk)
    for path in (work, root, blob):  # nginx's workers run as an unprivileged user
        path.chmod(0o755)
    port = free_port()
    prefix = work / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root, rate=RATE))
    server = subprocess.Popen([nginx, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/big.gguf"
        capped = f"http://127.0.0.1:{port}/capped/big.gguf"
        write_catalog(work / "fetch-catalog", url, digest.hexdigest())
        write_catalog(work / "capped-catalog", capped, digest.hexdigest())
        catalog = work / "fetch-catalog"
        cache = work / "fetch-cache"
        fenv = {**env, "HOSTFIT_CACHE": str(cache)}
        for folder in (catalog, work / "capped-catalog"):
            subprocess.run([hostfit, "-C", str(folder), "build", "--host", "bench", "-q"], env=fenv, check=True)

        def clear():  # and flush: each run starts with no dirty pages left by the one before
            shutil.rmtree(cache, ignore_errors=True)
            for name in ("curl.out", "aria2.out"):
                (work / name).unlink(missing_ok=True)
            os.sync()

        t_curl = best(["curl", "-s", "-o", str(work / "curl.out"), url], fenv, runs, clear)
        t_pipe = best(f"curl -s {url} | sha256sum", fenv, runs, clear, shell=True)
        t_durable = best(f"curl -s -o {work / 'curl.out'} {url} && sync {work / 'curl.out'}", fenv, runs, clear,
                         shell=True)
        t_fetch = best([hostfit, "-C", str(catalog), "fetch", "--host", "bench"], fenv, runs, clear)
        clear()
        timed = subprocess.run(["/usr/bin/time", "-f", "%M", hostfit, "-C", str(catalog), "fetch", "--host", "bench"],
                               env=fenv, capture_output=True, text=True, check=True)
        rss_mb = int(re.findall(r"^(\d+)$", timed.stderr, re.M)[-1]) / 1024
        rows = [("fetch 1 GiB: hostfit (sha256, fsync)", "curl -o (no hashing)", t_fetch, t_curl, None),
                ("fetch 1 GiB: hostfit", "curl | sha256sum", t_fetch, t_pipe, None),
                ("fetch 1 GiB: hostfit", "curl -o, then sync (durable, as hostfit)", t_fetch, t_durable, 1.3)]
        print(f"peak RSS of `hostfit fetch` of 1 GiB: {rss_mb:.0f} MB (target < 100 MB)")
        rows += capped_rows(work, hostfit, fenv, runs, clear, capped, digest.hexdigest())
    finally:
        server.terminate()
        server.wait(timeout=10)
    return rows


def capped_rows(work: Path, hostfit: str, env: dict, runs: int, clear, url: str, sha: str) -> list[tuple]:
    """nginx caps each connection at RATE: hostfit's connections against one connection and aria2c -x 8.
    These rows are speed-ups (SPEEDUP): the baseline's time over hostfit's, higher is better.
    nginx's limit_rate lets each request send one second's worth at once (rate x (elapsed + 1)), which
    favours many short requests; so hostfit is also timed with 128 MiB parts, aria2c's split of this
    file in 8, where that burst is the same share of every connection's bytes on both sides."""
    catalog = work / "capped-catalog"
    fetch = [hostfit, "-C", str(catalog), "fetch", "--host", "bench"]
    t_fetch = best(fetch, env, runs, clear)
    config = Path(env["XDG_CONFIG_HOME"]) / "hostfit" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("download: {connections: 8, part_size: 128M}\n")
    try:
        t_split = best(fetch, env, runs, clear)
    finally:
        config.unlink()
    t_single = best(["curl", "-s", "-o", str(work / "curl.out"), url], env, 1, clear)  # ~32 s: once
    name = f"capped {RATE}B/s per connection: hostfit"
    rows = [(name, "curl -o, one connection", t_fetch, t_single, 3.0, SPEEDUP),
            (name + " 128M parts", "curl -o, one connection", t_split, t_single, 3.0, SPEEDUP)]
    aria2 = shutil.which("aria2c")
    if not aria2:
        print("aria2c rows skipped: aria2c is not installed (Debian package aria2; `make bench` installs it as root)")
        return rows
    # -s 8 as well: -x alone caps connections per server, while aria2c splits a file in 5 by default
    argv = [aria2, "-q", "-x", "8", "-s", "8", "--file-allocation=falloc", "--allow-overwrite=true",
            "-d", str(work), "-o", "aria2.out", url]
    t_aria = best(argv, env, runs, clear)
    t_aria_sum = best(argv + [f"--checksum=sha-256={sha}"], env, runs, clear)
    rows += [(name, "aria2c -x 8 -s 8 (no hashing)", t_fetch, t_aria, 0.9, SPEEDUP),
             (name + " 128M parts", "aria2c -x 8 -s 8 (no hashing)", t_split, t_aria, 0.9, SPEEDUP),
             (name, "aria2c -x 8 -s 8 --checksum=sha-256", t_fetch, t_aria_sum, None, SPEEDUP)]
    return rows


def write_catalog(catalog: Path, url: str, sha: str) -> None:
    (catalog / "sources").mkdir(parents=True)
    (catalog / "sources" / "00.yaml").write_text(f"""schema_version: 2
kind: catalog
models:
  big: {{provider: local, workloads: [chat], params_b: 0.5, context_window: 4096, memory: {{ram_mb: 1024}},
        artifact: {{url: "{url}", file: big.gguf, size_bytes: {SIZE}, sha256: {sha}}}}}
roles:
  chat: {{workload: chat, prefer: [big]}}
""")
    (catalog / "sources" / "hosts.yaml").write_text("schema_version: 2\nkind: hosts\nhosts:\n  bench: {ram_gb: 16}\n")


def tiny_model_times(work: Path) -> str:
    code = ("import sys, time; sys.path.insert(0, 'tests'); from pathlib import Path;"
            "from tinygguf import write_tiny_llama; from compiler.executor.loaders import Settings, llamacpp_load;"
            "p = write_tiny_llama(Path(sys.argv[1]));"
            "load, first, text = llamacpp_load(p, Settings(256, 2, 0), 'hello world');"
            "print(f'{load:.4f} {first:.4f}')")
    result = subprocess.run([sys.executable, "-c", code, str(work / "tiny.gguf")], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent.parent)
    if result.returncode != 0:
        return "tiny model: llama-cpp-python not installed (pip install 'hostfit[llama]')"
    load, first = result.stdout.split()
    return f"tiny llama GGUF through llama-cpp-python: load {float(load) * 1000:.1f} ms, first token {float(first) * 1000:.1f} ms"


def print_rows(rows: list[tuple]) -> None:
    """A row's ratio is hostfit's time over the baseline's, at most its target; a SPEEDUP row's is the
    baseline's time over hostfit's, at least its target."""
    for name, baseline, ours, theirs, target, *kind in rows:
        speedup = kind == [SPEEDUP]
        ratio = theirs / ours if speedup else ours / theirs
        verdict = "" if target is None else ("ok" if (ratio >= target if speedup else ratio <= target) else "MISSED")
        goal = f"{'>=' if speedup else '<='}{target:.2f}" if target is not None else "-"
        print(f"{name:<44} {ours:>8.3f}s {theirs:>8.3f}s {ratio:>6.2f}x  {goal:>7} {verdict:>6}  {baseline}"
              + (" (speed-up)" if speedup else ""))


if __name__ == "__main__":
    import tempfile

    bin_dir = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="hostfit-fetch-bench-"))
    try:
        environment = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"),
                       "XDG_CONFIG_HOME": str(work / "config")}
        print_rows(run(work, str(bin_dir / "hostfit"), environment, int(os.environ.get("BENCH_REPEAT", "3"))))
    finally:
        shutil.rmtree(work, ignore_errors=True)
