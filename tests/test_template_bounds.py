"""Catalog templates are bounded in time and memory whatever they do, and are regular files inside the
catalog (review E and F of issue 9).

Hostile templates run in a child process with its own address-space limit and a timeout, as a safety
net: should a bound fail, the test fails instead of taking the machine's memory or hanging."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from compiler import exports, sandbox
from compiler.errors import InputError

from conftest import REPO, run_cli, tree_bytes

NET = 1 << 30  # the child's own RLIMIT_AS: the net under the bounds tested


def hostfit(catalog: Path, *args: str, setup: str = "", net: int = NET, timeout: int = 40):
    """`hostfit -C catalog ARGS` in a child process under `net`; `setup` runs first (to lower a bound
    so a test need not wait 10 s or allocate 512 MiB). The child prints its peak RSS (KiB) last."""
    code = ("import atexit, resource, sys\n"
            "atexit.register(lambda: print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
            f"{setup}\nfrom compiler.cli import main\nmain()\n")

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (net, net))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, "-C", str(catalog), *args], capture_output=True,
                            text=True, preexec_fn=limits, timeout=timeout, cwd=REPO, env=os.environ)
    result.seconds = time.monotonic() - started
    result.peak_mb = int(result.stderr.rsplit("PEAK", 1)[1]) // 1024 if "PEAK" in result.stderr else None
    return result


def with_template(catalog: Path, text: str, name: str = "bad.txt") -> Path:
    """`text` as the catalog template templates/<name>.j2, exported by host box-8."""
    (catalog / "templates").mkdir(exist_ok=True)
    (catalog / "templates" / f"{name}.j2").write_text(text)
    hosts = catalog / "sources" / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("box-8: {ram_gb: 8, profiles: [base]}",
                                               f"box-8: {{ram_gb: 8, profiles: [base], exports: [{name}]}}"))
    return catalog


def assert_e215(result, message: str, seconds: float = 20, where: str = ":1:0") -> None:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"templates/bad.txt.j2{where}: error[E215]: export 'bad.txt' cannot be rendered" in result.stderr
    assert message in result.stderr, result.stderr[-2000:]
    assert result.seconds < seconds


# ------------------------------------------------------------------------ sizes asked for

HUGE = [  # template, message: each asked the review's gigabytes (or a hang) of the old code
    ("{{ 'x' | center(10**9) }}", "center() would make 1,000,000,000 characters"),
    ("{{ '%1000000000d' | format(1) }}", "format() would make 1,000,000,000 characters of width"),
    ("{{ '%1000000000d' % 1 }}", "%() would make 1,000,000,000 characters"),
    ("{{ '%*d' % (10**9, 1) }}", "%() would make 1,000,000,001 characters"),
    ("{{ '{:>1000000000}'.format(1) }}", "format() would make 1,000,000,000 characters"),
    ("{{ '{:>{w}}'.format(1, w=10**9) }}", "format() would make 1,000,000,001 characters"),
    ("{{ 'x'.ljust(10**9) }}", "ljust() would make 1,000,000,000 characters"),
    ("{{ '1'.zfill(10**9) }}", "zfill() would make 1,000,000,000 characters"),
    ("{{ models | tojson(indent=10**9) }}", "tojson() would make 1,000,000,000 spaces of indent"),
    (r"{{ 'a\nb' | indent(10**9) }}", "indent() would make 2,000,000,000 characters"),
    ("{{ ([0] * 1000000) | join('x' * 1000) }}", "join() would make 999,999,000 characters"),
    ("{{ ('x' * 1000000) | replace('x', 'y' * 1000) }}", "replace() would make 1,001,000,000 characters"),
    ("{{ lipsum(10**6) }}", "lipsum() would make 1,200,000,000 characters"),
    ("{% for b in [1] | batch(10**9, 0) %}{% endfor %}", "batch() would make 1,000,000,000 items"),
]


def test_a_huge_size_asked_of_a_filter_or_method_is_refused_at_once(base_catalog: Path):
    lines, peak_mb = render_each(base_catalog, [(f"h{i}", text) for i, (text, _) in enumerate(HUGE)])
    for i, (line, (_, message)) in enumerate(zip(lines, HUGE)):
        assert line.startswith(f"h{i} E215 ") and message in line, line
    assert peak_mb < 400, "each refused before anything was built (the old code reached 1-4 GB)"


def test_sizes_within_bounds_render_as_jinja2_renders_them(base_catalog: Path):
    """The checked filters and methods still do their work, whatever their arguments are named."""
    catalog = with_template(base_catalog, (
        "[{{ 'a' | center(5) }}][{{ 'a'.rjust(3, '.') }}][{{ '7'.zfill(3) }}][{{ '%(v)s-%(template)s' | format(v=1, template=2) }}]"
        "[{{ '{template}{v:>3}'.format(template=1, v=2) }}][{{ '%-4s|%*d' % ('x', 3, 7) }}][{{ 'a\nb' | indent(2) }}]"
        "[{{ ['a', 'b'] | join(', ') }}][{{ 'aXa' | replace('a', 'bb', 1) }}][{{ {'k': [1]} | tojson(indent=1) }}]"
        "[{{ [1, 2, 3] | batch(2, 0) | list }}][{{ [1, 2, 3] | slice(2) | list }}][{{ '-'.join('abc') }}]\n"))
    assert run_cli("-C", str(catalog), "build", "--all").exit_code == 0
    assert (catalog / "out" / "box-8" / "exports" / "bad.txt").read_text() == (
        "[  a  ][..a][007][1-2][1  2][x   |  7][a\n  b][a, b][bbXa][{\n \"k\": [\n  1\n ]\n}]"
        "[[[1, 2], [3, 0]]][[[1, 2], [3]]][a-b-c]\n")


# ------------------------------------------------------------------ the general bounds

DOUBLING = ("{% set ns = namespace(s='x' * 1000000) %}{% for i in range(9) %}{% set ns.s = ns.s ~ ns.s %}"
            "{% endfor %}{{ ns.s | length }}")  # 512 MB of text by `~`, which no size check sees


def test_memory_is_bounded_whatever_builds_it(base_catalog: Path):
    """The old code built the 512 MB string and exited 0 (1.3 GB in the review); the address-space limit
    stops it at MAX_MEMORY (lowered here to 64 MiB so the test stays light)."""
    result = hostfit(with_template(base_catalog, DOUBLING), "build", "--all",
                     setup="import compiler.sandbox as e; e.MAX_MEMORY = 64 << 20")
    assert_e215(result, "it needs more than 64 MiB of memory")
    assert "64 MiB of memory per file" in result.stderr  # the hint names the bounds
    # RLIMIT_AS bounds address space, not what is resident: malloc arenas an earlier thread of the process
    # reserved can be filled without growing it, so the peak is 75-90 MB alone and was 323 MB once in a
    # full run. Under 400 MB the 512 MB string (and the 256 MB step, 384 MB with its source) was never built.
    assert result.peak_mb < 400


def test_memory_bound_lets_normal_large_output_through(base_catalog: Path):
    """A 12 MiB file (under MAX_OUTPUT) renders under the default memory bound."""
    catalog = with_template(base_catalog, "{% for i in range(1200) %}{{ 'x' * 10485 }}\n{% endfor %}")
    result = hostfit(catalog, "build", "--all")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len((catalog / "out" / "box-8" / "exports" / "bad.txt").read_bytes()) == 1200 * 10486


LOOPS = [  # no call, operator or range step inside: only the timer can stop these
    "{% set l = [0] * 1000000 %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
    "{% for a in 'abc' | slice(1000000) %}{% for b in 'x' * 10000000 %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
]


@pytest.mark.parametrize("template", LOOPS, ids=["nested", "slices", "macro"])
def test_time_is_bounded_whatever_loops(base_catalog: Path, template):
    """The old code ran these for hours (the review killed tojson(indent=10**9) after 60 s); each file
    now gets MAX_SECONDS of CPU time (lowered here to 1 s)."""
    result = hostfit(with_template(base_catalog, template), "build", "--all",
                     setup="import compiler.sandbox as e; e.MAX_SECONDS = 1")
    # the timer interrupts wherever the loop is: inside the template (line 1) or inside jinja2's own
    # runtime, where no template line is known; either way the file is named
    where = ":1:0" if ".j2:1:0: error" in result.stderr else ""
    assert_e215(result, "rendering took more than 1 s of CPU time", where=where)


RENDER = r"""
import json, resource, signal, sys
from pathlib import Path
from compiler import exports, sandbox
from compiler.errors import InputError
sandbox.MAX_MEMORY, sandbox.MAX_SECONDS = 64 << 20, 1
catalog = Path(sys.argv[1])
document = json.loads((catalog / "out" / "box-8" / "models.json").read_text())
def state():
    return resource.getrlimit(resource.RLIMIT_AS), signal.getsignal(signal.SIGPROF), signal.getitimer(signal.ITIMER_PROF)
before = state()
for name, text in json.loads(sys.argv[2]):
    (catalog / "templates" / (name + ".j2")).write_text(text)
    try:
        outcome = len(exports.render(document, [name], catalog / "templates")[name])
    except InputError as exc:
        outcome = exc.diagnostics[0].code + " " + exc.diagnostics[0].message
    print(name, outcome, state() == before, flush=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
bytearray(300 << 20)  # the 64 MiB bound is gone
print("allocated", peak)
"""


def render_each(catalog: Path, cases: list[tuple[str, str]]) -> tuple[list[str], int]:
    """exports.render of each (name, template) in one child process under NET, with MAX_MEMORY 64 MiB
    and MAX_SECONDS 1: a line per case (name, size or diagnostic, bounds restored?) and the peak MB."""
    (catalog / "templates").mkdir(exist_ok=True)
    assert run_cli("-C", str(catalog), "build", "--all").exit_code == 0
    result = subprocess.run([sys.executable, "-c", RENDER, str(catalog), json.dumps(cases)],
                            capture_output=True, text=True, timeout=60, cwd=REPO, env=os.environ,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (NET, NET)))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("allocated ") and len(lines) == len(cases) + 1
    assert all(line.endswith(" True") for line in lines[:-1]), lines
    return lines[:-1], int(lines[-1].split()[1])


def test_limits_are_restored_after_each_render_however_it_ends(base_catalog: Path):
    """RLIMIT_AS, the SIGPROF handler and its timer are as before after each render (render_each checks
    it, and that 300 MiB can be had afterwards), whether it succeeded, ran out of memory or time, or raised."""
    cases = [("ok", "{{ host.name }}"), ("memory", DOUBLING), ("time", LOOPS[0]), ("raises", "{{ 1 / 0 }}"),
             ("after", "{{ 'x' * 1000 }}")]
    lines, _ = render_each(base_catalog, cases)
    assert lines[0] == "ok 5 True" and lines[4] == "after 1000 True"
    assert lines[1].startswith("memory E215 ") and "more than 64 MiB of memory" in lines[1]
    assert lines[2].startswith("time E215 ") and "more than 1 s of CPU time" in lines[2]
    assert lines[3].startswith("raises E215 ") and "ZeroDivisionError" in lines[3]


def test_a_render_in_another_thread_is_bounded_by_its_own_checks(base_catalog: Path, monkeypatch):
    """A signal and an rlimit are the process's: a thread other than the main one gets neither (nor
    breaks on them); its time limit is checked at each call, so runaway recursion still ends."""
    catalog = with_template(base_catalog, LOOPS[2])
    (catalog / "templates" / "good.txt.j2").write_text("{{ host.name }} {{ '%5d' | format(3) }}\n")
    assert run_cli("-C", str(catalog), "build", "--host", "box-32").exit_code == 0
    document = json.loads((catalog / "out" / "box-32" / "models.json").read_text())
    monkeypatch.setattr(sandbox, "MAX_SECONDS", 1)
    outcomes = {}

    def render(name):
        try:
            outcomes[name] = exports.render(document, [name], catalog / "templates")[name]
        except InputError as exc:
            outcomes[name] = exc.diagnostics[0]
    before = resource.getrlimit(resource.RLIMIT_AS), signal.getsignal(signal.SIGPROF)
    for name in ("good.txt", "bad.txt"):
        thread = threading.Thread(target=render, args=(name,), daemon=True)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), f"{name}: the render in a thread did not stop"
    assert outcomes["good.txt"] == b"box-32     3\n"
    assert outcomes["bad.txt"].code == "E215" and "more than 1 s of CPU time" in outcomes["bad.txt"].message
    assert (resource.getrlimit(resource.RLIMIT_AS), signal.getsignal(signal.SIGPROF)) == before


# ------------------------------------------------------------------------ template files

def test_a_template_linking_outside_the_catalog_is_refused_unread(base_catalog: Path, tmp_path: Path):
    """The review: templates/MODELS.md.j2 -> /etc/passwd put /etc/passwd into out/<host>/exports/MODELS.md."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:SECRET-LINE\n")
    (base_catalog / "templates").mkdir()
    (base_catalog / "templates" / "MODELS.md.j2").symlink_to(secret)
    result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (f"templates/MODELS.md.j2: error[E234]: the template is a link to {str(secret)!r}, outside the "
            "catalog: not read") in result.stderr
    assert "SECRET-LINE" not in json.dumps(tree_bytes(base_catalog / "out"), default=repr)


def test_a_templates_folder_linking_outside_the_catalog_is_refused(base_catalog: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "MODELS.md.j2").write_text("not from the catalog\n")
    (base_catalog / "templates").symlink_to(elsewhere)
    result = run_cli("-C", str(base_catalog), "build", "--all")
    assert result.exit_code == 1 and "templates/MODELS.md.j2: error[E234]" in result.stderr


def test_a_link_inside_the_catalog_is_followed(base_catalog: Path):
    (base_catalog / "shared").mkdir()
    (base_catalog / "shared" / "MODELS.md.j2").write_text("models of {{ host.name }}\n")
    (base_catalog / "templates").mkdir()
    (base_catalog / "templates" / "MODELS.md.j2").symlink_to(Path("..") / "shared" / "MODELS.md.j2")
    assert run_cli("-C", str(base_catalog), "build", "--all").exit_code == 0
    assert (base_catalog / "out" / "box-8" / "exports" / "MODELS.md").read_text() == "models of box-8\n"


@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling"])
def test_a_template_that_is_not_a_regular_file_is_refused_never_opened(base_catalog: Path, kind):
    """The review: a FIFO template was silently replaced by the built-in one (the old loader checked
    isfile); it must be named, and never opened (opening a FIFO blocks): hence the child process."""
    (base_catalog / "templates").mkdir()
    template = base_catalog / "templates" / "MODELS.md.j2"
    {"fifo": lambda: os.mkfifo(template), "folder": template.mkdir,
     "dangling": lambda: template.symlink_to("nowhere.j2")}[kind]()
    before = tree_bytes(base_catalog / "out")
    result = hostfit(base_catalog, "build", "--all", timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    expected = {"fifo": "error[E018]: a FIFO (named pipe), not a regular file: not read",
                "folder": "error[E018]: a folder, not a regular file: not read",
                "dangling": "error[E019]: a symbolic link to 'nowhere.j2', which does not exist"}[kind]
    assert f"templates/MODELS.md.j2: {expected}" in result.stderr
    assert tree_bytes(base_catalog / "out") == before
