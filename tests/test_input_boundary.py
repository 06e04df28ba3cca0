"""The input boundary (issue 9): numbers and strings a JSON reader cannot hold, special files
and dangling links, shapes the schema rejected, malformed diff inputs, the last-resort
translation in cli.run, and diagnostics whose cost stays linear in their number.
(tests/fixtures/bad/ holds the whole-catalog cases, reported by build and validate alike.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, add_layer, run_cli
from compiler import cli, validate
from compiler.errors import EXIT_RUNTIME, Diagnostic, LoadError
from compiler.load import load_json_text, load_yaml_text

MAX_NUMBER = 2 ** 53 - 1  # the largest integer every JSON reader holds exactly (compiler.load.MAX_NUMBER)
HUGE = "9" * 4301  # one digit past Python's int-from-string limit


def refused(load, text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(LoadError) as exc:
        load(text, "f")
    return [(d.line, d.col, d.code) for d in exc.value.diagnostics]


@pytest.mark.parametrize("text, where", [
    ("v: .nan\n", (1, 4)), ("v: -.Inf\n", (1, 4)), ("v: 1e400\n", (1, 4)), ("v: !!float .nan\n", (1, 4)),
    (f"v: {HUGE}\n", (1, 4)), ("v: 0x" + "f" * 30 + "\n", (1, 4)), (f"v: [1, {MAX_NUMBER + 1}]\n", (1, 8)),
    ("1e400: x\n", (1, 1)),
])
def test_yaml_numbers_that_are_not_finite_or_out_of_range_are_refused_at_their_position(text, where):
    assert refused(load_yaml_text, text) == [(*where, "E016")]


@pytest.mark.parametrize("text, where", [
    ('{"v": NaN}', (1, 7)), ('{"v": -Infinity}', (1, 7)), ('{"v": 1e400}', (1, 7)),
    (f'{{"v": {HUGE}}}', (1, 7)), (f'{{"v":\n  [1, {-MAX_NUMBER - 1}]}}', (2, 7)), ('{"v": [[1, [NaN]]]}', (1, 13)),
])
def test_json_numbers_that_are_not_finite_or_out_of_range_are_refused_at_their_position(text, where):
    assert refused(load_json_text, text) == [(*where, "E016")]


def test_numbers_at_the_edge_of_the_range_load():
    values = f"[{MAX_NUMBER}, {-MAX_NUMBER}, 1e15, 1e-300, 0.5]"
    assert load_yaml_text(f"v: {values}\n", "f").data["v"] == load_json_text(f'{{"v": {values}}}', "f").data["v"]


def test_lone_surrogates_are_refused_where_they_are_written(monkeypatch):
    assert refused(load_json_text, '{"a": "ok \\ud83d\\ude00",\n "b": ["x", "half \\ud83d"]}') == [(2, 13, "E017")]
    assert refused(load_json_text, '{"\\udc00": 1}') == [(1, 2, "E017")]
    # libyaml refuses such escapes itself; the pure-Python parser (no libyaml) lets them through
    import yaml
    monkeypatch.setattr(yaml, "__with_libyaml__", False)
    assert refused(load_yaml_text, 'a: ok\nb: "x\\ud800"\n') == [(2, 4, "E017")]


@pytest.mark.parametrize("text", ['{"a": {"x": 1, "x": 2}}}', '[{"x": 1, "x": 2}], ]]]', '{"a": {"x": 1, "x": 2}}, 1',
                                  '{"a": {"x": 1, "x": 2}, :'])
def test_json_duplicate_key_before_a_syntax_error_reports_both(text):
    assert [code for _, _, code in refused(load_json_text, text)] == ["E003", "E002"]


# ------------------------------------------------------------------ special files, links

def hostfit(catalog: Path, *args: str) -> subprocess.CompletedProcess:
    """A separate process with a deadline: a command that hangs fails the test instead of the suite."""
    return subprocess.run([sys.executable, "-m", "compiler.cli", "-C", str(catalog), *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifos_and_sockets_in_the_catalog_are_refused_without_being_opened(base_catalog: Path, monkeypatch):
    os.mkfifo(base_catalog / "profiles" / "pipe.yaml")
    listener = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(base_catalog)  # an AF_UNIX path is limited to ~100 bytes: bind by a relative name
    try:
        listener.bind("sources/20-socket.json")
        for command in (("validate",), ("build", "--all"), ("migrate",)):
            result = hostfit(base_catalog, *command)
            assert result.returncode == 1, result.stderr
            assert "profiles/pipe.yaml: error[E018]: a FIFO (named pipe), not a regular file" in result.stderr
            assert "sources/20-socket.json: error[E018]: a socket, not a regular file" in result.stderr
            assert "Traceback" not in result.stderr
    finally:
        listener.close()


def test_a_dangling_symlink_in_sources_is_an_error_naming_it(base_catalog: Path):
    (base_catalog / "sources" / "20-moved.yaml").symlink_to("../elsewhere/20-moved.yaml")
    for command in (("validate",), ("build", "--all")):
        result = run_cli("-C", str(base_catalog), *command)
        assert result.exit_code == 1
        assert result.stderr.startswith("sources/20-moved.yaml: error[E019]: a symbolic link to "
                                        "'../elsewhere/20-moved.yaml', which does not exist")


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="file names there are always Unicode")
def test_a_file_name_that_is_not_utf8_is_an_error_not_a_crash(base_catalog: Path):
    """Its name would go into explain.json's provenance, which must be UTF-8."""
    (base_catalog / os.fsdecode(b"sources/20-caf\xe9.yaml")).write_text("schema_version: 2\nkind: catalog\n")
    result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 1
    assert "20-caf\\udce9.yaml: error[E020]: the file name is not valid UTF-8" in result.stderr


# ----------------------------------------------------- shapes the schema has already rejected

@pytest.mark.parametrize("setting", ["models=5", "models=[1]", "roles=5", "roles.chat.prefer=5",
                                     "models.small-chat.aliases=5", "models.small-chat.artifact.mirrors=5",
                                     "models.small-chat.params_b=1e300"])
def test_a_wrong_shape_is_one_diagnostic_not_a_crash(base_catalog: Path, setting: str):
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8", "--set", setting)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error[" in line]
    assert len(errors) == 1 and errors[0].startswith("--set "), result.stderr


def test_user_layer_with_wrong_shapes_is_reported(base_catalog: Path):
    add_layer(base_catalog, "mine.yaml", "models: 5\nroles: {chat: {prefer: 3}}\n", folder=".")
    hosts = base_catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8,", "box-8: {ram_gb: 8, user: [mine.yaml],"))
    result = run_cli("-C", str(base_catalog), "build", "--host", "box-8")
    assert result.exit_code == 1
    assert [line.split(": ")[0] for line in result.stderr.splitlines() if "error[" in line] == [
        "mine.yaml:3:1", "mine.yaml:4:16"]


# ------------------------------------------------------------------ linear diagnostics

def unknown_fields(catalog: Path, count: int) -> None:
    lines = ["models:", "  small-chat:"] + [f"    zz{i}: 1" for i in range(count)]
    add_layer(catalog, "20-junk.yaml", "\n".join(lines) + "\n")


def test_many_unknown_fields_cost_linear_work(base_catalog: Path, monkeypatch):
    """10,000 unknown fields took 10.8 s (a list search per diagnostic: n^2/2 comparisons, and a
    difflib guess for each); count the work rather than time it."""
    from compiler.pipeline import Project

    count = 5000
    unknown_fields(base_catalog, count)
    calls = {"compare": 0, "guess": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(Diagnostic, "__eq__", counted("compare", Diagnostic.__eq__))
    monkeypatch.setattr(Diagnostic, "__lt__", counted("compare", Diagnostic.__lt__))
    monkeypatch.setattr(validate, "did_you_mean", counted("guess", validate.did_you_mean))
    report = Project(base_catalog).validate()
    assert len(report.errors) == count
    assert calls["compare"] < 40 * count  # a few sorts (n log n); the list search made 12,500,000
    assert calls["guess"] <= 100  # a did-you-mean each for a few typos, not for thousands


def test_many_unknown_model_references_do_not_each_search_every_model(base_catalog: Path, monkeypatch):
    """3,000 unknown references among 5,000 models took 130 s: a difflib search of every id per reference."""
    from compiler.pipeline import Project

    models = "".join(f"  model-{i}: {{provider: local, workloads: [chat]}}\n" for i in range(500))
    refs = "".join(f"      - nope-{i}\n" for i in range(1000))
    add_layer(base_catalog, "20-refs.yaml", f"models:\n{models}roles:\n  chat:\n    prefer:\n{refs}")
    guesses = []
    monkeypatch.setattr(validate, "did_you_mean", lambda word, choices: guesses.append(word))
    report = Project(base_catalog).validate()
    assert sum(e.code == "E200" for e in report.errors) == 1000
    assert len(guesses) <= 100


def test_twenty_thousand_unknown_fields_are_counted_and_capped(base_catalog: Path):
    unknown_fields(base_catalog, 20_000)
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1
    assert result.stderr.count("error[E101]") == 50
    assert "... and 19950 more\n20000 errors" in result.stderr


# ------------------------------------------------------------------------------ diff inputs

def models_json(base_catalog: Path, tmp_path: Path) -> Path:
    assert run_cli("-C", str(base_catalog), "build", "--all", "-q", "--out", str(tmp_path / "out")).exit_code == 0
    return tmp_path / "out" / "box-8" / "models.json"


BROKEN = {
    "a list": lambda d: [d],
    "roles as strings": lambda d: {**d, "roles": {"chat": "big-chat"}},
    "models as a list": lambda d: {**d, "models": [1]},
    "fallbacks not a list": lambda d: {**d, "roles": {"chat": {**d["roles"]["chat"], "fallbacks": 5}}},
    "memory as text": lambda d: {**d, "roles": {"chat": {**d["roles"]["chat"], "memory_mb": "a lot"}}},
    "host name a list": lambda d: {**d, "host": {**d["host"], "name": ["box-8"]}},
    "a NaN": lambda d: {**d, "roles": {"chat": {**d["roles"]["chat"], "model": float("nan")}}},
    "a newer version": lambda d: {**d, "schema_version": 3},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_diff_of_a_malformed_models_json_is_a_diagnostic(base_catalog: Path, tmp_path: Path, case: str):
    good = models_json(base_catalog, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(BROKEN[case](json.loads(good.read_text()))))
    result = run_cli("diff", str(good), str(bad), "--format", "json")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"{bad}:1:") and "error[E" in result.stderr
    assert result.stdout == ""  # in particular, no NaN in what claims to be JSON
    assert run_cli("diff", str(good), str(bad), "--exit-code").exit_code == 2  # 1 would read as "changed"


def test_diff_of_an_empty_or_truncated_file_is_a_diagnostic(base_catalog: Path, tmp_path: Path):
    good = models_json(base_catalog, tmp_path)
    for name, text in (("empty.json", ""), ("cut.json", good.read_text()[:300])):
        (tmp_path / name).write_text(text)
        result = run_cli("diff", str(good), str(tmp_path / name))
        assert result.exit_code == 1 and f"{tmp_path / name}:" in result.stderr


# ---------------------------------------------------------------- the last-resort boundary

def exit_of(action, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli.run(action)
    return exc.value.code, capsys.readouterr().err


def test_os_and_memory_errors_no_stage_translated_exit_3_naming_the_path(capsys):
    def full_disk():
        raise OSError(28, "No space left on device", "/data/out/box-8/models.json")

    def denied():
        raise PermissionError(13, "Permission denied", "/data/out")

    def too_big():
        raise MemoryError

    assert exit_of(full_disk, capsys) == (
        EXIT_RUNTIME, "hostfit: error: /data/out/box-8/models.json: No space left on device\n")
    assert exit_of(denied, capsys) == (EXIT_RUNTIME, "hostfit: error: /data/out: Permission denied\n")
    assert exit_of(too_big, capsys) == (EXIT_RUNTIME, "hostfit: error: out of memory\n")


def test_a_bug_is_not_hidden_by_the_boundary():
    """Anything else is hostfit's own fault: it keeps its traceback (and fails the tests that meet it)."""
    def bug():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.run(bug)


def test_diff_git_without_git_installed_is_a_usage_error(base_catalog: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(base_catalog / "no-bin"))
    result = run_cli("-C", str(base_catalog), "diff", "--git", "HEAD")
    assert result.exit_code == 2
    assert result.stderr.startswith("hostfit: error: --git needs git: No such file or directory")


def test_a_reader_that_closes_the_pipe_is_no_error():
    """`hostfit ... | head -1`: the reader went away, which is no failure of hostfit's (it was one,
    "hostfit: error: Broken pipe", exit 3): quiet, with the shell's status for it, 141."""
    import subprocess
    import sys

    script = ("import os\nfrom compiler import cli\n"  # os.write: the EPIPE arrives at a known write
              "def action():\n    for _ in range(1000):\n        os.write(1, b'x' * 65536)\n    return 0\n"
              "cli.run(action)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.read(1)
    child.stdout.close()  # as `head -c 1` does
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=30) == 141 and stderr == "", stderr


@pytest.mark.parametrize("body, found", [("5\n", "a scalar (integer)"), ("hello\n", "a scalar (string)"),
                                         ("- a\n", "a list")])
def test_a_top_level_that_is_not_a_mapping_is_named_in_yaml_words(base_catalog: Path, body: str, found: str):
    (base_catalog / "sources" / "50-odd.yaml").write_text(body)
    result = run_cli("-C", str(base_catalog), "validate")
    assert result.exit_code == 1 and f"error[E009]: the top level must be a mapping, found {found}" in result.stderr
