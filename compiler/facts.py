"""GGUF header facts as a catalog layer: sources/facts/<model>.yaml, one file per model.

`hostfit inspect --write` and `hostfit lock` write it with `write`, from the facts gguf_header reads:
the exact parameter count, context length, shape (layers, heads, KV heads, head dim, hidden size,
vocabulary, sliding window and how many layers use it, experts), the quantization and the file's size.
The pipeline reads the folder as a layer below sources/*.yaml, so these facts fill only what the
hand-written files leave out; `disagreements` reports a hand-written value that the header contradicts.
The file is reviewed and committed like any source, so a compile stays offline and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from .errors import Diagnostic, InputError
from .load import Document

FOLDER = ("sources", "facts")
LAYER = "facts"
# a hand-written arch or params value further than this from the header's is reported (W290)
DISAGREE = 0.05
MAX_COUNT = 1 << 31  # layers, heads, windows...: anything larger is no model's shape
# not compared: published active-parameter figures leave out the embeddings or not (gpt-oss-20b's 3.63B
# does; the header's count has every non-expert tensor), and kv_bytes is a setting, not a fact
NOT_COMPARED = ("active_params_b", "kv_bytes")
# llama_ftype names that catalogs and the bits-per-weight table (memory.QUANT_BITS) spell otherwise
FILE_TYPE_NAMES = {"ALL_F32": "F32", "MXFP4_MOE": "MXFP4"}


@dataclass(frozen=True)
class Sliding:
    """How llama.cpp lays out an architecture's sliding-window layers (its loader's set_swa_pattern call):
    with `period` N, layer i uses the window when i % N < N - 1; None: llama.cpp gives every layer the
    full context whatever the header says. `window`: llama.cpp's own when the header names none;
    `only_layers`: the pattern applies only to a model of that depth."""

    period: int | None
    window: int | None = None
    only_layers: int | None = None


# general.architecture -> its layout in llama.cpp (src/llama-model.cpp, src/models/<arch>.cpp). An
# architecture not here gets no sliding-window layers: a full cache on every layer never under-counts.
SLIDING: dict[str, Sliding] = {
    "gemma2": Sliding(2, window=4096),  # every other layer
    "gemma3": Sliding(6),  # 5 of 6
    "gemma3n": Sliding(5),  # 4 of 5
    "gemma-embedding": Sliding(6),
    "cohere2": Sliding(4),  # 3 of 4
    "olmo2": Sliding(4),  # OLMo 3, when its header names a window
    "gpt-oss": Sliding(2),
    "exaone4": Sliding(4, window=4096, only_layers=64),  # the 32B only
    "llama4": Sliding(4, window=8192),  # chunked attention, 3 of 4
    "phi3": Sliding(None),  # "Phi SWA is currently disabled"
}


def sliding_layers(arch: str | None, layers: int, window: int | None, pattern) -> tuple[int | None, int]:
    """(window, how many of `layers` use it) as llama.cpp would run the model: a header's
    sliding_window_pattern (a flag per layer, or a period) wins over the architecture's default. A
    window of 0 in the header means none (llama.cpp turns the pattern off); absent, llama.cpp's own."""
    layout = SLIDING.get(arch or "")
    if layout is not None and window is None:
        window = layout.window
    if not window:
        return None, 0
    if isinstance(pattern, list):
        return window, min(layers, sum(1 for flag in pattern if flag))
    if layout is None or layout.period is None or (layout.only_layers and layout.only_layers != layers):
        if layout is None and isinstance(pattern, int) and pattern > 0:
            # an architecture this table does not know that names its period: count the fewer of the two
            # phases llama.cpp uses (window layers first, or a full layer first)
            return window, min(_periodic(layers, pattern), layers - len(range(0, layers, pattern)))
        return window, 0
    return window, _periodic(layers, pattern if isinstance(pattern, int) and pattern > 0 else layout.period)


def _periodic(layers: int, period: int) -> int:
    return layers if period == 0 else sum(1 for i in range(layers) if i % period < period - 1)


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_COUNT else None


def arch_facts(shape: dict) -> dict:
    """The catalog's `arch` from gguf_header.architecture's names (a header, or Ollama's model_info)."""
    layers = _count(shape.get("block_count"))
    arch = {"layers": layers, "heads": _count(shape.get("head_count")),
            "kv_heads": _count(shape.get("head_count_kv")), "head_dim": _count(shape.get("head_dim")),
            "hidden_size": _count(shape.get("embedding_length")), "vocab_size": _count(shape.get("vocab_size")),
            "experts": _count(shape.get("expert_count")), "experts_used": _count(shape.get("expert_used_count"))}
    if layers:
        window = shape.get("sliding_window")
        window = 0 if window == 0 else _count(window)  # 0: the header turns the window off
        window, count = sliding_layers(shape.get("architecture"), layers, window, shape.get("sliding_window_pattern"))
        if window:
            arch["sliding_window"], arch["sliding_window_layers"] = window, count
    return {key: value for key, value in arch.items() if value is not None}


def quantization(found: dict) -> str | None:
    """llama.cpp's name for the file's mix (general.file_type: Q4_K_M), which the bits-per-weight table
    and catalogs use; without one, the tensor type holding the most parameters."""
    label = found.get("file_type")
    label = FILE_TYPE_NAMES.get(label, label)
    if label and label != "GUESSED" and not label.startswith("type"):
        return label
    dominant = next(iter(found.get("tensor_types") or {}), None)
    return dominant if dominant and not dominant.startswith("type") else None


def model_facts(found: dict) -> dict:
    """The catalog entry the header supports. A shard of a split GGUF holds only its own tensors, so
    neither the parameter count nor the size of one shard is the model's: both are left out."""
    entry: dict = {}
    whole = not (found.get("split_count") or 0) > 1
    parameters = found.get("parameters") or 0
    if whole and parameters > 0:
        entry["params_b"] = parameters / 1e9
    context = _count(found.get("context_length"))
    if context:
        entry["context_window"] = context
    quant = quantization(found)
    if quant:
        entry["quantization"] = quant
    arch = arch_facts(found)
    experts, used, routed = arch.get("experts"), arch.get("experts_used"), found.get("expert_parameters") or 0
    if whole and experts and used and 0 < routed <= parameters:
        # the routed experts' weights count as used / experts of themselves per token; the rest always runs
        arch["active_params_b"] = (parameters - routed + routed * used / experts) / 1e9
    if arch:
        entry["arch"] = arch
    size = found.get("file_size")
    if whole and isinstance(size, int) and size > 0:
        entry["artifact"] = {"format": "gguf", "size_bytes": size}
    return entry


def file_for(root: Path, model_id: str) -> Path:
    """sources/facts/<model id>.yaml; a `/` or `:` of the id percent-encoded, so each id has its own file."""
    return root.joinpath(*FOLDER) / f"{quote(model_id, safe='')}.yaml"


def source_name(target: str) -> str:
    """The file's own name, from a path or a URL (no query, no credentials): what the comment names."""
    if "://" in target:
        return unquote(urlsplit(target).path.rsplit("/", 1)[-1]) or "(a URL)"
    return Path(target).name


def render(model_id: str, found: dict, name: str) -> bytes:
    """The layer's bytes: the same facts give the same bytes (sorted keys, no dates, no paths)."""
    from .load import dump_yaml

    entry = model_facts(found)
    total = sum(t["parameters"] for t in found.get("tensor_types", {}).values()) or 1
    mix = ", ".join(f"{kind} {100 * t['parameters'] / total:.1f}%" for kind, t in found.get("tensor_types", {}).items())
    lines = [f"# GGUF header facts of {_shown(name)}, written by hostfit (`inspect --write`, `lock`).",
             "# Review it like any source: the values in sources/*.yaml win over these.",
             f"# architecture {_shown(found.get('architecture') or '?')}, file type {found.get('file_type') or '?'}, "
             f"{found.get('tensor_count', 0):,} tensors, {found.get('parameters', 0):,} parameters",
             f"# tensor types by parameters: {mix or 'none'}"]
    if (found.get("split_count") or 0) > 1:
        lines.append(f"# shard of {found['split_count']}: the parameter count and size of the whole set are not here")
    body = {"schema_version": 2, "kind": "catalog", "models": {model_id: _sorted(entry)}}
    return ("\n".join(lines) + "\n" + dump_yaml(body, sort_keys=False, width=120)).encode()


def _shown(text: str) -> str:
    """A file name or header string fit for a one-line comment: a newline in it would start YAML."""
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text if len(text) <= 120 else text[:117] + "..."


def _sorted(value):
    """Keys in order at every level (the header first at the top, as every source file has it)."""
    return {key: _sorted(value[key]) for key in sorted(value)} if isinstance(value, dict) else value


def write(root: Path, model_id: str, found: dict, name: str) -> tuple[Path, bool]:
    """Write sources/facts/<model>.yaml atomically, after checking it as the pipeline will read it.
    Returns (path, changed): the same facts again leave the file untouched."""
    path = file_for(root, model_id)
    return path, write_layer(path, render(model_id, found, name), str(Path(*FOLDER) / path.name), LAYER)


def write_layer(path: Path, data: bytes, shown: str, kind: str, dry_run: bool = False) -> bool:
    """A machine-written layer (facts, measurements) written atomically once it checks as the pipeline
    will read it (errors: InputError at their place); False, and nothing written, when the file already
    holds these bytes; `dry_run` checks and compares only."""
    from . import validate
    from .emit import write_atomic
    from .load import load_yaml_text

    problems = [p for p in validate.check_document(load_yaml_text(data.decode(), shown, kind))
                if p.severity == "error"]
    if problems:
        raise InputError(problems)
    try:
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            return False
    except OSError:
        pass  # unreadable: write_atomic replaces it, or names the problem
    if not dry_run:
        write_atomic(path, data)
    return True


def record(project, target: str, found: dict, explicit: str | None) -> tuple[Path, bool, str]:
    """`inspect --write`: the facts of `target` written for its catalog model (`model_for`); returns
    (path, changed, model id). A catalog file that does not load is an error: the model cannot be matched
    against it; a broken facts file is what this is about to replace, so it does not stand in the way."""
    from .merge import merge_layers
    from .validate import mapping

    sources = project.load_sources()
    blocking = [p for p in sources.errors if Path(p.path).parts[:2] != FOLDER]
    if blocking:
        raise InputError(blocking)
    models = mapping(merge_layers([layer for layer in sources.layers() if layer.name != LAYER]).data.get("models"))
    model_id = model_for(models, target, explicit)
    path, changed = write(project.root, model_id, found, source_name(found["source"]))
    return path, changed, model_id


def numbers(model: dict) -> dict[tuple, float]:
    """The facts a hand-written value is compared with: params_b and the numeric arch fields."""
    found = {}
    if isinstance(model.get("params_b"), (int, float)):
        found[("params_b",)] = model["params_b"]
    arch = model.get("arch") if isinstance(model.get("arch"), dict) else {}
    for key, value in arch.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in NOT_COMPARED:
            found[("arch", key)] = value
    return found


def disagreements(facts_docs: list[Document], layers) -> list[Diagnostic]:
    """W290 where a value the layers above set (the one that wins) is more than DISAGREE from the header's,
    at that value's file:line. `layers`: the merged layers, facts included, lowest first."""
    from .merge import merge_layers, origin
    from .validate import mapping

    if not facts_docs:  # the usual catalog: no second merge
        return []
    merged = mapping(merge_layers(layers).data.get("models"))
    above = tuple(layer for layer in layers if layer.name != LAYER)
    problems = []
    for doc in facts_docs:
        for model_id, entry in mapping(doc.data.get("models")).items():
            model = mapping(merged.get(model_id))
            effective = numbers(model)
            for path, fact in numbers(mapping(entry)).items():
                value = effective.get(path)
                if value is None or abs(value - fact) <= DISAGREE * max(abs(value), abs(fact)):
                    continue
                file, line, col = origin(above, ("models", model_id, *path))
                field = ".".join(path)
                problems.append(Diagnostic(file, line, col, "W290",
                                           f"{model_id}: {field} is {value:g} here but {fact:g} in its GGUF header "
                                           f"({doc.path})", "correct it, or delete it and let the header's value fill "
                                           "it", severity="warning"))
    return problems


def orphans(facts_docs: list[Document], known: dict) -> tuple[list[Document], list[Diagnostic]]:
    """The facts documents with only models the catalog defines (`known`: its merged models; facts complete
    a model, never make one), and W291 for each entry left out (a model renamed or removed since its facts
    were written). A model whose artifact is a file set sizes each file in `files`: one file's size from
    its header is no figure for the set (and beside `files` would be E240), so it is left out."""
    from .validate import mapping

    kept, problems = [], []
    for doc in facts_docs:
        models = mapping(doc.data.get("models"))
        unknown = sorted(model_id for model_id in models if model_id not in known)
        for model_id in unknown:
            problems.append(Diagnostic(doc.path, *doc.where(("models", model_id)), "W291",
                                       f"facts for {model_id!r}, which no catalog file defines: not used",
                                       "delete the file, or rename the entry after the model", severity="warning"))
        entries = {model_id: _for_artifact(entry, mapping(mapping(known.get(model_id)).get("artifact")))
                   for model_id, entry in models.items() if model_id not in unknown}
        if entries != models:
            doc = Document(doc.path, {**doc.data, "models": entries}, doc.positions, doc.layer, doc.notes)
        kept.append(doc)
    return kept, problems


def _for_artifact(entry, artifact: dict):
    """The facts entry without the one-file size when the catalog's artifact lists `files`."""
    found = entry.get("artifact") if isinstance(entry, dict) else None
    if not artifact.get("files") or not isinstance(found, dict) or "size_bytes" not in found:
        return entry
    rest = {key: value for key, value in found.items() if key != "size_bytes"}
    return {key: value for key, value in entry.items() if key != "artifact"} | ({"artifact": rest} if rest else {})


def model_for(models: dict, target: str, explicit: str | None) -> str:
    """The catalog model the facts of `target` belong to: `explicit` (an id or alias), else the one model
    whose artifact file (or URL's file) has the target's file name. None found, or several: a usage error."""
    from .errors import UsageError, did_you_mean
    from .validate import mapping

    if explicit is not None:
        if explicit.lower() in models:  # ids are lowercase; aliases resolve case-insensitively, as resolve does
            return explicit.lower()
        for model_id, model in models.items():
            if explicit.lower() in (str(a).lower() for a in mapping(model).get("aliases") or ()):
                return model_id
        raise UsageError(f"--model {explicit!r}: no such model in the catalog; "
                         f"{did_you_mean(explicit, models) or 'see `hostfit models --all`'}")
    name = source_name(target)
    matches = sorted(model_id for model_id, model in models.items()
                     if name in _artifact_names(mapping(mapping(model).get("artifact"))))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{name} is the artifact of {', '.join(matches)}: name one with --model ID")
    raise UsageError(f"no catalog model has an artifact named {name}: name it with --model ID "
                     "(or add its artifact to sources/ first)")


def _artifact_names(artifact: dict) -> set[str]:
    names = {artifact.get("file")} | {source_name(url) for url in (artifact.get("url"), *(artifact.get("mirrors") or ()))
                                      if isinstance(url, str)}
    names |= {item.get("name") for item in artifact.get("files") or () if isinstance(item, dict)}  # a file set
    return {name for name in names if isinstance(name, str) and name}
