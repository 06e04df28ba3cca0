"""Reporters: diagnostics and build results as text, json or GitHub annotations."""

from __future__ import annotations

import json

from .errors import Diagnostic

DEFAULT_LIMIT = 50


def diagnostics(errors: list[Diagnostic], warnings: list[Diagnostic], fmt: str = "text",
                limit: int = DEFAULT_LIMIT) -> str:
    return {"text": _text, "json": _json, "github": _github}[fmt](errors, warnings, limit)


def _text(errors, warnings, limit) -> str:
    lines = []
    shown = (errors + warnings)[:limit] if limit else errors + warnings
    for d in shown:
        lines.append(f"{d.where}: {d.severity}[{d.code}]: {d.message}")
        if d.hint:
            lines.append(f"  hint: {d.hint}")
    hidden = len(errors) + len(warnings) - len(shown)
    if hidden > 0:
        lines.append(f"... and {hidden} more")
    if errors:
        lines.append(f"{len(errors)} error{'s' if len(errors) != 1 else ''}")
    return "\n".join(lines)


def _json(errors, warnings, limit) -> str:
    return json.dumps({"ok": not errors, "errors": [d.to_dict() for d in errors],
                       "warnings": [d.to_dict() for d in warnings]}, indent=2)


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github(errors, warnings, limit) -> str:
    lines = []
    for d in errors + warnings:
        level = "error" if d.severity == "error" else "warning"
        message = d.message + (f"\n{d.hint}" if d.hint else "")
        where = f"file={d.path}" + (f",line={d.line},col={d.col}" if d.line else "")
        lines.append(f"::{level} {where},title={d.code}::{_escape(message)}")
    return "\n".join(lines)


def role_table(output: dict) -> str:
    """role -> model, memory needed, placement and fit level, tok/s (~ estimated), fallbacks: what `make build` prints."""
    host = output["host"]
    gpus = ", ".join(f"{g['name']} {g['vram_mb'] / 1024:.0f} GiB" for g in host["gpus"]) or "no GPU"
    head = (f"host {host['name']}: {host['ram_mb'] / 1024:.1f} GiB RAM ({host['usable_mb'] / 1024:.1f} usable), "
            f"{gpus}; profiles: {', '.join(output['profiles']) or 'none'}")
    rows = [("ROLE", "MODEL", "MEMORY", "FIT", "TOK/S", "FALLBACKS")]
    for name, role in output["roles"].items():
        memory = f"{role['memory_mb'] / 1024:.1f} GiB" if role["memory_mb"] is not None else "-"
        model = role["model"] or ("(none: required)" if role["required"] else "(none)")
        placed = f"{role['placement']} {role['fit']}" if role.get("fit") else (role["placement"] or "-")
        measured = role.get("speed_method") == "measured"  # "~" marks an estimate, as in explain
        speed = f"{'' if measured else '~'}{role['tokens_per_s']:g}" if role.get("tokens_per_s") else "-"
        rows.append((name, model, memory, placed, speed, ", ".join(role["fallbacks"]) or "-"))
    last = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(last)]
    body = ["  ".join(cell.ljust(widths[i]) if i < last else cell for i, cell in enumerate(row)).rstrip()
            for row in rows]
    return "\n".join([head, *body])
