"""`hostfit models`: the catalog as a host sees it: what fits, what is installed, what is suggested."""

from __future__ import annotations

from .hosts import Host
from .memory import is_cloud, size_unknown
from .resolve import Catalog
from .select import DEFAULT_PRIORITY, Plan, first_placed, fit_and_speed, need_on, runtime_options, select

CURATED = ("active", "deprecated")


def rows(catalog: Catalog, host: Host, workload: str | None = None, provider: str | None = None,
         everything: bool = False, suggestions: bool = False, measured: dict | None = None) -> list[dict]:
    """The catalog's models as `host` sees them; WHY from the host's selection, with what it measured
    (`measured`: measured.runs_for), as its build selects."""
    plan = select(catalog, host, measured)
    budget, runs = plan.budget, plan.available  # the host's, as select read them
    context, cache_type = catalog.selection["context_default"], catalog.selection.get("kv_cache_type")
    statuses = None if everything else (*CURATED, "candidate") if suggestions else CURATED
    out = []
    for model_id, model in catalog.models.items():
        if statuses is not None and model.get("status") not in statuses:
            continue
        if workload and workload not in (model.get("workloads") or ()):
            continue
        if provider and model.get("provider") != provider:
            continue
        need = need_on(budget, model, context, catalog.selection, catalog.selection["flash_attention"], cache_type)
        options = () if is_cloud(model) else runtime_options(model_id, catalog, runs)
        unsized = size_unknown(model)  # its need would be the overhead alone: shown as unknown, never placed
        placed = first_placed(budget, need.mb, options) if options and not unsized else None
        placement = placed[1] if placed else None
        fit_column = "cloud" if is_cloud(model) else placement or (
            "size unknown" if unsized else "no" if options else "no runtime")
        level, tokens = None, None
        if placement:  # as select judges a role loaded alone
            level, _, speed = fit_and_speed(model, host, need, placement, placed[0], budget, budget,
                                            catalog.selection, cache_type)
            tokens = speed.tokens_per_s
        out.append({
            "id": model_id, "params_b": model.get("params_b"), "quantization": model.get("quantization"),
            "context_window": model.get("context_window"), "provider": model.get("provider"),
            "memory_mb": None if unsized else need.mb, "memory_method": None if unsized else need.method,
            "fit": fit_column, "fit_level": level, "tokens_per_s": tokens,
            "installed": host.name in (model.get("installed_on") or ()),
            "recommended": bool(model.get("recommended")), "status": model.get("status"),
            "workloads": model.get("workloads") or [], "type": model["type"],
            "priority": model.get("priority", DEFAULT_PRIORITY), "trial": is_trial(model),
            "why": rationale(model_id, model, plan),
        })
    out.sort(key=lambda r: (r["priority"], not r["recommended"], r["id"]))  # the candidates' order
    return out


def is_trial(model: dict) -> bool:
    """A staged candidate under trial: it competes like an active model (discover/ingest.as_catalog)."""
    return "x-staged" in model and model.get("status") == "active"


def rationale(model_id: str, model: dict, plan: Plan) -> str:
    """Why the model stands where it does on this host: the roles it serves, else what kept it out."""
    roles = sorted(plan.roles.items())
    for words, test in (("picked for", lambda p: p.model == model_id),
                        ("fallback for", lambda p: model_id in p.fallbacks)):
        names = [name for name, p in roles if test(p)]
        if names:
            return f"{words} {', '.join(names)}"
    if model.get("status") == "candidate":
        return "pending review: listed, never selected"
    if is_cloud(model):
        return "cloud: only ever a fallback"
    judged = [(name, v) for name, p in roles for v in p.candidates if v.model == model_id]
    rejected = [(name, v) for name, v in judged if v.verdict == "rejected"]
    if len(rejected) < len(judged):
        return "fits, ranked below the picks"
    if rejected:
        name, verdict = rejected[0]
        return f"{name}: {verdict.describe()}"
    return "no role takes it (workload, type or prefer lists)"


def table(rows_: list[dict]) -> str:
    head = ("MODEL", "TYPE", "PARAMS", "QUANT", "CONTEXT", "MEMORY", "FIT", "TOK/S", "PRIORITY", "WHY", "INSTALLED")
    body = [(("* " if r["recommended"] else "  ") + r["id"]
             + (" (trial)" if r["trial"] else "" if r["status"] == "active" else f" ({r['status']})"),
             r["type"], f"{r['params_b']}B" if r["params_b"] else "-", r["quantization"] or "-",
             f"{r['context_window']:,}" if r["context_window"] else "-",
             f"{r['memory_mb'] / 1024:.1f} GiB" if r["memory_mb"] else "-",
             f"{r['fit']}, {r['fit_level']}" if r["fit_level"] else r["fit"],
             f"~{r['tokens_per_s']:g}" if r["tokens_per_s"] else "-", r["priority"], r["why"],
             "yes" if r["installed"] else "")
            for r in rows_]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [head, *body]]
    return "\n".join(lines + ["(* recommended; priority: lower wins; (trial): a staged candidate under trial)"]
                     if body else lines)
