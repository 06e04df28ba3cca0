"""examples/ansible run by ansible-core against localhost (-i localhost, -c local), offline, in a
temporary HOME and XDG folders, the artifact served from 127.0.0.1.

The main test clones a catalog repository like this one (the package source beside sources/,
profiles/ and a compiled out/) from a local path: the first run installs and applies (changed), the
second changes nothing (changed=0), --check skips apply, and a run after models.json was removed
reports exactly the apply task as changed; a new commit whose pip install fails fails the run and
leaves no hostfit behind, so the next run installs again. The second test copies a catalog folder
from the controller; the third runs the role's hostfit_apply.py alone.

The role pip-installs hostfit into its venv; here that venv is made beforehand the way
test_installed makes one (without pip, lent this environment's dependencies, hostfit's editable
install left out), and pip runs with --no-index --no-deps --no-build-isolation: the real wheel is
built from the checkout and installed in seconds without the network, where a host would download
the dependencies from the package registry. Here, on 2 cores at load 7: 61 s and 45 s (the copy is
one module call per file), 45 s of CPU for the whole file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_fetch import BLOB, SHA, compiled, server  # noqa: F401 - fixtures
from test_installed import PACKAGE_FILES, lent_dependencies, work  # noqa: F401 - fixtures

PLAYBOOK = REPO / "examples" / "ansible" / "site.yml"
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
APPLY_TASK = "TASK [hostfit : Apply the compiled catalog (hostfit apply)]"


def ansible_playbook() -> str:
    try:
        import ansible  # noqa: F401 - ansible-core, from the test extra
    except ImportError as error:
        pytest.skip(f"ansible-core cannot be imported ({error}): install the test extra")
    return str(Path(sys.executable).with_name("ansible-playbook"))


def catalog_repository(catalog: Path, target: Path, env: dict) -> Path:
    """A git repository like this one, as a team's catalog repository: the package source beside
    the catalog and its compiled out/ (.gitignore's exclusions kept)."""
    target.mkdir()
    for name in (*PACKAGE_FILES, ".gitignore"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, target / name)
    for name in ("sources", "profiles", "out"):
        shutil.copytree(catalog / name, target / name)
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "catalog"]):
        git(target, env, *command)
    return target


def git(repository: Path, env: dict, *command: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@127.0.0.1", *command], cwd=repository,
                   env=env, check=True, timeout=60, capture_output=True)


def venv_with_lent_dependencies(venv: Path, lent: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (purelib / "lent.pth").write_text(f"{lent}\n")


def play(env: dict, extra: Path, tmp_path: Path, *options: str, rc: int = 0) -> tuple[dict, str]:
    command = [ansible_playbook(), "-i", "localhost,", "-c", "local", str(PLAYBOOK), "-e", f"@{extra}", *options]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == rc, output
    (recap,) = RECAP.findall(output)
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, recap))), output


def apply_status(output: str) -> str:
    """How the apply task ended: the first status line after its header (ok, changed, failed...)."""
    after = output.split(APPLY_TASK, 1)[1]
    return re.search(r"^(\w+): \[localhost\]", after, re.M).group(1)


def host_environment(tmp_path: Path, venv: Path, lent: Path) -> dict:
    """The environment ansible-playbook (and so every task, over the local connection) runs in:
    a temporary HOME and XDG folders, nothing of this process's Python, pip or Ansible settings."""
    venv_with_lent_dependencies(venv, lent)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "ANSIBLE_", "XDG_", "HOSTFIT_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
               XDG_CACHE_HOME=str(tmp_path / "xdg-cache"), XDG_DATA_HOME=str(tmp_path / "xdg-data"),
               HOST="test-machine", HOSTFIT_BACKOFF_BASE="0.01", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_PIPELINING="1")  # modules on stdin: no temporary files
    return env


def test_playbook_installs_applies_and_is_idempotent(base_catalog, server, tmp_path, work, lent_dependencies):  # noqa: F811
    ansible_playbook()  # skipped here, before any work, where ansible-core is missing
    catalog = compiled(base_catalog, server)
    home = tmp_path / "home"
    venv = home / ".local" / "share" / "hostfit" / "venv"  # the role's default place
    env = host_environment(tmp_path, venv, lent_dependencies)
    repository = catalog_repository(catalog, tmp_path / "catalog-repository", env)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"hostfit_catalog_repo": str(repository), "hostfit_host": "box-8",
                                 "hostfit_pip_args": "--no-index --no-deps --no-build-isolation"}))

    started = time.monotonic()
    first, output = play(env, extra, tmp_path)
    assert first["failed"] == 0 and first["changed"] >= 3, output  # cloned, hostfit installed, applied
    assert apply_status(output) == "changed", output
    installed = json.loads((tmp_path / "xdg-data" / "hostfit" / "models.json").read_text())
    artifact = installed["models"]["small-chat"]["artifact"]
    assert artifact["sha256"] == SHA and Path(artifact["path"]).read_bytes() == BLOB
    assert Path(artifact["path"]).is_relative_to(tmp_path / "xdg-cache")
    checkout_on_host = home / ".local" / "share" / "hostfit" / "catalog"
    assert json.loads((checkout_on_host / "out" / "box-8" / "models.lock").read_text())["artifacts"]["small-chat"][
        "sha256"] == SHA
    assert (venv / "bin" / "hostfit").exists(), "the role installed hostfit's entry point into its venv"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import compiler; print(compiler.__file__)"],
                           capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv), f"hostfit came from {where}, not the role's install"

    second, output = play(env, extra, tmp_path)
    assert second == {"ok": first["ok"] - 1, "changed": 0, "unreachable": 0, "failed": 0}, output  # no reinstall
    assert "skipping: [localhost]" in output.split("TASK [hostfit : Install hostfit into its venv (pip)]", 1)[1][:200]
    assert apply_status(output) == "ok", "apply ran and found nothing to change"
    assert len(server.log) == 1, "the artifact was downloaded once"

    dry, output = play(env, extra, tmp_path, "--check")  # the README's dry run: apply is skipped, nothing fails
    assert (dry["changed"], dry["failed"]) == (0, 0) and apply_status(output) == "skipping", output

    (tmp_path / "xdg-data" / "hostfit" / "models.json").unlink()
    third, output = play(env, extra, tmp_path)
    assert third["changed"] == 1 and apply_status(output) == "changed", output
    assert (tmp_path / "xdg-data" / "hostfit" / "models.json").exists()

    # a new commit whose install fails: the run fails, and the next one installs again
    (repository / "NOTES.md").write_text("a new commit\n")
    git(repository, env, "add", "-A")
    git(repository, env, "commit", "-q", "-m", "notes")
    settings = json.loads(extra.read_text())
    extra.write_text(json.dumps({**settings, "hostfit_pip_args": "--no-such-pip-option"}))
    failed, output = play(env, extra, tmp_path, rc=2)
    assert failed["failed"] == 1 and "pip could not install" in output and not (venv / "bin" / "hostfit").exists()
    extra.write_text(json.dumps(settings))
    healed, output = play(env, extra, tmp_path)
    assert healed["failed"] == 0 and (venv / "bin" / "hostfit").exists(), output
    assert apply_status(output) == "ok", "reinstalled, and models.json and models.lock are as they were"
    print(f"six playbook runs in {time.monotonic() - started:.1f} s")


def test_a_catalog_folder_copied_from_the_controller(base_catalog, server, tmp_path, work, lent_dependencies):  # noqa: F811
    """No repository: the controller's catalog folder is copied, hostfit installed from another source."""
    ansible_playbook()
    catalog = compiled(base_catalog, server)
    folder = tmp_path / "controller-catalog"  # what the host needs: the layers and its compiled folder
    for name in ("sources", "profiles", "out/box-8"):
        shutil.copytree(catalog / name, folder / name, ignore=shutil.ignore_patterns("explain.json"))
    source = tmp_path / "hostfit-source"
    source.mkdir()
    for name in PACKAGE_FILES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name)
    venv = tmp_path / "venv"
    env = host_environment(tmp_path, venv, lent_dependencies)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"hostfit_catalog_src": str(folder), "hostfit_host": "box-8",
                                 "hostfit_catalog_dir": str(tmp_path / "on-host"), "hostfit_venv": str(venv),
                                 "hostfit_pip_source": str(source),
                                 "hostfit_pip_args": "--no-index --no-deps --no-build-isolation"}))
    first, output = play(env, extra, tmp_path)
    assert first["changed"] >= 3 and apply_status(output) == "changed", output
    assert (tmp_path / "on-host" / "sources" / "hosts.yaml").exists() and (venv / "bin" / "hostfit").exists()
    assert json.loads((tmp_path / "xdg-data" / "hostfit" / "models.json").read_text())["host"]["name"] == "box-8"
    second, output = play(env, extra, tmp_path)
    assert (second["changed"], second["failed"]) == (0, 0), output


def test_the_apply_wrapper_reports_changes_and_passes_failures_through(base_catalog, server,  # noqa: F811
                                                                         tmp_path, monkeypatch, capsys):
    """The role's hostfit_apply.py by itself (no Ansible): changed, then unchanged; hostfit's exit 3 kept."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "hostfit_apply", REPO / "examples" / "ansible" / "roles" / "hostfit" / "files" / "hostfit_apply.py")
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOSTFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTFIT_BACKOFF_BASE", "0.01")
    catalog = compiled(base_catalog, server)

    def reported() -> dict:
        return json.loads(capsys.readouterr().out)

    assert wrapper.main(str(catalog), "box-8") == 0 and reported()["changed"] is True
    assert wrapper.main(str(catalog), "box-8") == 0 and reported()["changed"] is False
    (catalog / "out" / "box-8" / "models.lock").unlink()  # apply pins it again: a change
    assert wrapper.main(str(catalog), "box-8") == 0 and reported()["changed"] is True
    (tmp_path / "cache").rename(tmp_path / "gone")
    server.files.clear()  # the artifact is no longer cached nor served: apply exits 3
    assert wrapper.main(str(catalog), "box-8") == 3 and capsys.readouterr().out == ""
    assert wrapper.main(str(catalog), "no-such-host") == 2, "a usage error is passed through too"
