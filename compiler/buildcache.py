"""No-op rebuilds: when no input changed since the last identical build, reuse its outputs.

A build records, in out/.cache/ (ignored by git), the size and modification time of every
input (catalog files with symlinked folders followed, templates, the files of hosts' `user:`
lists, the compiler itself, this machine's detected facts when they matter) and of every output.
A later build with the same options whose inputs and outputs all stat the same skips the
pipeline. It uses only the standard library and psutil, so it costs a few milliseconds rather
than the import of the whole compiler.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from . import paths

PACKAGE = Path(__file__).resolve().parent


def stat_row(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _stat_tree(folder: Path, root: Path, suffixes: tuple[str, ...] = ()) -> list:
    """Every file below `folder`, symlinked folders followed (the pipeline reads through them), each once."""
    rows = []
    seen: set[tuple[int, int]] = set()
    if folder.is_dir():
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            st = os.stat(dirpath)
            if (st.st_dev, st.st_ino) in seen:  # a link loop, or the same folder linked twice
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if suffixes and not name.endswith(suffixes):
                    continue
                path = Path(dirpath) / name
                st = path.stat()  # a dangling link raises: the cache cannot tell, so it stands aside
                rows.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return rows


def this_machine(options):
    """This machine's detected facts when the build compiles it, else None: detected once, for the
    fingerprint and for the build itself (Project(here=...)), as detection probes GPUs and runtimes."""
    from . import hosts

    if options.all_hosts or (options.hosts and hosts.LOCAL not in options.hosts):
        return None
    return hosts.detect(hosts.machine_name())


def fingerprint(root: Path, options, here) -> dict | None:
    """What the build reads, as sizes and mtimes: sources/, profiles/, templates/ (links followed),
    the compiler with its built-in templates, the personal layer, this machine's facts when they
    matter (`here`, from this_machine). None when something cannot be statted: then the cache is not
    used. The files named in a host's `user:` list are recorded by the build itself
    (Project.read_inputs), as only it knows them."""
    if options.check or options.discover:
        return None  # never looked up (see lookup): walking the tree is wasted
    try:
        return json.loads(json.dumps(_fingerprint(root, options, here)))
    except OSError:
        return None


def _fingerprint(root: Path, options, detected) -> dict:
    from . import hosts

    personal = paths.user_layer()
    # only a build of this machine (no --host, or --host local) depends on what is detected
    return {
        # --set values may hold secrets (a URL's password): the record keeps only their hash
        "options": [list(options.hosts), options.all_hosts, list(options.profiles), _hashed(options.sets),
                    str(options.out_dir or ""), options.with_staging],
        "machine": hosts.machine_name(),
        "detected": [detected.ram_mb, [g.to_dict() for g in detected.gpus], list(detected.runtimes or ())]
        if detected else None,
        "inputs": _stat_tree(root / "sources", root) + _stat_tree(root / "profiles", root)
        + _stat_tree(root / "templates", root)
        + _stat_tree(PACKAGE, PACKAGE.parent, (".py", ".json", ".j2")),
        # config.yaml's `profiles` choose this machine's profiles: a build depends on it too
        "personal": _stat_tree(personal.parent, personal.parent)
        if os.path.lexists(personal) or os.path.lexists(paths.config_file()) else [],
    }


def _hashed(sets) -> str:
    return hashlib.sha256(json.dumps(list(sets)).encode()).hexdigest()


def _cache_file(root: Path, options) -> Path:
    out = options.out_root(root)
    key = hashlib.sha256(json.dumps([str(root), list(options.hosts), options.all_hosts, list(options.profiles),
                                     list(options.sets), options.with_staging]).encode()).hexdigest()[:16]
    return out / ".cache" / f"build-{key}.json"


def _stat_outputs(folders: list[str]) -> list:
    """models.json and every export of each host: a deleted or edited output forces a build."""
    rows = []
    for folder in folders:
        paths = [Path(folder) / "models.json"] + sorted((Path(folder) / "exports").rglob("*"))
        for path in paths:
            if path.is_file() or path.name == "models.json":
                st = path.stat()
                rows.append((str(path), st.st_size, st.st_mtime_ns))
    return rows


def lookup(root: Path, options, fingerprint: dict | None,
           read_outputs: bool = True) -> list[tuple[str, dict | None, bool]] | None:
    """The previous results, if nothing changed; None means "compile"."""
    if options.check or options.discover or fingerprint is None:
        return None  # --check compares with what the sources say now; a live discovery is an input no stat sees
    try:
        record = json.loads(_cache_file(root, options).read_text())
        if record["fingerprint"] != fingerprint:
            return None
        if record["read"] != [stat_row(Path(row[0])) for row in record["read"]]:
            return None
        if record["outputs"] != json.loads(json.dumps(_stat_outputs(record["folders"]))):
            return None
        return [(display, json.loads((Path(folder) / "models.json").read_text()) if read_outputs else None, False)
                for folder, display in zip(record["folders"], record["displays"])]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def store(root: Path, options, fingerprint: dict | None, results: list[tuple[Path, dict]],
          read: list[list] | None) -> None:
    """Record a build: `fingerprint` taken before it ran, `read` the stat rows of the other files it read
    (None when it could not stat one). Call with the out/ lock held."""
    path = _cache_file(root, options)
    if options.discover or fingerprint is None or read is None:
        # outputs that depend on what Ollama said, or on inputs no stat can vouch for: never reused
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
        return
    folders = [str(folder) for folder, _ in results]
    displays = []
    for folder in folders:
        try:
            displays.append(str(Path(folder).resolve().relative_to(root.resolve())))
        except ValueError:
            displays.append(folder)
    record = {"fingerprint": fingerprint, "read": read, "folders": folders, "displays": displays,
              "outputs": _stat_outputs(folders)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a fresh mkstemp file, never a planted link; a leftover is removed by the next build
        fd, tmp = tempfile.mkstemp(prefix=f"{path.stem}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next build its shortcut
