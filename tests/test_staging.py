"""Staging that can be trusted: candidates sized from what the sources publish, a refresh that
never loses review work (a failing source's candidates kept, stale), `--dry-run`, catalog models
marked, curated lists of their own kind, and the documented refresh workflow end to end
(ingest -> review -> trial -> adopt -> build -> diff) against stand-in servers on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from compiler.discover import ingest

from conftest import REPO, add_layer, run_cli, tree_bytes
from jsonserver import JsonServer

OPENROUTER = json.loads((REPO / "tests" / "data" / "openrouter_models.json").read_text())

# A GGUF repository's details as GET /api/models/{repo}?blobs=true answers them: `gguf` (parameters and
# the header's context length) and `siblings`. The parameter count and context length are the ones the
# Hub lists for Qwen2.5-14B-Instruct; file sizes and checksums are test values of the real files' order.
GGUF_REPO = "Qwen/Qwen2.5-14B-Instruct-GGUF"
Q4_SIZE, Q8_SIZES = 8_988_110_976, [7_990_000_000, 7_700_000_000]
GGUF_DETAILS = {
    "id": GGUF_REPO, "gguf": {"total": 14_770_033_664, "architecture": "qwen2", "context_length": 32768},
    "siblings": [
        {"rfilename": "README.md", "size": 5000},
        {"rfilename": "qwen2.5-14b-instruct-q4_k_m.gguf", "size": Q4_SIZE,
         "lfs": {"sha256": "a" * 64, "size": Q4_SIZE}},
        {"rfilename": "qwen2.5-14b-instruct-q8_0-00001-of-00002.gguf", "size": Q8_SIZES[0],
         "lfs": {"sha256": "b" * 64, "size": Q8_SIZES[0]}},
        {"rfilename": "qwen2.5-14b-instruct-q8_0-00002-of-00002.gguf", "size": Q8_SIZES[1],
         "lfs": {"sha256": "c" * 64, "size": Q8_SIZES[1]}}]}
SAFETENSORS_REPO = "HuggingFaceTB/SmolLM2-1.7B-Instruct"
SAFETENSORS_DETAILS = {"id": SAFETENSORS_REPO,
                       "safetensors": {"parameters": {"BF16": 1_711_376_384}, "total": 1_711_376_384},
                       "siblings": [{"rfilename": "model.safetensors", "size": 3_422_777_952}]}

# The listing, most downloaded first; page 2 (PAGE_SIZE 3) is what fails "midway" in the acceptance run.
LISTING = [
    {"id": GGUF_REPO, "downloads": 9000, "tags": ["gguf", "text-generation", "license:apache-2.0"]},
    {"id": SAFETENSORS_REPO, "downloads": 8000, "tags": ["text-generation", "license:apache-2.0"]},
    {"id": "example/big-GGUF", "downloads": 7000, "tags": ["gguf"]},  # the catalog's big-chat artifact
    {"id": "someone/Tiny", "downloads": 6000, "tags": []},  # `tiny` is the catalog's alias of small-chat
    {"id": "org/Broken-Details", "downloads": 5000, "tags": []},  # its details answer 500
    {"id": "org/Unpopular-7B", "downloads": 10, "tags": []},  # beyond the size budget
]


@pytest.fixture
def hub(monkeypatch):
    state = {"fail_from": None}

    def listing(query):
        start = int((query.get("cursor") or ["0"])[0])
        size = int((query.get("limit") or ["100"])[0])
        if state["fail_from"] is not None and start >= state["fail_from"]:
            return 500, {"error": "down"}, {}
        headers = {}
        if start + size < len(LISTING):
            headers["Link"] = f'<{server.base}/api/models?cursor={start + size}&limit={size}>; rel="next"'
        return 200, LISTING[start:start + size], headers

    routes = {"/api/models": listing,
              f"/api/models/{GGUF_REPO}": lambda q: (200, GGUF_DETAILS, {}),
              f"/api/models/{SAFETENSORS_REPO}": lambda q: (200, SAFETENSORS_DETAILS, {}),
              "/api/models/org/Broken-Details": lambda q: (500, {"error": "down"}, {}),
              "/api/models/org/Unpopular-7B": lambda q: (200, {"id": "org/Unpopular-7B", "siblings": []}, {})}
    server = JsonServer(routes)
    index = JsonServer({"/api/v1/models": lambda q: (200, OPENROUTER, {})})
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("OPENROUTER_BASE_URL", index.base + "/api/v1")
    monkeypatch.setattr(ingest, "PAGE_SIZE", 3)
    monkeypatch.setattr(ingest, "SIZE_BUDGET", 3)
    server.state, server.index = state, index
    yield server
    server.stop()
    index.stop()


def staged(catalog: Path) -> dict[str, dict]:
    data = json.loads((catalog / "sources" / "staging" / "candidates.json").read_text())
    return {c["model_id"]: c for c in data["candidates"]}


def set_status(catalog: Path, statuses: dict[str, str]) -> None:
    """Review: what a maintainer does by hand in sources/staging/candidates.json."""
    path = catalog / "sources" / "staging" / "candidates.json"
    data = json.loads(path.read_text())
    for candidate in data["candidates"]:
        candidate["status"] = statuses.get(candidate["model_id"], candidate["status"])
    path.write_text(json.dumps(data, indent=2))


def test_candidates_are_sized_from_what_the_sources_publish(base_catalog, hub):
    result = run_cli("-C", str(base_catalog), "ingest", "--source", "hf")
    assert result.exit_code == 0, result.output
    found = staged(base_catalog)
    gguf = found[GGUF_REPO]
    assert gguf["params_b"] == 14.77 and gguf["context_window"] == 32768 and gguf["format"] == "gguf"
    assert gguf["variants"]["Q4_K_M"]["artifact"] == {
        "format": "gguf", "repo": GGUF_REPO, "file": "qwen2.5-14b-instruct-q4_k_m.gguf",
        "size_bytes": Q4_SIZE, "sha256": "a" * 64}
    assert [f["size_bytes"] for f in gguf["variants"]["Q8_0"]["artifact"]["files"]] == Q8_SIZES
    assert "unsized" not in gguf
    smol = found[SAFETENSORS_REPO]
    assert smol["params_b"] == 1.711 and smol["format"] == "safetensors" and "variants" not in smol
    assert found["example/big-GGUF"]["in_catalog"] == "big-chat", "by the catalog's artifact repository"
    assert found["someone/Tiny"]["in_catalog"] == "small-chat", "by alias, case-insensitively"
    assert "could not be read" in found["org/Broken-Details"]["unsized"]
    assert "not among the 3 repositories" in found["org/Unpopular-7B"]["unsized"]
    details = [p for p in hub.log if p.endswith("?blobs=true")]
    assert len(details) == 3, "the budget (3) counts repositories worth asking: catalog models are not"
    assert "/api/models/org/Unpopular-7B?blobs=true" not in details
    # OpenRouter gives its models' context window
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "openrouter").exit_code == 0
    found = staged(base_catalog)
    assert found["Qwen/Qwen2.5-7B-Instruct"]["context_window"] == 32768
    assert found[GGUF_REPO]["variants"], "sizes from the Hub survive a refresh of another source"


def test_in_catalog_is_marked_not_duplicated(shipped_catalog, hub):
    result = run_cli("-C", str(shipped_catalog), "ingest", "--source", "openrouter")
    assert result.exit_code == 0, result.output
    found = staged(shipped_catalog)
    assert found["openai/gpt-oss-20b"]["in_catalog"] == "gpt-oss-20b"
    listed = run_cli("-C", str(shipped_catalog), "models", "--host", "laptop-16", "--include-suggestions", "--json")
    ids = [row["id"] for row in json.loads(listed.stdout)]
    assert ids.count("gpt-oss-20b") == 1 and not any(i.startswith("openai") and "gpt-oss-20b" in i for i in ids)


def test_adopting_an_unsized_candidate_is_refused_with_a_hint(base_catalog, hub):
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "hf").exit_code == 0
    before = tree_bytes(base_catalog / "sources")
    result = run_cli("-C", str(base_catalog), "adopt", "org/Unpopular-7B", "--role", "chat")
    assert result.exit_code == 2
    assert "has no size yet" in result.stderr and "hostfit inspect" in result.stderr and "trial" in result.stderr
    assert tree_bytes(base_catalog / "sources") == before
    # marked trial, the next ingest sizes it first (it has nothing to size: still unsized, but asked)
    set_status(base_catalog, {"org/Unpopular-7B": "trial"})
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "hf").exit_code == 0
    assert "/api/models/org/Unpopular-7B?blobs=true" in hub.log
    assert "no GGUF file" in staged(base_catalog)["org/Unpopular-7B"]["unsized"]


def test_a_broken_staged_file_stops_ingest(base_catalog, hub):
    path = base_catalog / "sources" / "staging"
    path.mkdir()
    (path / "candidates.json").write_text('{"schema_version": 2, "kind": "candidates", "candidates": [{"model_id": 3}]}')
    before = tree_bytes(base_catalog / "sources")
    result = run_cli("-C", str(base_catalog), "ingest", "--source", "hf")
    assert result.exit_code == 1 and "E500" in result.stderr and "Traceback" not in result.output
    assert tree_bytes(base_catalog / "sources") == before


CURATED = """\
# yaml-language-server: $schema=../.hostfit/curated.v2.json
schema_version: 2
kind: curated
candidates:
  - {model_id: Qwen/Qwen2.5-14B-Instruct-GGUF, license: apache-2.0, tags: [chat], note: a 14B for 32 GB boxes}
  - {model_id: mistralai/Mistral-Small-24B-Instruct-2501, tags: [chat]}
"""


def test_the_curated_list_works_where_the_readme_puts_it(shipped_catalog, hub):
    (shipped_catalog / "sources" / "curated.yaml").write_text(CURATED)
    result = run_cli("-C", str(shipped_catalog), "validate")
    assert result.exit_code == 0, result.output
    assert run_cli("-C", str(shipped_catalog), "build", "--all", "--out", str(shipped_catalog / "out")).exit_code == 0
    result = run_cli("-C", str(shipped_catalog), "ingest", "--source", "curated")
    assert result.exit_code == 0, result.output
    found = staged(shipped_catalog)
    assert set(found) == {GGUF_REPO, "mistralai/Mistral-Small-24B-Instruct-2501"}
    assert found[GGUF_REPO]["source"] == "curated" and found[GGUF_REPO]["variants"], "curated ones are sized first"
    assert "note" not in found[GGUF_REPO]
    # a field the kind does not have, or no header, is an error at its line, for validate and build alike
    (shipped_catalog / "sources" / "curated.yaml").write_text(CURATED.replace("note:", "notes:"))
    result = run_cli("-C", str(shipped_catalog), "validate")
    assert result.exit_code == 1 and "sources/curated.yaml:5:" in result.stderr and "notes" in result.stderr
    (shipped_catalog / "sources" / "curated.yaml").write_text(CURATED.split("kind: curated\n")[1])
    result = run_cli("-C", str(shipped_catalog), "build", "--all", "--check")
    assert result.exit_code == 1 and "E010" in result.stderr
    result = run_cli("-C", str(shipped_catalog), "ingest", "--source", "curated")
    assert result.exit_code == 0 and "curated: sources/curated.yaml" in result.stderr
    assert set(staged(shipped_catalog)) == set(found), "a broken list keeps what it staged before"
    assert run_cli("schema", "curated").exit_code == 0


def test_the_refresh_workflow_end_to_end(base_catalog, hub):
    """ingest -> review -> trial -> ingest with the Hub failing midway -> adopt -> build -> diff."""
    # a role that takes the largest local chat model that fits (big-chat, recommended, would win it outright)
    add_layer(base_catalog, "20-local.yaml", "roles:\n  local-chat:\n    workload: chat\n    strategy: largest_fit\n"
              "    requires: {context_min: 8192}\n    required: false\nmodels:\n  big-chat: {recommended: false}\n")
    out_before, out_after = base_catalog / "out-before", base_catalog / "out-after"
    assert run_cli("-C", str(base_catalog), "build", "--host", "box-32", "--out", str(out_before)).exit_code == 0
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-q", "-m", "catalog before the refresh")):
        subprocess.run(["git", "-C", str(base_catalog), "-c", "user.email=t@t", "-c", "user.name=t", *args],
                       check=True, capture_output=True, timeout=30)

    # ingest
    result = run_cli("-C", str(base_catalog), "ingest")
    assert result.exit_code == 0, result.output
    first = staged(base_catalog)
    assert {GGUF_REPO, SAFETENSORS_REPO, "org/Unpopular-7B", "Qwen/Qwen2.5-7B-Instruct"} <= set(first)

    # review: one on trial, two rejected
    reviewed = {GGUF_REPO: "trial", "org/Unpopular-7B": "rejected", "Qwen/Qwen2.5-7B-Instruct": "rejected"}
    set_status(base_catalog, reviewed)

    # trial: the staged model competes with its real size
    listed = run_cli("-C", str(base_catalog), "models", "--host", "box-32", "--include-suggestions", "--json")
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    q4 = rows["qwen/qwen2.5-14b-instruct-gguf:q4_k_m"]
    assert q4["memory_method"] == "gguf" and q4["context_window"] == 32768 and q4["fit"] != "no"
    assert q4["memory_mb"] > Q4_SIZE / 2**20, "the file's size, not a guess"
    unsized = rows["org/broken-details"]  # pending, and its repository's details failed
    assert unsized["memory_mb"] is None and unsized["fit"] == "size unknown", "never a made-up 0.5 GiB"
    trial = run_cli("-C", str(base_catalog), "build", "--host", "box-32", "--with-staging", "--out",
                    str(base_catalog / "out-trial"))
    assert trial.exit_code == 0, trial.output
    role = json.loads((base_catalog / "out-trial" / "box-32" / "models.json").read_text())["roles"]["local-chat"]
    assert role["model"].startswith("qwen/qwen2.5-14b-instruct-gguf:"), role

    # a refresh in which the Hub fails midway (page 2): a dry run first, which writes nothing
    hub.state["fail_from"] = 3
    before = tree_bytes(base_catalog / "sources")
    dry = run_cli("-C", str(base_catalog), "ingest", "--refresh", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert tree_bytes(base_catalog / "sources") == before
    assert "0 removed" in dry.stdout and "! org/Unpopular-7B: stale (hf:" in dry.stdout
    result = run_cli("-C", str(base_catalog), "ingest", "--refresh")
    assert result.exit_code == 0 and "huggingface_hub: 3 candidate(s); its earlier candidates are kept" in result.stderr
    second = staged(base_catalog)
    assert set(second) == set(first), "nothing lost"
    assert {m: second[m]["status"] for m in reviewed} == reviewed, "every review status in place"
    stale = second["org/Unpopular-7B"]["stale"]
    assert "HTTP 500" in stale["reason"] and stale["since"].endswith("Z")
    assert "stale" not in second[GGUF_REPO], "listed on page 1: fresh"
    # --source limits what is refreshed, not what is kept
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "openrouter").exit_code == 0
    assert set(staged(base_catalog)) == set(first)
    assert staged(base_catalog)["org/Unpopular-7B"]["stale"] == stale, "still stale, since the same time"

    # adopt: the sized candidate becomes a catalog model with its variants
    adopted = run_cli("-C", str(base_catalog), "adopt", GGUF_REPO, "--role", "local-chat")
    assert adopted.exit_code == 0, adopted.output
    models = (base_catalog / "sources" / "00-models.yaml").read_text()
    assert "variants:" in models and str(Q4_SIZE) in models and "context_window: 32768" in models
    assert staged(base_catalog)[GGUF_REPO]["status"] == "adopted"
    assert {m: staged(base_catalog)[m]["status"] for m in reviewed if m != GGUF_REPO} == \
        {m: s for m, s in reviewed.items() if m != GGUF_REPO}

    # build: the adopted model is selected, with its file's real size
    built = run_cli("-C", str(base_catalog), "build", "--host", "box-32", "--out", str(out_after))
    assert built.exit_code == 0, built.output
    output = json.loads((out_after / "box-32" / "models.json").read_text())
    pick = output["roles"]["local-chat"]["model"]
    assert pick.startswith("qwen/qwen2.5-14b-instruct-gguf:")
    artifact = output["models"][pick]["artifact"]
    sizes = [artifact["size_bytes"]] if "size_bytes" in artifact else [f["size_bytes"] for f in artifact["files"]]
    assert sizes in ([Q4_SIZE], Q8_SIZES)

    # diff: what reviewers see
    diff = run_cli("diff", str(out_before), str(out_after))
    assert diff.exit_code == 0 and "local-chat" in diff.stdout and "qwen/qwen2.5-14b-instruct-gguf" in diff.stdout
    reviewed_diff = run_cli("-C", str(base_catalog), "diff", "--git", "HEAD", "--format", "json")  # as the README says
    assert reviewed_diff.exit_code == 0, reviewed_diff.output
    assert "box-32" in reviewed_diff.stdout and "qwen/qwen2.5-14b-instruct-gguf" in reviewed_diff.stdout


def test_sizing_is_bounded_in_time(base_catalog, hub, monkeypatch):
    """A slow Hub costs SIZE_TIME, not a timeout per repository: the rest wait for the next run."""
    monkeypatch.setattr(ingest, "SIZE_TIME", 0.2)
    hub.delay = 0.3
    result = run_cli("-C", str(base_catalog), "ingest", "--source", "hf")
    assert result.exit_code == 0, result.output
    assert len([p for p in hub.log if p.endswith("?blobs=true")]) == 1, "one request, then the deadline"
    assert "sizing stopped after 0.2 s; 2 repositories left" in result.stderr
    found = staged(base_catalog)
    assert found[GGUF_REPO]["variants"] and "sizing stopped" in found[SAFETENSORS_REPO]["unsized"]


def test_an_in_catalog_candidate_adopts_the_catalog_model(base_catalog, hub):
    assert run_cli("-C", str(base_catalog), "ingest", "--source", "hf").exit_code == 0
    result = run_cli("-C", str(base_catalog), "adopt", "someone/Tiny", "--role", "summarization", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "someone" not in result.stdout, "no second model for the one the catalog has"


def test_repository_details_of_any_shape_never_crash_sizing():
    """The Hub's answers are untrusted: any JSON in any field is facts or nothing, never a traceback."""
    from hypothesis import given, strategies as st

    from test_fuzz import FUZZ, JSON_VALUES

    detail = st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
        "gguf": st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={
            "total": JSON_VALUES, "context_length": JSON_VALUES})),
        "safetensors": st.one_of(JSON_VALUES, st.fixed_dictionaries({}, optional={"total": JSON_VALUES})),
        "siblings": st.one_of(JSON_VALUES, st.just(GGUF_DETAILS["siblings"]))}))

    @FUZZ
    @given(detail)
    def check(body):
        candidates = [{"model_id": "org/m", "provider": "huggingface", "license": None, "source": "huggingface_hub",
                       "popularity_score": 1, "tags": [], "status": "pending"}]
        ingest.size(candidates, lambda repo: (body, []), budget=1)
        facts = {k: v for k, v in candidates[0].items() if k in ingest.SIZE_FIELDS}
        assert all(type(facts.get(k, 1)) in (int, float) and facts.get(k, 1) > 0 for k in ("params_b", "context_window"))
        assert ingest.is_sized(candidates[0]) != ("unsized" in candidates[0])
        ingest.changes({}, candidates)
        ingest.as_catalog({"candidates": candidates})

    check()
