"""Emit stage: a plan to the bytes of models.json and explain.json; atomic writes and --check
(compiler/publish.py puts a build's outputs in place).

models.json holds only what the host depends on (the models its roles use, their aliases,
host facts, profiles), in a canonical form: sorted keys, 2-space indent, shortest round-trip
floats, a trailing newline; no timestamps, paths, line numbers, digests or versions. So a
review diff shows real effects only. explain.json (ignored by git) carries what churns: the
selection trace and the provenance of every value, with file:line.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from . import kinds, publish, schema
from .errors import RuntimeFailure, UsageError
from .load import _special_kind
from .memory import Estimate, estimate
from .merge import provenance
from .select import Plan
from .resolve import Catalog, declared_at

MODELS_JSON, EXPLAIN_JSON, EXPORTS = "models.json", "explain.json", "exports"


def output_document(plan: Plan, catalog: Catalog, profiles: list[str]) -> dict:
    host = plan.host
    used = plan.models_used()
    sizes = _memory_by_model(plan, catalog)
    models = {}
    for model_id in used:
        model = dict(catalog.models[model_id])
        need = sizes[model_id]
        model["memory_mb"], model["memory_method"] = need.mb, need.method
        models[model_id] = model
    aliases = {name: model_id for name, model_id in catalog.aliases().items() if model_id in models}
    return {
        "schema_version": 2,
        "host": {"name": host.name, "ram_mb": host.ram_mb, "usable_mb": plan.budget.ram_mb,
                 "vram_mb": host.vram_mb, "gpus": [gpu.to_dict() for gpu in host.gpus],
                 "detected": host.detected, "max_loaded_models": host.max_loaded_models,
                 "runtimes": [runtime.name for runtime in plan.available.runtimes],
                 **({"mirrors": list(host.mirrors)} if host.mirrors else {})},
        "profiles": profiles,
        "roles": {name: role.output() for name, role in sorted(plan.roles.items())},
        "models": models,
        "aliases": aliases,
    }


def _memory_by_model(plan: Plan, catalog: Catalog) -> dict[str, Estimate]:
    """Each used model's need at the largest context any role on this host asks of it."""
    found: dict[str, Estimate] = {}
    for role in plan.roles.values():
        for verdict in role.candidates:
            if verdict.memory is not None and verdict.verdict in ("chosen", "fallback"):
                known = found.get(verdict.model)
                if known is None or verdict.memory.mb > known.mb:
                    found[verdict.model] = verdict.memory
    selection = catalog.selection
    for model_id in plan.models_used():
        if model_id not in found:
            found[model_id] = estimate(catalog.models[model_id], selection["context_default"],
                                       selection["runtime_overhead_mb"], selection.get("kv_cache_type"),
                                       flash_attention=selection["flash_attention"])
    return found


def explain_document(plan: Plan, catalog: Catalog, output: dict) -> dict:
    head, roles = _explain_parts(plan, catalog)
    trail = {pointer: chain for chunk, _ in _provenance_chunks(catalog, output) for pointer, chain in chunk.items()}
    return {**head, "roles": roles, "provenance": dict(sorted(trail.items()))}


def explain_bytes(plan: Plan, catalog: Catalog, output: dict) -> bytes:
    """render_compact(explain_document(...)), byte for byte, with each provenance chunk rendered once per
    catalog: the host's part is its budget, layers and role traces. Keys sort as the whole document's
    would: budget, host, layers, provenance, roles; and within provenance each model's pointers share the
    prefix /models/<id>/ (an escaped id holds no /), so chunks in prefix order are the sorted pointers."""
    head, roles = _explain_parts(plan, catalog)
    inner = ",".join(text for _, text in _provenance_chunks(catalog, output) if text)
    return "".join((_compact(head)[:-1], ',"provenance":{', inner, '},"roles":', _compact(roles), "}\n")).encode()


def _explain_parts(plan: Plan, catalog: Catalog) -> tuple[dict, dict]:
    head = {
        "host": plan.host.name,
        "budget": {"ram_mb": plan.budget.ram_mb, "vram_mb": plan.budget.vram_mb,
                   "max_loaded_models": plan.budget.slots, **({"unified": True} if plan.budget.unified else {})},
        "layers": [{"layer": layer.name, "file": _shown_file(layer.doc.path)} for layer in catalog.layers],
    }
    return head, {name: _typed(name, role.trace(), catalog) for name, role in sorted(plan.roles.items())}


def _provenance_chunks(catalog: Catalog, output: dict) -> list[tuple[dict, str]]:
    """The provenance of the host's models (one chunk each, in pointer order), then of the roles and the
    selection settings, each with its text (the members of a compact JSON object, no braces):
    host-independent, so computed once per catalog (catalog.memo)."""
    models = sorted(output["models"], key=lambda model_id: f"/models/{_escape(model_id)}/")
    return [_model_provenance(catalog, model_id) for model_id in models] + [_settings_provenance(catalog)]


def _model_provenance(catalog: Catalog, model_id: str) -> tuple[dict, str]:
    key = ("explain", "model", model_id)
    if key not in catalog.memo:
        model, trail = catalog.models[model_id], {}
        for field_name, value in model.items():  # a variant's fields where declared: in its entry or its model's
            _record(catalog.layers, trail, f"/models/{_escape(model_id)}/{_escape(field_name)}",
                    declared_at(model_id, model, (field_name,)), value)
        catalog.memo[key] = _chunk(trail)
    return catalog.memo[key]


def _settings_provenance(catalog: Catalog) -> tuple[dict, str]:
    key = ("explain", "settings")
    if key not in catalog.memo:
        trail: dict[str, list[dict]] = {}
        for role_name, role in catalog.roles.items():
            _record(catalog.layers, trail, f"/roles/{_escape(role_name)}", ("roles", role_name), role)
        _record(catalog.layers, trail, "/selection", ("selection",), catalog.selection)
        catalog.memo[key] = _chunk(trail)
    return catalog.memo[key]


def _record(layers, trail: dict, pointer: str, source_path: tuple, value) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _record(layers, trail, f"{pointer}/{_escape(key)}", source_path + (key,), sub)
        return
    chain = provenance(layers, source_path)
    if chain:
        trail[pointer] = [_shown(setting.to_dict()) for setting in chain]


def _chunk(trail: dict) -> tuple[dict, str]:
    chunk = dict(sorted(trail.items()))
    return chunk, _compact(chunk)[1:-1]


def _compact(document) -> str:
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _typed(name: str, trace: dict, catalog: Catalog) -> dict:
    """A role's trace with the model types it takes, each candidate's type and whether it is resolve's default."""
    trace["types"] = list(kinds.accepted(catalog.roles[name]))
    for candidate in trace["candidates"]:
        candidate["type"] = catalog.models[candidate["model"]]["type"]
        if candidate["model"] in catalog.default_types:
            candidate["type_default"] = True
    return trace


def _shown(setting: dict) -> dict:
    """A provenance step fit to write and print: explain.json is not secret, so a password or token in a
    URL (from the catalog or --set) is redacted, and a --set layer is named by its path, not its text."""
    return {**setting, "file": _shown_file(setting["file"]), "value": _redacted(setting["value"])}


def _shown_file(name: str) -> str:
    return name.partition("=")[0] if name.startswith("--set ") else name


def _redacted(value):
    from .net import redact_url

    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    return value


def _escape(key) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def render(document: dict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def render_output(document: dict, catalog: Catalog) -> bytes:
    """render(document) for a models.json of this catalog, byte for byte, with each model's entry (the
    bulk of the file, and the same on every host that uses the model at that memory need) rendered once
    per catalog: json's indented form is its pure-Python encoder, most of a host's emit time."""
    models = document.get("models")
    if not isinstance(models, dict) or not models:
        return render(document)
    entries = []
    for model_id, model in sorted(models.items()):
        key = ("models.json", model_id, model.get("memory_mb"), model.get("memory_method"))
        text = catalog.memo.get(key)
        if text is None or text[1] != model:
            text = catalog.memo[key] = (json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False,
                                                   allow_nan=False).replace("\n", "\n    "), model)
        entries.append(f"    {json.dumps(model_id, ensure_ascii=False)}: {text[0]}")
    rest = render({**document, "models": _MODELS_MARK}).decode()
    mark = f'"models": {json.dumps(_MODELS_MARK)}'
    if rest.count(_MODELS_MARK) != 1:
        return render(document)
    return rest.replace(mark, '"models": {\n' + ",\n".join(entries) + "\n  }").encode()


_MODELS_MARK = "hostfit:models-entries-0b7d"  # stands for the models while the rest is rendered


def render_compact(document: dict) -> bytes:
    """For explain.json: read by programs, and json's C encoder only serves the compact form."""
    return (json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def output_problems(document: dict) -> list[str]:
    """Schema errors in a compiled document (a compiler bug if ever non-empty)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in schema.iter_errors("output", document, layer=False)]


def write_atomic(path: Path, data: bytes) -> None:
    """`data` as the new content of `path`, through atomic_output."""
    with atomic_output(path) as handle:
        handle.write(data)


@contextmanager
def atomic_output(path: Path, make_parents: bool = True):
    """A binary file to write `path`'s new content to: a fresh temporary file beside it (mkstemp,
    O_EXCL, never a link someone planted), renamed over `path` once complete, so readers never see half
    a file. The file keeps the mode it had; a new one gets the umask's (mkstemp alone would make it
    0600). `path` must be missing or a regular file: a rename over a device, a FIFO or a link would
    replace it (as root, `-o /dev/full` would replace the device), so that is refused (E025, exit 2)."""
    try:
        mode = output_mode(path)
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        if mode is None:
            mode = 0o666 & ~publish.current_umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {path}: {exc.strerror or exc}") from exc


class NotAFile(UsageError):
    """An output path that names something other than a regular file (E025, exit 2)."""


def output_mode(path: Path) -> int | None:
    """The permission bits of the regular file at `path`; None when there is none. Anything else there
    (a folder, link, FIFO, socket or device) is refused: the command line named the wrong place."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode):
        return st.st_mode & 0o7777
    kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else _special_kind(st.st_mode)
    raise NotAFile(f"E025 refusing to write {path}: it is {kind}, not a regular file, and writing would replace "
                   "it; name a new file or an existing regular file")


def is_stale(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() != data
    except OSError:
        return True


def stale_exports(folder: Path, files: dict[str, bytes]) -> list[str]:
    """Exports that differ from what would be written, or that would no longer be written."""
    root = folder / EXPORTS
    present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()
    return sorted({name for name, data in files.items() if is_stale(root / name, data)} | (present - set(files)))
