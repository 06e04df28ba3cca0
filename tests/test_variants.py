"""Quantization variants: one model, several files; each host compiles to the best variant it runs well."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler import fit
from compiler.executor.fetch import plan as fetch_plan
from compiler.memory import bits_per_weight

from conftest import run_cli, tree_bytes

REPO = "Qwen/Qwen2.5-Coder-14B-Instruct-GGUF"
FILES = {"Q4_K_M": "qwen2.5-coder-14b-instruct-q4_k_m.gguf", "Q5_K_M": "qwen2.5-coder-14b-instruct-q5_k_m.gguf",
         "Q8_0": "qwen2.5-coder-14b-instruct-q8_0.gguf"}
# Qwen2.5-Coder-14B-Instruct's published geometry (as sources/00-models.yaml ships it); no file sizes:
# the memory and speed of each variant are estimated from the parameters and the quantization
MODEL = """\
models:
  qwen2.5-coder-14b:
    name: Qwen2.5-Coder 14B Instruct
    family: qwen2
    params_b: 14.77
    context_window: 32768
    provider: local
    workloads: [code]
    type: instruct
    capabilities: {coding: 0.88}
    arch: {layers: 48, heads: 40, kv_heads: 8, head_dim: 128, hidden_size: 5120, vocab_size: 152064}
    aliases: [qwen-coder-14b]
    variants:
"""
ROLES = """\
roles:
  code:
    workload: code
    required: true
    # 12k tokens of code context, and no slower than 2 tok/s (a CPU-only Q8_0 14B is not)
    requires: {context_min: 12288, speed_min: 2}
"""
HOSTS = """\
schema_version: 2
kind: hosts
hosts:
  laptop-16: {ram_gb: 16, memory_class: ddr4}
  desktop-32: {ram_gb: 32, memory_class: ddr4}
  workstation: {ram_gb: 64, gpus: [{name: RTX 4090, vram_gb: 24, vendor: nvidia}]}
"""


def variants_yaml(order=("Q4_K_M", "Q5_K_M", "Q8_0")) -> str:
    return "".join(f"      {name}:\n        artifact: {{format: gguf, repo: {REPO}, file: {FILES[name]}}}\n"
                   for name in order)


def project(tmp_path: Path, models: str | None = None, roles: str = ROLES) -> Path:
    root = tmp_path / "catalog"
    (root / "sources").mkdir(parents=True)
    (root / "sources" / "00-models.yaml").write_text(
        "schema_version: 2\nkind: catalog\n" + (models if models is not None else MODEL + variants_yaml()))
    (root / "sources" / "10-roles.yaml").write_text("schema_version: 2\nkind: catalog\n" + roles)
    (root / "sources" / "hosts.yaml").write_text(HOSTS)
    return root


def build(root: Path) -> dict[str, dict]:
    result = run_cli("-C", str(root), "build", "--all")
    assert result.exit_code == 0, result.output
    return {host: json.loads((root / "out" / host / "models.json").read_text())
            for host in ("laptop-16", "desktop-32", "workstation")}


def trace(root: Path, host: str) -> dict:
    return json.loads((root / "out" / host / "explain.json").read_text())["roles"]["code"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    root = project(tmp_path_factory.mktemp("variants"))
    return root, build(root)


def test_three_hosts_compile_to_three_variants(built):
    root, compiled = built
    picks = {host: doc["roles"]["code"]["variant"] for host, doc in compiled.items()}
    # the laptop cannot hold Q8_0 and holds Q5_K_M only tight; the desktop holds Q8_0 but reads it too
    # slowly on its CPU; the workstation's GPU holds Q8_0 comfortably and fast
    assert picks == {"laptop-16": "Q4_K_M", "desktop-32": "Q5_K_M", "workstation": "Q8_0"}
    for host, doc in compiled.items():
        role = doc["roles"]["code"]
        model = doc["models"][role["model"]]
        assert role["model"] == f"qwen2.5-coder-14b:{role['variant'].lower()}"
        assert model["variant_of"] == "qwen2.5-coder-14b" and model["variant"] == role["variant"]
        assert model["quantization"] == role["variant"]
        assert model["artifact"]["file"] == FILES[role["variant"]]
        assert model["artifact"]["url"].endswith("/" + FILES[role["variant"]])
        assert role["fit"] == fit.COMFORTABLE and role["tokens_per_s"] >= 2
        assert "qwen-coder-14b" not in doc["aliases"]  # an alias names the model, not one of its files


def test_each_pick_is_the_most_bits_among_the_comfortable_fast_enough_variants(built):
    """The rule, checked on the numbers explain.json carries rather than on the expected names."""
    root, compiled = built
    for host, doc in compiled.items():
        candidates = trace(root, host)["candidates"]
        assert sorted(c["model"] for c in candidates) == sorted(f"qwen2.5-coder-14b:{n.lower()}" for n in FILES)
        good = [c for c in candidates if c.get("fit") == fit.COMFORTABLE and c["verdict"] != "rejected"
                and c["speed"]["tokens_per_s"] >= 2]
        best = max(good, key=lambda c: bits_per_weight(doc["models"].get(c["model"], {}).get("quantization")
                                                       or c["model"].rpartition(":")[2].upper()))
        assert doc["roles"]["code"]["model"] == best["model"]
        # every variant the host could run at all remains a fallback, best first
        runnable = [c["model"] for c in candidates if c["verdict"] in ("chosen", "fallback")]
        assert doc["roles"]["code"]["fallbacks"] == [m for m in runnable if m != best["model"]]


@pytest.mark.parametrize("host, lines", [
    ("laptop-16", ["chosen    qwen2.5-coder-14b:q4_k_m: best_fit: fits (cpu, comfortable",
                   "fallback  qwen2.5-coder-14b:q5_k_m: fits (cpu, tight",
                   "rejected  qwen2.5-coder-14b:q8_0: needs "]),
    ("desktop-32", ["chosen    qwen2.5-coder-14b:q5_k_m: best_fit: fits (cpu, comfortable",
                    "rejected  qwen2.5-coder-14b:q8_0: ~", "tok/s on cpu < required 2"]),
    ("workstation", ["chosen    qwen2.5-coder-14b:q8_0: best_fit: fits (gpu, comfortable"]),
])
def test_explain_says_why_each_variant_won_or_lost(built, host, lines):
    root, compiled = built
    result = run_cli("-C", str(root), "explain", host, "code")
    assert result.exit_code == 0, result.output
    for line in lines:
        assert line in result.output
    chosen = compiled[host]["roles"]["code"]["model"]
    assert f"chosen: {chosen}" in result.output
    summary = run_cli("-C", str(root), "explain", host).output
    assert f"code: {chosen} [best_fit, comfortable" in summary


def test_explain_of_the_model_lists_its_variants_verdicts(built):
    root, compiled = built
    result = run_cli("-C", str(root), "explain", "desktop-32", "qwen2.5-coder-14b")
    assert result.exit_code == 0, result.output
    verdicts = {line.split()[1].rstrip(":"): line.split()[0] for line in result.output.splitlines()
                if line.startswith("    ")}
    assert verdicts == {"qwen2.5-coder-14b:q8_0": "rejected", "qwen2.5-coder-14b:q5_k_m": "chosen",
                        "qwen2.5-coder-14b:q4_k_m": "fallback"}
    assert "< required 2" in result.output
    unknown = run_cli("-C", str(root), "explain", "desktop-32", "qwen2.5-coder-1")  # a prefix names nothing
    assert "is neither a role" in unknown.output


def test_a_variant_field_is_traced_to_its_line(built):
    root, compiled = built
    result = run_cli("-C", str(root), "explain", "laptop-16", "/models/qwen2.5-coder-14b:q4_k_m/artifact/file")
    lines = (root / "sources" / "00-models.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if FILES["Q4_K_M"] in text)
    assert f"sources/00-models.yaml:{line}:" in result.output and FILES["Q4_K_M"] in result.output
    shared = run_cli("-C", str(root), "explain", "laptop-16", "/models/qwen2.5-coder-14b:q4_k_m/params_b").output
    line = next(i for i, text in enumerate(lines, 1) if "params_b" in text)
    assert f"sources/00-models.yaml:{line}:" in shared and "14.77" in shared


def test_fetch_plans_the_chosen_variants_file(built):
    root, compiled = built
    for host, doc in compiled.items():
        [artifact] = fetch_plan(root / "out" / host, ("code",)).artifacts
        variant = doc["roles"]["code"]["variant"]
        assert artifact.model_id == doc["roles"]["code"]["model"]
        assert artifact.file == FILES[variant] and artifact.files[0].url.endswith(FILES[variant])
    # with fallbacks: every runnable variant's file, the chosen one first
    every = fetch_plan(root / "out" / "workstation", ("code",), with_fallbacks=True).artifacts
    assert [a.file for a in every] == [FILES["Q8_0"], FILES["Q5_K_M"], FILES["Q4_K_M"]]


def test_outputs_do_not_depend_on_the_order_variants_are_written(built, tmp_path):
    root, _ = built
    again = project(tmp_path, MODEL + variants_yaml(("Q8_0", "Q4_K_M", "Q5_K_M")))
    build(again)
    # explain.json is left out: it quotes the lines the variants are written on
    def outputs(folder):
        return {name: data for name, data in tree_bytes(folder / "out").items()
                if not name.endswith("explain.json") and not name.startswith(".cache")}

    assert outputs(again) == outputs(root) and len(outputs(root)) >= 6
    assert run_cli("-C", str(again), "build", "--all", "--check").exit_code == 0


def test_a_prefer_list_names_the_model_and_takes_its_variants_best_first(tmp_path):
    roles = ("roles:\n  code:\n    workload: code\n    prefer: [qwen-coder-14b]\n    strategy: first_fit\n"
             "    requires: {context_min: 12288}\n")
    compiled = build(project(tmp_path, roles=roles))
    # first_fit in prefer order: Q8_0 where it fits comfortably, else the next variant down
    assert compiled["workstation"]["roles"]["code"]["variant"] == "Q8_0"
    assert compiled["desktop-32"]["roles"]["code"]["variant"] == "Q8_0"  # no speed_min: Q8_0 is comfortable
    assert compiled["laptop-16"]["roles"]["code"]["variant"] == "Q4_K_M"


def test_a_model_without_variants_compiles_as_before(tmp_path):
    plain = MODEL.replace("    variants:\n", "") + (f"    quantization: Q4_K_M\n    artifact: {{format: gguf, repo: "
                                                     f"{REPO}, file: {FILES['Q4_K_M']}}}\n")
    compiled = build(project(tmp_path, plain))
    role = compiled["laptop-16"]["roles"]["code"]
    assert role["model"] == "qwen2.5-coder-14b" and "variant" not in role
    assert "variant_of" not in compiled["laptop-16"]["models"]["qwen2.5-coder-14b"]


@pytest.mark.parametrize("variants, code, line", [
    ("      Q5_K_M: {}\n      q5_k_m: {}\n", "E242", "q5_k_m: {}"),  # the same id, case aside
    ("      Q5-K-M: {}\n", "E104", "Q5-K-M: {}"),  # not a quantization name
    ("      Q5_K_M: {params_b: 7}\n", "E101", "Q5_K_M: {params_b: 7}"),  # parameters are the model's
    ("      Q5_K_M: {}\n      Q5_K_M: {}\n", "E003", None),  # a duplicate key: the loader's
])
def test_bad_variants_are_errors_at_their_line(tmp_path, variants, code, line):
    root = project(tmp_path, MODEL + variants)
    result = run_cli("-C", str(root), "validate")
    assert result.exit_code == 1, result.output
    lines = (root / "sources" / "00-models.yaml").read_text().splitlines()
    at = ([i for i, text in enumerate(lines, 1) if text.strip() == line] if line
          else [len(lines)])  # the second of two equal keys
    errors = [text for text in result.output.splitlines() if f"[{code}]" in text]
    assert errors and all(f"sources/00-models.yaml:{at[-1]}:" in e for e in errors), result.output
    assert not (root / "out").exists()


def test_a_variant_id_taken_by_another_model_is_an_error(tmp_path):
    other = ("  qwen2.5-coder-14b:q8_0:\n    params_b: 14.77\n    quantization: Q8_0\n    provider: local\n"
             "    workloads: [code]\n")
    root = project(tmp_path, MODEL + variants_yaml() + other)
    result = run_cli("-C", str(root), "validate")
    assert result.exit_code == 1
    lines = (root / "sources" / "00-models.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == "Q8_0:")
    assert f"sources/00-models.yaml:{line}:" in result.output and "E242" in result.output
    assert "names model 'qwen2.5-coder-14b:q8_0'" in result.output


def test_a_model_with_variants_declares_no_file_of_its_own(tmp_path):
    root = project(tmp_path, MODEL.replace("    variants:\n", "    quantization: Q8_0\n    variants:\n")
                   + variants_yaml())
    result = run_cli("-C", str(root), "validate")
    assert result.exit_code == 1
    lines = (root / "sources" / "00-models.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == "quantization: Q8_0")
    assert f"sources/00-models.yaml:{line}:" in result.output and "E242" in result.output


def test_a_variants_unknown_quantization_is_warned_at_the_variant(tmp_path):
    root = project(tmp_path, MODEL + variants_yaml() + "      IQ9_XYZ:\n        artifact: {format: gguf, repo: "
                   f"{REPO}, file: made-up-iq9.gguf}}\n")
    result = run_cli("-C", str(root), "validate")
    lines = (root / "sources" / "00-models.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == "IQ9_XYZ:")
    warned = [text for text in result.output.splitlines() if "[W300]" in text]
    assert warned and all(f"sources/00-models.yaml:{line}:" in text for text in warned), result.output
    assert "qwen2.5-coder-14b:iq9_xyz" in warned[0]


# a variant's artifact and its Ollama name are checked as a model's are, at the variant's line
@pytest.mark.parametrize("entry, code, marker", [
    ("artifact: {format: gguf, file: ../escape.gguf}", "E204", "escape.gguf"),
    ("ollama: {name: 'qwen coder; rm -rf'}", "[E230]", "rm -rf"),
], ids=["artifact", "ollama-name"])
def test_a_variants_field_is_checked_like_a_models(tmp_path, entry, code, marker):
    root = project(tmp_path, MODEL + f"      Q4_K_M:\n        {entry}\n")
    result = run_cli("-C", str(root), "validate")
    assert result.exit_code == 1 and code in result.output
    lines = (root / "sources" / "00-models.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if marker in text)
    assert f"sources/00-models.yaml:{line}:" in result.output
