"""Measured facts as a per-host source: sources/measured/<host>.yaml, what a host measured running each model.

A layer holds, per model (a variant by its id) and per runtime, placement and context it ran at, the peak
memory, the median decode tokens/s, time to first token and load time, the success rate, how many runs
those summarize and when the latest ran. `export_layer` turns measurement rows (the usage store's) into
it; the file is reviewed and committed like any source, so a compile stays offline and deterministic.
The pipeline reads the host's file and select uses it for that host only: `memory_mb` replaces the memory
estimate of the model (memory.measured scales it to each role's context) and `tokens_per_s` the speed
estimate on the same runtime and placement (speed.measured). Hysteresis lives in the export: a figure
that moves less than HYSTERESIS from the committed file's keeps the committed value, so neither the file
nor models.json churns on noise.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .errors import Diagnostic, InputError
from .load import Document
from .memory import DEFAULT_KV_CACHE

FOLDER = ("sources", "measured")
KIND = "measured"
LAYER = "measured"
PLACEMENTS = ("gpu", "split", "cpu")  # runtimes.PLACEMENTS, in the order a budget tries them
# A new figure within this share of the committed one keeps the committed one (module docstring)
HYSTERESIS = 0.10
COMPILED = ("memory_mb", "tokens_per_s")  # the figures the compile reads; the others are for review
ROW_KEYS = ("host", "model", "runtime", "placement", "context")  # what a row must have
ORDER = ("runtime", "placement", "context", "kv_cache_type", "memory_mb", "rss_mb", "gpu_mb", "tokens_per_s",
         "ttft_s", "load_s", "success_rate", "samples", "measured_at")  # the key order of a written run


@dataclass(frozen=True)
class Run:
    """One measurement of a model on the host: the compile's figures (None: not measured)."""

    runtime: str
    placement: str
    context: int
    memory_mb: int | None
    tokens_per_s: float | None
    kv_cache_type: str | None
    samples: int
    measured_at: str


def file_for(root: Path, host: str) -> Path:
    return root.joinpath(*FOLDER) / f"{host}.yaml"


# ------------------------------------------------------------------------ reading (the compile)

def check(doc: Document) -> list[Diagnostic]:
    """What the schema cannot say of a measured layer: its `host` is its file's name (E620), one
    measurement per runtime, placement, context and cache type of a model (E621), known runtimes (E622)."""
    from . import runtimes
    from .errors import did_you_mean

    problems = []
    host = doc.data.get("host")
    stem = Path(doc.path).stem
    if isinstance(host, str) and host != stem:
        problems.append(Diagnostic(doc.path, *doc.where(("host",)), "E620",
                                   f"host {host!r} in a file named {stem}.yaml: measurements belong in "
                                   "sources/measured/<host>.yaml", f"rename the file {host}.yaml"))
    models = doc.data.get("models")
    for model_id, runs in (models.items() if isinstance(models, dict) else ()):
        seen: dict[tuple, int] = {}
        for index, run in enumerate(runs if isinstance(runs, list) else ()):
            if not isinstance(run, dict):
                continue
            runtime = run.get("runtime")
            if isinstance(runtime, str) and runtime not in runtimes.REGISTRY:
                problems.append(Diagnostic(doc.path, *doc.where(("models", model_id, index, "runtime")), "E622",
                                           f"{model_id}: unknown runtime {runtime!r}",
                                           did_you_mean(runtime, runtimes.REGISTRY)
                                           or f"runtimes: {', '.join(runtimes.REGISTRY)}"))
            key = _key(run)
            if key in seen:
                problems.append(Diagnostic(doc.path, *doc.where(("models", model_id, index)), "E621",
                                           f"{model_id}: a second measurement on {key[0]}, {key[1]}, at {key[2]} "
                                           f"tokens (the first is item {seen[key]})",
                                           "keep one: `hostfit measured export` writes one per key"))
            else:
                seen[key] = index
    return problems


def _key(run: dict) -> tuple:
    """What one measurement is of: runtime, placement, context and cache type (f16, the default, as None)."""
    cache_type = run.get("kv_cache_type")
    return (run.get("runtime"), run.get("placement"), run.get("context"),
            None if cache_type == DEFAULT_KV_CACHE else cache_type or None)


def undeclared(docs: dict[str, Document], hosts) -> list[Diagnostic]:
    """W620 for a file whose host the inventory does not declare: used only by a build of this machine
    under that name."""
    return [Diagnostic(doc.path, *doc.where(("host",)), "W620",
                       f"measurements of host {name!r}, which hosts.yaml does not declare: used only when this "
                       "machine is compiled under that name", "declare the host, or delete the file",
                       severity="warning")
            for name, doc in sorted(docs.items()) if name not in hosts]


def runs_for(doc: Document | None, models: dict, names: dict[str, str]) -> tuple[dict[str, tuple[Run, ...]],
                                                                             list[Diagnostic]]:
    """model id -> its runs, for the models of the catalog (`models`, variants included; `names`: its
    lower-cased ids and aliases -> ids); W621 for an entry naming none (a model declaring variants is
    none: the runs are of one variant, named by its id)."""
    if doc is None:
        return {}, []
    found: dict[str, list[Run]] = {}
    problems = []
    for name, runs in doc.data["models"].items():
        model_id = name.lower() if name.lower() in models else names.get(name.lower())
        if model_id not in models:
            problems.append(Diagnostic(doc.path, *doc.where(("models", name)), "W621",
                                       f"measurements of {name!r}, which no catalog layer of host "
                                       f"{doc.data['host']!r} defines: not used",
                                       "delete the entry, or rename it after the model", severity="warning"))
            continue
        found.setdefault(model_id, []).extend(
            Run(run["runtime"], run["placement"], run["context"], run.get("memory_mb"), run.get("tokens_per_s"),
                run.get("kv_cache_type"), run["samples"], run["measured_at"]) for run in runs)
    return {model_id: tuple(runs) for model_id, runs in found.items()}, problems


def for_memory(runs: tuple[Run, ...], runtime_order: tuple[str, ...], context: int) -> Run | None:
    """The run whose memory sizes the model for a role at `context` tokens: on the first runtime of the
    host that runs the model (`runtime_order`; another runtime's only when none of those ran it), at the
    first placement a budget tries (gpu, split, cpu), at the nearest context at or above `context` (else
    the largest below), the latest of equals."""
    sized = _latest_first(run for run in runs if run.memory_mb)
    if not sized:
        return None
    rank = {name: index for index, name in enumerate(runtime_order)}

    def order(run: Run) -> tuple:
        return (rank.get(run.runtime, len(rank)), PLACEMENTS.index(run.placement), *_nearest(run, context))
    return min(sized, key=order)  # the first of equals: the latest


def for_speed(runs: tuple[Run, ...], runtime: str | None, placement: str | None, context: int) -> Run | None:
    """The run whose tokens/s replaces the estimate of `runtime` on `placement`: that runtime and placement
    only (speed depends on both), the nearest context as in `for_memory`."""
    timed = _latest_first(run for run in runs if run.tokens_per_s and run.runtime == runtime
                          and run.placement == placement)
    return min(timed, key=lambda run: _nearest(run, context)) if timed else None


def _nearest(run: Run, context: int) -> tuple[bool, int]:
    """Runs at `context` or above first, the nearest first."""
    return run.context < context, abs(run.context - context)


def _latest_first(runs) -> list[Run]:
    return sorted(runs, key=lambda run: run.measured_at, reverse=True)


# ------------------------------------------------------------------------- writing (the export)

def export_layer(host: str, rows: list[dict], previous: dict | None) -> dict:
    """The measured layer of `host` from measurement rows, over `previous` (the committed layer's data, or None).

    Each row is one run of a model, a measurement as the usage store records it (usage.MEASUREMENT_FIELDS,
    what usage.measurements() returns), a dict with:
      host         the host it ran on (rows of other hosts are left out)
      model        the catalog id (or alias) of the model; a variant by its id, `<model>:<variant>`
      runtime      the runtime that ran it: llamacpp, ollama, mlx, vllm, transformers
      placement    gpu (the GPU held it whole), split (GPU and RAM) or cpu
      context      the context (n_ctx) it was loaded with, tokens
      load_s       seconds to load, or None
      ttft_s       seconds to the first token, or None
      decode_tps   decode tokens per second, or None
      peak_rss_mib peak resident set of the process, MiB, or None
      gpu_mib      peak GPU memory of the process, MiB, or None: nvidia-smi's per-process figure, which holds
                   the CUDA context; llama.cpp's buffers alone leave it out, so a recorder with only those adds
                   memory.GPU_RUNTIME_OVERHEAD_MB per GPU (the figure replaces an estimate that counts it)
      ok           whether the run succeeded (a failed one counts in success_rate only)
      ts           when it ran: seconds since the epoch, or ISO 8601 text
      kv_cache_type  (optional) the KV cache type it ran with; absent or None: f16
    (other keys, such as the store's `source`, are ignored)

    Rows with the same model, runtime, placement, context and cache type make one measurement: memory_mb
    is the peak over the successful runs of the placement's figure (VRAM on gpu, resident set on cpu, both
    on split), tokens_per_s, ttft_s and load_s their medians, success_rate the share of runs that
    succeeded. A measurement of `previous` the rows do not cover is kept (a store rebuilt or rolled up
    forgets nothing committed). Hysteresis: where a new memory_mb or tokens_per_s is within HYSTERESIS
    (10%) of the same measurement's figure in `previous`, that figure is kept; if neither moved, the whole
    measurement is kept as it was, samples and date included, so the file does not change. A row missing
    a key of ROW_KEYS, or with an unknown placement or a context that is not a positive integer, is a
    ValueError: rows come from the store, so that is a bug to see, not input to skip."""
    groups: dict[tuple, list[dict]] = {}
    for index, row in enumerate(rows):
        missing = [key for key in ROW_KEYS if row.get(key) is None]
        if missing:
            raise ValueError(f"measurement row {index} has no {', '.join(missing)}")
        if row["host"] != host:
            continue
        if row["placement"] not in PLACEMENTS:
            raise ValueError(f"measurement row {index}: placement {row['placement']!r} is none of {PLACEMENTS}")
        if not isinstance(row["context"], int) or isinstance(row["context"], bool) or row["context"] < 1:
            raise ValueError(f"measurement row {index}: context {row['context']!r} is not a positive integer")
        groups.setdefault((str(row["model"]).lower(), *_key(row)), []).append(row)
    models: dict[str, dict[tuple, dict]] = {}  # ids and aliases resolve case-insensitively: one entry per name
    for name, runs in ((previous or {}).get("models") or {}).items():
        for run in runs:
            models.setdefault(name.lower(), {})[_key(run)] = dict(run)
    for (model, *key), group in groups.items():
        key = tuple(key)
        new = _summary(key, group)
        old = models.setdefault(model, {}).get(key)
        models[model][key] = new if old is None else _steady(old, new)
    return {"schema_version": 2, "kind": KIND, "host": host,
            "models": {name: [_ordered(runs[key]) for key in sorted(runs, key=_sort_key)]
                       for name, runs in sorted(models.items()) if runs}}


def _summary(key: tuple, rows: list[dict]) -> dict:
    runtime, placement, context, cache_type = key
    good = [row for row in rows if row.get("ok")]
    run: dict = {"runtime": runtime, "placement": placement, "context": context}
    if cache_type:
        run["kv_cache_type"] = cache_type
    memory = [m for m in map(memory_of, good) if m]  # rows of the group's placement
    if memory:
        run["memory_mb"] = math.ceil(max(memory))
    for field, source in (("rss_mb", "peak_rss_mib"), ("gpu_mb", "gpu_mib")):
        values = [value for row in good if (value := _figure(row.get(source))) is not None]
        if values:
            run[field] = math.ceil(max(values))
    for field, source, digits in (("tokens_per_s", "decode_tps", 1), ("ttft_s", "ttft_s", 3),
                                  ("load_s", "load_s", 3)):
        values = [value for row in good if (value := _figure(row.get(source))) is not None]
        if not values:
            continue
        median = round(statistics.median(values), digits)
        if median > 0 or field != "tokens_per_s":  # a speed that rounds to 0 is none the schema holds
            run[field] = median
    run["success_rate"] = round(len(good) / len(rows), 3)
    run["samples"] = len(rows)
    run["measured_at"] = max(_when(row.get("ts")) for row in rows)
    return run


def _figure(value) -> float | None:
    """A measured number: finite and not negative (anything else was not measured)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def memory_of(row: dict) -> float | None:
    """A measurement row's memory as its placement's budget is checked: VRAM on gpu, RAM on cpu, both on
    split (None when that figure is missing); a row with no known placement: all it held, RAM and VRAM."""
    rss, gpu = _figure(row.get("peak_rss_mib")), _figure(row.get("gpu_mib"))
    placement = row.get("placement")
    if placement == "gpu":
        return gpu
    if placement == "cpu":
        return rss
    if placement == "split":
        return rss + gpu if rss is not None and gpu is not None else None
    return (rss or 0) + (gpu or 0) if rss is not None or gpu is not None else None


def _when(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"ts {value!r} is neither ISO 8601 text nor seconds since the epoch")


def _steady(old: dict, new: dict) -> dict:
    """`new` with each compiled figure within HYSTERESIS of `old`'s kept at `old`'s; `old` itself when
    no compiled figure moved (a figure the new rows lack keeps the old one)."""
    merged = {**old, **new}
    moved = False
    for field in COMPILED:
        before, after = old.get(field), new.get(field)
        if after is None:
            continue
        if before is not None and abs(after - before) < HYSTERESIS * before:
            merged[field] = before
        elif after != before:
            moved = True
    return merged if moved else old


def _sort_key(key: tuple) -> tuple:
    runtime, placement, context, cache_type = key
    return (str(runtime), PLACEMENTS.index(placement) if placement in PLACEMENTS else len(PLACEMENTS),
            context if isinstance(context, int) else 0, cache_type or "")


def _ordered(run: dict) -> dict:
    return {key: run[key] for key in ORDER if key in run} | {key: run[key] for key in sorted(run) if key not in ORDER}


def render(layer: dict) -> bytes:
    """The layer's bytes: the same measurements give the same bytes (sorted models, runs in key order)."""
    from .load import dump_yaml

    header = (f"# Measured on {layer['host']} by hostfit (`hostfit measured export`); review it like any source.\n"
              "# memory_mb and tokens_per_s replace hostfit's estimates for this host (README, \"Measured facts\").\n")
    return (header + dump_yaml(layer, sort_keys=False, width=120)).encode()


def read(root: Path, host: str) -> Document | None:
    """The committed layer of `host`, checked as the pipeline checks it (InputError when it is broken:
    hysteresis needs its figures); None when there is none."""
    from .pipeline import Project

    path = file_for(root, host)
    if not path.exists() and not path.is_symlink():
        return None
    doc, problems = Project(root).read(path, LAYER)
    errors = [p for p in problems if p.severity == "error"]
    if doc is not None and doc.kind != KIND:
        errors.append(Diagnostic(doc.path, *doc.where(("kind",)), "E013",
                                 f"measured/ holds measured layers, found kind {doc.kind!r}"))
    if errors:
        raise InputError(errors)
    return doc


def exportable(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The store's rows a layer can hold, and those it cannot: a measurement with no known runtime, no
    placement of PLACEMENTS or no context (a fallback's load before the store knew its placement, or an
    application's record_measurement with figures of its own) sizes nothing."""
    from . import runtimes

    usable, unplaced = [], []
    for row in rows:
        context = row.get("context")
        fits = (row.get("runtime") in runtimes.REGISTRY and row.get("placement") in PLACEMENTS
                and isinstance(context, int) and not isinstance(context, bool) and context >= 1)
        (usable if fits else unplaced).append(row)
    return usable, unplaced


def changes(previous: dict | None, layer: dict) -> list[str]:
    """What an export changes, one line per measurement added, changed or kept from `previous`."""
    def runs_of(data: dict | None) -> dict[tuple, dict]:
        return {(name.lower(), *_key(run)): run for name, runs in ((data or {}).get("models") or {}).items()
                for run in runs}

    before, after = runs_of(previous), runs_of(layer)
    lines = []
    for key in sorted(after, key=lambda k: (k[0], _sort_key(k[1:]))):
        model, runtime, placement, context, cache_type = key
        what = f"{model} on {runtime}, {placement}, {context:,} tokens" + (f", {cache_type} cache" if cache_type
                                                                             else "")
        old, new = before.get(key), after[key]
        figures = [field for field in ("memory_mb", "tokens_per_s", "ttft_s", "load_s", "success_rate", "samples")
                   if old is None and new.get(field) is not None or old is not None and old.get(field) != new.get(field)]
        if old is None:
            lines.append(f"+ {what}: " + ", ".join(f"{field} {new[field]}" for field in figures))
        elif old != new:
            lines.append(f"~ {what}: " + ", ".join(f"{field} {old.get(field)} -> {new.get(field)}"
                                                   for field in figures))
        else:
            lines.append(f"= {what}: unchanged (memory_mb {new.get('memory_mb')}, tokens_per_s "
                         f"{new.get('tokens_per_s')}; a figure within {HYSTERESIS:.0%} keeps the committed one)")
    return lines


def write(root: Path, layer: dict, dry_run: bool = False) -> tuple[Path, bool]:
    """Write sources/measured/<host>.yaml atomically, after checking it as the pipeline will read it.
    Returns (path, changed): the same layer again leaves the file untouched; `dry_run` checks and
    compares, and writes nothing."""
    from .facts import write_layer

    path = file_for(root, layer["host"])
    return path, write_layer(path, render(layer), str(Path(*FOLDER) / path.name), LAYER, dry_run)


def export(root: Path, host: str, rows: list[dict], dry_run: bool = False) -> tuple[Path, bool]:
    """`hostfit measured export`: the host's rows over its committed layer, written back. (path, changed)"""
    path, changed, _ = export_changes(root, host, rows, dry_run)
    return path, changed


def export_changes(root: Path, host: str, rows: list[dict], dry_run: bool = False) -> tuple[Path, bool, list[str]]:
    """`export`, and what it changed (`changes`)."""
    previous = read(root, host)
    before = previous.data if previous is not None else None
    layer = export_layer(host, rows, before)
    return (*write(root, layer, dry_run), changes(before, layer))
