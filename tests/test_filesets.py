"""Artifacts as file sets: a split GGUF (three shards written by gguf's writer) served from 127.0.0.1,
compiled, fetched, pinned, verified, pruned, bundled, applied and loaded by llama.cpp from its first shard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from compiler.memory import artifact_size

from conftest import add_layer, run_cli
from httpserver import FileServer
from test_loaders import llama_available
from tinygguf import write_tiny_llama

SHARDS = [f"tiny-llama-0000{n}-of-00003.gguf" for n in (1, 2, 3)]


@pytest.fixture
def shards(tmp_path) -> dict[str, bytes]:
    folder = tmp_path / "written"
    folder.mkdir()
    write_tiny_llama(folder / "tiny-llama.gguf", split_max_tensors=8)  # 21 tensors: 8 + 8 + 5
    written = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(written) == SHARDS, "gguf's writer names shards <stem>-0000N-of-0000M.gguf"
    return written


@pytest.fixture
def server(shards, tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    srv = FileServer().start()
    srv.files.update(shards)
    yield srv
    srv.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def catalog_with(catalog: Path, server: FileServer, files: list[dict] | None = None,
                 model: str = "tiny-split") -> Path:
    """A model whose artifact is the three shards (or `files`), URLs from url_template (rendered once per file)."""
    files = files if files is not None else [{"name": name} for name in SHARDS]
    add_layer(catalog, "20-split.yaml", f"""models:
  {model}:
    provider: local
    workloads: [chat, summarization]
    params_b: 0.0005
    quantization: F32
    context_window: 256
    arch: {{layers: 2, kv_heads: 2, head_dim: 16}}
    artifact:
      format: gguf
      url_template: "{server.base}/{{{{file}}}}"
      files: {json.dumps(files)}
roles:
  chat: {{prefer: [{model}], requires: {{context_min: 128}}}}
  summarization: {{prefer: [{model}]}}
""")
    result = run_cli("-C", str(catalog), "build", "--host", "box-8")
    assert result.exit_code == 0, result.output
    return catalog


def cli(catalog: Path, *args: str):
    return run_cli("-C", str(catalog), *args)


def lock_of(catalog: Path) -> dict:
    return json.loads((catalog / "out" / "box-8" / "models.lock").read_text())["artifacts"]


def requested(server: FileServer) -> list[str]:
    return [entry["path"].lstrip("/") for entry in server.log]


def test_each_shard_gets_its_url_and_memory_counts_every_file(base_catalog, server, shards):
    catalog = catalog_with(base_catalog, server, [{"name": n, "size_bytes": len(shards[n])} for n in SHARDS])
    compiled = json.loads((catalog / "out" / "box-8" / "models.json").read_text())["models"]["tiny-split"]
    assert compiled["artifact"]["files"] == [{"name": n, "size_bytes": len(shards[n]), "url": server.url(n)}
                                             for n in SHARDS]
    assert "url" not in compiled["artifact"] and "file" not in compiled["artifact"]
    assert compiled["memory_method"] == "gguf", "every size is known: the weights are the files"
    weights = sum(len(data) for data in shards.values())
    assert artifact_size(compiled["artifact"]) == weights
    one_unknown = {"files": [{"name": "a.gguf", "size_bytes": 10}, {"name": "b.gguf"}]}
    assert artifact_size(one_unknown) is None, "a sum missing a shard would under-count: estimate instead"
    assert artifact_size({"file": "a.gguf", "size_bytes": 10}) == 10


def test_a_one_file_list_compiles_exactly_like_the_shorthand(base_catalog, tmp_path):
    outputs = []
    for name, artifact in (("short", '{file: m.gguf, size_bytes: 1000, repo: example/m-GGUF}'),
                           ("list", '{file: null, files: [{name: m.gguf, size_bytes: 1000}], repo: example/m-GGUF}')):
        add_layer(base_catalog, "20-one.yaml", f"models:\n  small-chat:\n    artifact: {artifact}\n")
        result = cli(base_catalog, "build", "--host", "box-8", "--out", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        outputs.append((tmp_path / name / "box-8" / "models.json").read_bytes())
    assert outputs[0] == outputs[1]
    artifact = json.loads(outputs[0])["models"]["small-chat"]["artifact"]
    assert artifact["url"] == "https://huggingface.co/example/m-GGUF/resolve/main/m.gguf" and "files" not in artifact


@pytest.mark.parametrize("artifact, code, key, message", [
    ("{file: a.gguf, files: [{name: a.gguf}, {name: b.gguf}]}", "E240", "file", "both file and files"),
    ("{sha256: " + "a" * 64 + ", files: [{name: a.gguf}]}", "E240", "sha256", "both sha256 and files"),
    ("{url: 'https://example.com/a.gguf', files: [{name: a.gguf}, {name: b.gguf}]}", "E240", "url",
     "url names one file, but files lists 2"),
    ("{repo: example/m, files: [{name: a.gguf}, {name: a.gguf}]}", "E240", "files", "names 'a.gguf' twice"),
    ("{repo: example/m, files: [{name: a.gguf}, {name: ../b.gguf}]}", "E204", "files", "contains a path separator"),
    # one file on macOS's and Windows' file systems: the second download would overwrite the first
    ("{repo: example/m, files: [{name: M-1.gguf}, {name: m-1.gguf}]}", "E240", "files", "names 'm-1.gguf' twice"),
])
def test_bad_file_sets_are_diagnosed_at_their_line(base_catalog, artifact, code, key, message):
    add_layer(base_catalog, "20-bad.yaml", f"models:\n  small-chat:\n    artifact:\n      {artifact}\n")
    result = cli(base_catalog, "validate")
    assert result.exit_code == 1, result.output
    line = next(line for line in result.output.splitlines() if code in line)
    assert line.startswith("sources/20-bad.yaml:6:"), line  # the artifact's line in the layer
    assert message in line


def test_fetch_pins_every_shard_and_the_cache_holds_them_side_by_side(base_catalog, server, shards, tmp_path):
    catalog = catalog_with(base_catalog, server)
    result = cli(catalog, "fetch", "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert sorted(requested(server)) == SHARDS, "each shard downloaded once"
    folder = tmp_path / "cache" / "tiny-split"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == shards, "one folder, original names"
    pins = lock_of(catalog)["tiny-split"]
    assert [(f["name"], f["size"], f["sha256"], f["url"]) for f in pins["files"]] == \
        [(n, len(shards[n]), sha(shards[n]), server.url(n)) for n in SHARDS]
    entry = json.loads((tmp_path / "cache" / "manifest.json").read_text())["artifacts"]["tiny-split"]
    assert entry["path"] == f"tiny-split/{SHARDS[0]}" and entry["size"] == sum(map(len, shards.values()))
    assert [f["sha256"] for f in entry["files"]] == [sha(shards[n]) for n in SHARDS]
    again = cli(catalog, "fetch", "--host", "box-8", "--require-pinned")
    assert again.exit_code == 0, again.output
    assert len(server.log) == 3, "cached and pinned: nothing downloaded again"
    assert all(f"tiny-split {n}: cached" in again.stderr for n in SHARDS)


def test_a_corrupted_shard_is_detected_and_only_it_is_fetched_again(base_catalog, server, shards, tmp_path):
    catalog = catalog_with(base_catalog, server)
    assert cli(catalog, "fetch", "--host", "box-8").exit_code == 0
    middle = tmp_path / "cache" / "tiny-split" / SHARDS[1]
    middle.write_bytes(b"GGUF" + bytes(len(shards[SHARDS[1]]) - 4))  # same size, other bytes
    verify = cli(catalog, "cache", "verify")
    assert verify.exit_code == 3
    assert f"tiny-split {SHARDS[1]}: sha256 " in verify.stderr and "0 ok, 1 bad" in verify.stderr
    assert SHARDS[0] not in verify.stderr and SHARDS[2] not in verify.stderr
    middle.write_bytes(b"GGUF")  # truncated: fetch sees a size other than the manifest's, hashes it, refuses it
    server.log.clear()
    refetch = cli(catalog, "fetch", "--host", "box-8")
    assert refetch.exit_code == 0, refetch.output
    assert requested(server) == [SHARDS[1]], "the pinned good shards are kept, the bad one replaced"
    assert middle.read_bytes() == shards[SHARDS[1]]
    assert cli(catalog, "cache", "verify").exit_code == 0


def test_a_shard_served_with_other_bytes_fails_its_pin(base_catalog, server, shards, tmp_path):
    catalog = catalog_with(base_catalog, server)
    assert cli(catalog, "lock", "--host", "box-8").exit_code == 0
    assert cli(catalog, "cache", "remove", "tiny-split").exit_code == 0
    assert not any((tmp_path / "cache" / "tiny-split").iterdir()), "remove deletes every file of the set"
    server.files[SHARDS[2]] = b"GGUF" + bytes(len(shards[SHARDS[2]]) - 4)
    result = cli(catalog, "fetch", "--host", "box-8")
    assert result.exit_code == 3
    assert f"expected {sha(shards[SHARDS[2]])}" in result.stderr
    assert not (tmp_path / "cache" / "tiny-split" / SHARDS[2]).exists()


def test_prune_keeps_a_pinned_set_whole_and_evicts_an_unpinned_one_whole(base_catalog, server, tmp_path):
    catalog = catalog_with(base_catalog, server)
    assert cli(catalog, "fetch", "--host", "box-8").exit_code == 0
    listed = cli(catalog, "cache", "list")
    assert "tiny-split" in listed.stdout and "in 3 files" in listed.stdout and "pinned" in listed.stdout
    kept = cli(catalog, "cache", "prune", "--max-size", "0")
    assert kept.exit_code == 0 and "evicted 0 artifact(s)" in kept.stderr
    assert len(list((tmp_path / "cache" / "tiny-split").iterdir())) == 3
    (catalog / "out" / "box-8" / "models.lock").unlink()
    evicted = cli(catalog, "cache", "prune", "--max-size", "0")
    assert evicted.exit_code == 0 and "evicted 1 artifact(s): tiny-split" in evicted.stderr
    assert list((tmp_path / "cache" / "tiny-split").iterdir()) == []


def test_bundle_carries_every_shard_and_apply_verifies_each(base_catalog, server, shards, tmp_path, monkeypatch):
    catalog = catalog_with(base_catalog, server)
    bundle = tmp_path / "box-8.tar"
    made = cli(catalog, "bundle", "box-8", "-o", str(bundle))
    assert made.exit_code == 0, made.output
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "elsewhere"))
    applied = run_cli("apply", "--from", str(bundle))
    assert applied.exit_code == 0, applied.output
    folder = tmp_path / "elsewhere" / "tiny-split"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == shards
    installed = json.loads((tmp_path / "data" / "hostfit" / "models.json").read_text())["models"]["tiny-split"]
    assert installed["artifact"]["path"] == str(folder / SHARDS[0]), "the file llama.cpp opens"
    assert [f["sha256"] for f in installed["artifact"]["files"]] == [sha(shards[n]) for n in SHARDS]
    assert len(server.log) == 3, "the bundle carried the bytes"


def test_apply_from_refuses_a_bundle_whose_shard_was_altered(base_catalog, server, shards, tmp_path, monkeypatch):
    import io
    import tarfile

    catalog = catalog_with(base_catalog, server)
    assert cli(catalog, "bundle", "box-8", "-o", str(tmp_path / "good.tar")).exit_code == 0
    forged = tmp_path / "forged.tar"
    with tarfile.open(tmp_path / "good.tar") as good, tarfile.open(forged, "w") as out:
        for member in good.getmembers():
            data = good.extractfile(member).read()
            if member.name.endswith(SHARDS[2]):
                data = b"GGUF" + bytes(len(data) - 4)
            out.addfile(member, io.BytesIO(data))
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "elsewhere"))
    result = run_cli("apply", "--from", str(forged))
    assert result.exit_code == 3 and f"the bundle pins {sha(shards[SHARDS[2]])}" in result.stderr
    assert not (tmp_path / "data" / "hostfit" / "models.json").exists()


def test_llama_cpp_loads_the_set_from_its_first_shard(base_catalog, server, tmp_path):
    if not llama_available():
        pytest.skip("llama-cpp-python is not installed (pip install 'hostfit[llama]')")
    catalog = catalog_with(base_catalog, server)
    result = cli(catalog, "load", "chat", "--host", "box-8", "--prompt", "hello world")
    assert result.exit_code == 0, result.output
    assert "chat: tiny-split loaded with llamacpp in " in result.stdout
    assert [f["name"] for f in lock_of(catalog)["tiny-split"]["files"]] == SHARDS, "load pins what it fetched"
    (tmp_path / "cache" / "tiny-split" / SHARDS[2]).unlink()  # llama.cpp really reads the other shards
    from compiler.executor.loaders import LoadFailure, Settings, llamacpp_load

    with pytest.raises(LoadFailure):
        llamacpp_load(tmp_path / "cache" / "tiny-split" / SHARDS[0], Settings(128, 1, 0), "hi")


def test_the_shipped_gpt_oss_120b_names_its_three_shards_without_invented_sizes(shipped_catalog):
    result = cli(shipped_catalog, "build", "--host", "workstation")
    assert result.exit_code == 0, result.output
    model = json.loads((shipped_catalog / "out" / "workstation" / "models.json").read_text())["models"]["gpt-oss-120b"]
    names = [f"gpt-oss-120b-mxfp4-0000{n}-of-00003.gguf" for n in (1, 2, 3)]
    assert model["artifact"]["files"] == [
        {"name": n, "url": f"https://huggingface.co/ggml-org/gpt-oss-120b-GGUF/resolve/main/{n}"} for n in names]
    assert model["memory_method"] == "estimated", "no size is declared: only a lock pins them"
    script = (shipped_catalog / "out" / "workstation" / "exports" / "llama-server.sh").read_text()
    assert f'-m "$MODELS"/{names[0]} ' in script


def test_a_lost_manifest_is_rebuilt_with_the_set_whole_and_still_pinned(base_catalog, server, tmp_path):
    catalog = catalog_with(base_catalog, server)
    assert cli(catalog, "fetch", "--host", "box-8").exit_code == 0
    manifest = tmp_path / "cache" / "manifest.json"
    before = json.loads(manifest.read_text())["artifacts"]["tiny-split"]
    manifest.unlink()
    listed = cli(catalog, "cache", "list", "--json")
    assert listed.exit_code == 0 and "rebuilt it from the 1 cached file(s)" in listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["id"], entry["sha256"], entry["files"], entry["pinned"]) == \
        ("tiny-split", before["sha256"], before["files"], True), "shards in name order: the same set, still pinned"
    assert cli(catalog, "cache", "prune", "--max-size", "0").exit_code == 0
    assert len(list((tmp_path / "cache" / "tiny-split").iterdir())) == 3


def test_a_dropped_shard_resumes_with_range_and_the_others_are_fetched_whole(base_catalog, server, shards):
    catalog = catalog_with(base_catalog, server)
    server.faults["drop_after"] = 100_000  # the first request: shard 1 breaks off at 100,000 bytes
    result = cli(catalog, "fetch", "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert [(e["path"].lstrip("/"), e["range"]) for e in server.log] == [
        (SHARDS[0], None), (SHARDS[0], "bytes=100000-"), (SHARDS[1], None), (SHARDS[2], None)]
    assert "resumed at 100,000 bytes" in result.stderr


def test_lock_pins_a_set_the_catalog_describes_fully_without_downloading(base_catalog, server, shards):
    files = [{"name": n, "size_bytes": len(shards[n]), "sha256": sha(shards[n])} for n in SHARDS]
    catalog = catalog_with(base_catalog, server, files)
    result = cli(catalog, "lock", "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert server.log == []
    assert [(f["name"], f["size"], f["sha256"]) for f in lock_of(catalog)["tiny-split"]["files"]] == \
        [(f["name"], f["size_bytes"], f["sha256"]) for f in files]


def fetch_compiled_set(catalog: Path, server: FileServer, *names: str):
    """`hostfit fetch` of a models.json written by hand whose small-chat is the set of `names`."""
    from test_executor_inputs import good_models

    document = good_models()
    document["models"]["small-chat"]["artifact"] = {"format": "gguf", "files": [
        {"name": name, "url": server.url(Path(name).name)} for name in names]}  # the URL itself is sound
    folder = catalog / "out" / "box-8"
    folder.mkdir(parents=True)
    (folder / "models.json").write_text(json.dumps(document))
    return cli(catalog, "fetch", "--host", "box-8")


def test_an_unsafe_shard_name_in_a_compiled_models_json_is_refused_before_any_fetch(base_catalog, server):
    result = fetch_compiled_set(base_catalog, server, "a.gguf", "../b.gguf")
    assert result.exit_code == 1 and "E209" in result.stderr and "'../b.gguf'" in result.stderr, result.output
    assert server.log == []


def test_require_pinned_wants_every_shard_and_a_changed_checksum_must_be_relocked(base_catalog, server, shards):
    files = [{"name": n, "sha256": sha(shards[n])} for n in SHARDS[:2]] + [{"name": SHARDS[2]}]
    catalog = catalog_with(base_catalog, server, files)
    unpinned = cli(catalog, "fetch", "--host", "box-8", "--require-pinned")
    assert unpinned.exit_code == 1 and "E211" in unpinned.stderr and "tiny-split" in unpinned.stderr
    assert server.log == [], "refused before any download"
    assert cli(catalog, "lock", "--host", "box-8").exit_code == 0
    assert cli(catalog, "fetch", "--host", "box-8", "--require-pinned").exit_code == 0
    files[2]["sha256"] = "0" * 64  # the catalog now says another third shard than the lock pins
    catalog_with(catalog, server, files)
    changed = cli(catalog, "fetch", "--host", "box-8")
    assert changed.exit_code == 1 and "E212" in changed.stderr and SHARDS[2] in changed.stderr


def test_the_unsized_ceiling_bounds_a_set_of_unsized_shards_together(base_catalog, server, shards, tmp_path,
                                                                      monkeypatch):
    """The ceiling bounds the weights, which are every file of a set: three shards each under it but
    together over it are refused, not 3 x the ceiling written (the shipped gpt-oss-120b gives no sizes)."""
    catalog = catalog_with(base_catalog, server)  # no size_bytes, no sha256, no lock
    ceiling = len(shards[SHARDS[0]]) + len(shards[SHARDS[1]]) + 1000  # over shards 1 + 2, under all three
    assert all(len(data) < ceiling for data in shards.values()) and sum(map(len, shards.values())) > ceiling
    monkeypatch.setenv("HOSTFIT_MAX_UNSIZED", str(ceiling))
    result = cli(catalog, "fetch", "--host", "box-8")
    assert result.exit_code == 3, result.output
    left = ceiling - len(shards[SHARDS[0]]) - len(shards[SHARDS[1]])
    assert f"the server offers {len(shards[SHARDS[2]]):,} bytes, over the {left:,}-byte ceiling" in result.stderr
    lock = catalog / "out" / "box-8" / "models.lock"
    assert not lock.exists() or "tiny-split" not in lock_of(catalog), "nothing pinned"
    assert not (tmp_path / "cache" / "tiny-split" / SHARDS[2]).exists()
    monkeypatch.setenv("HOSTFIT_MAX_UNSIZED", str(sum(map(len, shards.values()))))  # the set fits exactly
    again = cli(catalog, "fetch", "--host", "box-8")
    assert again.exit_code == 0, again.output
    assert requested(server)[-1] == SHARDS[2], "the two shards already verified are not fetched again"


def test_the_shipped_gpt_oss_120b_set_is_fetched_under_its_memory_ceiling(shipped_catalog):
    from compiler.executor import download
    from compiler.executor.fetch import plan

    assert cli(shipped_catalog, "build", "--host", "workstation").exit_code == 0
    artifacts = {a.model_id: a for a in plan(shipped_catalog / "out" / "workstation", (), True).artifacts}
    artifact = artifacts["gpt-oss-120b"]
    assert artifact.is_set and [f.size for f in artifact.files] == [None, None, None]
    assert artifact.memory_mb and download.size_ceiling(artifact.memory_mb) == 2 * artifact.memory_mb << 20


def test_the_manifest_never_vouches_for_a_shard_replaced_by_a_fetch_that_then_failed(base_catalog, server, shards,
                                                                                        tmp_path):
    """A set being replaced: shard 1 is re-downloaded (other bytes, same size), then shard 2 fails. The old
    manifest entry must not survive to certify shard 1's new bytes as the old pin (kill -9 in between
    leaves the same state)."""
    catalog = catalog_with(base_catalog, server)
    assert cli(catalog, "fetch", "--host", "box-8").exit_code == 0
    lock_file = catalog / "out" / "box-8" / "models.lock"
    pinned_v1 = lock_file.read_text()
    other = b"GGUF" + bytes(len(shards[SHARDS[0]]) - 4)  # a new upload of shard 1, the same size
    server.files[SHARDS[0]] = other
    del server.files[SHARDS[1]]  # ... and shard 2 cannot be had
    catalog_with(catalog, server, [{"name": SHARDS[0], "sha256": sha(other)}, {"name": SHARDS[1], "sha256": "1" * 64},
                                   {"name": SHARDS[2]}])
    lock_file.unlink()
    failed = cli(catalog, "fetch", "--host", "box-8")
    assert failed.exit_code == 3, failed.output
    assert (tmp_path / "cache" / "tiny-split" / SHARDS[0]).read_bytes() == other
    server.files.update(shards)  # back to the first version: catalog and lock as they were
    catalog_with(catalog, server)
    lock_file.write_text(pinned_v1)
    again = cli(catalog, "fetch", "--host", "box-8", "--require-pinned")
    assert again.exit_code == 0, again.output
    folder = tmp_path / "cache" / "tiny-split"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == shards, "what is cached is what the lock pins"
    assert cli(catalog, "cache", "verify").exit_code == 0


def test_apply_from_a_bundle_failing_midway_leaves_no_entry_vouching_for_replaced_shards(base_catalog, server, shards,
                                                                                         tmp_path):
    import io
    import tarfile

    catalog = catalog_with(base_catalog, server)
    assert cli(catalog, "bundle", "box-8", "-o", str(tmp_path / "good.tar")).exit_code == 0  # fetched and cached too
    other = b"GGUF" + bytes(len(shards[SHARDS[0]]) - 4)  # shard 1 as another upload (same size), pinned so
    forged = tmp_path / "forged.tar"
    with tarfile.open(tmp_path / "good.tar") as good, tarfile.open(forged, "w") as out:
        for member in good.getmembers():
            data = good.extractfile(member).read()
            if member.name in ("bundle.json", "models.lock"):
                data = data.replace(sha(shards[SHARDS[0]]).encode(), sha(other).encode())
            elif member.name.endswith(SHARDS[0]):
                data = other
            elif member.name.endswith(SHARDS[2]):
                data = b"GGUF" + bytes(len(data) - 4)  # and shard 3 does not match its pin
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    result = run_cli("apply", "--from", str(forged))
    assert result.exit_code == 3, result.output
    again = cli(catalog, "fetch", "--host", "box-8", "--require-pinned")  # the lock pins the first version
    assert again.exit_code == 0, again.output
    folder = tmp_path / "cache" / "tiny-split"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == shards, "what is cached is what the lock pins"


def test_a_compiled_set_naming_one_file_in_two_cases_is_refused_before_any_fetch(base_catalog, server):
    result = fetch_compiled_set(base_catalog, server, "A.gguf", "a.gguf")
    assert result.exit_code == 1 and "E209" in result.stderr and "names a file twice" in result.stderr, result.output
    assert server.log == []


@pytest.mark.parametrize("template", ["http://example.com/{{file}}", "file:///srv/models/{{file}}"])
def test_a_url_template_rendering_to_a_refused_url_is_e205_at_its_line(base_catalog, template):
    """Each file's URL is rendered at compile time: one the download policy refuses is the catalog's
    fault (exit 1 at the template's line), not a network failure at fetch (exit 3)."""
    add_layer(base_catalog, "20-tpl.yaml", "models:\n  small-chat:\n    artifact:\n      format: gguf\n      file: null\n      url: null\n"
                                           f"      url_template: \"{template}\"\n"
                                           "      files: [{name: a-00001-of-00002.gguf}, {name: a-00002-of-00002.gguf}]\n")
    result = cli(base_catalog, "build", "--host", "box-8")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if "E205" in line]
    assert len(lines) == 1 and lines[0].startswith("sources/20-tpl.yaml:9:"), result.stderr


def test_a_set_moved_to_other_urls_is_fetched_from_them_not_taken_from_the_cache(base_catalog, server, shards,
                                                                                 tmp_path):
    """The catalog points the set at a new revision (same names, no checksums): the cached files came from
    the old URLs, so they are not pinned as the new URLs' bytes."""
    catalog = catalog_with(base_catalog, server)
    assert cli(catalog, "fetch", "--host", "box-8").exit_code == 0
    newer = {f"v2/{name}": b"GGUF" + bytes(len(data) - 4) for name, data in shards.items()}
    server.files.update(newer)
    text = (catalog / "sources" / "20-split.yaml").read_text().replace(f"{server.base}/{{{{file}}}}",
                                                                        f"{server.base}/v2/{{{{file}}}}")
    (catalog / "sources" / "20-split.yaml").write_text(text)
    assert cli(catalog, "build", "--host", "box-8").exit_code == 0
    server.log.clear()
    result = cli(catalog, "fetch", "--host", "box-8")
    assert result.exit_code == 0, result.output
    assert sorted(requested(server)) == sorted(newer), "each file fetched from its new URL"
    pins = lock_of(catalog)["tiny-split"]["files"]
    assert [(p["url"], p["sha256"]) for p in pins] == [(server.url(f"v2/{n}"), sha(newer[f"v2/{n}"])) for n in SHARDS]
    assert {p.name: p.read_bytes() for p in (tmp_path / "cache" / "tiny-split").iterdir()} == \
        {name.removeprefix("v2/"): data for name, data in newer.items()}


def test_a_rebuilt_manifest_never_makes_a_pinned_set_evictable_by_lumping_in_an_older_file(base_catalog, server,
                                                                                            shards, tmp_path):
    """The model's file was renamed (a one-file artifact became a set): the old file stays in its folder. A
    manifest rebuilt then must not take the four files as one unpinned set, which prune would evict
    whole, pinned shards included."""
    server.files["tiny-old.gguf"] = shards[SHARDS[2]]
    catalog = catalog_with(base_catalog, server, [{"name": "tiny-old.gguf"}])
    assert cli(catalog, "fetch", "--host", "box-8").exit_code == 0
    catalog_with(catalog, server)
    assert cli(catalog, "fetch", "--host", "box-8").exit_code == 0
    folder = tmp_path / "cache" / "tiny-split"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["tiny-old.gguf", *SHARDS])
    (tmp_path / "cache" / "manifest.json").unlink()
    pruned = cli(catalog, "cache", "prune", "--max-size", "0")
    assert pruned.exit_code == 0, pruned.output
    assert all((folder / name).read_bytes() == shards[name] for name in SHARDS), "the pinned shards stay"
    again = cli(catalog, "fetch", "--host", "box-8", "--require-pinned")
    assert again.exit_code == 0 and len([e for e in server.log if e["path"].lstrip("/") in SHARDS]) == 3, \
        "nothing downloaded again"


@pytest.mark.parametrize("names, one", [
    (SHARDS, True),
    (["m-00001-of-00002.safetensors", "m-00002-of-00002.safetensors"], True),
    (SHARDS[:2], False),  # incomplete: a fetch that stopped midway
    ([*SHARDS, "tiny-old.gguf"], False),
    (["a-00001-of-00002.gguf", "b-00002-of-00002.gguf"], False),
    (["m-00001-of-00002.gguf", "m-00002-of-00003.gguf"], False),
])
def test_a_rebuild_takes_several_files_as_one_set_only_when_they_are_one_complete_split(names, one):
    from compiler.executor.cache import one_split_set

    assert one_split_set(sorted(names)) is one
