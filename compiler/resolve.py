"""Resolve stage: a merged catalog to one ready for selection (defaults, aliases, ids, URLs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import paths
from .errors import Diagnostic
from .memory import BITS_PER_WEIGHT, DEFAULT_CONTEXT, RUNTIME_OVERHEAD_MB, UNKNOWN_QUANT_BPW, is_cloud
from .merge import Layer, Merged, origin
from .validate import alias_table

SELECTION_DEFAULTS = {"ram_reserve_gb": 2, "vram_reserve_gb": 1, "basis": "total", "strategy": "auto",
                      "allow_cloud": True, "context_default": DEFAULT_CONTEXT,
                      "runtime_overhead_mb": RUNTIME_OVERHEAD_MB, "max_fallbacks": 3}
MODEL_DEFAULTS = {"status": "active", "priority": 100, "recommended": False}


@dataclass
class Catalog:
    models: dict[str, dict]
    roles: dict[str, dict]
    names: dict[str, str]  # lower-cased id or alias -> id
    selection: dict
    layers: tuple[Layer, ...]
    # host-independent work of later stages, kept with the catalog it derives from (select's
    # screening of each role's candidates), so 100 hosts sharing a catalog pay for it once
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def aliases(self) -> dict[str, str]:
        if "aliases" not in self.memo:
            self.memo["aliases"] = {name: model_id for name, model_id in self.names.items() if name != model_id}
        return self.memo["aliases"]


def resolve(merged: Merged) -> tuple[Catalog, list[Diagnostic]]:
    data = merged.data

    def locate(path):
        return origin(merged.layers, path)

    problems: list[Diagnostic] = []
    names, _ = alias_table(data.get("models") or {}, locate)  # collisions were reported by validate
    models = {}
    for model_id, model in sorted((data.get("models") or {}).items()):
        resolved = {**MODEL_DEFAULTS, **model}
        quant = model.get("quantization")
        estimated = not is_cloud(model) and not (model.get("memory") or {}).get("ram_mb") \
            and not (model.get("artifact") or {}).get("size_bytes")
        if estimated and quant and quant.upper() not in BITS_PER_WEIGHT:
            file, line, col = locate(("models", model_id, "quantization"))
            problems.append(Diagnostic(
                file, line, col, "W300", f"quantization {quant!r} of {model_id!r} has no bits-per-weight entry; "
                f"its memory is estimated at {UNKNOWN_QUANT_BPW:g} bits per weight",
                "declare memory.ram_mb or artifact.size_bytes for an exact figure", severity="warning"))
        artifact = model.get("artifact")
        if artifact and not is_cloud(model):
            resolved["artifact"] = {**artifact, "url": _artifact_url(model_id, artifact, locate, problems)}
        models[model_id] = resolved
    roles = {}
    for role_name, role in sorted((data.get("roles") or {}).items()):
        roles[role_name] = {
            **role,
            "prefer": [names.get(ref.lower(), ref) for ref in role.get("prefer") or ()],
            "fallback": [names.get(ref.lower(), ref) for ref in role.get("fallback") or ()],
        }
    selection = {**SELECTION_DEFAULTS, **(data.get("selection") or {})}
    return Catalog(models, roles, names, selection, merged.layers), problems


def _artifact_url(model_id: str, artifact: dict, locate, problems: list[Diagnostic]) -> str | None:
    if artifact.get("url"):
        return artifact["url"]
    fields = {"id": model_id, "repo": artifact.get("repo"), "revision": artifact.get("revision") or "main",
              "file": artifact.get("file")}
    template = artifact.get("url_template")
    if template:
        return _render(template, fields, ("models", model_id, "artifact", "url_template"), locate, problems)
    if fields["repo"] and fields["file"]:
        return paths.HF_RESOLVE.format(**fields)
    return None


def _render(template: str, fields: dict, path, locate, problems: list[Diagnostic]) -> str | None:
    """Only fields declared as templates are rendered: sandboxed, and an unknown name is an error."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        return env.from_string(template).render(**fields)
    except (jinja2.TemplateError, ValueError) as exc:
        file, line, col = locate(path)
        problems.append(Diagnostic(file, line, col, "E207", f"url_template cannot be rendered: {exc}",
                                   f"available names: {', '.join(sorted(fields))}"))
        return None
