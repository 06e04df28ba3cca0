"""`hostfit stats`: the usage store's calls per model and role, and measurements beside the catalog's estimates."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .errors import UsageError
from .measured import memory_of

SINCE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MEASURED_KEY = ("host", "model", "runtime", "placement", "context")  # the latest measurement of each is shown


def parse_since(text: str | None, now: float) -> float | None:
    """`7d`, `12h`, `30m`, `2w` before `now`, as a Unix time; None for no limit."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if not match:
        raise UsageError(f"--since {text!r}: expected a number and a unit, like 30m, 12h, 7d or 2w")
    return now - float(match.group(1)) * SINCE_UNITS[match.group(2)]


def recorded_name(model: str) -> str:
    """The id the calls of `model` were recorded under: an alias or id, in any case, resolved by the installed
    catalog (its warnings are the router's business, not the report's)."""
    import warnings

    from .runtime import Runtime

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Runtime.load(usage_store=False).resolve(model) or model.lower()


def gather(role: str | None, model: str | None, since: float | None) -> tuple[list[dict], list[dict], Path]:
    """(calls per model and role, the latest measurements: none when a role is asked) from the usage store,
    and its path; empty when there is no store yet. E600 (exit 3) when it cannot be read."""
    from . import usage
    from .errors import RuntimeFailure

    store = usage.Store()
    if not store.path.exists():
        return [], [], store.path
    try:
        calls = store.summary(role=role, model=model, since=since)
        measured = latest_measurements(store.measurements(), model, since) if role is None else []
    except usage.StoreError as exc:
        raise RuntimeFailure(f"E600 the usage store cannot be read: {exc}") from exc
    finally:
        store.close()
    return calls, measured, store.path


def rebuild() -> dict:
    """`stats --repair`: usage.repair, refusing a store a newer hostfit wrote (E601) and failing as the
    machine's fault (E600, exit 3) when the store's folder cannot be written."""
    import sqlite3

    from . import usage
    from .errors import RuntimeFailure

    try:
        return usage.repair()
    except usage.NewerSchema as exc:
        raise RuntimeFailure(f"E601 the usage store was written by a newer hostfit ({exc}): upgrade hostfit "
                             "to read it; --repair would rebuild it at this older schema and lose what it adds") from exc
    except (OSError, sqlite3.Error, usage.StoreError) as exc:
        raise RuntimeFailure(f"E600 the usage store cannot be rebuilt: {exc}") from exc


def latest_measurements(rows: list[dict], model: str | None, since: float | None) -> list[dict]:
    latest: dict[tuple, dict] = {}
    for row in rows:  # oldest first: a later row replaces an earlier one
        if (model is None or row["model"] == model) and (since is None or row["ts"] >= since):
            latest[tuple(row[key] for key in MEASURED_KEY)] = row
    return [latest[key] for key in sorted(latest, key=lambda k: tuple("" if v is None else str(v) for v in k))]


def with_estimates(rows: list[dict], catalogs) -> list[dict]:
    """Each measurement beside the compiled estimate: `catalogs(host)` gives that host's models.json or None."""
    result = []
    for row in rows:
        document = catalogs(row["host"]) or {}
        model = (document.get("models") or {}).get(row["model"]) or {}
        using = [spec for spec in (document.get("roles") or {}).values()
                 if isinstance(spec, dict) and spec.get("model") == row["model"]]
        # the role compiled at the measured context is the estimate to compare; the model's own memory_mb is
        # its largest need (at another context)
        same = next((spec for spec in using if row["context"] is not None and spec.get("context") == row["context"]),
                    None)
        # a speed is of its runtime and placement, as the compile uses one (measured.for_speed)
        speeds = [spec["tokens_per_s"] for spec in ([same] if same else using) if spec.get("tokens_per_s")
                  and all(spec.get(key) in (None, row[key]) for key in ("runtime", "placement"))]
        entry = dict(row)
        entry["estimated_mb"] = (same or {}).get("memory_mb") or model.get("memory_mb")
        entry["estimated_tps"] = speeds[0] if speeds else None
        entry["memory_error_pct"] = _error(entry["estimated_mb"], memory_of(row))
        entry["speed_error_pct"] = _error(entry["estimated_tps"], row["decode_tps"])
        result.append(entry)
    return result


def _error(estimate, measured) -> float | None:
    """How far the estimate was from the measurement, in percent of the measurement."""
    if estimate is None or not measured:
        return None
    return round((estimate - measured) / measured * 100, 1)


def catalog_reader(root: Path | None):
    """host -> the models.json to compare with: out/<host>/models.json of the catalog, else the installed one."""
    from . import runtime

    cache: dict[str, dict | None] = {}

    def read(host: str) -> dict | None:
        if host not in cache:
            cache[host] = _compiled(root / "out" / host / "models.json") if root else None
            if cache[host] is None:
                document = _compiled(runtime.installed_path())
                if document is not None and document["host"].get("name") == host:
                    cache[host] = document
        return cache[host]

    return read


def _compiled(path: Path) -> dict | None:
    """The compiled catalog at `path` as the runtime reader checks it (migrated when older); None when there is
    none or it is no compiled catalog."""
    from . import runtime

    if not path.is_file():
        return None
    try:
        document = runtime.migrate(json.loads(path.read_text(encoding="utf-8")))[0]
    except (OSError, ValueError):  # RuntimeCatalogError is a ValueError
        return None
    return document if isinstance(document["host"], dict) and isinstance(document["roles"], dict) else None


def render_text(calls: list[dict], measured: list[dict], since_text: str | None, path: str) -> str:
    lines = [f"usage store: {path}" + (f" (last {since_text})" if since_text else "")]
    if not calls:
        lines.append("no calls recorded")
    else:
        header = ("model", "role", "calls", "success", "p50 ms", "p95 ms", "tok/s", "cost $")
        table = [header] + [(c["model"] or "-", c["role"] or "-", f"{c['calls']:,}", _pct(c["success_rate"]),
                             _num(c["p50_ms"], 1), _num(c["p95_ms"], 1), _num(c["tokens_per_s"], 1),
                             _num(c["cost_usd"], 4)) for c in calls]
        lines += _columns(table)
    if measured:
        lines.append("")
        lines.append("measured (latest per host, model, runtime, placement, context) beside the catalog's estimate:")
        header = ("host", "model", "runtime", "placement", "context", "load s", "ttft s", "tok/s", "est tok/s",
                  "RSS MiB", "GPU MiB", "est MiB", "memory off")
        table = [header] + [(m["host"], m["model"], m["runtime"] or "-", m["placement"] or "-",
                             _num(m["context"], 0), _num(m["load_s"], 2), _num(m["ttft_s"], 3),
                             _num(m["decode_tps"], 1), _num(m["estimated_tps"], 1), _num(m["peak_rss_mib"], 0),
                             _num(m["gpu_mib"], 0), _num(m["estimated_mb"], 0),
                             "-" if m["memory_error_pct"] is None else f"{m['memory_error_pct']:+.1f}%")
                            for m in measured]
        lines += _columns(table)
    return "\n".join(lines)


def render_bench(row: dict, figures: dict) -> str:
    """`hostfit bench`: each measured figure beside the compile's estimate (row: with_estimates's)."""
    measured_mb = memory_of(row)
    lines = [f"{row['model']} on {row['host']} ({row['runtime']}, {row['placement'] or '-'}, "
             f"{_num(row['context'], 0)} tokens of context): recorded in the usage store",
             *_columns([("figure", "measured", "estimate"),
                        ("load s", _num(row["load_s"], 3), "-"),
                        ("first token s", _num(row["ttft_s"], 3), "-"),
                        (f"decode tok/s ({figures.get('tokens', '-')} tokens)", _num(row["decode_tps"], 1),
                         _num(row["estimated_tps"], 1)),
                        ("peak RSS MiB", _num(row["peak_rss_mib"], 0), "-"),
                        (f"GPU MiB ({figures.get('gpu_source') or 'no GPU used'})", _num(row["gpu_mib"], 0), "-"),
                        ("memory MiB", _num(measured_mb, 0), _num(row["estimated_mb"], 0))], left=1)]
    buffers = figures.get("buffers_mib") or {}
    if buffers:
        lines.append("llama.cpp buffers: " + ", ".join(f"{device} {mib:,.1f} MiB" for device, mib in sorted(
            buffers.items())))
    for label, key in (("memory", "memory_error_pct"), ("speed", "speed_error_pct")):
        if row.get(key) is not None:
            lines.append(f"{label} estimate off by {row[key]:+.1f}%")
    return "\n".join(lines)


def render_json(calls: list[dict], measured: list[dict]) -> str:
    return json.dumps({"calls": calls, "measurements": measured}, indent=2, sort_keys=True)


def _columns(rows: list[tuple], left: int = 2) -> list[str]:
    """Aligned columns: the first `left` (names) to the left, numbers to the right."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) if i < left else str(cell).rjust(width)
                      for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def now() -> float:
    return time.time()
