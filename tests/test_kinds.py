"""Model kinds: which types serve which workload, the default type, role widening, prefer-list
rejection, explain, and each importer's inference on real entries from tests/data/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler import kinds, schema
from compiler.hosts import Host
from compiler.importers import Imported, gpt4all, litellm, llmfit, openrouter
from compiler.importers import kinds as inferred
from compiler.load import load_yaml_text
from compiler.merge import Layer, merge_layers
from compiler.resolve import resolve
from compiler.select import select

from conftest import REPO, add_layer, run_cli

REALDATA = Path(__file__).resolve().parent / "data"

MODELS = """
schema_version: 2
kind: catalog
models:
  chatty:   {provider: local, params_b: 1, quantization: Q4_K_M, context_window: 8192, workloads: [chat, code],
             arch: {layers: 16, kv_heads: 4, head_dim: 64}}
  coder:    {provider: local, params_b: 3, quantization: Q4_K_M, context_window: 8192, workloads: [code], type: base,
             arch: {layers: 24, kv_heads: 4, head_dim: 64}}
  vectors:  {provider: local, params_b: 0.1, quantization: F16, context_window: 512, workloads: [embedding]}
  looker:   {provider: local, params_b: 2, quantization: Q4_K_M, context_window: 8192, workloads: [chat],
             type: vision-language, arch: {layers: 20, kv_heads: 4, head_dim: 64}}
  nli:      {provider: local, params_b: 0.4, quantization: F32, context_window: 1024, workloads: [classification],
             type: classifier}
  embedder: {provider: local, params_b: 0.3, quantization: F16, context_window: 512, workloads: [chat],
             type: embedding}
  cloud-vec: {provider: openai, workloads: [chat, embedding], context_window: 8192, type: embedding}
  cloud-chat: {provider: openai, workloads: [chat, code], context_window: 128000}
"""


def catalog_with(roles: str):
    merged = merge_layers([Layer("sources", load_yaml_text(MODELS + "roles:\n" + roles, "catalog.yaml"))])
    catalog, problems = resolve(merged)
    assert not [p for p in problems if p.severity == "error"]
    return catalog


def plan_for(roles: str, ram_gb: int = 32):
    return select(catalog_with(roles), Host("h", ram_gb * 1024, ()))


def reasons(plan, role: str) -> dict[str, str]:
    return {v.model: v.describe() for v in plan.roles[role].candidates}


def test_the_table_names_only_known_types_and_agrees_with_the_schemas():
    for workload, types in kinds.SERVES.items():
        assert types and set(types) <= set(kinds.TYPES), workload
    catalog = json.loads((REPO / "compiler" / "schemas" / "catalog.v2.json").read_text())
    output = json.loads((REPO / "compiler" / "schemas" / "output.v2.json").read_text())
    assert catalog["$defs"]["model_type"]["enum"] == list(kinds.TYPES)
    assert set(catalog["$defs"]["workload"]["enum"]) == set(kinds.SERVES)  # every workload has a row
    assert output["properties"]["models"]["additionalProperties"]["properties"]["type"]["enum"] == list(kinds.TYPES)
    assert "base" not in {t for types in kinds.SERVES.values() for t in types}  # base serves nothing by default


def test_the_default_type_is_derived_once_and_marked():
    catalog = catalog_with("  chat: {workload: chat}\n")
    assert catalog.models["chatty"]["type"] == "instruct" and "chatty" in catalog.default_types
    assert catalog.models["vectors"]["type"] == "embedding" and "vectors" in catalog.default_types
    assert catalog.models["cloud-chat"]["type"] == "instruct"
    assert catalog.models["coder"]["type"] == "base" and "coder" not in catalog.default_types


def test_chat_takes_instruct_and_vision_language_and_rejects_the_rest_with_the_reason():
    plan = plan_for("  chat: {workload: chat}\n")
    why = reasons(plan, "chat")
    assert plan.roles["chat"].model == "looker" and plan.roles["chat"].fallbacks == ["chatty"]
    assert why["embedder"] == ("type embedding does not serve workload chat (takes instruct, vision-language); "
                               "widen with role types")


def test_each_workload_takes_the_types_of_its_row():
    plan = plan_for("  code: {workload: code}\n  embed: {workload: embedding}\n  classify: {workload: classification}\n")
    assert plan.roles["code"].model == "chatty"  # coder (base, larger) is rejected
    assert reasons(plan, "code")["coder"].startswith("type base does not serve workload code")
    assert plan.roles["embed"].model == "vectors"
    assert plan.roles["classify"].model == "nli"


def test_a_role_widens_with_types():
    plan = plan_for("  complete: {workload: code, types: [base, instruct]}\n")
    assert plan.roles["complete"].model == "coder"  # largest_fit: the base model is larger
    assert plan.roles["complete"].fallbacks == ["chatty"]
    narrow = plan_for("  chat: {workload: chat, types: [vision-language]}\n")
    assert narrow.roles["chat"].model == "looker"
    assert reasons(narrow, "chat")["chatty"] == "type instruct is not among the role's types (vision-language)"


def test_a_prefer_list_naming_a_wrong_type_model_is_rejected_not_taken():
    plan = plan_for("  chat: {workload: chat, prefer: [embedder, coder, chatty], fallback: [cloud-vec, cloud-chat]}\n")
    role = plan.roles["chat"]
    assert role.model == "chatty"
    assert reasons(plan, "chat")["embedder"].startswith("type embedding does not serve workload chat")
    assert reasons(plan, "chat")["coder"].startswith("type base does not serve workload chat")
    # a cloud fallback of the wrong type is left out of the chain, with its reason in the trace
    assert role.fallbacks == ["cloud-chat"]
    assert reasons(plan, "chat")["cloud-vec"].startswith("type embedding does not serve workload chat")


def test_unknown_types_are_schema_errors(tmp_path: Path, base_catalog: Path):
    add_layer(base_catalog, "20-bad.yaml", "models:\n  small-chat: {type: chatbot}\n"
              "roles:\n  chat: {types: [instruct, wizard]}\n")
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1
    assert "20-bad.yaml:4:16" in result.stderr and "chatbot" in result.stderr
    assert "wizard" in result.stderr


def test_explain_shows_types_the_default_and_the_rejection(base_catalog: Path):
    add_layer(base_catalog, "20-kinds.yaml", "models:\n  big-chat: {type: base}\n")
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    role = run_cli("-C", str(base_catalog), "explain", "box-32", "chat").stdout
    assert role.startswith("role chat on box-32: workload chat (takes instruct, vision-language), strategy")
    chosen = next(line for line in role.splitlines() if line.startswith("    chosen    small-chat: "))
    assert chosen.endswith("; type: instruct (default)")
    assert ("    rejected  big-chat: type base does not serve workload chat (takes instruct, vision-language); "
            "widen with role types; type: base") in role.splitlines()
    model = run_cli("-C", str(base_catalog), "explain", "box-32", "small-chat").stdout
    assert model.splitlines()[:2] == ["model small-chat: used by chat, summarization", "  type: instruct (default)"]
    trace = json.loads((base_catalog / "out" / "box-32" / "explain.json").read_text())
    candidates = {c["model"]: c for c in trace["roles"]["chat"]["candidates"]}
    assert candidates["small-chat"]["type"] == "instruct" and candidates["small-chat"]["type_default"] is True
    assert candidates["big-chat"]["type"] == "base" and "type_default" not in candidates["big-chat"]
    compiled = json.loads((base_catalog / "out" / "box-32" / "models.json").read_text())
    assert compiled["models"]["small-chat"]["type"] == "instruct"
    assert not list(schema.iter_errors("output", compiled, layer=False))
    listed = json.loads(run_cli("-C", str(base_catalog), "models", "--host", "box-32", "--json").stdout)
    assert {row["id"]: row["type"] for row in listed} == {"big-chat": "base", "small-chat": "instruct",
                                                          "cloud-mini": "instruct"}


def test_the_shipped_catalog_declares_every_type():
    text = (REPO / "sources" / "00-models.yaml").read_text()
    models = load_yaml_text(text, "00-models.yaml").data["models"]
    assert all(model.get("type") in kinds.TYPES for model in models.values())
    assert models["starcoder"]["type"] == "base"
    assert models["bart-large-mnli"]["type"] == "classifier"
    assert models["bart-large-cnn"]["type"] == "summarizer"


# --- importers, on the real files in tests/data/ --------------------------------------------------

def imported(module, name: str) -> dict[str, dict]:
    """The models a real file imports to, by their name in the source."""
    out = Imported(name, module.__name__)
    module.convert(json.loads((REALDATA / name).read_text()), out)
    return {model["name"]: model for model in out.models.values()}


@pytest.fixture(scope="module")
def llmfit_models():
    return imported(llmfit, "hf_models.json")


@pytest.mark.parametrize(("name", "kind"), [
    ("BAAI/bge-large-en-v1.5", "embedding"),            # use case and pipeline tag
    ("nomic-ai/nomic-embed-text-v1.5", "embedding"),
    ("Qwen/Qwen3-Embedding-8B", "embedding"),           # an LLM-sized embedding model
    ("intfloat/multilingual-e5-large-instruct", "embedding"),  # "instruct", yet an embedding model
    ("BAAI/bge-reranker-large", "reranker"),            # its use case says "embeddings"
    ("meta-llama/Llama-Guard-3-8B", "guard"),
    ("Qwen/Qwen3Guard-Gen-8B", "guard"),
    ("ibm-granite/granite-guardian-3.3-8b", "guard"),
    ("shieldstar/Qwen3.5-122B-A10B-int4-AutoRound-EC", "instruct"),  # "shield" in the publisher only
    ("cais/HarmBench-Llama-2-13b-cls", "classifier"),   # HarmBench's judge: answers Yes/No on a generation
    ("microsoft/harrier-oss-v1-27b", "embedding"),      # a decoder-only embedding family (Gemma 3, Qwen3 bodies)
    ("microsoft/harrier-oss-v1-0.6b", "embedding"),
    ("hpcai-tech/grok-1", "base"),                      # xAI's raw pre-training checkpoint
    ("facebook/encodec_24khz", "audio"),                # llmfit calls it "Code generation and completion"
    ("ntu-spml/distilhubert", "audio"),
    ("rednote-hilab/dots.ocr", "ocr"),
    ("deepseek-ai/DeepSeek-OCR", "ocr"),
    ("microsoft/Florence-2-large", "ocr"),
    ("bigcode/starcoder", "base"),
    ("meta-llama/Llama-3.1-8B", "base"),
    ("unsloth/Meta-Llama-3.1-8B-bnb-4bit", "base"),     # a repack of the base release
    ("Qwen/Qwen2.5-7B", "base"),
    ("Qwen/Qwen3-8B-Base", "base"),
    ("mistralai/Mistral-7B-v0.1", "base"),
    ("EleutherAI/pythia-1.4b", "base"),
    ("skt/kobert-base-v1", "base"),                     # a fill-mask encoder
    ("RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3", "base"),  # a draft model
    ("HuggingFaceTB/SmolLM2-1.7B", "base"),             # the file also lists SmolLM2-1.7B-Instruct
    ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "instruct"),
    ("meta-llama/Llama-3.2-11B-Vision", "base"),         # beside Llama-3.2-11B-Vision-Instruct
    ("Qwen/Qwen3-8B", "instruct"),                      # Qwen3's plain name is the post-trained model
    ("Qwen/Qwen2.5-7B-Instruct", "instruct"),
    ("meta-llama/Llama-3.1-8B-Instruct", "instruct"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "instruct"),
    ("Jackrong/Qwopus3.5-27B-v3-FP8-vllm-ready", "instruct"),  # "vllm" is not "VL"
    ("Qwen/Qwen2.5-VL-7B-Instruct", "vision-language"),
    ("google/gemma-3-4b-it", "vision-language"),
    ("OpenGVLab/InternVL3-1B", "vision-language"),
])
def test_llmfit_types(llmfit_models, name: str, kind: str):
    assert llmfit_models[name]["type"] == kind


def test_llmfit_no_encoder_embedding_ocr_guard_or_audio_model_is_instruct(llmfit_models):
    raw = {entry["name"]: entry for entry in json.loads((REALDATA / "hf_models.json").read_text())}
    narrow = {name for name, m in llmfit_models.items() if m["type"] not in ("instruct", "vision-language", "base")}
    encoders = {name for name in llmfit_models if (raw[name].get("architecture") or "") in inferred.NOT_GENERATIVE}
    assert len(narrow) >= 160 and len(encoders) >= 50
    for name in narrow | encoders:
        assert llmfit_models[name]["type"] not in ("instruct", "vision-language"), name
    for name in narrow:  # and their workloads follow, so an embedding role finds the embedding models
        if llmfit_models[name]["type"] == "embedding":
            assert llmfit_models[name]["workloads"] == ["embedding"], name


def test_gpt4all_types():
    models = imported(gpt4all, "models3.json")
    assert models["Starcoder"]["type"] == "base"     # "Code completion based"
    assert models["Replit"]["type"] == "base"
    assert models["SBert"]["type"] == "embedding"    # embeddingModel: true
    assert models["Nomic Embed Text v1.5"]["type"] == "embedding"
    assert models["Llama 3 8B Instruct"]["type"] == "instruct"
    assert models["Mistral OpenOrca"]["type"] == "instruct"


def test_litellm_types_follow_the_mode_then_the_name():
    models = imported(litellm, "model_prices_and_context_window.json")
    assert models["rerank-english-v3.0"]["type"] == "reranker"
    assert models["omni-moderation-latest"]["type"] == "guard"
    assert models["text-embedding-3-small"]["type"] == "embedding"
    assert models["davinci-002"]["type"] == "base"               # mode completion, a base model
    assert models["gpt-3.5-turbo-instruct"]["type"] == "instruct"  # mode completion, tuned
    assert models["gpt-4o-mini"]["type"] == "vision-language"    # supports_vision
    assert models["groq/meta-llama/llama-guard-4-12b"]["type"] == "guard"  # mode chat, but a guard
    # a chat API's "llama-3.1-8b" is the tuned model it serves, not the pretrained release of that name
    assert models["vercel_ai_gateway/meta/llama-3.1-8b"]["type"] == "instruct"
    assert models["fireworks_ai/accounts/fireworks/models/deepseek-coder-7b-base"]["type"] == "base"


def test_openrouter_types_follow_the_modalities():
    models = imported(openrouter, "openrouter_models.json")
    raw = json.loads((REALDATA / "openrouter_models.json").read_text())["data"]
    by_id = {e["id"]: e.get("name") or e["id"] for e in raw}
    text_only = [by_id[e["id"]] for e in raw if e["architecture"].get("input_modalities") == ["text"]
                 and by_id[e["id"]] in models]
    with_images = [by_id[e["id"]] for e in raw if "image" in (e["architecture"].get("input_modalities") or ())
                   and by_id[e["id"]] in models]
    assert len(text_only) > 100 and len(with_images) > 100
    assert {models[name]["type"] for name in text_only} <= {"instruct", "guard", "audio"}
    assert {models[name]["type"] for name in with_images if "guard" not in name.lower()} == {"vision-language"}
    assert models[by_id["meta-llama/llama-guard-4-12b"]]["type"] == "guard"


def test_staged_candidates_get_a_type_too():
    from compiler.discover.ingest import as_catalog

    staged = as_catalog({"candidates": [
        {"model_id": "meta-llama/Llama-3.1-8B", "source": "huggingface_hub", "status": "trial"},
        {"model_id": "meta-llama/Llama-3.1-8B-Instruct", "source": "huggingface_hub", "status": "trial"},
        {"model_id": "BAAI/bge-m3", "source": "curated"},
        {"model_id": "mistralai/mistral-7b-v0.1", "source": "openrouter_index"},  # the tuned model an API serves
        {"model_id": "qwen/qwen2.5-vl-72b-instruct", "source": "openrouter_index", "tags": ["image", "text"]},
    ]})["models"]
    assert {model_id: model["type"] for model_id, model in staged.items()} == {
        "meta-llama/llama-3.1-8b": "base", "meta-llama/llama-3.1-8b-instruct": "instruct", "baai/bge-m3": "embedding",
        "mistralai/mistral-7b-v0.1": "instruct", "qwen/qwen2.5-vl-72b-instruct": "vision-language"}
    assert staged["baai/bge-m3"]["workloads"] == ["embedding"]
