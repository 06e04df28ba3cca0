"""OpenRouter's `GET /api/v1/models` response: cloud models, prices as decimal strings per token."""

from __future__ import annotations

from . import FormatMismatch, Imported, context, hf_repo, mapping, named, per_million, plain, strings, text
from . import kinds

MAPPED = {"id", "name", "description", "context_length", "architecture", "pricing", "top_provider",
          "supported_parameters", "hugging_face_id", "alias_target"}


def convert(data, out: Imported) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise FormatMismatch("expected an object with a `data` array (the /api/v1/models response)")
    for entry in data["data"]:
        model_id = named(out, entry, "id", label="name")
        if model_id is None:
            continue
        pricing = mapping(entry.get("pricing"))
        if "-1" in (str(pricing.get("prompt")), str(pricing.get("completion"))):
            out.skip(model_id, "router model (price -1: routes to other models)")
            continue
        arch = mapping(entry.get("architecture"))
        outputs = strings(arch.get("output_modalities")) or ["text"]
        if "text" not in outputs:
            out.skip(model_id, "does not output text")
            continue
        top = mapping(entry.get("top_provider"))
        window = context(entry.get("context_length") or top.get("context_length"), out, model_id)
        if window is False:
            continue
        params = strings(entry.get("supported_parameters"))
        vision = "image" in strings(arch.get("input_modalities"))
        # every model here answers chat completions: its modalities and name say which kind
        kind = kinds.from_name(model_id) or kinds.generative(model_id, vision=vision, releases=False)
        model = {
            "name": text(entry.get("name")) or model_id,
            "context_window": window,
            "provider": "openrouter",
            "workloads": kinds.workloads(kind, ["chat"]),
            "type": kind,
            "capabilities": {"tools": "tools" in params, "vision": vision},
            "description": text(entry.get("description")),
            "pricing": {k: v for k, v in {"input_per_mtok": per_million(pricing.get("prompt")),
                                          "output_per_mtok": per_million(pricing.get("completion"))}.items()
                        if v is not None} or None,
            "api_key_env": "OPENROUTER_API_KEY",
            "hf_repo": hf_repo(entry.get("hugging_face_id")),
            "x-openrouter": {"id": model_id, **({"alias_target": entry["alias_target"]}
                                                if entry.get("alias_target") and plain(entry["alias_target"]) else {})}
            if model_id.startswith("~") else None,
        }
        # `~vendor/model-latest` names a moving alias; its id drops the `~` (kept under x-openrouter)
        out.add(model_id.lstrip("~"), model)
        out.unmapped_fields(key for key in entry if key not in MAPPED)
