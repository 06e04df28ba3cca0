"""apply, bundle, apply --from, and the stdlib runtime reader applications use."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from compiler.runtime import Runtime, RuntimeCatalogWarning

from test_fetch import BLOB, SHA, compiled, fetch, manifest, server  # noqa: F401 - fixtures
from conftest import run_cli
from test_executor_inputs import good_models


@pytest.fixture(autouse=True)
def data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")


def test_apply_fetches_locks_and_installs(base_catalog, server, tmp_path):  # noqa: F811
    catalog = compiled(base_catalog, server)
    result = run_cli("-C", str(catalog), "apply", "--host", "box-8")
    assert result.exit_code == 0, result.output
    installed = json.loads((tmp_path / "data" / "hostfit" / "models.json").read_text())
    artifact = installed["models"]["small-chat"]["artifact"]
    assert artifact["path"] == str(tmp_path / "cache" / "small-chat" / "tiny.gguf") and artifact["sha256"] == SHA
    assert (catalog / "out" / "box-8" / "models.lock").exists()
    runtime = Runtime.load()
    assert runtime.source.endswith("hostfit/models.json")
    assert runtime.model_for("chat")["id"] == "small-chat"
    assert runtime.resolve("TINY") == "small-chat", "aliases resolve case-insensitively"


def test_bundle_then_apply_from_on_a_machine_without_the_cache(base_catalog, server, tmp_path, monkeypatch):  # noqa: F811
    catalog = compiled(base_catalog, server)
    bundle = tmp_path / "box-8.tar"
    result = run_cli("-C", str(catalog), "bundle", "box-8", "-o", str(bundle))
    assert result.exit_code == 0 and "1 artifact(s)" in result.stdout
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "elsewhere"))
    applied = run_cli("apply", "--from", str(bundle))
    assert applied.exit_code == 0, applied.output
    assert (tmp_path / "elsewhere" / "small-chat" / "tiny.gguf").read_bytes() == BLOB
    installed = json.loads((tmp_path / "data" / "hostfit" / "models.json").read_text())
    assert installed["models"]["small-chat"]["artifact"]["path"] == str(tmp_path / "elsewhere" / "small-chat" / "tiny.gguf")
    assert len(server.log) == 1, "the bundle carried the bytes; nothing was downloaded twice"


def forged(tmp_path: Path, member: str, data: bytes, file: str = "tiny.gguf", sha: str = SHA) -> Path:
    path = tmp_path / "forged.tar"
    models = good_models()
    meta = {"bundle_version": 1, "host": "x",
            "artifacts": {"small-chat": {"member": member, "file": file, "size": len(data), "sha256": sha}}}
    with tarfile.open(path, "w") as tar:
        for name, payload in (("bundle.json", json.dumps(meta).encode()), ("models.json", json.dumps(models).encode()),
                              (member, data)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize("member, file", [("../../escape.gguf", "tiny.gguf"),
                                          ("artifacts/small-chat/../../x.gguf", "../../x.gguf"),
                                          ("/tmp/absolute.gguf", "/tmp/absolute.gguf")])
def test_apply_from_refuses_members_that_would_escape(tmp_path, member, file):
    result = run_cli("apply", "--from", str(forged(tmp_path, member, BLOB, file)))
    assert result.exit_code == 1 and "error[E213]: refusing bundle" in result.stderr
    assert not (tmp_path / "escape.gguf").exists() and not Path("/tmp/absolute.gguf").exists()
    assert not (tmp_path / "data" / "hostfit" / "models.json").exists()


def test_apply_from_verifies_every_hash(tmp_path):
    result = run_cli("apply", "--from", str(forged(tmp_path, "artifacts/small-chat/tiny.gguf", b"tampered")))
    assert result.exit_code == 3 and "the bundle pins" in result.stderr
    assert not (tmp_path / "cache" / "small-chat" / "tiny.gguf").exists()
    assert not (tmp_path / "data" / "hostfit" / "models.json").exists()


def test_runtime_priority_order_and_builtin_fallback(tmp_path):
    assert Runtime.load().source == "builtin"
    assert Runtime.load().model_for("anything")["id"] == "test"
    shipped = tmp_path / "app-models.json"
    shipped.write_text((Path(__file__).parent.parent / "out" / "laptop-16" / "models.json").read_text())
    runtime = Runtime.load(app_default=shipped)
    assert runtime.source == str(shipped) and runtime.model_for("code")["id"] == "qwen2.5-coder-7b-q5"
    assert runtime.model("QWEN-CODER")["id"] == "qwen2.5-coder-7b-q5"
    installed = tmp_path / "data" / "hostfit" / "models.json"
    installed.parent.mkdir(parents=True)
    installed.write_text('{"schema_version": 3}')
    with pytest.warns(RuntimeCatalogWarning, match="newer"):
        assert Runtime.load(app_default=shipped).source == str(shipped), "a newer or broken file is passed over"


def test_runtime_reader_uses_the_standard_library_only():
    import ast
    import sys

    tree = ast.parse((Path(__file__).parent.parent / "compiler" / "runtime.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}
