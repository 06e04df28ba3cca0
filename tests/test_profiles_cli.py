"""`hostfit profile ...`: every subcommand on a copy of the shipped catalog, each refusal (usage errors
exit 2 with a did-you-mean, bad input exit 1 with file:line:col) leaving every file as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli, tree_bytes


def cli(catalog: Path, *args: str):
    return run_cli("-C", str(catalog), "profile", *args)


def config_file() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "hostfit" / "config.yaml"


def everything(catalog: Path) -> dict[str, bytes]:
    """The catalog and the user's configuration folder, to prove a refused command wrote nothing."""
    return {**tree_bytes(catalog), **{f"config/{k}": v for k, v in tree_bytes(config_file().parent).items()}}


def built_profiles(catalog: Path, host: str, tmp_path: Path) -> str:
    """The `profiles:` a build of `host` reports (what it actually layered)."""
    result = run_cli("-C", str(catalog), "build", "--host", host, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("host "))
    return line.split("profiles: ")[1]


# ------------------------------------------------------------------------------- list, show

def test_list_names_each_profile_with_its_parents_and_hosts(shipped_catalog: Path):
    result = cli(shipped_catalog, "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert sorted(rows) == sorted(p.stem for p in (shipped_catalog / "profiles").glob("*.yaml"))
    assert rows["coding"]["extends"] == ["base"] and rows["base"]["extends"] == []
    assert rows["coding"]["hosts"] == ["laptop-16", "laptop-32"]
    assert rows["research"]["file"] == "profiles/research.yaml"
    text = cli(shipped_catalog, "list").stdout
    assert text.splitlines()[0].split() == ["PROFILE", "EXTENDS", "HOSTS", "FILE", "DESCRIPTION"]
    assert any(line.split()[:3] == ["writing", "base", "laptop-32,"] for line in text.splitlines())


def test_show_prints_the_file_as_written_then_resolved(shipped_catalog: Path):
    written = (shipped_catalog / "profiles" / "coding.yaml").read_text()
    result = cli(shipped_catalog, "show", "coding")
    assert result.exit_code == 0, result.output
    as_written, resolved = result.stdout.split("# resolved: ")
    assert as_written == "# as written: profiles/coding.yaml\n" + written + "\n", "comments and layout as in the file"
    assert resolved.startswith("base -> coding ")
    import yaml
    data = yaml.safe_load(resolved.split("\n", 1)[1])
    assert "extends" not in data
    assert data["selection"]["max_fallbacks"] == 3, "the parent's settings are merged in"
    assert data["roles"]["code"]["requires"]["context_min"] == 32768


def test_an_unknown_profile_is_a_usage_error_with_a_suggestion(shipped_catalog: Path):
    for args in (("show", "codng"), ("delete", "codng"), ("export", "codng"), ("activate", "codng"),
                 ("create", "x", "--extends", "codng")):
        result = cli(shipped_catalog, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "unknown profile 'codng'; did you mean 'coding'?" in result.stderr


# ----------------------------------------------------------------------------------- create

def test_create_writes_a_profile_that_builds(shipped_catalog: Path, tmp_path: Path):
    result = cli(shipped_catalog, "create", "quick", "--extends", "coding", "--description", "Fast answers",
                 "--set", "roles.chat.requires.speed_min=8", "--set", "selection.max_fallbacks=1",
                 "--set", "roles.code.prefer=[qwen2.5-coder-7b-q5, qwen2.5-coder-3b-q4]")
    assert result.exit_code == 0, result.output
    path = shipped_catalog / "profiles" / "quick.yaml"
    assert "    prefer: [qwen2.5-coder-7b-q5, qwen2.5-coder-3b-q4]\n" in path.read_text(), "lists as the catalog writes them"
    import yaml
    data = yaml.safe_load(path.read_text())
    assert data == {"schema_version": 2, "kind": "profile", "name": "quick", "description": "Fast answers",
                    "extends": ["coding"], "roles": {"chat": {"requires": {"speed_min": 8}},
                                                     "code": {"prefer": ["qwen2.5-coder-7b-q5", "qwen2.5-coder-3b-q4"]}},
                    "selection": {"max_fallbacks": 1}}
    assert run_cli("-C", str(shipped_catalog), "validate").exit_code == 0
    build = run_cli("-C", str(shipped_catalog), "build", "--host", "laptop-16", "--profile", "quick",
                    "--out", str(tmp_path / "out"))
    assert build.exit_code == 0, build.output
    output = json.loads((tmp_path / "out" / "laptop-16" / "models.json").read_text())
    assert output["profiles"][-2:] == ["coding", "quick"]
    chat = output["roles"]["chat"]
    assert chat["tokens_per_s"] >= 8, "the new profile's requirement applied"
    assert len(chat["fallback_runtimes"]) == 1, "one local fallback (the committed laptop-16 output has 3)"


@pytest.mark.parametrize("args, code, where", [
    (("create", "bad", "--set", "roles.chat.requires.speed_min=fast"), 1, "profiles/bad.yaml:"),
    (("create", "bad", "--set", "roles.nosuchrole.prefer=[nosuchmodel]"), 1, "profiles/bad.yaml:"),
    (("create", "coding"), 1, "profiles/coding.yaml:3:1"),
    (("create", "bad", "--set", "description=x"), 2, "the path must start with"),
    (("create", "../escape"), 2, "profile name '../escape'"),
])
def test_create_refusals_write_nothing(shipped_catalog: Path, args, code: int, where: str):
    before = everything(shipped_catalog)
    result = cli(shipped_catalog, *args)
    assert result.exit_code == code, result.output
    assert where in result.stderr
    if code == 1:
        assert "error[E" in result.stderr
    assert everything(shipped_catalog) == before
    assert "Traceback" not in result.output


def test_create_and_import_never_replace_a_file_holding_another_profile(shipped_catalog: Path, tmp_path: Path):
    writing = shipped_catalog / "profiles" / "writing.yaml"
    writing.rename(shipped_catalog / "profiles" / "quick.yaml")  # its `name` still says writing
    before = everything(shipped_catalog)
    result = cli(shipped_catalog, "create", "quick")
    assert result.exit_code == 1
    assert "profiles/quick.yaml:1:1: error[E700]: profiles/quick.yaml already exists and defines profile 'writing'" \
        in result.stderr
    incoming = tmp_path / "incoming.yaml"
    incoming.write_text("schema_version: 2\nkind: profile\nname: quick\n")
    assert cli(shipped_catalog, "import", str(incoming), "--force").exit_code == 1
    assert everything(shipped_catalog) == before


# ----------------------------------------------------------------------------------- delete

def test_delete_refuses_while_profiles_and_hosts_use_it(shipped_catalog: Path):
    before = everything(shipped_catalog)
    result = cli(shipped_catalog, "delete", "base")
    assert result.exit_code == 1
    for user in ("profiles/coding.yaml:4:11: error[E701]: profile 'base' cannot be deleted: profile 'coding' extends",
                 "profiles/research.yaml:4:11:", "profiles/writing.yaml:4:11:",
                 "sources/hosts.yaml:10:16: error[E701]: profile 'base' cannot be deleted: host 'edge-4' activates it"):
        assert user in result.stderr
    assert everything(shipped_catalog) == before


def test_delete_removes_an_unused_profile_and_refuses_one_this_machine_uses(shipped_catalog: Path):
    assert cli(shipped_catalog, "create", "spare", "--extends", "base").exit_code == 0
    assert cli(shipped_catalog, "activate", "spare").exit_code == 0  # this machine (HOST=test-machine) is undeclared
    before = everything(shipped_catalog)
    refused = cli(shipped_catalog, "delete", "spare")
    assert refused.exit_code == 1
    assert f"{config_file()}:1:18: error[E701]: profile 'spare' cannot be deleted: this machine activates it" \
        in refused.stderr
    assert everything(shipped_catalog) == before
    assert cli(shipped_catalog, "deactivate", "spare").exit_code == 0
    result = cli(shipped_catalog, "delete", "spare")
    assert result.exit_code == 0, result.output
    assert not (shipped_catalog / "profiles" / "spare.yaml").exists()
    assert "spare" not in cli(shipped_catalog, "list").stdout


# --------------------------------------------------------------------------- export, import

def test_export_delete_import_gives_the_same_bytes(shipped_catalog: Path, tmp_path: Path):
    assert cli(shipped_catalog, "create", "quick", "--extends", "coding", "--set", "roles.chat.required=true"
               ).exit_code == 0
    path = shipped_catalog / "profiles" / "quick.yaml"
    path.write_text("# kept by the round trip\n" + path.read_text())
    original = path.read_bytes()
    stdout = cli(shipped_catalog, "export", "quick")
    assert stdout.exit_code == 0 and stdout.stdout.encode() == original
    exported = tmp_path / "quick-export.yaml"
    assert cli(shipped_catalog, "export", "quick", "-o", str(exported)).exit_code == 0
    assert exported.read_bytes() == original
    assert cli(shipped_catalog, "delete", "quick").exit_code == 0 and not path.exists()
    result = cli(shipped_catalog, "import", str(exported))
    assert result.exit_code == 0, result.output
    assert path.read_bytes() == original


def test_export_adds_the_name_a_file_left_to_its_file_name(shipped_catalog: Path, tmp_path: Path):
    assert cli(shipped_catalog, "create", "spare", "--extends", "base").exit_code == 0
    path = shipped_catalog / "profiles" / "spare.yaml"
    path.write_text(path.read_text().replace("name: spare\n", ""))
    exported = cli(shipped_catalog, "export", "spare").stdout
    assert exported == "schema_version: 2\nkind: profile\nname: spare\nextends: [base]\n"
    (tmp_path / "elsewhere.yaml").write_text(exported)
    assert cli(shipped_catalog, "delete", "spare").exit_code == 0
    imported = cli(shipped_catalog, "import", str(tmp_path / "elsewhere.yaml"))
    assert imported.exit_code == 0, imported.output
    assert path.read_text() == exported, "named by its `name`, not by the imported file's name"


def test_export_resolved_needs_no_other_profile(shipped_catalog: Path):
    import yaml
    data = yaml.safe_load(cli(shipped_catalog, "export", "coding", "--resolved").stdout)
    assert "extends" not in data and data["kind"] == "profile" and data["name"] == "coding"
    assert data["selection"] == {"max_fallbacks": 3}


def test_import_refuses_an_existing_profile_unless_forced(shipped_catalog: Path, tmp_path: Path):
    exported = tmp_path / "coding.yaml"
    exported.write_bytes((shipped_catalog / "profiles" / "coding.yaml").read_bytes().replace(
        b"speed_min: 3", b"speed_min: 2"))
    before = everything(shipped_catalog)
    refused = cli(shipped_catalog, "import", str(exported))
    assert refused.exit_code == 1
    assert "profiles/coding.yaml:3:1: error[E700]: profile 'coding' already exists" in refused.stderr
    assert everything(shipped_catalog) == before
    forced = cli(shipped_catalog, "import", str(exported), "--force")
    assert forced.exit_code == 0, forced.output
    assert (shipped_catalog / "profiles" / "coding.yaml").read_bytes() == exported.read_bytes()


@pytest.mark.parametrize("text, message", [
    ("schema_version: 2\nkind: profile\nname: other\nextends: [nosuch]\n", ":4:11: error[E206]"),
    ("schema_version: 2\nkind: profile\nname: other\nroles:\n  chat:\n    strategy: fastest\n", ":6:5: error[E103]"),
    ("schema_version: 2\nkind: catalog\nname: other\n", ":2:1: error[E702]: not a profile"),
    ("schema_version: 2\nkind: profile\n", ":1:1: error[E702]: a profile to import needs a `name`"),
    ("schema_version: 2\nkind: profile\nname: ../../escape\n", ":3:1: error[E702]"),
    ("schema_version: 2\nkind: profile\nname: [broken\n", ":4:1: error[E0"),
])
def test_an_import_that_would_break_the_catalog_writes_nothing(shipped_catalog: Path, tmp_path: Path,
                                                               text: str, message: str):
    file = tmp_path / "incoming.yaml"
    file.write_text(text)
    before = everything(shipped_catalog)
    result = cli(shipped_catalog, "import", str(file))
    assert result.exit_code == 1, result.output
    assert f"{file}{message}" in result.stderr, "the diagnostic names the file being imported"
    assert everything(shipped_catalog) == before


# ----------------------------------------------------------------------- activate, deactivate

def test_activate_edits_a_declared_hosts_profiles_and_deactivate_restores_it(shipped_catalog: Path,
                                                                             tmp_path: Path):
    hosts = shipped_catalog / "sources" / "hosts.yaml"
    original = hosts.read_text()
    result = cli(shipped_catalog, "activate", "research", "--host", "laptop-32")
    assert result.exit_code == 0, result.output
    after = hosts.read_text()
    assert [line for line in after.splitlines() if line not in original.splitlines()] == \
        ["    profiles: [coding, writing, research]"]
    assert len(after.splitlines()) == len(original.splitlines()), "comments and every other line kept"
    assert built_profiles(shipped_catalog, "laptop-32", tmp_path) == "base, coding, writing, research"
    again = cli(shipped_catalog, "activate", "research", "--host", "laptop-32")
    assert again.exit_code == 0 and "already active" in again.stderr
    assert hosts.read_text() == after
    assert cli(shipped_catalog, "deactivate", "research", "--host", "laptop-32").exit_code == 0
    assert hosts.read_text() == original
    twice = cli(shipped_catalog, "deactivate", "research", "--host", "laptop-32")
    assert twice.exit_code == 0 and "already inactive" in twice.stderr and hosts.read_text() == original


def test_activate_on_this_declared_machine_by_default(shipped_catalog: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOST", "laptop-8")
    assert cli(shipped_catalog, "activate", "coding").exit_code == 0
    assert "  laptop-8:\n    ram_gb: 8\n    profiles: [writing, coding]\n" in \
        (shipped_catalog / "sources" / "hosts.yaml").read_text()
    assert not config_file().exists()


def test_activate_refusals_write_nothing(shipped_catalog: Path):
    before = everything(shipped_catalog)
    unknown_host = cli(shipped_catalog, "activate", "coding", "--host", "laptop-61")
    assert unknown_host.exit_code == 2 and "unknown host 'laptop-61'; did you mean 'laptop-16'?" in unknown_host.stderr
    too_big = cli(shipped_catalog, "activate", "research", "--host", "edge-4")
    assert too_big.exit_code == 1
    assert "profiles/research.yaml:7:3: error[E300]: required role 'planner' cannot be served on host 'edge-4'" \
        in too_big.stderr and "nothing written" in too_big.stderr
    assert everything(shipped_catalog) == before


def test_activate_on_an_undeclared_machine_edits_the_users_config(shipped_catalog: Path, tmp_path: Path):
    config = config_file()
    config.parent.mkdir(parents=True)
    config.write_text("# my settings\nollama: {auto_start: true}  # start it for me\n")
    assert built_profiles(shipped_catalog, "local", tmp_path) == "base", "the default without a choice"
    result = cli(shipped_catalog, "activate", "writing")
    assert result.exit_code == 0, result.output
    assert config.read_text() == ("# my settings\nollama: {auto_start: true}  # start it for me\n"
                                  "profiles: [base, writing]\n")
    assert built_profiles(shipped_catalog, "local", tmp_path) == "base, writing"
    assert cli(shipped_catalog, "activate", "writing", "--host", "local").exit_code == 0
    assert config.read_text().endswith("profiles: [base, writing]\n"), "idempotent"
    assert cli(shipped_catalog, "deactivate", "base").exit_code == 0
    assert cli(shipped_catalog, "deactivate", "writing").exit_code == 0
    assert config.read_text().endswith("  # start it for me\nprofiles: []\n")
    assert built_profiles(shipped_catalog, "local", tmp_path) == "none", "an explicit empty choice is kept"


def test_a_config_naming_an_unknown_profile_fails_the_build_with_its_place(shipped_catalog: Path, tmp_path: Path):
    config = config_file()
    config.parent.mkdir(parents=True)
    config.write_text("profiles: [base, writng]\n")
    result = run_cli("-C", str(shipped_catalog), "build", "--host", "local", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert f"{config}:1:18: error[E704]: unknown profile 'writng'" in result.stderr
    assert "did you mean 'writing'?" in result.stderr
    assert not (tmp_path / "out").exists()
    config.write_text("profiles: writing\n")
    shape = run_cli("-C", str(shipped_catalog), "build", "--host", "local", "--out", str(tmp_path / "out"))
    assert shape.exit_code == 1 and f"{config}:1:1: error[E703]" in shape.stderr


def test_an_empty_or_comment_only_config_sets_nothing_and_keeps_its_comments(shipped_catalog: Path, tmp_path: Path):
    config = config_file()
    config.parent.mkdir(parents=True)
    config.write_text("# settings later\n")
    assert built_profiles(shipped_catalog, "local", tmp_path) == "base"
    assert cli(shipped_catalog, "activate", "coding").exit_code == 0
    assert config.read_text() == "# settings later\nprofiles: [base, coding]\n"


@pytest.mark.parametrize("name", ["123", "1.0", "true", "null", "0o17"])
def test_create_writes_a_name_yaml_would_read_as_another_type_as_a_string(shipped_catalog: Path, name: str):
    result = cli(shipped_catalog, "create", name, "--extends", "base")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    import yaml
    assert yaml.safe_load((shipped_catalog / "profiles" / f"{name}.yaml").read_text())["name"] == name
    listed = {row["name"]: row for row in json.loads(cli(shipped_catalog, "list", "--json").stdout)}
    assert listed[name]["extends"] == ["base"]
    again = cli(shipped_catalog, "create", f"{name}-child", "--extends", name)
    assert again.exit_code == 0, again.output
    assert yaml.safe_load((shipped_catalog / "profiles" / f"{name}-child.yaml").read_text())["extends"] == [name]


def test_activate_on_an_undeclared_machine_writes_such_a_name_as_a_string(shipped_catalog: Path):
    assert cli(shipped_catalog, "create", "2024", "--extends", "base").exit_code == 0
    result = cli(shipped_catalog, "activate", "2024")  # no config.yaml yet: the file is written whole
    assert result.exit_code == 0, result.output
    import yaml
    assert yaml.safe_load(config_file().read_text())["profiles"] == ["base", "2024"]
    again = cli(shipped_catalog, "deactivate", "2024")
    assert again.exit_code == 0, again.output
    assert yaml.safe_load(config_file().read_text())["profiles"] == ["base"]


def test_a_json_profile_without_a_name_exports_with_it_and_imports_back(shipped_catalog: Path, tmp_path: Path):
    path = shipped_catalog / "profiles" / "jp.json"
    path.write_text('{"schema_version": 2, "kind": "profile", "extends": ["base"]}\n')
    exported = tmp_path / "jp-export.json"
    assert cli(shipped_catalog, "export", "jp", "-o", str(exported)).exit_code == 0
    assert json.loads(exported.read_text()) == {"schema_version": 2, "kind": "profile", "name": "jp",
                                                "extends": ["base"]}
    assert list(json.loads(exported.read_text())) == ["schema_version", "kind", "name", "extends"]
    assert cli(shipped_catalog, "delete", "jp").exit_code == 0 and not path.exists()
    result = cli(shipped_catalog, "import", str(exported))
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text())["name"] == "jp"


def test_import_force_of_another_format_than_the_profiles_file_is_refused_clearly(shipped_catalog: Path,
                                                                                  tmp_path: Path):
    (shipped_catalog / "profiles" / "jq.json").write_text(
        '{"schema_version": 2, "kind": "profile", "name": "jq", "extends": ["base"]}\n')
    incoming = tmp_path / "jq.yaml"
    incoming.write_text("schema_version: 2\nkind: profile\nname: jq\nextends: [base]\n")
    before = everything(shipped_catalog)
    result = cli(shipped_catalog, "import", "--force", str(incoming))
    assert result.exit_code == 1
    assert "profiles/jq.json:1:" in result.stderr and "error[E700]" in result.stderr
    assert "JSON syntax error" not in result.stderr
    assert everything(shipped_catalog) == before
