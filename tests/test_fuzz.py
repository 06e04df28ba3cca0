"""Property tests (hypothesis) over every parser that reads input hostfit does not control: the
loader, validate, the importers (directly and through `hostfit import`), the Ollama and
Hugging Face/OpenRouter response parsers, and the executor's readers of models.json, models.lock
and a bundle's bundle.json. Each either succeeds or raises HostfitError (an
InputError whose diagnostics name the file), never another exception; importers skip a
malformed entry with a reason rather than fail or emit a layer that does not validate.

Seeded (derandomize) and bounded: HOSTFIT_FUZZ_EXAMPLES examples per target, 150 by default
(about 10 s for the whole file here). A longer run:
    HOSTFIT_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q -p no:randomly tests/test_fuzz.py
The crashes these found are kept below as plain regression tests with their minimal inputs.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compiler import importers, load, migrate
from compiler.discover import ingest, ollama
from compiler.errors import HostfitError, InputError
from compiler.load import load_json_text, load_yaml_text
from compiler.merge import Layer, merge_layers
from compiler.validate import check_document, check_merged

from conftest import run_cli

MODULES = {fmt: importlib.import_module(f"compiler.importers.{fmt}") for fmt in importers.FORMATS}
EXAMPLES = int(os.environ.get("HOSTFIT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------ strategies

# What json.loads can produce: 1e400 and Infinity are inf, NaN is nan, "\ud800" a lone surrogate,
# integers up to 4,300 digits; strings that look like numbers are where converters go wrong.
TRICKY_NUMBERS = st.sampled_from([0, -1, 1, 127, 128, 10_000_001, 2**53 + 1, 2**64, 10**400, -10**400,
                                  math.inf, -math.inf, math.nan, 1e308, -0.0, 5e-324, 0.5, 1e-9])
TRICKY_STRINGS = st.sampled_from(["", " ", "x", "-1", "0", "1", "1e400", "9" * 400, "NaN", "inf", "-inf",
                                  "\u00b2", "\u0661\u0662", "1,000", "3B", "0.5b", "137 million", "9e999 billion",
                                  "true", "q4_k_m", "a/b", "~a/b", "x.gguf", "model.GGUF", ".gguf", "/", "ollama/x",
                                  "\ud800", "o/\ud800", "a\x00b", "\u212a", "text", "image", "tools", "chat",
                                  "embedding", "2026-02-30", "2026-02-27", "license:mit", "<p>hi</p>", "A" * 64, "-" * 80])
TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates included
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, TRICKY_NUMBERS, TRICKY_STRINGS)
JSON_VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.one_of(TEXT, TRICKY_STRINGS), children, max_size=4)),
    max_leaves=12)


def entries_with(keys) -> st.SearchStrategy:
    """Near-valid entries: a format's own keys with tricky or arbitrary values (or anything at all)."""
    value = st.one_of(SCALARS, JSON_VALUES, st.lists(st.one_of(TRICKY_STRINGS, TEXT), max_size=3))
    entry = st.fixed_dictionaries({}, optional={key: value for key in sorted(keys)})
    return st.one_of(entry, entry, entry, JSON_VALUES)


def near_list(entry) -> st.SearchStrategy:
    return st.one_of(st.lists(entry, max_size=5), JSON_VALUES)


def near_dict(entry) -> st.SearchStrategy:
    return st.one_of(st.dictionaries(st.one_of(TRICKY_STRINGS, TEXT), entry, max_size=5), JSON_VALUES)


def near_data(entry) -> st.SearchStrategy:
    return st.one_of(st.fixed_dictionaries({"data": st.lists(entry, max_size=5)}), JSON_VALUES)


IMPORTER_INPUTS = {
    "gpt4all": near_list(entries_with(MODULES["gpt4all"].MAPPED)),
    "litellm": near_dict(entries_with(MODULES["litellm"].MAPPED)),
    "openrouter": near_data(entries_with(MODULES["openrouter"].MAPPED | {"top_provider", "architecture"})),
    "llmfit": near_list(entries_with(MODULES["llmfit"].MAPPED)),
    "registry": near_list(entries_with(MODULES["registry"].MAPPED)),
}
# Nested shapes the converters look into, with the keys they look for.
IMPORTER_INPUTS["openrouter"] = st.one_of(IMPORTER_INPUTS["openrouter"], near_data(st.fixed_dictionaries({}, optional={
    "id": st.one_of(TRICKY_STRINGS, SCALARS),
    "pricing": st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={"prompt": SCALARS, "completion": SCALARS})),
    "architecture": st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
        "output_modalities": JSON_VALUES, "input_modalities": JSON_VALUES})),
    "top_provider": st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={"context_length": SCALARS})),
    "alias_target": SCALARS})))


def mostly(good, bad) -> st.SearchStrategy:
    """The good value four times in five, so that most documents get past the first check."""
    return st.sampled_from(range(5)).flatmap(lambda n: bad if n == 0 else st.just(good))


def catalog_documents() -> st.SearchStrategy:
    """Catalog, profile and hosts documents close to valid ones, with tricky values anywhere."""
    value = st.one_of(SCALARS, JSON_VALUES)
    model = st.one_of(st.fixed_dictionaries({key: mostly(good, value) for key, good in GOOD_MODEL.items()},
                                            optional={"x-extra": value, "$merge": value, "unknown": value}), value)
    role = st.one_of(st.fixed_dictionaries({"workload": mostly("chat", value)}, optional={
        "prefer": st.one_of(st.just(["m"]), st.lists(st.one_of(TRICKY_STRINGS, st.just("m2")), max_size=3), value),
        "fallback": mostly(["m"], value), "requires": mostly({"context_min": 1024}, value), "strategy": value}),
        value)
    host = st.one_of(st.fixed_dictionaries({"ram_gb": mostly(8, value)}, optional={
        "profiles": mostly(["base"], value), "user": value, "max_loaded_models": value}), value)
    return st.fixed_dictionaries({
        "schema_version": mostly(2, value),
        "kind": st.sampled_from(["catalog", "catalog", "profile", "hosts", None]).flatmap(lambda k: mostly(k, value)),
    }, optional={
        "models": st.one_of(st.dictionaries(st.one_of(st.just("m"), TRICKY_STRINGS), model, max_size=3), value),
        "roles": st.one_of(st.dictionaries(st.one_of(st.just("chat"), TRICKY_STRINGS), role, max_size=3), value),
        "selection": st.one_of(st.just({"basis": "total"}), value),
        "hosts": st.one_of(st.dictionaries(TRICKY_STRINGS, host, max_size=2), value),
        "extends": st.one_of(st.just(["base"]), value), "merge": st.one_of(st.just("replace"), value),
        "$comment": value, "name": st.one_of(st.just("p"), value),
    })


GOOD_MODEL = {"name": "M", "provider": "local", "workloads": ["chat"], "params_b": 7, "context_window": 4096,
              "quantization": "Q4_K_M", "aliases": ["m2"], "memory": {"ram_mb": 4096},
              "artifact": {"format": "gguf", "file": "m.gguf", "url": "https://example.invalid/m.gguf"},
              "arch": {"layers": 32}, "capabilities": {"tools": True}, "priority": 100}

# ------------------------------------------------------------------------------ properties


def assert_input_error(exc: HostfitError, display: str) -> None:
    """A refusal is hostfit's own error, and an InputError names the file in every diagnostic."""
    if isinstance(exc, InputError):
        assert exc.diagnostics and all(d.path == display and d.code for d in exc.diagnostics), exc.diagnostics


def loaded(text: str, as_json: bool):
    try:
        return (load_json_text if as_json else load_yaml_text)(text, "fuzz.input")
    except HostfitError as exc:
        assert_input_error(exc, "fuzz.input")
        return None


def validated(doc) -> None:
    """The compile path of one file: migrate, check_document, then (if that found no error) merge
    and check_merged; problems come back as data (or as a HostfitError)."""
    try:
        doc = migrate.migrate(doc)
        problems = check_document(doc)
        if not [p for p in problems if p.severity == "error"]:
            event("merged")
            problems += check_merged(merge_layers([Layer("sources", doc)]))
    except HostfitError as exc:
        event(f"refused: {type(exc).__name__}")
        assert_input_error(exc, doc.path)
        return
    assert all(p.code and p.path for p in problems)


def dump_yaml(value) -> str:
    return yaml.dump(value, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True)


@FUZZ
@given(st.one_of(st.text(), JSON_VALUES.map(json.dumps)),  # text as load_file decodes it: no lone surrogates
       st.booleans())
def test_loader_on_arbitrary_text(text: str, as_json: bool):
    loaded(text, as_json)


@FUZZ
@given(catalog_documents(), st.booleans())
def test_loader_and_validate_on_near_valid_documents(document, as_json: bool):
    try:
        text = json.dumps(document) if as_json else dump_yaml(document)
    except (ValueError, UnicodeEncodeError, yaml.YAMLError):
        return  # not representable in this syntax
    doc = loaded(text, as_json)
    if doc is not None:
        validated(doc)


GOOD_CATALOG = {
    "schema_version": 2, "kind": "catalog",
    "models": {"m": {**GOOD_MODEL, "tags": ["t"], "artifact": {**GOOD_MODEL["artifact"], "sha256": "a" * 64,
                                                               "size_bytes": 5, "mirrors": ["https://example.invalid/m"]}},
               "n": {"provider": "openai", "workloads": ["chat"], "pricing": {"input_per_mtok": 1}}},
    "roles": {"chat": {"workload": "chat", "prefer": ["m", "m2"], "fallback": ["n"], "requires": {"context_min": 1}}},
    "selection": {"basis": "total", "max_fallbacks": 2}}


def mutated(good) -> st.SearchStrategy:
    """`good` with any part of it, one time in five, replaced by an arbitrary value."""
    value = st.one_of(SCALARS, JSON_VALUES)
    if isinstance(good, dict):
        inner = st.fixed_dictionaries({key: mutated(item) for key, item in good.items()}, optional={"extra": value})
    elif isinstance(good, list):
        inner = st.lists(st.one_of(*[mutated(item) for item in good]), max_size=3) if good else st.just([])
    else:
        inner = st.just(good)
    return st.sampled_from(range(5)).flatmap(lambda n: value if n == 0 else inner)


@FUZZ
@given(mutated(GOOD_CATALOG), st.booleans())
def test_loader_and_validate_on_mutated_catalogs(document, as_json: bool):
    try:
        text = json.dumps(document) if as_json else dump_yaml(document)
    except (ValueError, UnicodeEncodeError, yaml.YAMLError):
        return
    doc = loaded(text, as_json)
    if doc is not None:
        validated(doc)


def finite(value) -> bool:
    """No NaN, infinity or number beyond 2**53 - 1 (the loader's range) anywhere in `value`."""
    if isinstance(value, dict):
        return all(finite(item) for item in value.values())
    if isinstance(value, list):
        return all(finite(item) for item in value)
    return not isinstance(value, (int, float)) or isinstance(value, bool) or abs(value) < 2**53


def convert(fmt: str, data) -> importers.Imported | None:
    """One importer on what its JSON reader makes of `data` (written as JSON, so 1e400 is inf and
    NaN nan): the file refused with a positioned diagnostic, or converted into a layer that renders,
    loads and validates, with no NaN or infinity in it: malformed entries were skipped."""
    out = importers.Imported("fuzz.json", fmt)
    try:
        importers.convert(fmt, importers.parse(json.dumps(data), "fuzz.json"), out, "fuzz.json")
    except HostfitError as exc:
        event(f"refused: {exc.diagnostics[0].code}")
        assert_input_error(exc, "fuzz.json")
        return None
    event(f"imported: {bool(out.models)}, skipped: {bool(out.skipped)}")
    text = importers.render(out)
    text.encode("utf-8")  # what `import -o` writes
    doc = load_yaml_text(text, "<import>")
    assert finite(doc.data)
    problems = check_document(doc) + check_merged(merge_layers([Layer("import", doc)]))
    assert not [p for p in problems if p.severity == "error"], problems
    out.summary().encode("utf-8")
    return out


def importer_test(fmt: str):
    @FUZZ
    @given(IMPORTER_INPUTS[fmt])
    def test(data):
        convert(fmt, data)
    test.__name__ = f"test_importer_{fmt}_on_near_valid_input"
    return test


for _fmt in importers.FORMATS:
    globals()[f"test_importer_{_fmt}_on_near_valid_input"] = importer_test(_fmt)


@FUZZ
@given(st.sampled_from(importers.FORMATS).flatmap(lambda fmt: st.tuples(st.just(fmt), IMPORTER_INPUTS[fmt])),
       st.booleans())
def test_import_command_never_crashes(tmp_path_factory, case, to_file: bool):
    fmt, data = case
    folder = tmp_path_factory.mktemp("import")
    source = folder / "in.json"
    source.write_text(json.dumps(data), encoding="utf-8", errors="surrogatepass")
    args = ["import", fmt, str(source)] + (["-o", str(folder / "out.yaml")] if to_file else [])
    result = run_cli(*args)  # catch_exceptions=False: a traceback fails the test
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        assert "error[E015]" in result.stderr or "error[E002]" in result.stderr, result.stderr


# Ollama: /api/tags, then /api/show per model, as decoded JSON.
TAG = st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
    "name": st.one_of(TRICKY_STRINGS, SCALARS), "model": SCALARS, "size": SCALARS, "remote_host": SCALARS,
    "details": st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={"family": SCALARS,
                                                                          "quantization_level": SCALARS}))}))
SHOW = st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
    "capabilities": st.one_of(JSON_VALUES, st.lists(st.sampled_from(["completion", "embedding", "tools"]))),
    "details": JSON_VALUES,
    "model_info": st.one_of(JSON_VALUES, st.dictionaries(st.sampled_from([
        "general.architecture", "general.parameter_count", "llama.context_length", "llama.block_count",
        "llama.attention.head_count_kv", "llama.embedding_length", "llama.attention.head_count"]),
        st.one_of(SCALARS, st.just("llama")))),
}))


@FUZZ
@given(st.one_of(JSON_VALUES, st.fixed_dictionaries({"models": st.one_of(st.lists(TAG, max_size=4), JSON_VALUES)})),
       SHOW)
def test_ollama_parsers(tags_body, show_body):
    found = ollama.Discovery("http://127.0.0.1:1")
    for name, tag in ollama.tag_entries(tags_body, found.warnings):
        model_id, model = ollama.facts(name, tag, show_body, "fuzz-host", {})
        found.models[model_id] = model
    doc = load_yaml_text(load.dump_yaml(ollama.layer(found)), "<discovered>")
    # an unsafe Ollama name is validation's to refuse (E230: `build --discover` fails naming it)
    assert finite(doc.data) and not [p for p in check_document(doc) if p.severity == "error" and p.code != "E230"]


HF_ENTRY = st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.just("org/model"), TRICKY_STRINGS, SCALARS), "modelId": SCALARS,
    "tags": st.one_of(JSON_VALUES, st.lists(TRICKY_STRINGS)), "downloads": SCALARS}))
OPENROUTER_ENTRY = st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.just("vendor/model"), TRICKY_STRINGS, SCALARS), "hugging_face_id": SCALARS,
    "pricing": st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={"prompt": SCALARS, "completion": SCALARS})),
    "architecture": st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={"input_modalities": JSON_VALUES}))}))


@FUZZ
@given(st.one_of(st.lists(HF_ENTRY, max_size=5), JSON_VALUES),
       st.one_of(st.fixed_dictionaries({"data": st.lists(OPENROUTER_ENTRY, max_size=5)}), JSON_VALUES))
def test_hub_and_openrouter_parsers(hf_body, openrouter_body):
    hf, openrouter = ingest.Harvest(ingest.hf_candidates(hf_body)), ingest.Harvest()
    openrouter.candidates = ingest.openrouter_candidates(openrouter_body, openrouter.warnings)
    candidates = ingest.merge([hf, openrouter], {})
    assert finite(candidates)
    ingest.render(ingest.document(candidates))
    ingest.as_catalog({"candidates": candidates})


STAGED = st.fixed_dictionaries({}, optional={
    "model_id": st.one_of(st.just("org/m"), SCALARS), "status": st.one_of(st.sampled_from(ingest.STATUSES), SCALARS),
    "tags": JSON_VALUES, "provider": SCALARS, "license": SCALARS, "source": SCALARS, "popularity_score": SCALARS})


@FUZZ
@given(st.one_of(JSON_VALUES, st.fixed_dictionaries({"candidates": st.one_of(
    st.lists(st.one_of(STAGED, JSON_VALUES), max_size=4), JSON_VALUES)})))
def test_staged_candidates_as_a_layer(data):
    """sources/staging/candidates.json is hand-edited: `build --with-staging` reads it even when invalid."""
    ingest.as_catalog(data)


# ------------------------------------------------------------------------------ regressions
# Each crash the fuzzing found, with its minimal input, through `hostfit import` as a user runs
# it (on the code before these fixes, each ended in a traceback or in "importer bug" exit 1).

IMPORT_CRASHES = {  # id: (format, file text, what the summary or layer now says)
    "gpt4all-filename-5": ("gpt4all", '[{"filename": 5}]', "filename is not a string"),
    "gpt4all-sha256sum-5": ("gpt4all", '[{"filename": "a.gguf", "sha256sum": 5}]', "sha256sum (not 64 hex digits)"),
    "gpt4all-ramrequired-superscript": ("gpt4all", '[{"filename": "a.gguf", "ramrequired": "\\u00b2"}]', "a.gguf"),
    "gpt4all-filesize-superscript": ("gpt4all", '[{"filename": "a.gguf", "filesize": "\\u00b2"}]', "a.gguf"),
    "gpt4all-ramrequired-400-digits": ("gpt4all", '[{"filename": "a.gguf", "ramrequired": "' + "9" * 400 + '"}]',
                                       "a.gguf"),
    "gpt4all-description-5": ("gpt4all", '[{"filename": "a.gguf", "description": 5}]', "a.gguf"),
    "gpt4all-url-not-https": ("gpt4all", '[{"filename": "a.gguf", "url": "0"}]', "download URL refused"),
    "litellm-mode-list": ("litellm", '{"m": {"mode": []}}', "mode [] is not a text workload"),
    "litellm-context-1e400": ("litellm", '{"m": {"mode": "chat", "max_input_tokens": 1e400}}', "imported 1 models"),
    "litellm-ollama-empty-name": ("litellm", '{"ollama/": {"mode": "chat"}}', "unsafe Ollama name"),
    "openrouter-data-x": ("openrouter", '{"data": ["x"]}', "not a model entry: x"),
    "openrouter-output-modalities-5": ("openrouter",
                                       '{"data": [{"id": "a", "architecture": {"output_modalities": 5}}]}',
                                       "imported 1 models"),
    "openrouter-name-5": ("openrouter", '{"data": [{"id": "a", "name": 5}]}', "imported 1 models"),
    "llmfit-null-entry": ("llmfit", "[null]", "not a model entry: None"),
    "llmfit-ram-1e400": ("llmfit", '[{"name": "a/b", "parameters_raw": 7e9, "min_ram_gb": 1e400}]', "imported 1"),
    "llmfit-pipeline-tag-list": ("llmfit", '[{"name": "a/b", "parameters_raw": 7e9, "pipeline_tag": []}]',
                                 "imported 1"),
    "llmfit-capabilities-5": ("llmfit", '[{"name": "a/b", "parameters_raw": 7e9, "capabilities": 5}]', "imported 1"),
    "registry-tags-5": ("registry", '[{"ID": "a", "Tags": 5}]', "imported 1 models"),
    "registry-size-1e400": ("registry", '[{"ID": "a", "FileSizeMB": 1e400}]', "imported 1 models"),
    "registry-ram-half-mb": ("registry", '[{"ID": "a", "RAMRequiredMB": 0.5}]', "imported 1 models"),
}


@pytest.mark.parametrize("fmt, text, says", IMPORT_CRASHES.values(), ids=IMPORT_CRASHES.keys())
def test_import_crash_found_by_fuzzing(tmp_path: Path, fmt: str, text: str, says: str):
    source = tmp_path / "in.json"
    source.write_text(text)
    result = run_cli("import", fmt, str(source), "-o", str(tmp_path / "out.yaml"))
    assert result.exit_code == 0, result.output
    assert says in result.stdout or says in (tmp_path / "out.yaml").read_text(), result.stdout


NON_FINITE_LEAKS = {  # a value JSON decodes to infinity, copied into the layer as .inf (validate said ok)
    "gpt4all-parameters-1e400": ("gpt4all", '[{"filename": "a.gguf", "parameters": "1e400"}]'),
    "llmfit-params-1e400": ("llmfit", '[{"name": "a/b", "parameters_raw": 1e400}]'),
    "llmfit-active-1e400": ("llmfit", '[{"name": "a/b", "parameters_raw": 7e9, "active_parameters": 1e400}]'),
    "llmfit-kept-nan": ("llmfit", '[{"name": "a/b", "parameters_raw": 7e9, "hf_likes": NaN}]'),
}


@pytest.mark.parametrize("fmt, text", NON_FINITE_LEAKS.values(), ids=NON_FINITE_LEAKS.keys())
def test_import_writes_no_nan_or_infinity(tmp_path: Path, fmt: str, text: str):
    source = tmp_path / "in.json"
    source.write_text(text)
    result = run_cli("import", fmt, str(source))
    assert result.exit_code == 0, result.output
    assert ".inf" not in result.stdout and ".nan" not in result.stdout, result.stdout


def test_import_quotes_strings_the_loader_would_read_as_numbers(tmp_path: Path):
    """PyYAML quotes by YAML 1.1 and wrote `1e400: ...` plain: read back (YAML 1.2), the id became `inf`."""
    source = tmp_path / "in.json"
    source.write_text('{"1e400": {"mode": "chat"}, "0o17": {"mode": "chat", "litellm_provider": "1_000"}}')
    result = run_cli("import", "litellm", str(source))
    assert result.exit_code == 0, result.output
    assert set(yaml.safe_load(result.stdout)["models"]) == {"1e400", "0o17"}
    assert set(load_yaml_text(result.stdout, "x").data["models"]) == {"1e400", "0o17"}
    digits = "1" * 5000  # the quoting check must not itself parse it as a number (int() refuses 4,301 digits)
    assert load_yaml_text(load.dump_yaml({"d": digits}), "x").data == {"d": digits}


@pytest.mark.parametrize("text, code, where", [
    ("[" * 5000, "E004", "in.json:1:1"),  # RecursionError
    ('[{"filename": "a\\ud800.gguf"}]', "E002", "in.json:1:17"),  # UnicodeEncodeError writing the layer
    ('[{"filename": "a\\ud83d\\ude00.gguf"},\n {"filename": "\\udc00"}]', "E002", "in.json:2:16"),
], ids=["deep", "lone-high", "lone-low-after-pair"])
def test_import_refuses_unreadable_json_with_a_position(tmp_path: Path, text: str, code: str, where: str):
    source = tmp_path / "in.json"
    source.write_text(text)
    result = run_cli("import", "gpt4all", str(source), "-o", str(tmp_path / "out.yaml"))
    assert result.exit_code == 1 and f"{where}: error[{code}]" in result.stderr, result.output
    assert not (tmp_path / "out.yaml").exists()


# Ollama and the hub: malformed answers are warnings, never a traceback from `discover` or `ingest`.

@pytest.mark.parametrize("tags, show", [
    ({"models": 5}, {}),
    ({"models": [{"name": "m"}]}, {"capabilities": 5}),
    ({"models": [{"name": "m"}]}, {"model_info": {"general.parameter_count": 10**400}}),
    ({"models": [{"name": "m", "size": True}]}, []),
    ({"models": [{"name": "m\ud800"}]}, {}),  # a lone surrogate: the layer could not be written
])
def test_malformed_ollama_answers(tags, show):
    from ollama_server import FakeOllama

    class Server(FakeOllama):
        def _handler(self):
            class Handler(super()._handler()):
                def do_GET(self):
                    return self._json(200, tags) if self.path == "/api/tags" else super().do_GET()

                def do_POST(self):
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    return self._json(200, show)
            return Handler

    server = Server().start()
    try:
        found = ollama.discover("h", server.base)
    finally:
        server.stop()
    doc = load_yaml_text(load.dump_yaml(ollama.layer(found)), "<discovered>")
    assert not [p for p in check_document(doc) if p.severity == "error"]


@pytest.mark.parametrize("body", [
    {"data": [{"id": "a", "hugging_face_id": 5}]},
    {"data": [{"id": 5}]},
    {"data": [{"id": "a", "architecture": {"input_modalities": 5}}]},
    {"data": [{"id": "a\ud800"}]},
])
def test_malformed_openrouter_index(monkeypatch, body):
    from jsonserver import JsonServer

    server = JsonServer({"/api/v1/models": lambda query: (200, body, {})})
    monkeypatch.setenv("OPENROUTER_BASE_URL", server.base + "/api/v1")
    try:
        harvest = ingest.from_openrouter(refresh=True)
    finally:
        server.stop()
    ingest.render(ingest.document(ingest.merge([harvest], {})))  # candidates.json as ingest writes it


def test_malformed_hub_listing(monkeypatch):
    from jsonserver import JsonServer

    server = JsonServer({"/api/models": lambda query: (200, [{"id": "org/m", "tags": 5}], {})})
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    try:
        harvest = ingest.from_hf(refresh=True)
    finally:
        server.stop()
    assert [c["model_id"] for c in harvest.candidates] == ["org/m"]


@pytest.mark.parametrize("staged", [{"candidates": [{"status": "pending"}]}, {"candidates": ["x"]},
                                    {"candidates": [{"model_id": "a/b", "tags": 5}]}])
def test_malformed_staged_candidates(staged):
    assert ingest.as_catalog(staged)["kind"] == "catalog"


# ------------------------------------------------------------------ the executor's document readers

def _good_executor_documents() -> dict[str, dict]:
    from test_executor_inputs import good_models

    pin = {"url": "https://example.invalid/tiny.gguf", "final_url": "https://example.invalid/tiny.gguf",
           "revision": "main", "file": "tiny.gguf", "size": 3, "sha256": "a" * 64}
    return {"models": good_models(),
            "lock": {"lock_version": 1, "host": "box-8", "artifacts": {"small-chat": pin}},
            "manifest": {"bundle_version": 1, "host": "box-8", "artifacts": {"small-chat": {
                "member": "artifacts/small-chat/tiny.gguf", "file": "tiny.gguf", "size": 3, "sha256": "a" * 64}}}}


EXECUTOR_DOCUMENTS = _good_executor_documents()


@FUZZ
@given(st.sampled_from(sorted(EXECUTOR_DOCUMENTS)).flatmap(
    lambda kind: st.tuples(st.just(kind), mutated(EXECUTOR_DOCUMENTS[kind]))), st.booleans())
def test_executor_document_readers(tmp_path_factory, case, as_text: bool):
    """models.json, models.lock and bundle.json as the executor reads them: refused with diagnostics
    naming the file, or accepted and then usable (a models.json is planned, every chain included)."""
    from compiler.executor import documents, fetch

    kind, document = case
    try:
        raw = (json.dumps(document) if as_text else json.dumps(document, indent=2)).encode("utf-8", "surrogatepass")
    except ValueError:
        return
    parse = {"models": documents.parse_models, "lock": documents.parse_lock, "manifest": documents.parse_manifest}
    try:
        parse[kind](raw, "doc.json")
    except InputError as exc:
        assert_input_error(exc, "doc.json")
        return
    if kind == "models":
        folder = tmp_path_factory.mktemp("out") / "box-8"
        folder.mkdir()
        (folder / "models.json").write_bytes(raw)
        try:
            fetch.plan(folder, with_fallbacks=True)
        except HostfitError as exc:  # a usage or input error is fine; any other exception is a bug
            assert str(exc)
