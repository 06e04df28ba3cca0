"""Resolve stage: a merged catalog to one ready for selection (defaults, aliases, ids, URLs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import paths
from .errors import Diagnostic
from .memory import (DEFAULT_CONTEXT, QUANT_BITS, RUNTIME_OVERHEAD_MB, UNKNOWN_QUANT_BPW, declared_shortfall,
                     estimate, is_cloud)
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
    selection = {**SELECTION_DEFAULTS, **(data.get("selection") or {})}
    models = {}
    for model_id, model in sorted((data.get("models") or {}).items()):
        resolved = {**MODEL_DEFAULTS, **model}
        quant = model.get("quantization")
        # the estimate counts whether or not memory.ram_mb is declared (the need is the larger)
        estimated = not is_cloud(model) and not (model.get("artifact") or {}).get("size_bytes")
        if estimated and quant and quant.upper() not in QUANT_BITS:
            file, line, col = locate(("models", model_id, "quantization"))
            problems.append(Diagnostic(
                file, line, col, "W300", f"quantization {quant!r} of {model_id!r} has no bits-per-weight entry; "
                f"its memory is estimated at {UNKNOWN_QUANT_BPW:g} bits per weight",
                "declare artifact.size_bytes for an exact figure", severity="warning"))
        problems += _declared_below_estimate(model_id, model, selection, locate)
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
    return Catalog(models, roles, names, selection, merged.layers), problems


def _declared_below_estimate(model_id: str, model: dict, selection: dict, locate) -> list[Diagnostic]:
    """W301: a memory.ram_mb well below hostfit's estimate (most likely weights only). Here, once per
    catalog rather than per host or role, at the default context, the figure listings show."""
    if is_cloud(model) or not (model.get("memory") or {}).get("ram_mb"):
        return []
    need = estimate(model, selection["context_default"], selection["runtime_overhead_mb"],
                    selection.get("kv_cache_type"))
    if not declared_shortfall(need):
        return []
    file, line, col = locate(("models", model_id, "memory", "ram_mb"))
    return [Diagnostic(
        file, line, col, "W301", f"{model_id!r} declares memory.ram_mb {need.declared_mb:,} MiB, "
        f"{1 - need.declared_mb / need.estimated_mb:.0%} below hostfit's estimate of {need.estimated_mb:,} MiB "
        f"at {need.context:,} tokens of context (weights {need.weights_mb:,} + kv {need.kv_mb:,} + overhead "
        f"{need.overhead_mb:,}); it needs the estimate",
        "a declaration may raise the need, never lower it; drop it or fix it if it counts weights only",
        severity="warning")]


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
