"""Ingest from servers on 127.0.0.1 replaying real responses (OpenRouter's index from
tests/data, a Hugging Face listing built from llmfit's hf_models.json), with failures per
source; de-duplication and provenance on overlapping models; statuses across re-ingests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.discover import ingest
from compiler.load import dump_yaml, load_yaml_text
from compiler.validate import check_document

from conftest import REPO, run_cli
from jsonserver import JsonServer

REALDATA = REPO / "tests" / "data"
OPENROUTER = json.loads((REALDATA / "openrouter_models.json").read_text())
HF_ROWS = json.loads((REALDATA / "hf_models.json").read_text())
OVERLAP = "deepseek-ai/DeepSeek-V4-Flash-0731"  # an OpenRouter model whose hugging_face_id the listing has too


def hf_listing():
    rows = sorted(HF_ROWS, key=lambda m: -m["hf_downloads"])[:250]
    listing = [{"id": m["name"], "downloads": m["hf_downloads"], "likes": m["hf_likes"],
                "tags": ["text-generation", "license:apache-2.0"] if i % 2 else ["text-generation"],
                "pipeline_tag": "text-generation"} for i, m in enumerate(rows)]
    return listing + [{"id": OVERLAP, "downloads": 7, "tags": ["license:mit"]}]


@pytest.fixture
def servers(monkeypatch):
    listing = hf_listing()

    def hf(query):
        start = int((query.get("cursor") or ["0"])[0])
        size = int((query.get("limit") or ["100"])[0])
        page = listing[start:start + size]
        headers = {}
        if start + size < len(listing):
            headers["Link"] = f'<{hub.base}/api/models?cursor={start + size}&limit={size}>; rel="next"'
        return 200, page, headers

    hub = JsonServer({"/api/models": hf})
    index = JsonServer({"/api/v1/models": lambda q: (200, OPENROUTER, {})})
    monkeypatch.setenv("HF_ENDPOINT", hub.base)
    monkeypatch.setenv("OPENROUTER_BASE_URL", index.base + "/api/v1")
    yield hub, index, listing
    hub.stop()
    index.stop()


def staged(catalog: Path) -> dict:
    return json.loads((catalog / "sources" / "staging" / "candidates.json").read_text())


def test_ingest_dedupes_with_additive_provenance(base_catalog, servers):
    hub, index, listing = servers
    (base_catalog / "sources" / "curated.yaml").write_text(
        "schema_version: 2\nkind: curated\n"
        "candidates:\n  - {model_id: Qwen/Qwen2.5-7B-Instruct, license: apache-2.0, tags: [chat]}\n")
    result = run_cli("-C", str(base_catalog), "ingest")
    assert result.exit_code == 0, result.output
    document = staged(base_catalog)
    assert document["kind"] == "candidates" and "fetched_at" in document
    by_id = {c["model_id"].lower(): c for c in document["candidates"]}
    overlap = by_id[OVERLAP.lower()]
    assert overlap["source"] == "huggingface_hub+openrouter_index" and overlap["license"] == "mit"
    assert overlap["popularity_score"] > 7, "the higher of the two popularity figures"
    assert [c["model_id"].lower() for c in document["candidates"]] == sorted(by_id), "sorted, deterministic"
    assert all({"model_id", "provider", "license", "source", "popularity_score", "tags", "status"} <= set(c)
               <= {"model_id", "provider", "license", "source", "popularity_score", "tags", "status",
                   *ingest.SIZE_FIELDS, "unsized", "in_catalog"} for c in document["candidates"])
    assert len([p for p in hub.log if p.startswith("/api/models?")]) == 3, "pagination followed"
    details = [p for p in hub.log if p.endswith("?blobs=true")]
    assert len(details) == ingest.SIZE_BUDGET, "repositories asked for their files: within the budget"
    assert details[0] == "/api/models/Qwen/Qwen2.5-7B-Instruct?blobs=true", "the curated one first"
    assert by_id["qwen/qwen2.5-7b-instruct"]["source"].endswith("curated")
    assert "router" not in json.dumps([c for c in document["candidates"] if c["model_id"] == "openrouter/auto-beta"])


def test_cached_responses_and_bounded_pages(base_catalog, servers, monkeypatch):
    hub, index, listing = servers
    monkeypatch.setattr(ingest, "MAX_PAGES", 2)
    monkeypatch.setattr(ingest, "SIZE_BUDGET", 0)  # only the listing's requests, counted
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "hf").exit_code == 0
    assert len(hub.log) == 2, "pagination stops at MAX_PAGES"
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "hf").exit_code == 0
    assert len(hub.log) == 2, "a second run within the cache's age asks nothing"
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "hf", "--refresh").exit_code == 0
    assert len(hub.log) == 4


@pytest.mark.parametrize("source", ["hf", "openrouter"])
@pytest.mark.parametrize("fault", ["500", "malformed", "timeout"])
def test_a_failing_source_is_a_warning(base_catalog, servers, monkeypatch, fault, source):
    hub, index, listing = servers
    server, path = (hub, "/api/models") if source == "hf" else (index, "/api/v1/models")
    if fault == "500":
        server.routes[path] = lambda q: (500, {"error": "down"}, {})
    elif fault == "malformed":
        server.routes[path] = lambda q: (200, b"<html>not json", {})
    else:
        monkeypatch.setattr(ingest, "TIMEOUT", 0.3)
        server.delay = 1.0
    result = run_cli("-C", str(base_catalog), "ingest", "--refresh")
    assert result.exit_code == 0
    name = {"hf": "huggingface_hub", "openrouter": "openrouter_index"}[source]
    assert f"warning: {source}:" in result.stderr and f"{name}: 0 candidate(s)" in result.stderr
    other = {c["source"] for c in staged(base_catalog)["candidates"]}
    assert other == ({"openrouter_index"} if source == "hf" else {"huggingface_hub"}), "the other source still counts"


def test_statuses_survive_and_staging_becomes_a_layer(base_catalog, servers):
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "hf").exit_code == 0
    path = base_catalog / "sources" / "staging" / "candidates.json"
    document = json.loads(path.read_text())
    first, second = document["candidates"][0], document["candidates"][1]
    first["status"], second["status"] = "trial", "rejected"
    path.write_text(json.dumps(document))
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "hf").exit_code == 0
    statuses = {c["model_id"]: c["status"] for c in staged(base_catalog)["candidates"]}
    assert statuses[first["model_id"]] == "trial" and statuses[second["model_id"]] == "rejected"
    listed = run_cli("-C", str(base_catalog), "models", "--host", "box-32", "--include-suggestions", "--json")
    ids = {r["id"]: r["status"] for r in json.loads(listed.stdout)}
    from compiler.migrate import normalize_id
    assert ids[normalize_id(first["model_id"])] == "active" and normalize_id(second["model_id"]) not in ids
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-32", "--with-staging").exit_code == 0


@pytest.mark.parametrize("curated", ["not-utf8", "nested", "fifo", "nan"])
def test_a_broken_curated_list_is_a_warning_with_its_position(base_catalog, curated):
    """sources/curated.yaml is read by the catalog's own loader: a file that is not UTF-8, nested too
    deep, a FIFO (never opened) or holding NaN is a warning naming it; the other sources go on."""
    import os
    import subprocess
    import sys

    path = base_catalog / "sources" / "curated.yaml"
    if curated == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes({"not-utf8": b"candidates: [\xff]\n", "nested": b"a: " + b"[" * 5000 + b"]" * 5000,
                          "nan": b"candidates: [{model_id: a/b, popularity: .nan}]\n"}[curated])
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "-C", str(base_catalog), "ingest",
                             "--source", "curated"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "curated: sources/curated.yaml" in result.stderr and "no candidates from it" in result.stderr


# A GGUF repository's file list as GET /api/models/{repo}?blobs=true answers it (`siblings`). The file
# names follow the Qwen GGUF repositories' layout; sizes and checksums are synthetic test values.
GGUF_REPO = "Qwen/Qwen2.5-Coder-14B-Instruct-GGUF"
SIBLINGS = [
    {"rfilename": ".gitattributes", "size": 1519},
    {"rfilename": "README.md", "size": 6000},
    {"rfilename": "qwen2.5-coder-14b-instruct-q4_k_m.gguf", "size": 1000, "lfs": {"sha256": "1" * 64, "size": 1000}},
    {"rfilename": "qwen2.5-coder-14b-instruct-q5_k_m.gguf", "size": 1200, "lfs": {"sha256": "not hex", "size": 1200}},
    {"rfilename": "qwen2.5-coder-14b-instruct-q8_0-00002-of-00002.gguf", "size": 700},
    {"rfilename": "qwen2.5-coder-14b-instruct-q8_0-00001-of-00002.gguf", "size": 900},
    {"rfilename": "qwen2.5-coder-14b-instruct-fp16-00001-of-00003.gguf", "size": 900},  # shard 2 and 3 missing
    {"rfilename": "Q6_K/qwen2.5-coder-14b-instruct-q6_k.gguf", "size": 1100},  # in a folder
    {"rfilename": "qwen2.5-coder-14b-instruct-IQ4_XS.gguf"},
    {"rfilename": "qwen2.5-coder-14b-instruct-abliterated-IQ4_XS.gguf"},  # a second IQ4_XS: ambiguous
    {"rfilename": "mmproj-F16.gguf", "size": 600},  # a vision projector, not weights
    {"rfilename": "qwen2.5-coder-14b-instruct.gguf"},
]


def test_gguf_variants_from_a_repository_file_list():
    variants, notes = ingest.gguf_variants(GGUF_REPO, SIBLINGS)
    assert variants == {
        "Q4_K_M": {"artifact": {"format": "gguf", "repo": GGUF_REPO, "file": "qwen2.5-coder-14b-instruct-q4_k_m.gguf",
                                "size_bytes": 1000, "sha256": "1" * 64}},
        "Q5_K_M": {"artifact": {"format": "gguf", "repo": GGUF_REPO, "file": "qwen2.5-coder-14b-instruct-q5_k_m.gguf",
                                "size_bytes": 1200}},  # a checksum that is not one is left out
        "Q8_0": {"artifact": {"format": "gguf", "repo": GGUF_REPO, "files": [  # shards in order, as one variant
            {"name": "qwen2.5-coder-14b-instruct-q8_0-00001-of-00002.gguf", "size_bytes": 900},
            {"name": "qwen2.5-coder-14b-instruct-q8_0-00002-of-00002.gguf", "size_bytes": 700}]}}}
    assert sorted(notes) == [
        "F16: shards of qwen2.5-coder-14b-instruct-fp16 missing or repeated (1 of 3)",
        "IQ4_XS: 2 different files (qwen2.5-coder-14b-instruct-IQ4_XS, qwen2.5-coder-14b-instruct-abliterated-IQ4_XS);"
        " which one is meant?",
        "Q6_K/qwen2.5-coder-14b-instruct-q6_k.gguf: in a folder of the repository",
        "qwen2.5-coder-14b-instruct.gguf: no quantization in its name"]
    # what it yields is a model's `variants:` as a catalog layer declares them
    layer = {"schema_version": 2, "kind": "catalog", "models": {"qwen2.5-coder-14b": {
        "params_b": 14.77, "provider": "local", "workloads": ["code"], "variants": variants}}}
    assert check_document(load_yaml_text(dump_yaml(layer), "layer.yaml")) == []
    names = {"gpt-oss-20b-MXFP4.gguf": "MXFP4", "Llama-3.2-1B-Instruct-BF16.gguf": "BF16",
             "m-UD-Q4_K_XL.gguf": "Q4_K_XL",
             "gemma-3-4b-it-q4_0.gguf": "Q4_0", "m-IQ2_XXS.gguf": "IQ2_XXS", "m-f16.gguf": "F16"}
    assert {name: list(ingest.gguf_variants("o/r", [{"rfilename": name}])[0]) for name in names} == \
        {name: [quant] for name, quant in names.items()}
    assert ingest.gguf_variants(GGUF_REPO, {"not": "a list"}) == ({}, [])
    assert ingest.gguf_variants(GGUF_REPO, [None, 7, {"rfilename": 3}]) == ({}, [])


def test_gguf_variants_from_the_hub_bounded_and_cached(monkeypatch):
    def repo(query):
        return 200, {"id": GGUF_REPO, "siblings": SIBLINGS}, {}

    hub = JsonServer({f"/api/models/{GGUF_REPO}": repo})
    monkeypatch.setenv("HF_ENDPOINT", hub.base)
    try:
        variants, warnings = ingest.hf_gguf_variants(GGUF_REPO, refresh=True)
        assert sorted(variants) == ["Q4_K_M", "Q5_K_M", "Q8_0"] and len(warnings) == 4
        assert all(w.startswith(f"hf: {GGUF_REPO}: ") for w in warnings)
        assert hub.log == [f"/api/models/{GGUF_REPO}?blobs=true"]
        assert ingest.hf_gguf_variants(GGUF_REPO)[0] == variants and len(hub.log) == 1, "answered from the cache"
        hub.routes[f"/api/models/{GGUF_REPO}"] = lambda q: (500, {"error": "down"}, {})
        variants, warnings = ingest.hf_gguf_variants(GGUF_REPO, refresh=True)
        assert variants == {} and "failed (HTTP 500)" in warnings[0]
        monkeypatch.setattr(ingest, "TIMEOUT", 0.3)
        hub.routes[f"/api/models/{GGUF_REPO}"] = repo
        hub.delay = 1.0
        variants, warnings = ingest.hf_gguf_variants(GGUF_REPO, refresh=True)
        assert variants == {} and "did not answer within 0.3 s" in warnings[0]
        hub.delay = 0.0
        assert ingest.hf_gguf_variants("../etc/passwd")[0] == {} and len(hub.log) == 3, "no request for a bad name"
    finally:
        hub.stop()
