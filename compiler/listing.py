"""`hostfit models`: the catalog as a host sees it: what fits, what is installed, what is suggested."""

from __future__ import annotations

from .hosts import Host
from .memory import is_cloud, size_unknown
from .resolve import Catalog
from .runtimes import available
from .select import first_placed, host_budget, need_on, runtime_options

CURATED = ("active", "deprecated")


def rows(catalog: Catalog, host: Host, workload: str | None = None, provider: str | None = None,
         everything: bool = False, suggestions: bool = False) -> list[dict]:
    budget = host_budget(host, catalog.selection)
    runs = available(host)
    statuses = None if everything else (*CURATED, "candidate") if suggestions else CURATED
    out = []
    for model_id, model in catalog.models.items():
        if statuses is not None and model.get("status") not in statuses:
            continue
        if workload and workload not in (model.get("workloads") or ()):
            continue
        if provider and model.get("provider") != provider:
            continue
        need = need_on(budget, model, catalog.selection["context_default"], catalog.selection,
                       catalog.selection["flash_attention"], catalog.selection.get("kv_cache_type"))
        out.append({
            "id": model_id, "params_b": model.get("params_b"), "quantization": model.get("quantization"),
            "context_window": model.get("context_window"), "provider": model.get("provider"),
            "memory_mb": need.mb, "memory_method": need.method,
            "fit": "cloud" if is_cloud(model) else ("no" if size_unknown(model)
                                                    else _fit(budget, need.mb, runtime_options(model_id, model, runs))),
            "installed": host.name in (model.get("installed_on") or ()),
            "recommended": bool(model.get("recommended")), "status": model.get("status"),
            "workloads": model.get("workloads") or [], "type": model["type"],
        })
    out.sort(key=lambda r: (not r["recommended"], catalog.models[r["id"]].get("priority", 100), r["id"]))
    return out


def _fit(budget, need_mb: int, options: tuple) -> str:
    """Where build would place it: as select does, on the first runtime of the host that can."""
    if not options:
        return "no runtime"
    placed = first_placed(budget, need_mb, options)
    return placed[1] if placed else "no"


def table(rows_: list[dict]) -> str:
    head = ("MODEL", "TYPE", "PARAMS", "QUANT", "CONTEXT", "MEMORY", "FIT", "INSTALLED")
    body = [(("* " if r["recommended"] else "  ") + r["id"] + ("" if r["status"] == "active" else f" ({r['status']})"),
             r["type"], f"{r['params_b']}B" if r["params_b"] else "-", r["quantization"] or "-",
             f"{r['context_window']:,}" if r["context_window"] else "-",
             f"{r['memory_mb'] / 1024:.1f} GiB" if r["memory_mb"] else "-", r["fit"], "yes" if r["installed"] else "")
            for r in rows_]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [head, *body]]
    return "\n".join(lines + ["(* recommended)"] if body else lines)
