"""Exports are data, never code (issue 9, findings 2 and 9): hostile values rendered straight into the
templates (bypassing validation) are quoted for each language -- the generated shell script is RUN
with a stub llama-server and must pass each value as exactly one argument and execute nothing -- or
refused with E215; validation refuses the unsafe names in the first place; importers skip them;
catalog templates that raise or loop end in E215 at their file and line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from compiler import exports, importers
from compiler.errors import InputError

from conftest import REPO, run_cli, tree_bytes

HOSTILE = [
    'q.gguf$(touch PWNED)"; touch PWNED2; echo "',
    "q.gguf'; touch PWNED; echo '",
    "q.gguf\ntouch PWNED\n",
    "`touch PWNED`.gguf",
    "-rf *.gguf",
    " spaced out .gguf ",
    'back\\slash\\" $HOME ${HOME} ~ !! %s.gguf',
    "\u6a21\u578b \u2603.gguf",
    "line\u2028sep\u0085nel\ttab\r.gguf",
    ")*) touch PWNED;; esac; touch PWNED #",
]
SHELLS = [shell for shell in ("sh", "bash", "dash") if shutil.which(shell)]


def hostile_document(value: str) -> dict:
    """A models.json-shaped document whose every name, number and comment text is `value`."""
    model_id, fallback_id = "m-" + value, "cloud-" + value
    return {
        "schema_version": 2, "profiles": ["base", value], "aliases": {value.lower(): model_id},
        "host": {"name": "box\n" + value, "ram_mb": 8192, "usable_mb": 6144, "gpus": [], "detected": False},
        "roles": {value: {"model": model_id, "fallbacks": [fallback_id], "placement": "gpu", "memory_mb": "1\n" + value,
                          "context": "4096; " + value, "workload": "chat", "flash_attention": False,
                          "kv_cache_type": "q8_0; " + value, "cpu_moe_layers": "3; " + value,
                          "tensor_split": [value, "1"]}},
        "models": {
            model_id: {"provider": "local", "workloads": ["chat"], "memory_mb": 100, "memory_method": "declared",
                       "name": value, "description": value, "license": value, "quantization": value,
                       "ollama": {"name": value}, "artifact": {"format": "gguf", "file": value}},
            fallback_id: {"provider": "openai", "workloads": ["chat"], "memory_mb": 0, "memory_method": "cloud",
                          "api_key_env": value},
        },
    }


@pytest.fixture(scope="module")
def stub_bin(tmp_path_factory) -> Path:
    """A folder with a `llama-server` that records its argv as JSON in $ARGV_OUT."""
    folder = tmp_path_factory.mktemp("stub-bin")
    stub = folder / "llama-server"
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "open(os.environ['ARGV_OUT'], 'w', encoding='utf-8').write(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    return folder


def run_script(shell: str, script: bytes, args: list[str], work: Path, stub_bin: Path):
    (work / "llama-server.sh").write_bytes(script)
    argv_out = work.parent / f"{work.name}.argv.json"
    argv_out.unlink(missing_ok=True)
    env = {"PATH": f"{stub_bin}{os.pathsep}{os.environ['PATH']}", "MODELS": "/models dir", "ARGV_OUT": str(argv_out),
           "HOME": str(work)}
    result = subprocess.run([shell, "llama-server.sh", *args], cwd=work, env=env, capture_output=True, timeout=20)
    argv = json.loads(argv_out.read_text(encoding="utf-8")) if argv_out.exists() else None
    return result, argv


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("value", HOSTILE, ids=[f"v{i}" for i in range(len(HOSTILE))])
def test_llama_server_script_passes_hostile_values_as_data(value: str, shell: str, stub_bin: Path, tmp_path: Path):
    script = exports.render(hostile_document(value), ["llamacpp"], None)["llama-server.sh"]
    work = tmp_path / "work"
    work.mkdir()
    result, argv = run_script(shell, script, [value, "--port", "$(touch PWNED)"], work, stub_bin)
    assert result.returncode == 0, result.stderr.decode()
    assert argv == ["-m", "/models dir/" + value, "-c", "4096; " + value, "-np", "1", "-ngl", "999", "--n-cpu-moe", "3; " + value,
                    "--tensor-split", value + ",1", "--flash-attn", "off", "-ctk", "q8_0; " + value,
                    "-ctv", "q8_0; " + value, "--alias", value, "--host", "127.0.0.1", "--port", "8080",
                    "--port", "$(touch PWNED)"], "each value is exactly one argument"
    assert sorted(os.listdir(work)) == ["llama-server.sh"], "the script created nothing: no command ran"
    assert not list(tmp_path.rglob("PWNED*"))

    result, argv = run_script(shell, script, ["no-such-role"], work, stub_bin)
    assert result.returncode == 2 and argv is None and b"usage:" in result.stderr
    assert sorted(os.listdir(work)) == ["llama-server.sh"]


def test_shipped_llama_server_script_runs_each_role(stub_bin: Path, tmp_path: Path):
    script = (REPO / "out" / "workstation" / "exports" / "llama-server.sh").read_bytes()
    assert exports.is_executable(script), "the build writes scripts executable"
    assert not exports.is_executable(b"# Models on x\n")
    work = tmp_path / "work"
    work.mkdir()
    result, argv = run_script("sh", script, ["planner"], work, stub_bin)
    assert result.returncode == 0
    planner = json.loads((REPO / "out" / "workstation" / "models.json").read_text())["roles"]["planner"]
    assert planner["placement"] == "split" and planner["cpu_moe_layers"] > 0
    # gpt-oss-120b split over the 24 GB card: every layer on the GPU but the experts of the first N
    assert argv == ["-m", "/models dir/gpt-oss-120b-mxfp4-00001-of-00003.gguf", "-c", "16384", "-np", "1", "-ngl", "999",
                    "--n-cpu-moe", str(planner["cpu_moe_layers"]), "--flash-attn", "on", "-ctk", "f16", "-ctv", "f16",
                    "--alias", "planner", "--host", "127.0.0.1", "--port", argv[-1]]
    assert int(argv[-1]) >= exports.LLAMA_SERVER_PORT


def modelfile_commands(text: str) -> list[tuple[str, str]]:
    """Ollama's reading of a Modelfile of one-line commands (parser/parser.go: a command ends at a line
    break, outer spaces are trimmed, one pair of double quotes is removed, `#` lines are comments)."""
    commands = []
    for line in re.split(r"[\r\n]", text):
        if not line.strip(" \t") or line.lstrip(" \t").startswith("#"):
            continue
        name, _, value = line.lstrip(" \t").partition(" ")
        value = "".join(c for c in value if c.isprintable()).strip()
        assert not value.startswith('"""'), "a triple quote would swallow the following lines"
        if value.startswith('"'):
            assert len(value) >= 2 and value.endswith('"'), "an open quote would swallow the following lines"
            value = value[1:-1]
        commands.append((name.upper(), value))
    return commands


@pytest.mark.parametrize("value", HOSTILE, ids=[f"v{i}" for i in range(len(HOSTILE))])
def test_modelfile_holds_the_value_or_refuses_it(value: str):
    document = hostile_document(value)
    document["roles"][value]["context"] = 4096
    try:
        files = exports.render(document, ["ollama"], None)
    except InputError as exc:
        (problem,) = exc.diagnostics
        assert not value.isprintable(), "only what a Modelfile cannot hold is refused"
        assert (problem.code, problem.path, problem.line) == ("E215", "compiler/templates/ollama.Modelfile.j2", 5)
        assert "a Modelfile value must be one non-empty line" in problem.message
        return
    (text,) = files.values()
    assert modelfile_commands(text.decode()) == [("FROM", "./" + value), ("PARAMETER", "num_ctx 4096")]


@pytest.mark.parametrize("value", HOSTILE + ["\ud800 lone surrogate"], ids=[f"v{i}" for i in range(len(HOSTILE) + 1)])
def test_litellm_config_loads_back_as_the_values(value: str):
    text = exports.render(hostile_document(value), ["litellm"], None)["litellm-config.yaml"].decode()
    config = yaml.safe_load(text)
    assert set(config) == {"general_settings", "model_list", "router_settings"}, "the comment stayed a comment"
    local, cloud = config["model_list"]
    # a role llama-server.sh serves (no runtime recorded: llama.cpp) goes to its server, by its alias
    assert local["model_name"] == value
    assert local["litellm_params"] == {"model": "openai/" + value, "api_base": "http://127.0.0.1:8080/v1"}
    document = hostile_document(value)
    document["roles"][value]["runtime"] = "ollama"  # one Ollama runs: by the model's Ollama name
    ollama = yaml.safe_load(exports.render(document, ["litellm"], None)["litellm-config.yaml"].decode())
    assert ollama["model_list"][0]["litellm_params"]["model"] == "ollama_chat/" + value
    assert cloud["model_name"] == f"{value}/cloud-{value}"
    assert cloud["litellm_params"] == {"model": f"openai/cloud-{value}", "api_key": "os.environ/" + value}
    assert config["router_settings"]["fallbacks"] == [{value: [f"{value}/cloud-{value}"]}]


def test_a_value_no_file_can_hold_is_e215_not_a_traceback():
    with pytest.raises(InputError) as caught:
        exports.render(hostile_document("\ud800"), ["llamacpp"], None)
    (problem,) = caught.value.diagnostics
    assert problem.code == "E215" and "UnicodeEncodeError" in problem.message
    assert problem.path == "compiler/templates/llama-server.sh.j2"


def test_models_md_shows_values_as_text_never_markup():
    from markdown_it import MarkdownIt

    value = "a | b |\n# Heading\n<img src=x onerror=alert(1)> *bold* _em_ [link](http://x) &amp; `code` ~~s~~"
    document = hostile_document(value)
    document["roles"][value]["memory_mb"] = 1024
    text = exports.render(document, ["models-md"], None)["MODELS.md"].decode()
    html = MarkdownIt("commonmark").enable("table").render(text)
    for markup in ("<img", "<em>", "<strong>", "<a ", "<code>", "<s>", "<h1>Heading"):
        assert markup not in html.replace("&lt;img", ""), markup
    assert html.count("<h1>") == 1 and html.count("<h2>") == 1 and html.count("<h3>") == 2
    assert len(re.findall(r"<tr>", html)) == 2 and html.count("<td>") == 5, "one row of five cells"
    shown = value.replace("\n", " ").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert shown in html, "the description reads as written, on one line"


# ------------------------------------------------------------------- validation and importers

UNSAFE = [  # field, value, code
    ("file", 'q.gguf$(touch PWNED)"; touch PWNED2; echo "', "E204"),
    ("file", "q.gguf\ntouch PWNED", "E204"),
    ("file", "-rf.gguf", "E204"),
    ("file", "model file.gguf", "E204"),
    ("ollama", "llama3; touch PWNED", "E230"),
    ("ollama", "llama3\n", "E230"),
    ("revision", "main$(touch PWNED)", "E231"),
    ("alias", "tiny`touch PWNED`", "E232"),
    ("url", "https://example.com/a b.gguf", "E233"),
    ("url_template", "https://example.com/{repo}/`touch PWNED`", "E233"),
]
LAYERS = {  # each value on line 6; a mapping value is reported at its key (column 7), a list item at itself
    "file": ("    artifact:\n      file: {}\n", 7),
    "ollama": ("    ollama:\n      name: {}\n", 7),
    "revision": ("    artifact:\n      revision: {}\n", 7),
    "alias": ("    aliases:\n      - {}\n", 9),
    "url": ("    artifact:\n      url: {}\n", 7),
    "url_template": ("    artifact:\n      url_template: {}\n", 7),
}


@pytest.mark.parametrize("command", [("validate",), ("build", "--all")], ids=["validate", "build"])
@pytest.mark.parametrize(("field", "value", "code"), UNSAFE, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(UNSAFE)])
def test_unsafe_names_are_refused_at_their_position(base_catalog: Path, field, value, code, command):
    layer, col = LAYERS[field]
    (base_catalog / "sources" / "20-evil.yaml").write_text(
        "schema_version: 2\nkind: catalog\nmodels:\n  small-chat:\n" + layer.format(json.dumps(value)))
    result = run_cli("-C", str(base_catalog), *command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [x for x in result.stderr.splitlines() if "error[" in x][0].startswith(
        f"sources/20-evil.yaml:6:{col}: error[{code}]: ")
    assert "hint: " in result.stderr
    assert not (base_catalog / "out").exists()


def test_discovered_ollama_names_are_checked_too(base_catalog: Path, monkeypatch):
    from ollama_server import FakeOllama

    server = FakeOllama(installed={"llama3; touch PWNED:latest": {"size": 1000, "show": None}}).start()
    try:
        monkeypatch.setenv("OLLAMA_HOST", server.base)
        result = run_cli("-C", str(base_catalog), "build", "--discover")
    finally:
        server.stop()
    assert result.exit_code == 1 and "error[E230]: Ollama name 'llama3; touch PWNED:latest' contains" in result.stderr
    assert not (base_catalog / "out").exists()


def test_importers_skip_unsafe_names_and_say_so(tmp_path: Path):
    safe = {"name": "Safe", "filename": "safe-q4_0.gguf", "url": "https://example.com/safe-q4_0.gguf"}
    hostile = {"name": "Evil\x1b[2J", "filename": 'q.gguf$(touch PWNED)"; echo "'}
    spaced = {"name": "Spaced", "filename": "ok.gguf", "url": "https://example.com/a b.gguf"}
    path = tmp_path / "models3.json"
    path.write_text(json.dumps([safe, hostile, spaced]))
    result = importers.run("gpt4all", path, "models3.json")
    assert list(result.models) == ["safe-q4_0"]
    summary = result.summary()
    assert "unsafe artifact file name (allowed: letters, digits and . _ + -): Evil\\x1b[2J" in summary
    assert "unsafe download URL (spaces, quotes, control or non-ASCII characters): Spaced" in summary
    assert "\x1b" not in summary

    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps([{"ID": "ok", "Filename": "ok.gguf"}, {"ID": "bad", "Filename": "a\nb.gguf"}]))
    assert list(importers.run("registry", registry, "registry.json").models) == ["ok"]
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"ollama/llama3": {"mode": "chat", "litellm_provider": "ollama"},
                                  "ollama/x$(id)": {"mode": "chat", "litellm_provider": "ollama"}}))
    converted = importers.run("litellm", prices, "prices.json")
    assert list(converted.models) == ["ollama-llama3"] or len(converted.models) == 1
    assert "unsafe Ollama name" in converted.summary()


# ------------------------------------------------------------------------ catalog templates

BROKEN = [  # template, what the message says, line
    ("line one\n{% for a in range(10**400) %}{% endfor %}\n", "OverflowError", 2),
    ("{% for a in range(100001) %}{% endfor %}", "range() of 100,001 items", 1),
    ("\n\n{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}", "range() steps", 3),
    ("{{ 'x' * 10**9 }}", "too large for a template", 1),
    ("{% for a in [0] * 10**7 %}{% endfor %}", "too large for a template", 1),
    ("{{ 10 ** 100000 }}", "too large for a template", 1),
    ("{% for a in range(10000) %}{{ 'x' * 10000 }}{% endfor %}", "output larger than 16 MiB", 0),  # line unknown
    ("ok\n{{ 1 / 0 }}", "ZeroDivisionError", 2),
    ("{{ '%d' | format(10.0 ** 400) }}", "OverflowError", 1),
    ("{{ '%q' | format(1) }}", "ValueError", 1),
    ("{{ host.name | sh }}\n{{ '\\x00' | sh }}", "a shell word cannot hold a NUL", 2),
    ("{% for %}", "Expected an expression", 1),
]


@pytest.mark.parametrize(("template", "message", "line"), BROKEN, ids=[f"t{i}" for i in range(len(BROKEN))])
def test_catalog_template_failures_are_e215_at_their_line(base_catalog: Path, template, message, line):
    (base_catalog / "templates").mkdir()
    (base_catalog / "templates" / "bad.txt.j2").write_text(template)
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               "box-8: {ram_gb: 8, profiles: [base], exports: [bad.txt]}"))
    before = tree_bytes(base_catalog / "out")
    started = time.monotonic()
    result = run_cli("-C", str(base_catalog), "build", "--all")
    assert time.monotonic() - started < 20, "bounded: no template runs on"
    assert result.exit_code == 1 and "Traceback" not in result.output
    where = f"templates/bad.txt.j2:{line}:0:" if line else "templates/bad.txt.j2:"
    assert f"{where} error[E215]: export 'bad.txt' cannot be rendered" in result.stderr
    assert message in result.stderr
    assert tree_bytes(base_catalog / "out") == before


def test_bounded_range_still_behaves_as_range(base_catalog: Path):
    (base_catalog / "templates").mkdir()
    (base_catalog / "templates" / "r.txt.j2").write_text(
        "{{ range(3) | length }} {{ range(5)[1:3] | list }} {{ range(4) | reverse | list }} {{ 2 in range(3) }} "
        "{{ range(2, 8, 3) | list }} {{ 'ab' * 3 }} {{ 2 ** 10 }} {{ range(3) | sum }}\n")
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               "box-8: {ram_gb: 8, profiles: [base], exports: [r.txt]}"))
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    assert (base_catalog / "out" / "box-8" / "exports" / "r.txt").read_text() == \
        "3 [1, 2] [3, 2, 1, 0] True [2, 5] ababab 1024 3\n"


def test_filters_round_trip_on_random_hostile_text():
    """Seeded fuzz of each filter against its language's reader: shlex (POSIX shell words), PyYAML,
    the Modelfile reading above; Markdown output stays one line with its markup escaped."""
    import random
    import shlex

    alphabet = list("ab. _-$`'\"\\;|&<>*#()[]{}~!\n\r\t\x00\x1b\x85\u2028\u00e9\u2603") + ["\U0001f600", '"""']
    rng = random.Random(9)
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        assert yaml.safe_load("key: " + exports.yaml(value)) == {"key": value}, value
        if "\0" in value:
            with pytest.raises(exports.Unexpressible):
                exports.sh(value)
        else:
            assert shlex.split(exports.sh(value)) == [value], value
        try:
            line = exports.modelfile("./" + value)
        except exports.Unexpressible:
            assert not ("./" + value).isprintable()
        else:
            assert modelfile_commands("FROM " + line + "\n") == [("FROM", "./" + value)], value
        shown = exports.md(value)
        assert shown.isprintable() and not re.search(r"(?<!\\)[|*<>`\[\]]", shown), (value, shown)
        assert exports.oneline(value).isprintable()
