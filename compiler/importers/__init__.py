"""Importers: foreign model catalogs to a version-2 catalog layer, and an account of what was
left out (skipped entries with their reasons, fields with no version-2 home, renamed ids).

Each format module has one pure function, `convert(data, out: Imported)`, from the parsed file
to models; reading the file and writing the layer stay here and in the CLI.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Diagnostic, InputError
from ..load import MAX_NUMBER, dump_yaml
from ..migrate import normalize_id
from ..validate import mapping  # noqa: F401 - the importers' shape helper too

FORMATS = ("gpt4all", "litellm", "openrouter", "llmfit", "registry")
FIELD_ORDER = ("name", "family", "params_b", "quantization", "context_window", "provider", "workloads", "type",
               "capabilities", "arch", "memory", "recommended", "priority", "downloads", "specialty",
               "release_date", "status", "aliases", "tags",
               "license", "description", "deprecation_date", "pricing", "api_key_env", "hf_repo", "artifact", "ollama",
               "variants")
MAX_ID = 190  # the schema allows ids of 200 characters; room for a "-N" suffix
IMPORT_PRIORITY = 500  # imported models rank below a catalog's own (priority 100 by default)


@dataclass
class Imported:
    source: str
    format: str
    models: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> source names
    unmapped: Counter = field(default_factory=Counter)  # source field -> entries that had it
    merged: list[tuple[str, str]] = field(default_factory=list)  # (source name, id it merged into)
    suffixed: list[tuple[str, str]] = field(default_factory=list)  # (source name, id it was given)
    grouped: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (source name, its variants)
    ungrouped: list[tuple[str, str]] = field(default_factory=list)  # (source names, why not one model)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.setdefault(reason, []).append(str(name))

    def unmapped_fields(self, fields) -> None:
        self.unmapped.update(fields)

    def add(self, name: str, model: dict) -> str:
        """Add under a normalized id; ids that collide merge when the facts agree, else get a suffix."""
        base = normalize_id(name)[:MAX_ID].rstrip("-") or "model"
        model = {key: model[key] for key in FIELD_ORDER if model.get(key) is not None} | \
            {key: value for key, value in sorted(model.items()) if key.startswith("x-") and value}
        if base in self.models:
            if _facts(self.models[base]) == _facts(model):
                self.merged.append((str(name), base))
                return base
            n = 2
            while f"{base}-{n}" in self.models:
                n += 1
            self.suffixed.append((str(name), f"{base}-{n}"))
            base = f"{base}-{n}"
        self.models[base] = model
        return base

    def layer(self) -> dict:
        return {"schema_version": 2, "kind": "catalog",
                "models": {model_id: self.models[model_id] for model_id in sorted(self.models)}}

    def summary(self) -> str:
        lines = [f"imported {len(self.models):,} models from {self.source} ({self.format})"]
        skipped = sum(len(names) for names in self.skipped.values())
        if skipped:
            lines.append(f"skipped {skipped:,}:")
            for reason, names in sorted(self.skipped.items(), key=lambda item: (-len(item[1]), item[0])):
                shown = ", ".join(names[:3]) + (f", ... ({len(names) - 3} more)" if len(names) > 3 else "")
                lines.append(f"  {len(names):>5}  {reason}: {shown}")
        for what, pairs in (("merged (same facts, ids equal after normalization)", self.merged),
                            ("renamed (ids equal after normalization, facts differ)", self.suffixed)):
            if pairs:
                lines.append(f"{what}: " + ", ".join(f"{name} -> {model_id}" for name, model_id in pairs))
        if self.grouped:
            lines.append("one model in several files, imported as variants: " +
                         ", ".join(f"{name} ({', '.join(quants)})" for name, quants in self.grouped))
        for names, why in self.ungrouped:
            lines.append(f"not imported as variants of one model: {names}: {why}")
        if self.unmapped:
            common = sorted(self.unmapped.items(), key=lambda item: (-item[1], item[0]))
            shown = ", ".join(f"{name} ({count:,})" for name, count in common[:12])
            more = f", and {len(common) - 12} more" if len(common) > 12 else ""
            lines.append(f"fields not mapped, with the number of entries that had them: {shown}{more}")
        return "\n".join(lines)


def group_variants(entries: list[tuple[str, dict]], out: Imported) -> list[tuple[str, dict]]:
    """(source name, model) pairs with the files of one model merged into one model with `variants`.

    Files of one model: the same repository and the same name once the quantization is taken out of it
    (`Qwen2.5-Coder-14B-Q4_K_M` and `-Q8_0`), each a file with its own quantization. The variant keeps
    what describes its file (artifact, memory, its own description); every other fact must agree across
    the files, else they stay separate models and the summary says which facts differ."""
    groups: dict[tuple, list[int]] = {}
    for index, (name, model) in enumerate(entries):
        key = _variant_key(name, model)
        if key is not None:
            groups.setdefault(key, []).append(index)
    merged: dict[int, tuple[str, dict] | None] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        files = [entries[i] for i in members]
        names = ", ".join(name for name, _ in files)
        quants = [model["quantization"] for _, model in files]
        if len(set(quants)) < len(quants):
            out.ungrouped.append((names, "two files of one quantization"))
            continue
        differ = sorted({key for _, model in files for key in set(model) | set(files[0][1])
                         if key not in VARIANT_OWN and model.get(key) != files[0][1].get(key)})
        if differ:
            out.ungrouped.append((names, f"they differ in {', '.join(differ)}"))
            continue
        name, model = _variant_model(files)
        merged.update({i: None for i in members})
        merged[members[0]] = (name, model)
        out.grouped.append((name, tuple(sorted(model["variants"]))))
    return [merged.get(i, entry) for i, entry in enumerate(entries) if merged.get(i, entry) is not None]


VARIANT_OWN = ("name", "quantization", "artifact", "memory", "description")  # what describes one file


def _strip_quant(text: str, quant: str) -> str:
    """A name without its quantization token (`Qwen2.5-Coder-14B-Q4_K_M` -> `Qwen2.5-Coder-14B`)."""
    pattern = r"(?:^|[\s._:-]+)\(?" + r"[\s._-]?".join(map(re.escape, quant.split("_"))) + r"\)?(?=$|[\s._-])"
    return re.sub(pattern, "", text, flags=re.I).strip() or text


def _variant_key(name: str, model: dict):
    """What the files of one model share; None for an entry that is not one quantized file."""
    artifact, quant = model.get("artifact") or {}, model.get("quantization")
    if not quant or not artifact.get("file"):
        return None
    title = _strip_quant(model.get("name") or name, quant).lower()
    return (artifact.get("repo") or "", title)


def _variant_model(files: list[tuple[str, dict]]) -> tuple[str, dict]:
    """One model from the files of one model: the shared facts, and a variant per file keyed by quantization."""
    name, first = files[0]
    model = {key: value for key, value in first.items() if key not in VARIANT_OWN}
    if first.get("name"):
        model["name"] = _strip_quant(first["name"], first["quantization"])
    descriptions = {m.get("description") for _, m in files}
    if len(descriptions) == 1 and first.get("description"):
        model["description"] = first["description"]  # one text for all: the model's, not repeated per file
    model["variants"] = {
        m["quantization"]: {key: m[key] for key in ("artifact", "memory", "description")
                            if m.get(key) is not None and (key != "description" or len(descriptions) > 1)}
        for _, m in sorted(files, key=lambda f: f[1]["quantization"])}
    return _strip_quant(name, first["quantization"]), model


def _facts(model: dict) -> dict:
    return {key: value for key, value in model.items() if key != "name"}


def run(fmt: str, path: Path, display: str) -> Imported:
    if fmt not in FORMATS:  # pragma: no cover - click restricts the choice
        raise ValueError(fmt)
    try:
        text = read_input(path, display).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError([Diagnostic(display, 1, 1, "E002", f"not JSON: {exc}")]) from exc
    out = Imported(path.name, fmt)
    convert(fmt, parse(text, display), out, display)
    return out


def parse(text: str, display: str):
    """The file's JSON, or an InputError with its position: syntax, nesting too deep, integers
    over 4,300 digits, and lone surrogates (`"\\ud800"`), which no output file could hold."""
    try:
        data = json.loads(text)
        if _SURROGATE_ESCAPE.search(text):  # only an escape can make one: the text itself is UTF-8
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        line, col = _lone_surrogate(text)
        raise InputError([Diagnostic(display, line, col, "E002", "not JSON text: a lone UTF-16 surrogate escape",
                                     "\\ud800-\\udfff escapes are valid only as pairs")]) from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing an over-long integer
        line, col = (exc.lineno, exc.colno) if isinstance(exc, json.JSONDecodeError) else (1, 1)
        raise InputError([Diagnostic(display, line, col, "E002", f"not JSON: {exc}")]) from exc
    except RecursionError:
        raise InputError([Diagnostic(display, 1, 1, "E004", "not JSON this program can read: nesting too deep")]) \
            from None
    return data


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _lone_surrogate(text: str) -> tuple[int, int]:
    """Line and column of the first surrogate escape that is not half of a pair."""
    for match in _SURROGATE_ESCAPE.finditer(text):
        start, high = match.start(), match.group()[3].lower() in "89ab"
        pair = text[start + 6:start + 12] if high else text[max(0, start - 6):start]
        if not (_SURROGATE_ESCAPE.fullmatch(pair) and (pair[3].lower() in "89ab") != high):
            line = text.count("\n", 0, start) + 1
            return line, start - (text.rfind("\n", 0, start) + 1) + 1
    return 1, 1


def convert(fmt: str, data, out: Imported, display: str) -> None:
    """One format's converter on decoded JSON; a top level of the wrong shape is E015."""
    module = importlib.import_module(f"{__name__}.{fmt}")
    try:
        module.convert(data, out)
    except FormatMismatch as exc:
        raise InputError([Diagnostic(display, 1, 1, "E015", f"not a catalog in {fmt} format: {exc}",
                                     f"formats: {', '.join(FORMATS)}")]) from None


MAX_INPUT_BYTES = 256 << 20  # the largest real catalog imported is under 2 MiB


def read_input(path: Path, display: str) -> bytes:
    """The file to import: a regular file (a FIFO or device such as /dev/zero is refused, E018) of at
    most MAX_INPUT_BYTES (E026), so a wrong path cannot read until memory runs out."""
    from ..load import read_regular

    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0  # read_regular names what is wrong with it
    if size > MAX_INPUT_BYTES:
        raise InputError([Diagnostic(display, 0, 0, "E026", f"{size:,} bytes is too large to import "
                                     f"(at most {MAX_INPUT_BYTES:,})", "is this the catalog file you meant?")])
    return read_regular(path, display)


class FormatMismatch(Exception):
    """The file's top-level shape is not the one the format expects."""


def render(imported: Imported) -> str:
    header = f"# Imported by `hostfit import {imported.format} {imported.source}`; edit freely or re-import.\n"
    return header + dump_yaml(imported.layer(), sort_keys=False, width=120)


# ------------------------------------------------------------------------ shared converters

# Numbers a layer may hold are the loader's (MAX_NUMBER: what every JSON reader holds exactly). No count,
# size or price an importer reads comes near it: beyond it is garbage (1e400, 5,000 digits).


def number(value) -> float | None:
    """A finite number from a number or a numeric string; None for anything else: NaN, infinities
    (JSON's 1e400 is one), and magnitudes over MAX_NUMBER."""
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", ""))
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if abs(value) <= MAX_NUMBER else None  # NaN compares false


def count(value) -> int | None:
    """A positive whole number (an integer, not a bool), at most MAX_NUMBER."""
    return value if type(value) is int and 0 < value <= MAX_NUMBER else None


def day(value) -> str | None:
    """A YYYY-MM-DD date as the catalog takes it, else None."""
    return value if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value) else None


def text(value) -> str | None:
    """A non-blank string, or None for blanks and every other type."""
    return value if isinstance(value, str) and value.strip() else None


def strings(value) -> list[str]:
    """The strings of a list (a string alone is a list of one); [] for any other type."""
    if isinstance(value, str):
        return [value]
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def shown(entry) -> str:
    """An entry as named in the summary when it has no name of its own."""
    if entry is None or isinstance(entry, (str, int, float)):
        return str(entry)[:60]
    return f"(a JSON {type(entry).__name__})"


def named(out: Imported, entry, key: str, label: str | None = None) -> str | None:
    """An entry's name under `key`; None, and the entry skipped, when it is not an object or has no
    such name (then shown by its `label` field, if any)."""
    if not isinstance(entry, dict):
        out.skip(shown(entry), "not a model entry")
        return None
    name = text(entry.get(key))
    if name is None:
        out.skip((text(entry.get(label)) if label else None) or "(unnamed)", f"no {key}")
    return name


def plain(value) -> bool:
    """Whether a JSON value may be copied into a layer as is: no NaN, infinity or huge number in it."""
    if isinstance(value, dict):
        return all(plain(item) for item in value.values())
    if isinstance(value, list):
        return all(plain(item) for item in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value) is not None
    return True


def per_million(per_token) -> float | None:
    """USD per token (a number or a decimal string with float noise) to USD per million tokens."""
    value = number(per_token)
    return None if value is None or value < 0 else number(round(value * 1_000_000, 6))


_PARAM_WORDS = {"thousand": 1e-6, "k": 1e-6, "million": 1e-3, "m": 1e-3, "billion": 1.0, "b": 1.0,
                "trillion": 1e3, "t": 1e3}


def params_b(text) -> float | None:
    """'8 billion', '137 million', '3B', '0.5b', '7.6B' -> billions of parameters (None unless positive)."""
    value = number(text)
    if value is not None:
        billions = value / 1e9 if value >= 1e6 else value
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)\s*", text if isinstance(text, str) else "")
        value = number(match.group(1)) if match and match.group(2).lower() in _PARAM_WORDS else None
        if value is None:
            return None
        billions = number(round(value * _PARAM_WORDS[match.group(2).lower()], 6))
    return billions if billions is not None and billions > 0 else None


def quantization(text) -> str | None:
    """A quantization name as the catalog spells it: upper case, [A-Z0-9_]."""
    if not text:
        return None
    name = re.sub(r"[^A-Z0-9_]+", "_", str(text).strip().upper()).strip("_")
    return name or None


def context(value, out: Imported, name: str) -> int | None | bool:
    """A context window in tokens; False (and a skip) when it is implausible."""
    tokens = number(value)
    if tokens is None:
        return None
    tokens = int(tokens)
    if not 128 <= tokens <= 10_000_000:
        out.skip(name, "implausible context window (below 128 or above 10,000,000 tokens)")
        return False
    return tokens


def hf_repo(value) -> str | None:
    text = str(value or "").strip()
    return text if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", text) else None


def plain_text(html) -> str:
    import html as html_module

    text = re.sub(r"<\s*/?\s*(li|p|br|ul|ol)[^>]*>", " ", html if isinstance(html, str) else "", flags=re.I)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"\s+", " ", html_module.unescape(text)).strip()


def unsafe_names(out: Imported, name, file=None, url=None, ollama=None) -> bool:
    """True, and the entry skipped with the reason, when a name that would reach exports and the cache
    (artifact file, download URL, Ollama name) is outside the character set validation allows: renaming a
    file would break its download, so such entries are left out and named in the summary."""
    from ..validate import URL_CHARS, file_name_problem, name_problem, url_problem

    name = str(name).encode("unicode_escape").decode()[:60]  # shown in the summary: one line, no control codes
    if file is not None and (not isinstance(file, str) or file_name_problem(file)):
        out.skip(name, "unsafe artifact file name (allowed: letters, digits and . _ + -)")
    elif url is not None and (not isinstance(url, str) or not URL_CHARS.fullmatch(url)):
        out.skip(name, "unsafe download URL (spaces, quotes, control or non-ASCII characters)")
    elif url is not None and url_problem(url):
        out.skip(name, "download URL refused (https anywhere, plain http only to loopback)")
    elif ollama is not None and (not isinstance(ollama, str) or name_problem("ollama", ollama)):
        out.skip(name, "unsafe Ollama name (allowed: letters, digits and . _ : / -)")
    else:
        return False
    return True


def api_key_env(provider: str) -> str:
    name = re.sub(r"[^A-Z0-9]+", "_", provider.upper()).strip("_")
    return ("_" if name[:1].isdigit() else "") + name + "_API_KEY"  # a variable name starts with no digit
