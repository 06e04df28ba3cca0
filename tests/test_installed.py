"""hostfit as users get it: a built wheel installed into a clean virtual environment, and the
pre-commit hooks of .pre-commit-hooks.yaml run by pre-commit itself (issue 9, finding 10: the
export templates were not package data, so every non-editable install failed to build).

Both tests run offline. The package under test is always the non-editable install; only its
third-party dependencies are lent by this test's own environment, through a folder of links to
its site-packages that leaves out hostfit's editable install (`compiler` can then only come
from the wheel, which test_wheel_installed_in_a_clean_venv_builds_the_shipped_catalog checks).

- The wheel test installs the wheel with `pip --python` into a venv created without pip, which
  sees the lent dependencies through a .pth file (such a folder's own .pth files, the editable
  finder's among them, are not processed).
- The pre-commit test lets pre-commit do everything it does for a user: clone the hook
  repository, create the hook environment with virtualenv and `pip install .` into it. The lent
  folder is on PYTHONPATH with PIP_NO_INDEX and build isolation off, so pip finds every
  dependency already installed and builds hostfit with the setuptools of the test extra. A
  user's pre-commit downloads those dependencies from the package registry instead: nothing
  else differs. 15-30 s on 2 cores, most of it virtualenv and pip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, tree_bytes

# the source tree a wheel is built from; build/ and *.egg-info are written there, not in REPO
PACKAGE_FILES = ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "compiler")
# what a build writes that the repository ignores (.gitignore)
UNTRACKED_OUTPUTS = ("local/", ".cache/", "explain.json")


def run(*args: str | Path, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        pytest.fail(f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("installed")


@pytest.fixture(scope="module")
def source_tree(work: Path) -> Path:
    """What a clone holds of the package, copied so that building it leaves REPO untouched."""
    target = work / "src"
    target.mkdir()
    for name in PACKAGE_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, target / name)
    return target


@pytest.fixture(scope="module")
def lent_dependencies(work: Path) -> Path:
    """Links to this environment's installed distributions, hostfit's own install left out."""
    lent = work / "deps"
    lent.mkdir()
    for folder in dict.fromkeys(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))):
        if not Path(folder).is_dir():
            continue
        for entry in sorted(Path(folder).iterdir()):
            name = entry.name
            if (name in ("compiler", "__pycache__") or name.endswith(".pth") or name.startswith("__editable__")
                    or name.lower().startswith("hostfit-") or (lent / name).exists()):
                continue
            (lent / name).symlink_to(entry)
    return lent


def shipped_catalog_in(folder: Path) -> Path:
    folder.mkdir()
    for name in ("sources", "profiles"):
        shutil.copytree(REPO / name, folder / name)
    return folder


def committed_out() -> dict[str, bytes]:
    return {name: data for name, data in tree_bytes(REPO / "out").items() if not name.startswith(UNTRACKED_OUTPUTS)
            and not name.endswith(UNTRACKED_OUTPUTS)}


def isolated_env(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "PRE_COMMIT"))}
    env.update(HOME=str(work / "home"), XDG_CONFIG_HOME=str(work / "xdg-config"),
               XDG_CACHE_HOME=str(work / "xdg-cache"), HOST="test-machine", **extra)
    return env


def test_wheel_installed_in_a_clean_venv_builds_the_shipped_catalog(work, source_tree, lent_dependencies):
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", work / "dist", source_tree, cwd=work)
    (wheel,) = (work / "dist").glob("hostfit-*.whl")

    # every module and every data file of the package is in the wheel
    shipped = {str(p.relative_to(source_tree)) for p in (source_tree / "compiler").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert shipped - in_wheel == set()
    assert any(n.startswith("compiler/templates/") for n in in_wheel) and "compiler/executor/fetch.py" in in_wheel

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (purelib / "lent-dependencies.pth").write_text(f"{lent_dependencies}\n")
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel,
        cwd=work)

    env = isolated_env(work)
    catalog = shipped_catalog_in(work / "catalog")
    where = run(python, "-c", "import compiler, jinja2; print(compiler.__file__); print(jinja2.__file__)",
                cwd=catalog, env=env).stdout.split()
    assert Path(where[0]).is_relative_to(purelib)  # the wheel's compiler, not the editable checkout
    assert Path(where[1]).is_relative_to(lent_dependencies)

    result = run(venv / "bin" / "hostfit", "-C", catalog, "build", "--all", cwd=catalog, env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    built = {name: data for name, data in tree_bytes(catalog / "out").items()
             if not name.startswith(UNTRACKED_OUTPUTS) and not name.endswith(UNTRACKED_OUTPUTS)}
    expected = committed_out()
    assert sorted(built) == sorted(expected)
    assert [name for name in expected if built[name] != expected[name]] == []


def hook_results(report: str) -> dict[str, str]:
    """pre-commit's summary lines, `name.....Passed`, as {name: outcome}."""
    return dict(m.groups() for m in re.finditer(r"^(hostfit .*?)\.{3,}(Passed|Failed|Skipped)$", report, re.M))


def git(*args: str, cwd: Path, env: dict) -> None:
    run("git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args, cwd=cwd, env=env)


def test_offered_pre_commit_hooks_pass_on_the_shipped_catalog_and_fail_on_a_broken_one(
        work, source_tree, lent_dependencies):
    env = isolated_env(work, PYTHONPATH=str(lent_dependencies), PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0",
                       PIP_DISABLE_PIP_VERSION_CHECK="1", PRE_COMMIT_HOME=str(work / "pre-commit"),
                       GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1",
                       GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost",
                       GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@localhost")
    hooks_repo = work / "hooks-repo"  # the hook repository, as committed: pre-commit clones it
    shutil.copytree(source_tree, hooks_repo, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    git("init", "-q", cwd=hooks_repo, env=env)
    git("add", "-A", cwd=hooks_repo, env=env)
    git("commit", "-q", "-m", "hostfit", cwd=hooks_repo, env=env)

    catalog = shipped_catalog_in(work / "catalog-repo")  # a user's catalog repository
    shutil.copytree(REPO / "out", catalog / "out", ignore=shutil.ignore_patterns("local", ".cache", "explain.json"))
    git("init", "-q", cwd=catalog, env=env)
    git("add", "-A", cwd=catalog, env=env)
    git("commit", "-q", "-m", "catalog", cwd=catalog, env=env)
    pre_commit = [sys.executable, "-m", "pre_commit", "try-repo", str(hooks_repo), "--all-files"]

    green = run(*pre_commit, cwd=catalog, env=env, check=False)
    report = green.stdout + green.stderr
    assert green.returncode == 0, report
    assert hook_results(report) == {"hostfit validate": "Passed", "hostfit build --all --check": "Passed"}, report

    layer = catalog / "sources" / "10-roles.yaml"
    layer.write_text(layer.read_text() + "\nroles: [unclosed\n")
    git("commit", "-q", "-am", "broken", cwd=catalog, env=env)
    red = run(*pre_commit, cwd=catalog, env=env, check=False)
    report = red.stdout + red.stderr
    assert red.returncode == 1, report
    assert hook_results(report) == {"hostfit validate": "Failed", "hostfit build --all --check": "Failed"}, report
    assert "sources/10-roles.yaml:" in report and "Traceback" not in report
