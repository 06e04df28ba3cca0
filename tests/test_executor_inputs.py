"""The executor's inputs are untrusted: every command given a broken models.json, models.lock or
bundle ends in a diagnostic naming the file and exit 1, writes nothing, and never reads a tar
member whole or past what its manifest declares."""

from __future__ import annotations

import copy
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from compiler.errors import InputError

from conftest import REPO, run_cli, tree_bytes
from test_fetch import BLOB, SHA, server  # noqa: F401 - fixture

UNREACHABLE = "http://127.0.0.1:9/tiny.gguf"  # the discard port: nothing in these tests may download


def good_models(url: str = UNREACHABLE, file: str = "tiny.gguf") -> dict:
    """A compiled models.json as `hostfit build` writes it: one local model, one cloud fallback."""
    def model(provider: str, **more) -> dict:
        return {"provider": provider, "workloads": ["chat"], "memory_mb": 0 if provider != "local" else 900,
                "memory_method": "cloud" if provider != "local" else "estimated", "context_window": 8192,
                "priority": 100, "recommended": False, "status": "active", **more}
    return {
        "schema_version": 2,
        "host": {"name": "box-8", "ram_mb": 8192, "usable_mb": 6144, "vram_mb": 0, "gpus": [], "detected": False,
                 "max_loaded_models": None},
        "profiles": ["base"],
        "roles": {"chat": {"model": "small-chat", "fallbacks": ["cloud-mini"], "placement": "cpu",
                           "memory_mb": 900, "context": 4096, "required": True, "resident": False,
                           "workload": "chat"},
                  "summarize": {"model": "small-chat", "fallbacks": [], "placement": "split", "memory_mb": 900}},
        "models": {"small-chat": model("local", artifact={"format": "gguf", "url": url, "file": file},
                                       arch={"layers": 24}),
                   "cloud-mini": model("openai", api_key_env="OPENAI_API_KEY")},
        "aliases": {"tiny": "small-chat"},
    }


def changed(edit) -> str:
    document = good_models()
    edit(document)
    return json.dumps(document, indent=2)


GOOD = json.dumps(good_models(), indent=2)
BAD_MODELS = {
    "empty": "",
    "truncated": GOOD[: len(GOOD) // 2],
    "newer-version": changed(lambda d: d.update(schema_version=99)),
    "top-level-list": "[]",
    "roles-a-string": changed(lambda d: d.update(roles="chat")),
    "role-model-a-number": changed(lambda d: d["roles"]["chat"].update(model=5)),
    "role-names-a-missing-model": changed(lambda d: d["roles"]["chat"].update(model="gone")),
    "model-a-string": changed(lambda d: d["models"].update({"small-chat": "x"})),
    "artifact-a-string": changed(lambda d: d["models"]["small-chat"].update(artifact="x")),
    "artifact-url-a-number": changed(lambda d: d["models"]["small-chat"]["artifact"].update(url=5)),
    "not-a-number": GOOD.replace('"priority": 100', '"priority": NaN', 1),
    "infinite-number": GOOD.replace('"priority": 100', '"priority": 1e400', 1),
    "integer-of-5000-digits": GOOD.replace('"priority": 100', '"priority": 1' + "0" * 5000, 1),
    "absolute-artifact-path": changed(lambda d: d["models"]["small-chat"]["artifact"].update(path="/etc/shadow")),
}
COMMANDS = {
    "fetch": ["fetch", "--host", "box-8"],
    "lock": ["lock", "--host", "box-8"],
    "load": ["load", "chat", "--host", "box-8"],
    "apply": ["apply", "--host", "box-8"],
    "bundle": ["bundle", "box-8", "-o", "{tmp}/box-8.tar"],
}


@pytest.fixture(autouse=True)
def places(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")


def catalog_with(tmp_path: Path, models: str | dict, lock: str | dict | None = None) -> Path:
    """A catalog folder whose out/box-8/ holds these files, as if built (and locked) before."""
    folder = tmp_path / "catalog" / "out" / "box-8"
    folder.mkdir(parents=True)
    (tmp_path / "catalog" / "sources").mkdir()
    (folder / "models.json").write_text(models if isinstance(models, str) else json.dumps(models, indent=2))
    if lock is not None:
        (folder / "models.lock").write_text(lock if isinstance(lock, str) else json.dumps(lock, indent=2))
    return tmp_path / "catalog"


def assert_refused(result, tmp_path: Path, catalog: Path, before: dict, named: Path) -> None:
    assert result.exit_code == 1, result.output
    assert str(named) in result.stderr and "error[E" in result.stderr, result.stderr
    assert tree_bytes(catalog) == before, "a refused input changes nothing under the catalog"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "data").exists()
    assert not (tmp_path / "box-8.tar").exists()


@pytest.mark.parametrize("shape", BAD_MODELS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_broken_models_json(tmp_path, command, shape):
    catalog = catalog_with(tmp_path, BAD_MODELS[shape])
    before = tree_bytes(catalog)
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    result = run_cli("-C", str(catalog), *args)
    assert_refused(result, tmp_path, catalog, before, catalog / "out" / "box-8" / "models.json")


def test_a_bundle_that_cannot_be_written_is_exit_3(tmp_path):
    models = good_models()
    del models["models"]["small-chat"]["artifact"]["url"]  # nothing to fetch
    catalog = catalog_with(tmp_path, models)
    result = run_cli("-C", str(catalog), "bundle", "box-8", "-o", str(tmp_path / "no" / "such" / "box-8.tar"))
    assert result.exit_code == 3 and f"cannot write {tmp_path / 'no' / 'such' / 'box-8.tar'}" in result.stderr
    assert run_cli("-C", str(catalog), "bundle", "box-8", "-o", str(tmp_path / "box-8.tar")).exit_code == 0


def test_a_host_name_never_leads_out_of_out(tmp_path):
    catalog = catalog_with(tmp_path, good_models())
    (catalog / "elsewhere").mkdir()
    (catalog / "elsewhere" / "models.json").write_text(GOOD)
    before = tree_bytes(catalog)
    result = run_cli("-C", str(catalog), "lock", "--host", "../elsewhere")
    assert result.exit_code == 2 and "'../elsewhere' is not a host name" in result.stderr, result.output
    assert tree_bytes(catalog) == before


def test_a_document_over_the_size_bound_is_refused_unread(tmp_path, monkeypatch):
    from compiler.executor import documents

    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 500)  # for 64 MiB: models.json is ~900 bytes
    catalog = catalog_with(tmp_path, GOOD)
    result = run_cli("-C", str(catalog), "fetch", "--host", "box-8")
    assert result.exit_code == 1 and f"{catalog / 'out' / 'box-8' / 'models.json'}: error[E273]" in result.stderr
    bundle = forge(tmp_path)
    result = run_cli("apply", "--from", str(bundle))
    assert result.exit_code == 1 and f"{bundle}[models.json]: error[E273]" in result.stderr, result.output
    assert_nothing_applied(tmp_path)


def test_diagnostics_point_into_the_file():
    from compiler.executor import documents

    with pytest.raises(InputError) as caught:
        documents.parse_models(BAD_MODELS["role-model-a-number"].encode(), "m.json")
    [problem] = caught.value.diagnostics
    line = BAD_MODELS["role-model-a-number"].splitlines().index('      "model": 5,') + 1
    assert (problem.path, problem.line, problem.col, problem.code) == ("m.json", line, 7, "E100")
    with pytest.raises(InputError) as caught:
        documents.parse_models(BAD_MODELS["newer-version"].encode(), "m.json")
    assert [d.code for d in caught.value.diagnostics] == ["E011"]
    assert "schema_version 99 is newer than this hostfit reads (2)" in caught.value.diagnostics[0].message
    priority = GOOD.splitlines().index('      "priority": 100,') + 1
    for shape, code in (("not-a-number", "E016"), ("integer-of-5000-digits", "E016")):
        with pytest.raises(InputError) as caught:
            documents.parse_models(BAD_MODELS[shape].encode(), "m.json")
        assert [(d.line, d.code) for d in caught.value.diagnostics] == [(priority, code)]
    with pytest.raises(InputError) as caught:
        documents.parse_models(b'{"schema_version": 2}', "m.json")
    assert [d.message for d in caught.value.diagnostics] == [
        f"'document' is missing required field {field!r}" for field in ("aliases", "host", "models", "profiles",
                                                                           "roles")], "each once"
    assert documents.parse_models(GOOD.encode(), "m.json").data == good_models()


def good_lock(**entry) -> dict:
    return {"lock_version": 1, "host": "box-8", "artifacts": {"small-chat": {
        "url": UNREACHABLE, "revision": None, "file": "tiny.gguf", "size": len(BLOB), "sha256": SHA, **entry}}}


BAD_LOCKS = {
    "empty": "",
    "newer-version": {**good_lock(), "lock_version": 99},
    "artifacts-a-list": {**good_lock(), "artifacts": []},
    "sha256-a-number": good_lock(sha256=5),
    "size-a-string": good_lock(size="3 MB"),
}


@pytest.mark.parametrize("shape", BAD_LOCKS)
@pytest.mark.parametrize("command", ["fetch", "lock", "apply", "bundle"])
def test_every_command_refuses_a_broken_lock(tmp_path, command, shape):
    catalog = catalog_with(tmp_path, good_models(), BAD_LOCKS[shape])
    before = tree_bytes(catalog)
    result = run_cli("-C", str(catalog), *[a.format(tmp=tmp_path) for a in COMMANDS[command]])
    assert_refused(result, tmp_path, catalog, before, catalog / "out" / "box-8" / "models.lock")


@pytest.mark.parametrize("command", [["cache", "list"], ["cache", "clean", "--older-than", "0s"],
                                     ["cache", "prune", "--max-size", "0"]])
def test_cache_commands_refuse_a_lock_they_cannot_read(tmp_path, server, command):  # noqa: F811
    """A broken lock's pins are unknown: deleting anything then could delete what it pins."""
    catalog = catalog_with(tmp_path, good_models(server.url("tiny.gguf")))
    assert run_cli("-C", str(catalog), "fetch", "--host", "box-8").exit_code == 0
    lock = catalog / "out" / "box-8" / "models.lock"
    lock.write_text(lock.read_text().replace(f'"{SHA}"', "5"))
    cached = tmp_path / "cache" / "small-chat" / "tiny.gguf"
    result = run_cli("-C", str(catalog), *command)
    assert result.exit_code == 1 and str(lock) in result.stderr, result.output
    assert cached.read_bytes() == BLOB


# ------------------------------------------------------------------------------- bundles

def forge(tmp_path: Path, models: dict | None = None, manifest: dict | None = None, lock: dict | None = None,
          artifact: bytes = BLOB, infos: dict | None = None) -> Path:
    """A bundle as `hostfit bundle` writes it, with any part replaced; `infos` swaps in crafted tar
    headers (name -> (TarInfo, the bytes stored))."""
    models = models or good_models()
    manifest = manifest or {"bundle_version": 1, "host": "box-8", "artifacts": {"small-chat": {
        "member": "artifacts/small-chat/tiny.gguf", "file": "tiny.gguf", "size": len(BLOB), "sha256": SHA}}}
    members = {"bundle.json": json.dumps(manifest).encode(), "models.json": json.dumps(models).encode(),
               "artifacts/small-chat/tiny.gguf": artifact}
    if lock is not None:
        members["models.lock"] = json.dumps(lock).encode()
    path = tmp_path / "forged.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info, stored = (infos or {}).get(name) or (tarfile.TarInfo(name), data)
            if info.size == 0:
                info.size = len(stored)
            tar.addfile(info, io.BytesIO(stored))
    return path


def sparse(name: str, realsize: int, data: bytes = b"x" * 512) -> tuple[tarfile.TarInfo, bytes]:
    """A PAX (GNU 1.0) sparse member: `data` at the end of `realsize` bytes of holes, a few KiB stored."""
    sparse_map = f"1\n{realsize - len(data)}\n{len(data)}\n".encode().ljust(512, b"\0")
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.size = len(sparse_map) + len(data)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
                        "GNU.sparse.realsize": str(realsize)}
    return info, sparse_map + data


def bounded(*args: str, file_limit: int = 64 << 20) -> subprocess.CompletedProcess:
    """hostfit in a process that may not map 1 GiB, nor write a file over 64 MiB, nor run 30 s."""
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    return subprocess.run([sys.executable, "-c", "from compiler.cli import main; main()", *args],
                          capture_output=True, text=True, preexec_fn=limits, timeout=30, cwd=REPO, env=os.environ)


def assert_nothing_applied(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    written = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size] if cache.exists() else []
    # a cache created for the copy holds its marker and a manifest, and no artifact
    assert [p.name for p in written if p.parent != cache or p.name not in (".hostfit-cache", "manifest.json")] == []
    if (cache / "manifest.json").exists():
        assert not json.loads((cache / "manifest.json").read_text()).get("artifacts")
    assert not (tmp_path / "data" / "hostfit" / "models.json").exists()


@pytest.mark.parametrize("member", ["models.json", "artifacts/small-chat/tiny.gguf"])
def test_a_sparse_member_is_refused_without_reading_it(tmp_path, member):
    """3 GiB of holes in a 10 KiB member: read whole (models.json) or copied (an artifact) it would
    take 3 GiB of memory or disk; the bounded process proves neither happens."""
    bundle = forge(tmp_path, infos={member: sparse(member, 3 << 30)})
    assert bundle.stat().st_size < 5 * 2**20
    result = bounded("apply", "--from", str(bundle))
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"{bundle}: error[E213]: refusing bundle: {member} is a sparse member" in result.stderr
    assert_nothing_applied(tmp_path)


def test_a_bundle_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "bundle.tar"
    os.mkfifo(fifo)
    result = bounded("apply", "--from", str(fifo))
    assert result.returncode == 1 and "refusing bundle: it is not a regular file" in result.stderr


def test_a_large_extended_header_is_refused_before_it_is_read(tmp_path):
    """tarfile reads pax records whole: 2 MiB of them stand for the gigabytes a bundle could hold."""
    info = tarfile.TarInfo("models.json")
    info.pax_headers = {"comment": "x" * (2 << 20)}
    bundle = forge(tmp_path, infos={"models.json": (info, json.dumps(good_models()).encode())})
    result = run_cli("apply", "--from", str(bundle))
    assert result.exit_code == 1 and "an extended header of 2,097,1" in result.stderr, result.output
    assert_nothing_applied(tmp_path)


def test_a_disk_that_refuses_the_copy_is_exit_3_and_leaves_no_partial(tmp_path):
    result = bounded("apply", "--from", str(forge(tmp_path)), file_limit=1 << 20)  # the artifact is 3 MiB
    assert result.returncode == 3, result.stderr[-2000:]
    assert "hostfit: error: cannot write" in result.stderr and "File too large" in result.stderr
    assert_nothing_applied(tmp_path)


def test_a_lock_that_is_not_a_file_is_refused_without_blocking(tmp_path):
    catalog = catalog_with(tmp_path, good_models())
    lock = catalog / "out" / "box-8" / "models.lock"
    lock.mkdir()
    result = run_cli("-C", str(catalog), "fetch", "--host", "box-8")
    assert result.exit_code == 1 and f"{lock}: error[E001]: cannot read file: not a regular file" in result.stderr
    lock.rmdir()
    os.mkfifo(lock)  # opened for reading, a FIFO waits for a writer forever
    result = bounded("-C", str(catalog), "fetch", "--host", "box-8")
    assert result.returncode == 1 and f"{lock}: error[E001]" in result.stderr


def test_a_member_larger_than_its_manifest_says_is_refused_before_copying(tmp_path):
    bundle = forge(tmp_path, artifact=BLOB + b"\0" * 4096)
    result = run_cli("apply", "--from", str(bundle))
    assert result.exit_code == 1 and f"holds {len(BLOB) + 4096:,} bytes, bundle.json says {len(BLOB):,}" \
        in result.stderr
    assert_nothing_applied(tmp_path)


def test_a_header_declaring_more_than_the_file_holds_is_refused(tmp_path):
    """A crafted header: 6 GiB declared, a few bytes stored (the archive ends there)."""
    bundle = forge(tmp_path)
    data = bytearray(bundle.read_bytes())
    header = data.index(b"artifacts/small-chat/tiny.gguf\0", 1024)  # the ustar header after the pax one
    size_field = slice(header + 124, header + 136)
    data[size_field] = b"\x80" + (6 << 30).to_bytes(11, "big")  # base-256: sizes over 8 GiB fit too
    data[header + 148:header + 156] = b" " * 8
    data[header + 148:header + 156] = b"%06o\0 " % sum(data[header:header + 512])
    bundle.write_bytes(bytes(data[: header + 4096]))
    result = run_cli("apply", "--from", str(bundle))
    assert result.exit_code == 1 and "error[E213]: refusing bundle: it is truncated or damaged" \
        in result.stderr, result.output
    assert_nothing_applied(tmp_path)


@pytest.mark.parametrize("cut", ["bundle.json", "models.json", "tiny.gguf"])
def test_a_truncated_bundle_is_refused(tmp_path, cut):
    bundle = forge(tmp_path)
    data = bundle.read_bytes()
    where = data.index(json.dumps(good_models()).encode()[:40]) if cut == "models.json" else \
        data.index(b'{"bundle_version"') if cut == "bundle.json" else data.index(BLOB[:4096])
    bundle.write_bytes(data[: where + 100 if cut != "tiny.gguf" else where + len(BLOB) // 2])
    result = run_cli("apply", "--from", str(bundle))
    assert result.exit_code == 1 and f"{bundle}: error[E213]: refusing bundle" in result.stderr, result.output
    assert_nothing_applied(tmp_path)


def test_a_bundled_models_json_is_checked_and_its_paths_refused(tmp_path):
    """Installed verbatim, `artifact.path: /etc/shadow` would point applications at that file."""
    models = good_models()
    models["models"]["other"] = copy.deepcopy(models["models"]["small-chat"])
    models["models"]["other"]["artifact"].update(path="/etc/shadow", file="other.gguf")
    result = run_cli("apply", "--from", str(forge(tmp_path, models=models)))
    assert result.exit_code == 1 and "error[E271]: other: a compiled models.json carries no artifact.path " \
        "(found '/etc/shadow')" in result.stderr, result.output
    assert f"{tmp_path / 'forged.tar'}[models.json]:" in result.stderr
    assert_nothing_applied(tmp_path)


@pytest.mark.parametrize("part, edit", [
    ("models.json", lambda m, b, lk: m["models"]["small-chat"].update(artifact="x")),
    ("models.json", lambda m, b, lk: m.update(schema_version=99)),
    ("bundle.json", lambda m, b, lk: b.update(artifacts=[])),
    ("bundle.json", lambda m, b, lk: b["artifacts"]["small-chat"].update(size="big")),
    ("models.lock", lambda m, b, lk: lk["artifacts"]["small-chat"].update(sha256=[])),
], ids=["artifact-a-string", "newer-models", "artifacts-a-list", "size-a-string", "lock-sha"])
def test_a_bundle_with_broken_documents_is_refused(tmp_path, part, edit):
    models, lock = good_models(), good_lock()
    manifest = {"bundle_version": 1, "host": "box-8", "artifacts": {"small-chat": {
        "member": "artifacts/small-chat/tiny.gguf", "file": "tiny.gguf", "size": len(BLOB), "sha256": SHA}}}
    edit(models, manifest, lock)
    bundle = forge(tmp_path, models=models, manifest=manifest, lock=lock)
    result = run_cli("apply", "--from", str(bundle))
    assert result.exit_code == 1 and str(bundle) in result.stderr and "error[E" in result.stderr, result.output
    assert_nothing_applied(tmp_path)


def test_a_good_forged_bundle_applies(tmp_path):
    """The forged bundles above differ from this one only in what each test breaks."""
    result = run_cli("apply", "--from", str(forge(tmp_path, lock=good_lock())))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "small-chat" / "tiny.gguf").read_bytes() == BLOB
    installed = json.loads((tmp_path / "data" / "hostfit" / "models.json").read_text())
    assert installed["models"]["small-chat"]["artifact"]["path"] == str(tmp_path / "cache" / "small-chat" / "tiny.gguf")


# ------------------------------------------------------- what the readers accept is usable

VALUES = [None, True, 0, -1, 10**30, 1.5, "", "x", "chat", "small-chat", "cloud-mini", "/etc/shadow", "../x",
          [], {}, ["small-chat"], {"x": 1}]


def mutated(document, rng, changes: int = 3):
    """A copy with a few values replaced by ones of other types, or keys deleted."""
    document = copy.deepcopy(document)

    def paths(value, path=()):
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            yield path + (key,)
            yield from paths(child, path + (key,))
    for _ in range(rng.randint(1, changes)):
        found = list(paths(document))
        if not found:
            break
        path = rng.choice(found)
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.3:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
    return document


def test_whatever_the_models_reader_accepts_the_executor_can_use(tmp_path):
    """Seeded: 400 mutations of a good models.json; each is refused (InputError) or planned,
    loaded (every role's chain) and installed without any other exception."""
    import random

    from compiler.errors import RuntimeFailure
    from compiler.executor import apply as applier
    from compiler.executor import fetch as fetcher
    from compiler.executor.loaders import LoadFailure, load_role

    def fetch_one(model_id):
        raise LoadFailure("not in this test")

    rng = random.Random(9)
    folder = tmp_path / "out" / "box-8"
    folder.mkdir(parents=True)
    accepted = 0
    for _ in range(400):
        (folder / "models.json").write_text(json.dumps(mutated(good_models(), rng)))
        try:
            plan = fetcher.plan(folder, with_fallbacks=True)
        except InputError as exc:
            assert exc.diagnostics and all(d.path == str(folder / "models.json") for d in exc.diagnostics)
            continue
        accepted += 1
        for role in plan.document["roles"]:
            try:
                load_role(plan.document, role, "llamacpp", "hi", fetch_one, {}, say=lambda text: None)
            except RuntimeFailure:
                pass
        applier.installed_document(plan.document, [])
    assert 40 < accepted < 360, f"the mutations reach both sides of the reader ({accepted} accepted)"


def test_whatever_apply_from_is_given_ends_in_a_diagnostic(tmp_path):
    """Seeded: 150 bundles with mutated bundle.json, models.json and lock; apply --from either
    installs or raises a HostfitError (exit 1 or 3), never anything else."""
    import hashlib
    import random

    from compiler.errors import HostfitError
    from compiler.executor import apply as applier
    from compiler.executor.cache import Cache

    blob = b"GGUF" + bytes(range(256)) * 4
    sha = hashlib.sha256(blob).hexdigest()
    manifest = {"bundle_version": 1, "host": "box-8", "artifacts": {"small-chat": {
        "member": "artifacts/small-chat/tiny.gguf", "file": "tiny.gguf", "size": len(blob), "sha256": sha}}}
    lock = good_lock(size=len(blob), sha256=sha)
    rng = random.Random(7)
    outcomes = {"installed": 0, "refused": 0}
    for index in range(150):
        part = rng.choice(["manifest", "models", "lock"])
        bundle = forge(tmp_path, models=mutated(good_models(), rng) if part == "models" else good_models(),
                       manifest=mutated(manifest, rng) if part == "manifest" else manifest,
                       lock=mutated(lock, rng) if part == "lock" else lock, artifact=blob)
        try:
            applier.apply_from(bundle, lambda: Cache(tmp_path / f"cache{index}"))
            outcomes["installed"] += 1
        except HostfitError as exc:
            assert exc.exit_status in (1, 3)
            outcomes["refused"] += 1
    assert outcomes["installed"] > 5 and outcomes["refused"] > 50, outcomes
