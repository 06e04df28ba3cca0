"""Semantic diff of compiled output: per host, what a catalog change does.

Inputs are compiled models.json files or out/ folders (and, for `--git REF`, two in-memory
compiles whose selection traces explain each reassignment). The result is data (HostDiff per
host); reporters render it as text, markdown (for a pull-request comment) or JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, UsageError

GIB = 1024


@dataclass
class Side:
    documents: dict[str, dict]  # host -> models.json
    traces: dict[str, dict] = field(default_factory=dict)  # host -> explain.json, when known


@dataclass
class HostDiff:
    host: str
    status: str  # added | removed | changed
    roles: list[dict] = field(default_factory=list)
    models_added: list[str] = field(default_factory=list)
    models_removed: list[str] = field(default_factory=list)
    fields: list[dict] = field(default_factory=list)  # {model, field, old, new}
    facts: list[dict] = field(default_factory=list)  # host facts that changed

    def empty(self) -> bool:
        return self.status == "changed" and not (self.roles or self.models_added or self.models_removed
                                                 or self.fields or self.facts)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def read_side(path: Path) -> Side:
    """A models.json, a host folder holding one, or an out/ folder of host folders."""
    if path.is_file():
        document = _read(path)
        return Side({document["host"]["name"]: document})
    if (path / "models.json").is_file():
        document = _read(path / "models.json")
        return Side({document["host"]["name"]: document})
    if path.is_dir():
        documents = {}
        for models in sorted(path.glob("*/models.json")):
            if models.parent.name != "local":
                documents[models.parent.name] = _read(models)
        return Side(documents)
    raise UsageError(f"{path}: neither a compiled models.json nor an out/ folder")


def _read(path: Path) -> dict:
    """A compiled models.json, parsed by the loader (no NaN, no duplicate keys) and checked
    against the output schema: a hand-edited, truncated or newer file is reported at its
    position (InputError), never a traceback."""
    from . import schema
    from .load import load_file
    from .validate import schema_diagnostics

    doc = load_file(path, str(path), as_json=True)
    problems = schema_diagnostics(schema.iter_errors("output", doc.data, layer=False),
                                  lambda where: (doc.path, *doc.where(where)))
    if problems:
        raise InputError(problems)
    return doc.data


def diff(old: Side, new: Side) -> list[HostDiff]:
    result = []
    for host in sorted(set(old.documents) | set(new.documents)):
        if host not in new.documents:
            result.append(HostDiff(host, "removed"))
        elif host not in old.documents:
            result.append(HostDiff(host, "added"))
        else:
            changes = _host(host, old.documents[host], new.documents[host], old.traces.get(host),
                            new.traces.get(host))
            if not changes.empty():
                result.append(changes)
    return result


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


# How a role's pick runs, beside its model and placement: the GPU settings llama-server.sh and
# `hostfit load` pass (offload.py), and the speed estimate; a change in any is shown.
RUN_SETTINGS = ("gpu_layers", "cpu_moe_layers", "tensor_split", "tokens_per_s")


def _host(host: str, old: dict, new: dict, old_trace: dict | None, new_trace: dict | None) -> HostDiff:
    out = HostDiff(host, "changed")
    for key in ("ram_mb", "usable_mb", "vram_mb", "max_loaded_models"):
        if old["host"].get(key) != new["host"].get(key):
            out.facts.append({"field": key, "old": old["host"].get(key), "new": new["host"].get(key)})
    if old.get("profiles") != new.get("profiles"):
        out.facts.append({"field": "profiles", "old": old.get("profiles"), "new": new.get("profiles")})
    for role in sorted(set(old["roles"]) | set(new["roles"])):
        before, after = old["roles"].get(role), new["roles"].get(role)
        if before == after:
            continue
        change = {"role": role, "old_model": (before or {}).get("model"), "new_model": (after or {}).get("model")}
        if before is None or after is None:
            change["kind"] = "role added" if before is None else "role removed"
        elif before.get("model") != after.get("model"):
            change["kind"] = "reassigned"
            change["reason"] = _reason(host, role, before, after, old, new, new_trace, old_trace)
        else:
            change["kind"] = "changed"
        if before and after:
            if before.get("fallbacks") != after.get("fallbacks"):
                change["fallbacks"] = {"old": before.get("fallbacks"), "new": after.get("fallbacks")}
            if before.get("memory_mb") != after.get("memory_mb"):
                change["memory_mb"] = {"old": before.get("memory_mb"), "new": after.get("memory_mb")}
            # fit: a pick turning tight is worth a reviewer's look
            for key in ("placement", "runtime", "fit", *RUN_SETTINGS):
                if before.get(key) != after.get(key):
                    change[key] = {"old": before.get(key), "new": after.get(key)}
            # a figure of the same pick that a measurement now gives
            if "tokens_per_s" in change and after.get("speed_method") == "measured":
                change["tokens_per_s"]["measured_on"] = host
            now = new["models"].get(after.get("model")) or {}
            if "memory_mb" in change and now.get("memory_method") == "measured":
                change["memory_mb"]["measured_on"] = host
        out.roles.append(change)
    out.models_added = sorted(set(new["models"]) - set(old["models"]))
    out.models_removed = sorted(set(old["models"]) - set(new["models"]))
    for model in sorted(set(old["models"]) & set(new["models"])):
        before, after = _flatten(old["models"][model]), _flatten(new["models"][model])
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                out.fields.append({"model": model, "field": key, "old": before.get(key), "new": after.get(key)})
    return out


def _reason(host: str, role: str, before: dict, after: dict, old: dict, new: dict, trace: dict | None,
            old_trace: dict | None = None) -> str:
    """Why a role changed model, from the new selection trace when there is one, else the facts."""
    old_model = before.get("model")
    if trace and role in trace.get("roles", {}):
        verdicts = {c["model"]: c for c in trace["roles"][role]["candidates"]}
        if old_model in verdicts and verdicts[old_model]["verdict"] == "rejected":
            found = verdicts[old_model]
            # rejected on a measured figure: too little room for its measured memory, or too slow measured
            measured = ((found.get("memory") or {}).get("method") == "measured" and found["reason"].startswith("needs")
                        or (found.get("speed") or {}).get("method") == "measured" and "tok/s" in found["reason"])
            return f"{'measured on ' + host + ': ' if measured else ''}{old_model} {found['reason']}"
    if old["host"].get("usable_mb") != new["host"].get("usable_mb"):
        return (f"{host} now has {new['host']['usable_mb'] / GIB:.1f} GiB usable "
                f"(was {old['host']['usable_mb'] / GIB:.1f})")
    if old_model and old_model not in new["models"]:
        return f"{old_model} is no longer a candidate on {host}"
    measured = _measured(host, role, before, after, old, new, old_trace, trace)
    if measured:
        return measured
    if old_model and old_model in new["models"]:
        changed = [key for key in ("context_window", "status", "capabilities", "memory", "params_b", "quantization")
                   if old["models"].get(old_model, {}).get(key) != new["models"][old_model].get(key)]
        if changed:
            return f"{old_model} changed ({', '.join(changed)})"
    return "the candidates or their order changed (hostfit explain shows the trace)"


def _measured(host: str, role: str, before: dict, after: dict, old: dict, new: dict, old_trace: dict | None,
              new_trace: dict | None) -> str | None:
    """"measured on <host>: ..." when a figure the host measured (sources/measured/) moved the pick. With the
    selection traces: the new or old pick's measured speed or memory differs from what the old compile judged
    it by. Without them, from models.json: either model's memory is measured now and was not, or was another
    figure; else the new pick's speed is measured."""
    for model in (after.get("model"), before.get("model")):
        now, then = _judged(new_trace, role, model), _judged(old_trace, role, model) or {}
        speed, memory = now.get("speed") or {}, now.get("memory") or {}
        was_speed, was_memory = (then.get("speed") or {}).get("tokens_per_s"), (then.get("memory") or {}).get("mb")
        if speed.get("method") == "measured" and speed["tokens_per_s"] != was_speed:
            was = f" (was ~{was_speed:g})" if was_speed else ""
            return f"measured on {host}: {model} runs at {speed['tokens_per_s']:g} tok/s{was}"
        if memory.get("method") == "measured" and memory["mb"] != was_memory:
            was = f" (was {was_memory:,} MiB)" if was_memory else ""
            return f"measured on {host}: {model} needs {memory['mb']:,} MiB{was}"
    for model in (before.get("model"), after.get("model")):
        now, then = new["models"].get(model) or {}, old["models"].get(model) or {}
        if now.get("memory_method") == "measured" and (then.get("memory_method"), then.get("memory_mb")) != (
                "measured", now.get("memory_mb")):
            was = f" (was {then['memory_mb']:,} MiB, {then['memory_method']})" if then.get("memory_mb") else ""
            return f"measured on {host}: {model} needs {now['memory_mb']:,} MiB{was}"
    if after.get("speed_method") == "measured":
        return f"measured on {host}: {after['model']} runs at {after.get('tokens_per_s'):g} tok/s"
    return None


def _judged(trace: dict | None, role: str, model: str | None) -> dict:
    """The verdict on `model` in a role's selection trace ({} when there is none)."""
    candidates = (((trace or {}).get("roles") or {}).get(role) or {}).get("candidates") or ()
    return next((c for c in candidates if c.get("model") == model), {}) if model else {}


# ---------------------------------------------------------------------------------- render

ABSENT = "(none)"  # how every line words a value one side lacks


def _value(value) -> str:
    if value is None:
        return ABSENT
    return json.dumps(value) if not isinstance(value, str) else value


def _memory(change: dict) -> str:
    """MiB with thousands separators, as every memory line; the difference when both sides have one."""
    old, new = change["old"], change["new"]
    if old is None or new is None:
        return " -> ".join(ABSENT if v is None else f"{v:,}" for v in (old, new)) + " MiB"
    return f"{old:,} -> {new:,} MiB ({new - old:+,})"


def _change(change: dict) -> str:
    """A host fact's or model field's old -> new; a `*_mb` one in MiB as every memory line."""
    if change["field"].endswith("_mb"):
        return _memory(change)
    return f"{_value(change['old'])} -> {_value(change['new'])}"


def _measured_on(change: dict) -> str:
    return f" (measured on {change['measured_on']})" if change.get("measured_on") else ""


def render_text(diffs: list[HostDiff], colour: bool = False) -> str:
    if not diffs:
        return "no changes"

    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if colour else text

    lines = []
    for d in diffs:
        if d.status != "changed":
            lines.append(paint(f"host {d.host}: {d.status}", "32" if d.status == "added" else "31"))
            continue
        lines.append(paint(f"host {d.host}:", "1"))
        for fact in d.facts:
            lines.append(f"  host {fact['field']}: {_change(fact)}")
        for r in d.roles:
            if r["kind"] == "reassigned":
                lines.append(f"  {r['role']}: {r['old_model'] or '(none)'} -> {paint(r['new_model'] or '(none)', '33')}"
                             f": {r['reason']}")
            elif r["kind"] != "changed":
                lines.append(f"  {r['role']}: {r['kind']}")
            if "fallbacks" in r:
                lines.append(f"  {r['role']} fallbacks: {', '.join(r['fallbacks']['old']) or ABSENT} -> "
                             f"{', '.join(r['fallbacks']['new']) or ABSENT}")
            if "memory_mb" in r:
                lines.append(f"  {r['role']} memory: {_memory(r['memory_mb'])}{_measured_on(r['memory_mb'])}")
            for key in ("placement", "runtime", "fit", *RUN_SETTINGS):
                if key in r:
                    lines.append(f"  {r['role']} {key}: {_value(r[key]['old'])} -> {_value(r[key]['new'])}"
                                 f"{_measured_on(r[key])}")
        for model in d.models_added:
            lines.append(paint(f"  + model {model}", "32"))
        for model in d.models_removed:
            lines.append(paint(f"  - model {model}", "31"))
        for f in d.fields:
            lines.append(f"  {f['model']}.{f['field']}: {_change(f)}")
    return "\n".join(lines)


def render_markdown(diffs: list[HostDiff]) -> str:
    if not diffs:
        return "**hostfit**: no changes to any host."
    parts = [f"**hostfit**: {len(diffs)} host(s) change."]
    for d in diffs:
        if d.status != "changed":
            parts.append(f"- host `{d.host}` {d.status}")
            continue
        count = len(d.roles) + len(d.models_added) + len(d.models_removed) + len(d.fields) + len(d.facts)
        summary = ", ".join(f"{r['role']} → {r['new_model'] or '(none)'}" for r in d.roles
                            if r["kind"] == "reassigned") or f"{count} change{'s' if count != 1 else ''}"
        body = render_text([d]).splitlines()[1:]
        parts.append(f"<details><summary><code>{d.host}</code>: {summary}</summary>\n\n```\n"
                     + "\n".join(line.strip() for line in body) + "\n```\n</details>")
    return "\n\n".join(parts)


def render_github(diffs: list[HostDiff]) -> str:
    """GitHub workflow annotations: one notice per host, the text diff as its message."""
    lines = []
    for d in diffs:
        body = render_text([d]).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        lines.append(f"::notice title=hostfit diff: {d.host}::{body}")
    return "\n".join(lines) or "::notice title=hostfit diff::no changes"


def render_json(diffs: list[HostDiff]) -> str:
    return json.dumps({"changed": bool(diffs), "hosts": [d.to_dict() for d in diffs]}, indent=2, sort_keys=True,
                      allow_nan=False)  # NaN is not JSON


def compiled_side(project) -> Side:
    """Every declared host of a catalog, compiled in memory, with its selection traces."""
    from .options import BuildOptions

    report = project.compile(BuildOptions(all_hosts=True), write=False)
    if report.errors:
        raise InputError(report.errors)
    return Side({r.host.name: r.output for r in report.results},
                {r.host.name: json.loads(r.explain_bytes) for r in report.results})


def _git(*args: str):
    """Run git; a missing git is the user's setup, said plainly rather than as a traceback."""
    import subprocess

    try:
        return subprocess.run(["git", *args], capture_output=True, text=True)
    except OSError as exc:
        raise UsageError(f"--git needs git: {exc.strerror or exc}") from exc


def git_side(root: Path, ref: str) -> Side:
    """REF's sources, compiled in a temporary worktree that is removed afterwards."""
    import tempfile

    from .pipeline import Project

    top = _git("-C", str(root), "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UsageError(f"{root} is not in a git repository")
    with tempfile.TemporaryDirectory(prefix="hostfit-diff-") as tmp:
        worktree = Path(tmp) / "tree"
        added = _git("-C", top.stdout.strip(), "worktree", "add", "--detach", "--quiet", str(worktree), ref)
        if added.returncode != 0:
            raise UsageError(f"cannot check out {ref!r}: {added.stderr.strip()}")
        try:
            catalog = worktree / Path(root).resolve().relative_to(Path(top.stdout.strip()).resolve())
            return compiled_side(Project(catalog))
        finally:
            _git("-C", top.stdout.strip(), "worktree", "remove", "--force", str(worktree))
