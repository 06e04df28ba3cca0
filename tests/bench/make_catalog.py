"""Build the large benchmark catalog (~4,800 models, ~50,000 lines) from tests/data.

A crude mapping, for scale only: llmfit's hf_models.json and LiteLLM's model map become one
schema-version-2 catalog layer. The importers (a later issue) do this properly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from compiler.migrate import unique_id

WORKLOAD_OF_MODE = {"chat": "chat", "completion": "chat", "embedding": "embedding",
                    "responses": "chat", "rerank": "classification", "moderation": "classification"}
PROVIDERS = {"openai", "anthropic", "openrouter"}


def build(realdata: Path) -> dict:
    models: dict[str, dict] = {}
    taken: set[str] = set()
    for entry in json.loads((realdata / "hf_models.json").read_text()):
        ctx = entry.get("context_length") or 4096
        if not 128 <= ctx <= 10_000_000 or not entry.get("parameters_raw"):
            continue
        model = {
            "name": entry["name"], "family": entry.get("architecture") or "unknown",
            "params_b": max(round(entry["parameters_raw"] / 1e9, 6), 0.000001), "quantization": "Q4_K_M",
            "context_window": int(ctx), "provider": "local",
            "workloads": ["code", "chat"] if "code" in (entry.get("use_case") or "").lower() else ["chat"],
            "capabilities": {"reasoning": 0.5, "coding": 0.5},
            "priority": 500, "status": "active",
            "artifact": {"format": "gguf", "repo": entry["name"], "revision": "main",
                         "file": "model-q4_k_m.gguf"},
        }
        if entry.get("num_hidden_layers") and entry.get("num_key_value_heads") and entry.get("head_dim"):
            model["arch"] = {"layers": entry["num_hidden_layers"], "kv_heads": entry["num_key_value_heads"],
                             "head_dim": entry["head_dim"]}
        models[unique_id(entry["name"], taken)] = model
    litellm = json.loads((realdata / "model_prices_and_context_window.json").read_text())
    for key, entry in litellm.items():
        provider = entry.get("litellm_provider") if isinstance(entry, dict) else None
        if key in ("sample_spec", "fallback_generalizations") or provider not in PROVIDERS:
            provider = "openrouter" if isinstance(entry, dict) and entry.get("mode") else None
        if provider is None:
            continue
        ctx = entry.get("max_input_tokens") or entry.get("max_tokens") or 4096
        if not isinstance(ctx, (int, float)):
            continue
        model = {"name": key, "provider": provider,
                 "workloads": [WORKLOAD_OF_MODE.get(entry.get("mode"), "chat")],
                 "context_window": int(ctx), "priority": 900, "status": "active",
                 "api_key_env": "OPENAI_API_KEY"}
        if isinstance(entry.get("input_cost_per_token"), (int, float)):
            model["pricing"] = {"input_per_mtok": round(entry["input_cost_per_token"] * 1e6, 6),
                                "output_per_mtok": round((entry.get("output_cost_per_token") or 0) * 1e6, 6)}
        models[unique_id(key, taken)] = model
    return {"schema_version": 2, "kind": "catalog", "models": models}


def to_yaml(data: dict) -> str:
    import yaml
    return yaml.safe_dump(data, sort_keys=False, width=200, allow_unicode=True, default_flow_style=None)


if __name__ == "__main__":
    realdata, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.write_text(to_yaml(build(realdata)))
    print(f"{out}: {len(out.read_text().splitlines())} lines")
