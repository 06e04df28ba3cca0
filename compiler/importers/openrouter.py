"""OpenRouter's `GET /api/v1/models` response: cloud models, prices as decimal strings per token."""

from __future__ import annotations

from . import FormatMismatch, Imported, context, hf_repo, per_million

MAPPED = {"id", "name", "description", "context_length", "architecture", "pricing", "top_provider",
          "supported_parameters", "hugging_face_id", "alias_target"}


def convert(data, out: Imported) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise FormatMismatch("expected an object with a `data` array (the /api/v1/models response)")
    for entry in data["data"]:
        model_id = str(entry.get("id") or "")
        pricing = entry.get("pricing") or {}
        if "-1" in (str(pricing.get("prompt")), str(pricing.get("completion"))):
            out.skip(model_id, "router model (price -1: routes to other models)")
            continue
        arch = entry.get("architecture") or {}
        outputs = arch.get("output_modalities") or ["text"]
        if "text" not in outputs:
            out.skip(model_id, "does not output text")
            continue
        top = entry.get("top_provider") or {}
        window = context(entry.get("context_length") or top.get("context_length"), out, model_id)
        if window is False:
            continue
        params = entry.get("supported_parameters") or []
        model = {
            "name": entry.get("name") or model_id,
            "context_window": window,
            "provider": "openrouter",
            "workloads": ["chat"],
            "capabilities": {"tools": "tools" in params, "vision": "image" in (arch.get("input_modalities") or [])},
            "description": entry.get("description") or None,
            "pricing": {k: v for k, v in {"input_per_mtok": per_million(pricing.get("prompt")),
                                          "output_per_mtok": per_million(pricing.get("completion"))}.items()
                        if v is not None} or None,
            "api_key_env": "OPENROUTER_API_KEY",
            "hf_repo": hf_repo(entry.get("hugging_face_id")),
            "x-openrouter": {"id": model_id, **({"alias_target": entry["alias_target"]}
                                                if entry.get("alias_target") else {})}
            if model_id.startswith("~") else None,
        }
        # `~vendor/model-latest` names a moving alias; its id drops the `~` (kept under x-openrouter)
        out.add(model_id.lstrip("~"), model)
        out.unmapped_fields(key for key in entry if key not in MAPPED)
