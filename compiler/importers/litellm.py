"""LiteLLM's model price and context-window map: cloud models keyed by provider/name."""

from __future__ import annotations

from . import FormatMismatch, Imported, api_key_env, context, day, normalize_id, per_million, text, unsafe_names
from . import kinds

NOT_MODELS = {"sample_spec": "documentation of the format, not a model",
              "fallback_generalizations": "fallback rules, not a model"}
WORKLOADS = {"chat": "chat", "responses": "chat", "completion": "chat", "embedding": "embedding",
             "rerank": "classification", "moderation": "classification"}
# The model type each mode states; None: the name decides (a completion endpoint serves base models
# such as davinci-002 and instruct ones such as gpt-3.5-turbo-instruct). Modes without a text
# workload (audio_transcription, image_generation, ...) are skipped above, so they need no type.
TYPES = {"chat": None, "responses": None, "completion": None, "embedding": "embedding", "rerank": "reranker",
         "moderation": "guard"}
LOCAL = {"ollama": "ollama", "ollama_chat": "ollama", "huggingface": "huggingface"}
MAPPED = {"litellm_provider", "mode", "max_input_tokens", "max_tokens", "input_cost_per_token",
          "output_cost_per_token", "deprecation_date", "supports_function_calling", "supports_tool_choice",
          "supports_vision"}


def convert(data, out: Imported) -> None:
    if not isinstance(data, dict):
        raise FormatMismatch("expected a JSON object keyed by model name")
    for key, entry in data.items():
        if key in NOT_MODELS:
            out.skip(key, NOT_MODELS[key])
            continue
        if not isinstance(entry, dict):
            out.skip(key, "not a model entry")
            continue
        mode = entry.get("mode")
        if mode is None:
            out.skip(key, "no mode (a pricing tier, not a model)")
            continue
        if not isinstance(mode, str) or mode not in WORKLOADS:
            out.skip(key, f"mode {mode!r} is not a text workload" if len(str(mode)) < 40 else "mode is not one value")
            continue
        window = context(entry.get("max_input_tokens") or entry.get("max_tokens"), out, key)
        if window is False:
            continue
        provider_name = text(entry.get("litellm_provider")) or key.split("/")[0]
        provider = LOCAL.get(provider_name) or normalize_id(provider_name).replace(":", "-").replace("/", "-")
        pricing = {"input_per_mtok": per_million(entry.get("input_cost_per_token")),
                   "output_per_mtok": per_million(entry.get("output_cost_per_token"))}
        date = str(entry.get("deprecation_date") or "")
        kind = TYPES[mode] or kinds.from_name(key) or kinds.generative(
            key, vision=bool(entry.get("supports_vision")), releases=mode == "completion")
        model = {
            "name": key,
            "context_window": window,
            "provider": provider,
            "workloads": kinds.workloads(kind, [WORKLOADS[mode]]),
            "type": kind,
            "capabilities": {"tools": bool(entry.get("supports_function_calling") or entry.get("supports_tool_choice")),
                             "vision": bool(entry.get("supports_vision"))},
            "deprecation_date": day(date),
            "pricing": {k: v for k, v in pricing.items() if v is not None} or None,
        }
        if provider in LOCAL.values():
            if provider == "ollama":
                if unsafe_names(out, key, ollama=key.split("/", 1)[-1]):
                    continue
                model["ollama"] = {"name": key.split("/", 1)[-1]}
        else:
            model["api_key_env"] = api_key_env(provider_name)
        out.add(key, model)
        out.unmapped_fields(k for k in entry if k not in MAPPED)
