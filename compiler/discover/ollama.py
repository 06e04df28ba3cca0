"""Ollama discovery: GET /api/tags, then POST /api/show per model for its GGUF facts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..migrate import normalize_id
from . import text

TIMEOUT = 5.0  # seconds per request: a slow Ollama is a warning, not a stall


@dataclass
class Discovery:
    base: str
    models: dict[str, dict] = field(default_factory=dict)  # id -> catalog model entry
    warnings: list[str] = field(default_factory=list)


def base_url(explicit: str | None = None) -> str:
    host = explicit or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
    return host if "://" in host else f"http://{host}"


def tag_entries(body, warnings: list[str]) -> list[tuple[str, dict]]:
    """(name, entry) for each model in a /api/tags answer, by name; malformed entries are left out."""
    entries = body.get("models") if isinstance(body, dict) else None
    if entries is None and isinstance(body, dict):
        return []  # nothing installed
    if not isinstance(entries, list):
        warnings.append("ollama: /api/tags answered without a `models` list; nothing discovered")
        return []
    named = {}
    for tag in entries:
        name = text(tag.get("name") or tag.get("model")) if isinstance(tag, dict) else None
        if name:
            named.setdefault(name, tag)
        else:
            warnings.append(f"ollama: /api/tags lists a model without a name ({str(tag)[:40]}); left out")
    return sorted(named.items())


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _count(value) -> int | None:
    return value if type(value) is int and 0 < value < 1 << 53 else None  # not a bool; exact in any JSON reader


def facts(name: str, tag: dict, show, host: str, ids_by_ollama_name: dict[str, str]) -> tuple[str, dict]:
    """The catalog entry for one model from its /api/tags entry and /api/show answer (any JSON)."""
    show = _mapping(show)
    details = _mapping(show.get("details")) or _mapping(tag.get("details"))
    info = _mapping(show.get("model_info"))
    arch_name = text(info.get("general.architecture") or details.get("family"))
    capabilities = show.get("capabilities") if isinstance(show.get("capabilities"), list) else []

    def arch(key):
        return _count(info.get(f"{arch_name}.{key}")) if arch_name else None

    cloud = bool(tag.get("remote_host") or tag.get("remote_model") or name.endswith("-cloud") or ":cloud" in name)
    model: dict = {"name": name, "provider": "ollama-cloud" if cloud else "ollama"}
    if arch_name:
        model["family"] = str(arch_name)
    params = _count(info.get("general.parameter_count"))
    if params and round(params / 1e9, 4) > 0:
        model["params_b"] = round(params / 1e9, 4)
    quant = details.get("quantization_level")
    if quant:
        model["quantization"] = "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in str(quant).upper())
    if arch("context_length"):
        model["context_window"] = arch("context_length")
    embedding_only = "embedding" in capabilities and "completion" not in capabilities
    model["workloads"] = ["embedding"] if embedding_only else ["chat"]
    if capabilities:
        model["capabilities"] = {"tools": "tools" in capabilities, "vision": "vision" in capabilities}
    layers, kv_heads, width, heads = arch("block_count"), arch("attention.head_count_kv"), arch("embedding_length"), \
        arch("attention.head_count")
    shape = {"layers": layers, "kv_heads": kv_heads, "hidden_size": width,
             "head_dim": width // heads if width and heads else None}
    if any(shape.values()):
        model["arch"] = {k: v for k, v in shape.items() if v}
    if not cloud and _count(tag.get("size")):
        model["artifact"] = {"format": "gguf", "size_bytes": tag["size"]}
    model["ollama"] = {"name": name}
    model["installed_on"] = [host]
    model_id = ids_by_ollama_name.get(name) or normalize_id(name)[:200].rstrip("-") or "model"
    return model_id, model


def discover(host: str, base: str | None = None, ids_by_ollama_name: dict[str, str] | None = None,
             timeout: float = TIMEOUT) -> Discovery:
    """Everything Ollama at `base` has installed; never raises for an absent or broken server."""
    import httpx

    found = Discovery(base_url(base))
    ids = ids_by_ollama_name or {}
    try:
        with httpx.Client(base_url=found.base, timeout=httpx.Timeout(timeout)) as client:
            tags = client.get("/api/tags")
            tags.raise_for_status()
            for name, tag in tag_entries(tags.json(), found.warnings):
                show = None
                try:
                    reply = client.post("/api/show", json={"model": name})
                    reply.raise_for_status()
                    show = reply.json()
                except (httpx.HTTPError, ValueError) as exc:
                    found.warnings.append(f"ollama: no details for {name} ({type(exc).__name__}); "
                                          "using what /api/tags says")
                model_id, model = facts(name, tag, show, host, ids)
                found.models[model_id] = model
    except httpx.TimeoutException:
        found.warnings.append(f"ollama at {found.base} did not answer within {timeout:g} s; nothing discovered")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        found.warnings.append(f"no Ollama at {found.base} ({type(exc).__name__}); nothing discovered")
    return found


def layer(found: Discovery) -> dict:
    return {"schema_version": 2, "kind": "catalog",
            "models": {model_id: found.models[model_id] for model_id in sorted(found.models)}}
