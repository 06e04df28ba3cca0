"""Ollama discovery: GET /api/tags, then POST /api/show per model for its GGUF facts."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import paths
from ..errors import UsageError
from ..facts import arch_facts
from ..gguf_header import architecture
from ..importers import count, quantization
from ..migrate import normalize_id
from ..validate import mapping
from ..net import (BadResponse, BadURL, Deadline, DeadlinePassed, LimitExceeded, check_base_url,
                   parse_json_object, redact_url, request)
from . import text

TIMEOUT = 5.0  # seconds per request, all of it (connect, every read): a slow Ollama is a warning, not a stall
MAX_BODY = 16 << 20  # bytes per response; /api/tags and /api/show answers are kilobytes


@dataclass
class Discovery:
    base: str  # where Ollama was asked, redacted: fit to show and write
    models: dict[str, dict] = field(default_factory=dict)  # id -> catalog model entry
    warnings: list[str] = field(default_factory=list)


def base_url(explicit: str | None = None) -> str:
    """The Ollama server's URL (--ollama, else OLLAMA_HOST, else the default); one httpx cannot use
    is a usage error (exit 2), named with where it came from."""
    address = paths.ollama_host(explicit)
    try:
        return check_base_url(address)
    except BadURL as exc:
        source = "--ollama" if explicit else paths.OLLAMA_HOST if paths.env(paths.OLLAMA_HOST) else "the default"
        raise UsageError(f"{source}: {exc}; give one such as http://127.0.0.1:11434") from exc


def tag_entries(body, warnings: list[str]) -> list[tuple[str, dict]]:
    """(name, entry) for each model in a /api/tags answer, by name; malformed entries are left out."""
    entries = body.get("models") if isinstance(body, dict) else None
    if entries is None and isinstance(body, dict):
        return []  # nothing installed
    if not isinstance(entries, list):
        warnings.append("ollama /api/tags: `models` is not a list of objects; nothing discovered")
        return []
    named = {}
    for tag in entries:
        name = text(tag.get("name") or tag.get("model")) if isinstance(tag, dict) else None
        if name:
            named.setdefault(name, tag)
        else:
            warnings.append(f"ollama /api/tags: a model without a name ({str(tag)[:40]}); left out")
    return sorted(named.items())


def facts(name: str, tag: dict, show, host: str, ids_by_ollama_name: dict[str, str]) -> tuple[str, dict]:
    """The catalog entry for one model from its /api/tags entry and /api/show answer (any JSON)."""
    show = mapping(show)
    details = mapping(show.get("details")) or mapping(tag.get("details"))
    info = mapping(show.get("model_info"))
    arch_name = text(info.get("general.architecture") or details.get("family"))
    capabilities = show.get("capabilities") if isinstance(show.get("capabilities"), list) else []

    def arch(key):
        return count(info.get(f"{arch_name}.{key}")) if arch_name else None

    cloud = bool(tag.get("remote_host") or tag.get("remote_model") or name.endswith("-cloud") or ":cloud" in name)
    model: dict = {"name": name, "provider": "ollama-cloud" if cloud else "ollama"}
    if arch_name:
        model["family"] = arch_name
    params = count(info.get("general.parameter_count"))
    params_b = round(params / 1e9, 4) if params else 0
    if params_b > 0:
        model["params_b"] = params_b
    quant = quantization(details.get("quantization_level"))
    if quant:
        model["quantization"] = quant
    window = arch("context_length")
    if window:
        model["context_window"] = window
    embedding_only = "embedding" in capabilities and "completion" not in capabilities
    model["workloads"] = ["embedding"] if embedding_only else ["chat"]
    if capabilities:
        model["capabilities"] = {"tools": "tools" in capabilities, "vision": "vision" in capabilities}
    if arch_name:  # model_info holds the GGUF's own keys: read as a header's are, one mapping for both
        shape = arch_facts(architecture({**info, "general.architecture": arch_name}))
        if shape:
            model["arch"] = shape
    if not cloud and count(tag.get("size")):
        model["artifact"] = {"format": "gguf", "size_bytes": tag["size"]}
    model["ollama"] = {"name": name}
    model["installed_on"] = [host]
    model_id = ids_by_ollama_name.get(name) or normalize_id(name)[:200].rstrip("-") or "model"
    return model_id, model


def discover(host: str, base: str | None = None, ids_by_ollama_name: dict[str, str] | None = None,
             timeout: float = TIMEOUT) -> Discovery:
    """Everything Ollama at `base` has installed; never raises for an absent or broken server."""
    import httpx

    address = base_url(base)
    found = Discovery(redact_url(address))
    ids = ids_by_ollama_name or {}

    def ask(client, method: str, path: str, **kwargs):
        """One request within `timeout` seconds in all, its JSON answer; HTTPStatusError for an error status."""
        response, body = request(client, method, path, Deadline(timeout), MAX_BODY, f"ollama {path}", **kwargs)
        response.raise_for_status()
        return parse_json_object(body, f"ollama {path}")

    try:
        with httpx.Client(base_url=address) as client:
            for name, tag in tag_entries(ask(client, "GET", "/api/tags"), found.warnings):
                show = None
                try:
                    show = ask(client, "POST", "/api/show", json={"model": name})
                except (httpx.HTTPError, ValueError, LimitExceeded) as exc:
                    found.warnings.append(f"ollama: no details for {name} ({type(exc).__name__}); "
                                          "using what /api/tags says")
                model_id, model = facts(name, tag, show, host, ids)
                found.models[model_id] = model
    except (httpx.TimeoutException, DeadlinePassed):
        found.warnings.append(f"ollama at {found.base} did not answer within {timeout:g} s; nothing discovered")
    except (LimitExceeded, BadResponse) as exc:  # before ValueError: BadResponse is one
        found.warnings.append(f"ollama at {found.base} answered out of bounds ({exc}); nothing discovered")
    except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
        found.warnings.append(f"no Ollama at {found.base} ({type(exc).__name__}); nothing discovered")
    return found


def layer(found: Discovery) -> dict:
    return {"schema_version": 2, "kind": "catalog",
            "models": {model_id: found.models[model_id] for model_id in sorted(found.models)}}
