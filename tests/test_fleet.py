"""Fleet builds (issue 14, item 1): a large inventory compiled by worker processes, each host staged as it
is compiled and published with one flush, byte-identical to building each host alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, copy_catalog

sys.path.insert(0, str(REPO / "tests" / "bench"))
from fleet_bench import inventory, same_tree  # noqa: E402

from compiler import emit, exports, fleet  # noqa: E402
from compiler.options import BuildOptions  # noqa: E402
from compiler.pipeline import Project  # noqa: E402

HOSTS = fleet.MIN_HOSTS + 6  # past the threshold: the fleet path, in two workers


def hostfit(catalog: Path, *args: str, jobs: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOSTFIT_BUILD_JOBS": str(jobs), "HOST": "test-machine"}
    return subprocess.run([sys.executable, "-m", "compiler.cli", "-C", str(catalog), *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def fleet_catalog(tmp_path: Path) -> Path:
    catalog = copy_catalog(REPO, tmp_path / "fleet")
    (catalog / "sources" / "hosts.yaml").write_text(inventory(HOSTS, seed=3))
    return catalog


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fleet builds fork workers on Linux")
def test_a_fleet_build_is_byte_identical_to_building_each_host_alone(fleet_catalog: Path, tmp_path: Path):
    done = hostfit(fleet_catalog, "build", "--all", "-q")
    assert done.returncode == 0, done.stderr
    out = fleet_catalog / "out"
    names = sorted(p.name for p in out.iterdir() if p.name != ".cache")
    assert len(names) == HOSTS
    assert [p.name for p in (out / ".cache").iterdir() if p.name.startswith("staging")] == []
    single = tmp_path / "single"
    for name in names[::len(names) // 5]:  # a sample across the inventory
        alone = hostfit(fleet_catalog, "build", "--host", name, "-q", "--out", str(single), jobs=1)
        assert alone.returncode == 0, alone.stderr
        assert same_tree(out / name, single / name) == [], name
    assert hostfit(fleet_catalog, "build", "--all", "--check").returncode == 0
    (out / names[3] / "exports" / "MODELS.md").write_text("edited\n")
    check = hostfit(fleet_catalog, "build", "--all", "--check")
    assert check.returncode == 1 and f"stale: out/{names[3]}/exports/MODELS.md" in check.stderr, check.stderr
    rebuilt = hostfit(fleet_catalog, "build", "--all")
    assert rebuilt.returncode == 0 and f"out/{names[3]}/models.json (updated)" in rebuilt.stdout
    assert f"out/{names[4]}/models.json (unchanged)" in rebuilt.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fleet builds fork workers on Linux")
def test_a_fleet_build_with_one_bad_host_publishes_nothing(fleet_catalog: Path):
    hosts = fleet_catalog / "sources" / "hosts.yaml"
    # 1 GB: the required roles of the `coding` profile cannot be served there (E300)
    hosts.write_text(hosts.read_text() + "  tiny-box: {ram_gb: 1, profiles: [coding]}\n")
    done = hostfit(fleet_catalog, "build", "--all", "-q")
    assert done.returncode == 1 and "E300" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    out = fleet_catalog / "out"
    assert sorted(p.name for p in out.iterdir()) in ([], [".cache"])  # at most the lock, no host, no staging
    assert not out.exists() or [p.name for p in (out / ".cache").iterdir()] == ["build.lock"]


def test_explain_and_models_json_rendered_from_shared_chunks_are_the_plain_renders(shipped_catalog: Path):
    """explain.json's provenance and models.json's model entries are rendered once per catalog and put
    together per host: the bytes must be those of rendering each host's whole document."""
    project = Project(shipped_catalog)
    report = project.compile(BuildOptions(all_hosts=True), write=False)
    assert report.ok and len(report.results) == 5
    for result in report.results:
        catalog = project.catalog_for(project.layers_for(
            next(t for t in project.targets(project.load_sources(), BuildOptions(all_hosts=True), report)
                 if t.host.name == result.host.name), project.load_sources(), BuildOptions(all_hosts=True),
            report)[0])[0]
        assert result.models_bytes == emit.render(result.output)
        assert emit.render_output(result.output, catalog) == emit.render(result.output)  # again: from the memo
        assert result.explain_bytes == emit.render_compact(emit.explain_document(result.plan, catalog, result.output))
        assert json.loads(result.explain_bytes)["provenance"]  # the chunks are there, in order
    assert emit.render_output({"schema_version": 2, "models": {}}, catalog) == \
        emit.render({"schema_version": 2, "models": {}})


def test_exports_rendered_once_per_plan_are_those_rendered_for_the_host(monkeypatch):
    """A reused render takes the host's name; a name the quoting filters would change (md escapes a
    trailing `_`) is rendered for itself."""
    document = json.loads((REPO / "out" / "workstation" / "models.json").read_text())
    exports._rendered.clear()
    first = exports.render(document, None, None)
    for name in ("node-2", "box_", "a_b", "x.1"):
        other = {**document, "host": {**document["host"], "name": name}}
        cached = exports.render(other, None, None)
        with monkeypatch.context() as patch:
            patch.setattr(exports, "rendered", lambda env, template, context: exports.sandbox.render(template, context))
            plain = exports.render(other, None, None)
        assert cached == plain, name
        assert any(name.encode() in data for data in cached.values())
    assert first == exports.render(document, None, None)
    assert exports._rendered  # renders were kept for reuse


def test_build_jobs_must_be_a_positive_number(fleet_catalog: Path):
    done = hostfit(fleet_catalog, "build", "--all", "-q", jobs=0)
    assert done.returncode == 2 and "HOSTFIT_BUILD_JOBS" in done.stderr, done.stderr[-2000:]


CLASSES = """schema_version: 2
kind: hosts
hosts:
  web:
    count: 3
    ram_gb: 32
    profiles: [coding]
  gpu-boxes:
    names: [render-a, render-b]
    ram_gb: 64
    gpus: [{name: RTX 4090, vram_gb: 24, vendor: nvidia}]
    profiles: [research]
  laptop-16: {ram_gb: 16, profiles: [coding]}
"""
ONE_BY_ONE = """schema_version: 2
kind: hosts
hosts:
  web-2: {ram_gb: 32, profiles: [coding]}
  render-b: {ram_gb: 64, gpus: [{name: RTX 4090, vram_gb: 24, vendor: nvidia}], profiles: [research]}
"""


def test_a_class_declares_each_host_once_and_each_gets_its_own_outputs(tmp_path: Path):
    classes = copy_catalog(REPO, tmp_path / "classes")
    (classes / "sources" / "hosts.yaml").write_text(CLASSES)
    done = hostfit(classes, "build", "--all", "-q")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (classes / "out").iterdir() if p.name != ".cache") == \
        ["laptop-16", "render-a", "render-b", "web-1", "web-2", "web-3"]
    alone = copy_catalog(REPO, tmp_path / "alone")
    (alone / "sources" / "hosts.yaml").write_text(ONE_BY_ONE)
    assert hostfit(alone, "build", "--all", "-q").returncode == 0
    for name in ("web-2", "render-b"):  # a class's host compiles as the same host declared on its own
        assert same_tree(classes / "out" / name, alone / "out" / name) == [], name
    single = hostfit(classes, "build", "--host", "web-3", "-q", "--out", str(tmp_path / "one"))
    assert single.returncode == 0 and same_tree(classes / "out" / "web-3", tmp_path / "one" / "web-3") == []


@pytest.mark.parametrize("entry, expected", [
    ("  web: {count: 2, names: [a, b], ram_gb: 8}\n", "sources/hosts.yaml:4:19: error[E800]: host class 'web' gives both"),
    ("  web: {count: 2, hostnames: [w], ram_gb: 8}\n", "sources/hosts.yaml:4:19: error[E801]: host class 'web' declares"),
    ("  web: {names: [laptop-16, b], ram_gb: 8}\n", "sources/hosts.yaml:5:3: error[E802]: host 'laptop-16' is declared twice"),
    ("  web: {count: 0, ram_gb: 8}\n", "sources/hosts.yaml:4:9: error[E103]: 'count' is 0"),
])
def test_a_bad_class_is_a_diagnostic_at_its_line(tmp_path: Path, entry: str, expected: str):
    catalog = copy_catalog(REPO, tmp_path / "bad")
    (catalog / "sources" / "hosts.yaml").write_text(
        "schema_version: 2\nkind: hosts\nhosts:\n" + entry + "  laptop-16: {ram_gb: 16, profiles: [coding]}\n")
    done = hostfit(catalog, "validate")
    assert done.returncode == 1 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (catalog / "out" / "web-1").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fleet builds fork workers on Linux")
def test_a_fleet_build_killed_mid_way_leaves_no_worker_and_the_next_build_finishes(fleet_catalog: Path):
    import signal
    import time

    env = {**os.environ, "HOSTFIT_BUILD_JOBS": "2", "HOST": "test-machine"}
    build = subprocess.Popen([sys.executable, "-m", "compiler.cli", "-C", str(fleet_catalog), "build", "--all", "-q"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = fleet_catalog / "out" / ".cache"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(staging.glob("staging-*/new/*")):  # workers are staging
        time.sleep(0.05)
    children = (Path(f"/proc/{build.pid}/task/{build.pid}/children").read_text().split())
    build.send_signal(signal.SIGKILL)
    build.wait(timeout=30)
    for _ in range(100):  # PR_SET_PDEATHSIG: the workers die with the build
        if not any(Path(f"/proc/{pid}").exists() for pid in children):
            break
        time.sleep(0.05)
    assert children and not any(Path(f"/proc/{pid}").exists() for pid in children)
    assert [p.name for p in (fleet_catalog / "out").iterdir() if p.name != ".cache"] == []  # nothing swapped yet
    after = hostfit(fleet_catalog, "build", "--all", "-q")
    assert after.returncode == 0, after.stderr
    assert len([p for p in (fleet_catalog / "out").iterdir() if p.name != ".cache"]) == HOSTS
    assert [p.name for p in staging.iterdir() if p.name.startswith("staging")] == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fleet builds fork workers on Linux")
def test_a_fleet_build_uses_a_hosts_measured_layer_like_a_one_host_build(fleet_catalog: Path, tmp_path: Path):
    """The workers compile each host with its own sources/measured/<host>.yaml, as a one-host build does."""
    from compiler import measured, usage

    done = hostfit(fleet_catalog, "build", "--all", "-q")
    assert done.returncode == 0, done.stderr
    out = fleet_catalog / "out"
    names = sorted(p.name for p in out.iterdir() if p.name != ".cache")
    host = names[len(names) // 2]
    before = json.loads((out / host / "models.json").read_text())
    chat = before["roles"]["chat"]
    row = dict.fromkeys(usage.MEASUREMENT_FIELDS) | {
        "ts": "2026-11-29T10:00:00Z", "host": host, "model": chat["model"], "runtime": chat["runtime"],
        "placement": chat["placement"], "context": chat["context"], "ok": True,
        # measured far heavier than the host, in RAM and on the GPU: it cannot stay
        "peak_rss_mib": before["host"]["ram_mb"] * 2, "gpu_mib": before["host"]["ram_mb"] * 2}
    measured.export(fleet_catalog, host, [row])
    rebuilt = hostfit(fleet_catalog, "build", "--all", "-q")
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = json.loads((out / host / "models.json").read_text())
    assert after["roles"]["chat"]["model"] != chat["model"], "the measurement moved the pick"
    alone = hostfit(fleet_catalog, "build", "--host", host, "-q", "--out", str(tmp_path / "single"), jobs=1)
    assert alone.returncode == 0, alone.stderr
    assert same_tree(out / host, tmp_path / "single" / host) == []


KILLED_WORKER = """
import os, signal, sys
from pathlib import Path
from compiler import fleet
from compiler.errors import RuntimeFailure
from compiler.options import BuildOptions
from compiler.pipeline import Project

parent, plain = os.getpid(), Project.compile_host

def compile_host(self, job, *args, **kwargs):
    if os.getpid() != parent and job.target.host.name == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer ends a worker
    return plain(self, job, *args, **kwargs)

Project.compile_host = compile_host
try:
    Project(Path(sys.argv[1])).compile(BuildOptions(all_hosts=True), keep_outputs=False)
except RuntimeFailure as exc:
    print("failed:", exc)
else:
    print("built")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fleet builds fork workers on Linux")
def test_a_fleet_build_whose_worker_is_killed_fails_and_stages_nothing(fleet_catalog: Path):
    """A worker killed mid-chunk (the OOM killer) fails the build (exit 3) instead of leaving the
    parent waiting forever for the chunk, holding the build lock; nothing is published or left staged."""
    import yaml

    victim = sorted(yaml.safe_load((fleet_catalog / "sources" / "hosts.yaml").read_text())["hosts"])[HOSTS // 2]
    env = {**os.environ, "HOSTFIT_BUILD_JOBS": "2", "HOST": "test-machine", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLED_WORKER, str(fleet_catalog), victim], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("failed:"), (done.stdout, done.stderr[-2000:])
    assert "worker" in done.stdout
    out = fleet_catalog / "out"
    assert [p.name for p in out.iterdir() if p.name != ".cache"] == []
    assert [p.name for p in (out / ".cache").iterdir() if p.name.startswith("staging")] == []


@pytest.mark.parametrize("source", [
    "{% filter upper %}served by {{ host.name }}{% endfilter %}\n",
    "{% set line %}served by {{ host.name }}{% endset %}{{ line | upper }}\n",
    "{% macro by() %}served by {{ host.name }}{% endmacro %}{{ by() | upper }}\n",
    "{% block b %}served by {{ host.name }}{% endblock %}{{ self.b() | upper }}\n",
    "{% for n in [1] %}{% if n %}served by {{ host.name }}{% endif %}{% endfor %}\n",
])
def test_a_template_that_transforms_what_it_wrote_of_the_host_name_renders_for_the_host(tmp_path: Path, monkeypatch,
                                                                                        source: str):
    """A render reused across hosts is only valid where the name is written as it is: a block that
    captures the output (filter, set, macro, block) may transform it, so the host's own render is used."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "banner.txt.j2").write_text(source)
    document = json.loads((REPO / "out" / "workstation" / "models.json").read_text())
    exports._rendered.clear()
    for name in ("node-2", "box-7"):
        other = {**document, "host": {**document["host"], "name": name}}
        cached = exports.render(other, ["banner.txt"], templates)
        with monkeypatch.context() as patch:
            patch.setattr(exports, "rendered", lambda env, template, context: exports.sandbox.render(template, context))
            plain = exports.render(other, ["banner.txt"], templates)
        assert cached == plain, name
        assert name.encode() in plain["banner.txt"] or name.upper().encode() in plain["banner.txt"]


@pytest.mark.parametrize("flush", ["syncfs", "fsync"])
def test_what_a_swapped_folder_carries_over_is_flushed_with_the_staged_files_before_the_swap(tmp_path: Path, monkeypatch,
                                                                                             flush: str):
    """The one flush before the first swap covers every file the swapped folder will hold: models.lock and
    a user's notes copied over (a file system without hard links) as well as the build's new files."""
    import errno

    from compiler import publish

    out = tmp_path / "out"
    (out / "h" / "notes").mkdir(parents=True)
    (out / "h" / "models.json").write_bytes(b"old\n")
    (out / "h" / "models.lock").write_bytes(b"pinned\n")
    (out / "h" / "notes" / "a.txt").write_text("note\n")
    flushed: list[str] = []
    def no_hard_links(source, target, **_):
        raise OSError(errno.EPERM, "hard links not supported", str(target))

    monkeypatch.setattr(publish.os, "link", no_hard_links)
    if flush == "syncfs":
        monkeypatch.setattr(publish, "_syncfs", lambda: lambda path: flushed.extend(
            str(p.relative_to(path / "new")) for p in (path / "new").rglob("*") if p.is_file()))
    else:
        monkeypatch.setattr(publish, "_syncfs", lambda: None)
        monkeypatch.setattr(publish, "_fsync", lambda path: flushed.append(str(path).split("/new/", 1)[1]))
    with publish.locked(out), publish.Publication(out) as publication:
        assert publication.stage("h", {"models.json": b"new\n"}) is not None
        publication.commit(["h"])
    assert (out / "h" / "models.json").read_bytes() == b"new\n"
    assert (out / "h" / "models.lock").read_bytes() == b"pinned\n"
    assert sorted(flushed) == ["h/models.json", "h/models.lock", "h/notes/a.txt"]


def test_renders_kept_for_reuse_are_bounded_in_bytes_not_only_in_number(tmp_path: Path, monkeypatch):
    """A catalog template may write megabytes (up to sandbox.MAX_OUTPUT) and differ on each plan: the
    renders a worker keeps stay within RENDERED_MAX_BYTES, however many plans it compiles."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "big.txt.j2").write_text("{{ profiles | join(',') }}\n{{ 'x' * 200000 }}\n")
    document = json.loads((REPO / "out" / "workstation" / "models.json").read_text())
    monkeypatch.setattr(exports, "RENDERED_MAX_BYTES", 1_000_000)
    exports._rendered.clear()
    for plan in range(12):  # twelve plans: twelve different renders of 200 kB
        files = exports.render({**document, "profiles": [f"p{plan}"]}, ["big.txt"], templates)
        assert files["big.txt"].startswith(f"p{plan}\n".encode())
        assert sum(len(data) for data in exports._rendered.values()) <= exports.RENDERED_MAX_BYTES
    assert exports._rendered  # still kept for reuse
    exports._rendered.clear()
