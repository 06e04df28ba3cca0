"""Resolve stage: a merged catalog to one ready for selection (defaults, aliases, ids, URLs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import paths
from .errors import Diagnostic
from .fit import MAX_FILL
from .memory import (DEFAULT_CONTEXT, GPU_RUNTIME_OVERHEAD_MB, QUANT_BITS, RUNTIME_OVERHEAD_MB, UNKNOWN_QUANT_BPW,
                     UNQUANTIZED_KV, artifact_size, bits_per_weight, declared_shortfall, estimate, is_cloud)
from .merge import Layer, Merged, origin
from .speed import SPEED_FLOOR
from .validate import alias_table, url_problem

SELECTION_DEFAULTS = {"ram_reserve_gb": 2, "vram_reserve_gb": 1, "basis": "total", "strategy": "auto",
                      "allow_cloud": True, "context_default": DEFAULT_CONTEXT,
                      "runtime_overhead_mb": RUNTIME_OVERHEAD_MB, "max_fallbacks": 3,
                      "flash_attention": True, "gpu_runtime_overhead_mb": GPU_RUNTIME_OVERHEAD_MB,
                      "max_fill": MAX_FILL, "speed_floor": SPEED_FLOOR}
DEFAULT_PRIORITY = 100  # a model's priority when it gives none: lower wins, in every strategy's order
MODEL_DEFAULTS = {"status": "active", "priority": DEFAULT_PRIORITY, "recommended": False}


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
    default_types: frozenset[str] = frozenset()  # ids of models whose `type` is default_type's, not declared
    # a model declaring `variants`: its id -> the ids of its variants, best first (each is a model of
    # `models`; the declaring entry is not, so every stage after this one sees plain models)
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def aliases(self) -> dict[str, str]:
        if "aliases" not in self.memo:
            self.memo["aliases"] = {name: model_id for name, model_id in self.names.items() if name != model_id}
        return self.memo["aliases"]


def resolve(merged: Merged) -> tuple[Catalog, list[Diagnostic]]:
    data = merged.data

    variants: dict[str, tuple[str, ...]] = {}
    expanded = expand_variants(data.get("models") or {}, variants)

    def locate(path):
        if len(path) > 2 and path[0] == "models" and path[1] in expanded:  # a variant's field: where declared
            path = declared_at(path[1], expanded[path[1]], tuple(path[2:]))
        return origin(merged.layers, path)

    problems: list[Diagnostic] = []
    names, _ = alias_table(data.get("models") or {}, locate)  # collisions were reported by validate
    selection = {**SELECTION_DEFAULTS, **(data.get("selection") or {})}
    models = {}
    default_types = set()
    for model_id, model in sorted(expanded.items()):
        resolved = {**MODEL_DEFAULTS, **model}
        if not model.get("type"):
            resolved["type"] = default_type(model)
            default_types.add(model_id)
        quant = model.get("quantization")
        # the estimate counts whether or not memory.ram_mb is declared (the need is the larger)
        estimated = not is_cloud(model) and not artifact_size(model.get("artifact"))
        if estimated and quant and quant.upper() not in QUANT_BITS:
            file, line, col = locate(("models", model_id, "quantization"))
            problems.append(Diagnostic(
                file, line, col, "W300", f"quantization {quant!r} of {model_id!r} has no bits-per-weight entry; "
                f"its memory is estimated at {UNKNOWN_QUANT_BPW:g} bits per weight",
                "declare artifact.size_bytes for an exact figure", severity="warning"))
        problems += _declared_below_estimate(model_id, model, selection, locate)
        artifact = model.get("artifact")
        if artifact and not is_cloud(model):
            resolved["artifact"] = _resolved_artifact(model_id, artifact, locate, problems)
        models[model_id] = resolved
    roles = {}

    def refs(role: dict, key: str) -> list[str]:
        """The role's list with each name resolved to its id, a model with variants to its variants' ids."""
        ids = [names.get(ref.lower(), ref) for ref in role.get(key) or ()]
        return list(dict.fromkeys(v for ref in ids for v in variants.get(ref, (ref,))))

    for role_name, role in sorted((data.get("roles") or {}).items()):
        roles[role_name] = {
            **role,
            "prefer": refs(role, "prefer"),
            "fallback": refs(role, "fallback"),
            "flash_attention": role.get("flash_attention", selection["flash_attention"]),
        }
        problems += _quantized_v_without_flash_attention(role_name, role, roles[role_name]["flash_attention"],
                                                         selection, locate)
    return Catalog(models, roles, names, selection, merged.layers, default_types=frozenset(default_types),
                   variants=variants), problems


def default_type(model: dict) -> str:
    """The type of a model that declares none: embedding when that is all it does, else instruct
    (what a hand-written chat or code entry almost always is; importers declare what they infer)."""
    return "embedding" if set(model.get("workloads") or ()) == {"embedding"} else "instruct"


def _quantized_v_without_flash_attention(role_name: str, role: dict, flash: bool, selection: dict,
                                         locate) -> list[Diagnostic]:
    """E310: llama.cpp refuses a quantized V cache without flash attention, so the role could never load."""
    kv_type = role.get("kv_cache_type") or selection.get("kv_cache_type") or "f16"
    if flash or kv_type in UNQUANTIZED_KV:
        return []
    where = ("roles", role_name, "flash_attention") if "flash_attention" in role else ("selection", "flash_attention")
    file, line, col = locate(where)
    return [Diagnostic(file, line, col, "E310", f"role {role_name!r} has kv_cache_type {kv_type} with flash "
                       "attention off: llama.cpp quantizes the V cache only with flash attention",
                       "turn flash_attention on for this role, or use an f16, bf16 or f32 KV cache")]


def _declared_below_estimate(model_id: str, model: dict, selection: dict, locate) -> list[Diagnostic]:
    """W301: a memory.ram_mb well below hostfit's estimate (most likely weights only). Here, once per
    catalog rather than per host or role, at the default context, the figure listings show."""
    if is_cloud(model) or not (model.get("memory") or {}).get("ram_mb"):
        return []
    need = estimate(model, selection["context_default"], selection["runtime_overhead_mb"],
                    selection.get("kv_cache_type"), flash_attention=selection["flash_attention"])
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


def _resolved_artifact(model_id: str, artifact: dict, locate, problems: list[Diagnostic]) -> dict:
    """The artifact with each file's URL. A one-entry `files` becomes the one-file shorthand, so
    models.json says a single file one way only; several keep `files`, each with its URL."""
    files = artifact.get("files") or []
    if len(files) == 1:
        artifact = {key: value for key, value in artifact.items() if key != "files"}
        artifact["file"] = files[0]["name"]
        artifact.update({key: files[0][key] for key in ("size_bytes", "sha256") if key in files[0]})
    if len(files) > 1:
        found: list[Diagnostic] = []  # a template that fails, fails for every file: said once
        resolved = {**artifact, "files": [
            {**item, "url": _artifact_url(model_id, artifact, item["name"], locate, found)} for item in files]}
        problems += dict.fromkeys(found)
        return resolved
    return {**artifact, "url": _artifact_url(model_id, artifact, artifact.get("file"), locate, problems)}


def _artifact_url(model_id: str, artifact: dict, file: str | None, locate, problems: list[Diagnostic]) -> str | None:
    """A file's URL: the artifact's plain url (one file only), its url_template rendered with the
    file's name as `file`, or the Hugging Face resolve URL of repo + revision + file."""
    if artifact.get("url") and not artifact.get("files"):
        return artifact["url"]
    fields = {"id": model_id, "repo": artifact.get("repo"), "revision": artifact.get("revision") or "main",
              "file": file}
    template = artifact.get("url_template")
    if template:
        where = ("models", model_id, "artifact", "url_template")
        url = _render(template, fields, where, locate, problems)
        problem = url_problem(url) if url is not None else None
        if problem:  # the policy validate applies to a plain url: the catalog's fault, not the network's at fetch
            from .net import redact_url

            problems.append(Diagnostic(*locate(where), "E205", f"url_template renders a download URL hostfit "
                                       f"refuses: {problem}", f"it renders {redact_url(url)!r}"))
            return None
        return url
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


VARIANT_FIELDS = ("name", "quantization", "artifact", "memory", "ollama", "description")  # a variant's own
VARIANT_SEPARATOR = ":"  # a variant's id: <model id>:<variant name, lower-cased>, as Ollama tags name them


def variant_id(model_id: str, name: str) -> str:
    return f"{model_id}{VARIANT_SEPARATOR}{name.lower()}"


def expand_variants(models: dict, variants: dict[str, tuple[str, ...]]) -> dict:
    """Each model with `variants` replaced by one model per variant: the model's facts (less its aliases,
    which name the model, not a file) with the variant's fields in place of the model's own (a variant
    without an artifact or memory has none, not the model's: those describe another file), `variant_of`
    and `variant` naming what it is. `variants` is filled with each model's variant ids, best first
    (most bits per weight: best_fit's quality order, and first_fit's within a prefer entry)."""
    out = {}
    for model_id, model in models.items():
        declared = model.get("variants")
        if not isinstance(declared, dict) or not declared:
            out[model_id] = model
            continue
        shared = {k: v for k, v in model.items() if k not in ("variants", "aliases", *VARIANT_FIELDS)}
        ids = []
        for name, own in sorted(declared.items(), key=lambda item: (-bits_per_weight(
                item[1].get("quantization") or item[0]), item[0])):
            vid = variant_id(model_id, name)
            out[vid] = {**shared, **({"name": f"{model['name']} ({name})"} if model.get("name") else {}),
                        "quantization": name, **own, "variant_of": model_id, "variant": name}
            ids.append(vid)
        variants[model_id] = tuple(ids)
    return out


def declared_at(model_id: str, model: dict, path: tuple) -> tuple:
    """Where a field of a resolved model is declared: a variant's own fields in its entry, the rest in its model's."""
    if not model.get("variant_of"):
        return ("models", model_id, *path)
    if path[0] in VARIANT_FIELDS:
        return ("models", model["variant_of"], "variants", model["variant"], *path)
    return ("models", model["variant_of"], *path)
