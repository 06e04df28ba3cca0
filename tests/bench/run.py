"""hostfit's benchmarks, each against what a user would otherwise run, in the same run, as ratios.

    make bench            (installs check-jsonschema, OmegaConf and llmfit into .venv first)

The catalog is built from tests/data (llmfit's hf_models.json plus LiteLLM's map:
about 4,800 models, ~50,000 lines of YAML). Every figure is the best wall-clock time of
REPEAT runs of a whole command in a fresh process, so start-up is counted on both sides.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REALDATA = Path(os.environ.get("HOSTFIT_REALDATA", REPO / "tests" / "data"))
BIN = Path(sys.executable).parent
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
sys.path.insert(0, str(HERE))

from make_catalog import build as build_catalog, to_yaml  # noqa: E402

ROLES = """schema_version: 2
kind: catalog
roles:
  chat: {workload: chat, requires: {context_min: 4096}, required: true}
  code: {workload: code, requires: {context_min: 16384}}
  embedding: {workload: embedding}
  planner: {workload: chat, requires: {context_min: 32768}, resident: true}
"""
LOADERS_SCRIPT = """
import sys, time
import yaml
from ruamel.yaml import YAML
from compiler.load import load_yaml_text
text = open(sys.argv[1]).read()
def best(fn):
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return min(times)
rows = {
    "hostfit (libyaml events, positions kept)": best(lambda: load_yaml_text(text, "f")),
    "PyYAML CSafeLoader compose (positions kept)": best(lambda: yaml.compose(text, Loader=yaml.CSafeLoader)),
    "PyYAML CSafeLoader load (no positions)": best(lambda: yaml.load(text, Loader=yaml.CSafeLoader)),
    "ruamel.yaml safe load": best(lambda: YAML(typ="safe").load(text)),
    "ruamel.yaml round-trip load": best(lambda: YAML().load(text)),
}
for name, seconds in rows.items():
    print(f"{name}\t{seconds}")
"""
OMEGACONF_SCRIPT = """
import sys
from omegaconf import OmegaConf
merged = OmegaConf.merge(*(OmegaConf.load(p) for p in sys.argv[1:]))
data = OmegaConf.to_container(merged, resolve=True)
print(len(data.get("models", {})))
"""


def timed(argv: list[str], env: dict, cwd: Path, before=None) -> tuple[float, subprocess.CompletedProcess]:
    best, last = float("inf"), None
    for _ in range(REPEAT):
        if before:
            before()
        start = time.perf_counter()
        last = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        best = min(best, time.perf_counter() - start)
    return best, last


def hosts_yaml(count: int) -> str:
    lines = ["schema_version: 2", "kind: hosts", "hosts:"]
    sizes = [8, 16, 24, 32, 48, 64, 96, 128]
    for i in range(count):
        gpu = f", gpus: [{{vram_gb: {8 * (1 + i % 3)}}}]" if i % 4 == 0 else ""
        lines.append(f"  host-{i:03d}: {{ram_gb: {sizes[i % len(sizes)]}{gpu}}}")
    return "\n".join(lines) + "\n"


def v1_catalog(roles: int = 1000, models: int = 200) -> str:
    """A version-1 file (the earlier role-mapping layout) with `roles` roles."""
    lines = ["# generated for the migration benchmark", "role_mappings:"]
    for i in range(roles):
        picks = ", ".join(f"family-{(i + k) % models}:7b" for k in range(3))
        lines += [f"  role-{i:04d}:", f"    preferred: [{picks}]", "    cloud_fallback: openai:gpt-4o-mini",
                  "    requirements:", f"      reasoning_strength: 0.{i % 9 + 1}",
                  f"      context_length_min: {4096 * (1 + i % 4)}", "      memory_gb_max: 16"]
    lines.append("model_profiles:")
    for i in range(models):
        lines += [f"  family-{i}:7b:", "    capabilities:", "      context_length: 32768",
                  "      quantization_level: Q4_K_M", "      model_size: 7B", "      reasoning_strength: 7",
                  "      coding_strength: 0.6", "      memory_gb_estimate: 6.5", "      min_memory_gb: 6",
                  "      supports_function_calling: true", "      model_source: ollama"]
    lines += ["cloud_providers:", "  openai:", "    models:", "      gpt-4o-mini: {context_length: 128000}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="hostfit-bench-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "XDG_CONFIG_HOME": str(work / "config"),
           "HOST": "bench-host"}
    try:
        catalog = work / "catalog"
        (catalog / "sources").mkdir(parents=True)
        big = catalog / "sources" / "00-models.yaml"
        big.write_text(to_yaml(build_catalog(REALDATA)))
        (catalog / "sources" / "10-roles.yaml").write_text(ROLES)
        (catalog / "sources" / "hosts.yaml").write_text(hosts_yaml(1))
        many = work / "many"
        shutil.copytree(catalog, many)
        (many / "sources" / "hosts.yaml").write_text(hosts_yaml(100))
        lines = len(big.read_text().splitlines())
        models = len(json.loads(json.dumps(build_catalog(REALDATA)))["models"])
        schema_file = work / "catalog.schema.json"
        schema_file.write_text((REPO / "compiler" / "schemas" / "catalog.v2.json").read_text())
        hostfit = str(BIN / "hostfit")
        layers = [str(p) for p in sorted((catalog / "sources").glob("*.yaml")) if p.name != "hosts.yaml"]

        def clear_cache(folder: Path):
            return lambda: shutil.rmtree(folder / "out", ignore_errors=True)

        # warm the compiled-schema cache once, as any second run of hostfit finds it
        subprocess.run([hostfit, "validate", str(big)], env=env, cwd=work, capture_output=True)
        rows = []
        t_validate, r = timed([hostfit, "validate", str(big)], env, work)
        assert r.returncode == 0, r.stderr
        t_check, r = timed([str(BIN / "check-jsonschema"), "--schemafile", str(schema_file), str(big)], env, work)
        assert r.returncode == 0, r.stdout + r.stderr
        rows.append(("validate the 50k-line file", "check-jsonschema", t_validate, t_check, 0.25))
        t_catalog, r = timed([hostfit, "-C", str(catalog), "validate"], env, work)
        assert r.returncode == 0, r.stderr
        rows.append(("validate the catalog (+ compile all hosts)", "check-jsonschema", t_catalog, t_check, None))

        t_build, r = timed([hostfit, "-C", str(catalog), "build", "--host", "host-000", "--quiet"], env, work,
                           clear_cache(catalog))
        assert r.returncode == 0, r.stderr
        # OmegaConf refuses a file this size by default (its 10,000-node alias guard counts every
        # node); lifting the guard, as its message advises for trusted input, lets it be measured.
        omega_env = {**env, "OMEGACONF_MAX_YAML_EXPANDED_NODES": "none"}
        t_omega, r = timed([sys.executable, "-c", OMEGACONF_SCRIPT, *layers], omega_env, work)
        omega_note = "" if r.returncode == 0 else " (OmegaConf failed: " + r.stderr.strip().splitlines()[-1][:80] + ")"
        rows.append(("build 1 host", "OmegaConf load+merge+to_container", t_build, t_omega, 0.25))
        t_many, r = timed([hostfit, "-C", str(many), "build", "--all", "--quiet"], env, work, clear_cache(many))
        assert r.returncode == 0, r.stderr
        rows.append(("build 100 hosts", "OmegaConf load+merge+to_container", t_many, t_omega, None))
        subprocess.run([hostfit, "-C", str(catalog), "build", "--host", "host-000", "--quiet"], env=env, cwd=work)
        t_noop, r = timed([hostfit, "-C", str(catalog), "build", "--host", "host-000", "--quiet"], env, work)
        assert r.returncode == 0, r.stderr
        rows.append(("no-op rebuild", "a full build of 1 host", t_noop, t_build, 0.05))
        second = []  # (measure, baseline, ours, theirs)
        for fmt, name in (("llmfit", "hf_models.json"), ("litellm", "model_prices_and_context_window.json")):
            out = work / f"imported-{fmt}.yaml"
            t_import, r = timed([hostfit, "import", fmt, str(REALDATA / name), "-o", str(out)], env, work)
            assert r.returncode == 0, r.stderr
            t_load, r = timed([hostfit, "validate", str(out)], env, work)
            assert r.returncode == 0, r.stderr
            second.append((f"import {fmt} ({name})", "hostfit validate of the imported v2 layer", t_import, t_load))
        legacy = work / "legacy"
        (legacy / "sources").mkdir(parents=True)
        v1_text = v1_catalog()
        v1_file = legacy / "sources" / "00-legacy.yaml"
        v1_file.write_text(v1_text)
        t_v1, r = timed([hostfit, "validate", str(v1_file)], env, work)
        assert r.returncode == 0, r.stderr

        def fresh_v1():
            v1_file.write_text(v1_text)

        t_write, r = timed([hostfit, "-C", str(legacy), "migrate", "--write", str(v1_file)], env, work, fresh_v1)
        assert r.returncode == 0, r.stderr
        t_v2, r = timed([hostfit, "validate", str(v1_file)], env, work)
        assert r.returncode == 0, r.stderr
        second.append(("load a 1,000-role v1 file (migrated in memory)", "the same data as v2", t_v1, t_v2))
        second.append(("hostfit migrate --write (ruamel round-trip)", "loading the result as v2", t_write, t_v2))
        t_help, _ = timed([hostfit, "--help"], env, work)
        rows.append(("no-op rebuild", "hostfit --help (start-up floor)", t_noop, t_help, None))
        t_pass, _ = timed([sys.executable, "-c", "pass"], env, work)
        rows.append(("hostfit --help", "python -c pass", t_help, t_pass, None))

        loaders = subprocess.run([sys.executable, "-c", LOADERS_SCRIPT, str(big), str(REPEAT)], env=env, cwd=REPO,
                                 capture_output=True, text=True, check=True, timeout=900).stdout

        print(f"hostfit benchmarks: {models:,} models, {lines:,} lines of YAML; best of {REPEAT} runs each\n")
        print("loading the YAML in one process (how the compile path's loader was chosen):")
        timings = [line.split("\t") for line in loaders.strip().splitlines()]
        ours = float(timings[0][1])
        for name, seconds in timings:
            print(f"  {name:<46} {float(seconds):>7.3f}s  {float(seconds) / ours:>6.2f}x hostfit's")
        print()
        print(f"{'measure':<44} {'hostfit':>9} {'baseline':>9} {'ratio':>7}  {'target':>7}  baseline")
        for name, baseline, ours, theirs, target in rows:
            ratio = ours / theirs
            verdict = "" if target is None else ("ok" if ratio <= target else "MISSED")
            goal = f"<={target:.2f}" if target is not None else "-"
            print(f"{name:<44} {ours:>8.3f}s {theirs:>8.3f}s {ratio:>6.2f}x  {goal:>7} {verdict:>6}  {baseline}")
        if omega_note:
            print(omega_note)
        import fetch_bench

        print()
        fetch_bench.print_rows(fetch_bench.run(work, hostfit, env, REPEAT))
        print(fetch_bench.tiny_model_times(work))
        print(f"\n{'import and migration':<56} {'seconds':>9} {'baseline':>9} {'ratio':>7}  baseline")
        for name, baseline, ours, theirs in second:
            print(f"{name:<56} {ours:>8.3f}s {theirs:>8.3f}s {ours / theirs:>6.2f}x  {baseline}")
        import speed_bench

        print()
        print(speed_bench.report(speed_bench.run(hostfit, work, env)))
        import usage_bench

        print()
        print(usage_bench.report(usage_bench.run(hostfit, work, env)))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
