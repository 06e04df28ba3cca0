"""The command line: click turns flags into options, each command returns an exit status.

Kept thin and quick to start: the pipeline is imported inside the commands that need it.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .errors import EXIT_INVALID, EXIT_OK, EXIT_RUNTIME, HostfitError, UsageError
from .runtimes import LOADABLE


class Context:
    def __init__(self, directory: Path | None):
        self.directory = directory

    def root(self) -> Path:
        if self.directory is None:  # the nearest folder at or above the working directory with sources/
            here = Path.cwd().resolve()
            for folder in (here, *here.parents):
                if (folder / "sources").is_dir():
                    return folder
            raise UsageError(f"no catalog here: neither {here} nor a parent holds a sources/ folder (use -C DIR)")
        root = self.directory.resolve()
        if not (root / "sources").is_dir():
            raise UsageError(f"{root} holds no sources/ folder")
        return root

    def project(self, here=None):
        from .pipeline import Project

        return Project(self.root(), here)


def run(action) -> None:
    """The single exit point: a HostfitError becomes its message and exit status, never a traceback.

    Each stage translates the exceptions of its own boundary (`raise ... from exc`); what the
    machine can still throw anywhere (a disk or permission failure, memory) is translated last
    here, as a run-time failure (exit 3) naming the path. Any other exception is a bug in
    hostfit and is deliberately not caught: its traceback is the report, and tests see it."""
    try:
        status = action()
    except HostfitError as exc:
        from .errors import InputError
        if isinstance(exc, InputError):
            from . import report
            click.echo(report.diagnostics(exc.diagnostics, []), err=True)
        else:
            click.echo(f"hostfit: error: {exc}", err=True)
        status = exc.exit_status
    except BrokenPipeError:  # the reader went away (`hostfit build | head -1`): nothing left to tell it
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        status = EXIT_BROKEN_PIPE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"hostfit: error: {where}{exc.strerror or exc}", err=True)
        status = EXIT_RUNTIME
    except MemoryError:
        click.echo("hostfit: error: out of memory", err=True)
        status = EXIT_RUNTIME
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader closed the pipe


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Work on the catalog repository at DIR (default: the nearest folder holding sources/).")
@click.version_option(package_name="hostfit")
@click.pass_context
def main(ctx: click.Context, directory: Path | None) -> None:
    """hostfit: compile a layered model catalog into one models.json per machine."""
    ctx.obj = Context(directory)


@main.command()
@click.option("--host", "hosts", multiple=True, metavar="H", help="Compile declared host H ('local': this machine).")
@click.option("--all", "all_hosts", is_flag=True, help="Compile every declared host.")
@click.option("--profile", "profiles", multiple=True, metavar="P", help="Add profile P on top of the host's own.")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="Override a value, on top of every layer.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default out/).")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 naming the outputs that are stale.")
@click.option("--with-staging", is_flag=True, help="Include sources/staging/ as a layer.")
@click.option("--discover", is_flag=True, help="Discover this machine's Ollama models live, as its lowest layer.")
@click.option("--quiet", "-q", is_flag=True, help="Print errors only.")
@click.pass_obj
def build(obj: Context, hosts, all_hosts, profiles, sets, out_dir, check, with_staging, discover, quiet) -> None:
    """Compile out/<host>/models.json (this machine's by default)."""
    def action() -> int:
        from . import buildcache
        from .options import BuildOptions

        if out_dir is not None and not str(out_dir):  # '' would write into the working directory
            raise UsageError("--out needs a folder name (it is empty)")
        root = obj.root()
        options = BuildOptions(tuple(hosts), all_hosts, tuple(profiles), tuple(sets),
                               Path(out_dir) if out_dir else None, check, with_staging, discover)
        here = buildcache.this_machine(options)
        fingerprint = buildcache.fingerprint(root, options, here)
        cached = buildcache.lookup(root, options, fingerprint, read_outputs=not quiet)
        if cached is not None:
            if not quiet:
                _print_results(cached, check, single=len(cached) == 1 and not all_hosts)
            return EXIT_OK
        project = obj.project(here)
        if check:
            result = project.compile(options, write=False, keep_outputs=False)
        else:
            # two builds take turns to write out/; each host is staged as it is compiled, and published
            # only if every host compiled cleanly; the cache record is written under the same lock, so it
            # always describes the outputs beside it
            on_wait = None if quiet else (lambda message: click.echo(message, err=True))
            result = project.compile(options, keep_outputs=single_output(options), on_wait=on_wait,
                                     committed=lambda done: buildcache.store(
                                         project.root, options, fingerprint, [(r.folder, r.output) for r in done.results],
                                         project.read_inputs))
        from . import report
        warnings = [] if quiet else result.warnings
        if result.errors or warnings:
            click.echo(report.diagnostics(result.errors, warnings), err=True)
        if result.errors:
            return EXIT_INVALID
        summaries = [(r.folder, r.output, r.stale) for r in result.results]
        if check:
            stale = [r.folder / "models.json" for r in result.results if r.models_stale]
            stale += [r.folder / "exports" / name for r in result.results for name in r.stale_exports]
            for path in stale:
                click.echo(f"stale: {project.display(path)}", err=True)
            if stale:
                click.echo("run `hostfit build --all` (or `make build-all`) and commit out/", err=True)
                return EXIT_INVALID
        if not quiet:
            _print_results([(project.display(f), o, s) for f, o, s in summaries], check,
                           single=len(summaries) == 1 and not all_hosts)
        return EXIT_OK

    run(action)


def single_output(options) -> bool:
    """Whether the build prints a role table, which needs the compiled document: one host, not --all."""
    return not options.all_hosts and len(options.hosts) <= 1


def _print_results(results, check: bool, single: bool) -> None:
    """One line per host; the role table too when a single host was built."""
    from . import report

    for folder, output, stale in results:
        if check:
            click.echo(f"{folder}/models.json: {'stale' if stale else 'up to date'}")
            continue
        click.echo(f"{folder}/models.json ({'updated' if stale else 'unchanged'})")
        if single:
            click.echo(report.role_table(output))


@main.command(name="validate")
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text", show_default=True)
@click.option("--max-errors", type=click.IntRange(min=0), default=50, show_default=True,
              help="Show at most N problems (0: all).")
@click.pass_obj
def validate_command(obj: Context, paths, fmt, max_errors) -> None:
    """Check the catalog (or just PATHs) and report every problem."""
    def action() -> int:
        from . import report
        from .pipeline import Project

        if paths:
            root = obj.directory.resolve() if obj.directory else Path.cwd()
            result = Project(root).validate(list(paths))
        else:
            result = obj.project().validate()
        text = report.diagnostics(result.errors, result.warnings, fmt, max_errors)
        if text:
            click.echo(text, err=fmt == "text")
        if fmt == "text" and result.ok:
            click.echo("ok: no problems found", err=True)
        return EXIT_INVALID if result.errors else EXIT_OK

    run(action)


@main.command(name="diff")
@click.argument("old", required=False, type=click.Path(exists=True, path_type=Path))
@click.argument("new", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--git", "ref", metavar="REF", help="Compare REF's sources, compiled, with the working tree's.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json", "github"]), default="text",
              show_default=True)
@click.option("--exit-code", is_flag=True, help="Exit 1 when something changed, 0 when nothing did (2: error).")
@click.pass_obj
def diff_command(obj: Context, old, new, ref, fmt, exit_code) -> None:
    """What a catalog change does, per host: OLD NEW (models.json files or out/ folders), or --git REF."""
    def action() -> int:
        import sys as _sys

        from . import diff as differ
        from .errors import InputError

        if ref and (old or new) or not ref and not (old and new):
            raise UsageError("give OLD and NEW, or --git REF")
        if ref and ref.startswith("-"):  # git would read it as an option
            raise UsageError(f"--git {ref!r}: a git ref cannot start with '-'")
        try:
            if ref:
                project = obj.project()
                before, after = differ.git_side(project.root, ref), differ.compiled_side(project)
            else:
                before, after = differ.read_side(old), differ.read_side(new)
        except InputError as exc:  # bad input exits 1, but with --exit-code 1 means "changed"
            from . import report
            click.echo(report.diagnostics(exc.diagnostics, []), err=True)
            return 2 if exit_code else EXIT_INVALID
        changes = differ.diff(before, after)
        if fmt == "json":
            click.echo(differ.render_json(changes))
        elif fmt == "markdown":
            click.echo(differ.render_markdown(changes))
        elif fmt == "github":
            click.echo(differ.render_github(changes))
        else:
            click.echo(differ.render_text(changes, colour=_sys.stdout.isatty()))
        return (1 if changes else 0) if exit_code else EXIT_OK

    run(action)


@main.command(name="migrate")
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--write", is_flag=True, help="Rewrite the files in place (comments and order kept).")
@click.option("--backup", is_flag=True, help="With --write: keep the original as FILE.bak.")
@click.pass_obj
def migrate_command(obj: Context, paths, write: bool, backup: bool) -> None:
    """Bring files written for older schema versions up to date (a diff, or --write)."""
    def action() -> int:
        from . import edit, report
        from .errors import InputError
        from .pipeline import Project

        project = Project(obj.directory.resolve() if obj.directory else Path.cwd()) if paths else obj.project()
        errors, warnings, changed = [], [], 0
        for path in paths or project.catalog_files():
            try:
                rewrite = edit.migrate_file(path, project.display(path))
            except InputError as exc:
                errors += exc.diagnostics
                continue
            if not rewrite.changed:
                continue
            changed += 1
            warnings += rewrite.warnings
            if write:
                edit.write(rewrite, backup)
                click.echo(f"migrated {rewrite.display}" + (f" (original kept as {rewrite.display}.bak)"
                                                             if backup else ""), err=True)
            else:
                click.echo(rewrite.diff(), nl=False)
        if errors or warnings:
            click.echo(report.diagnostics(sorted(errors), sorted(warnings)), err=True)
        if not changed and not errors:
            click.echo("nothing to migrate: every file is at the current schema version", err=True)
        elif changed and not write:
            click.echo(f"{changed} file(s) would change; run with --write to rewrite them", err=True)
        return EXIT_INVALID if errors else EXIT_OK

    run(action)


def _executor_setup(obj: Context, host: str | None, roles=(), with_fallbacks: bool = False, progress: str = "auto",
                    settings=None, compiled: dict | None = None):
    from .executor import fetch as fetcher
    from .executor.cache import Cache
    from .executor.download import configured
    from .executor.lock import Lock

    settings = settings or _settings()
    folder = fetcher.host_folder(obj.root() / "out", host)
    # config.yaml's team mirrors first
    plan = fetcher.plan(folder, tuple(roles), with_fallbacks, settings.mirrors, compiled, configured(settings))
    for model_id, why in plan.skipped.items():
        click.echo(f"skipped {model_id}: {why}", err=True)
    lock = Lock.load(folder / "models.lock", plan.host)  # every input is checked before the cache is created
    return plan, Cache(), lock, fetcher.Reporter(progress)


def _settings():
    """The user configuration, read once per command before anything is fetched (a bad value: exit 1)."""
    from .executor import config

    return config.settings()


def _pins(obj: Context, store) -> set:
    """What prune, clean and the size limit never evict: every lock under out/ and the installed catalog."""
    from .executor.lock import installed_pins, pinned

    return pinned(_out_folder(obj)) | installed_pins(store)


def _keep_under_limit(obj: Context, store, settings, fetched=()) -> None:
    """After a fetch: LRU prune to cache.max_size (never what a lock pins, nor what this run fetched);
    E721 (exit 3) when the pinned artifacts alone exceed it."""
    limit = settings.max_size
    if limit is None:
        return
    from .executor.cache import enforce_limit

    entries = store.entries()
    this_run = {(item.artifact.model_id, entries[item.artifact.model_id].sha256) for item in fetched
                if item.artifact.model_id in entries}
    evicted = enforce_limit(store, limit, _pins(obj, store) | this_run, settings.path)
    if evicted:
        click.echo(f"cache.max_size: evicted {len(evicted)} least recently used artifact(s): {', '.join(evicted)}",
                   err=True)


VERIFY_HELP = "Hash every cached file, not only those whose size, mtime or inode changed since last hashed."


@main.command()
@click.option("--host", metavar="H", help="A compiled host (default: this machine's).")
@click.option("--role", "roles", multiple=True, metavar="R", help="Only the models of role R.")
@click.option("--with-fallbacks", is_flag=True, help="Also the local models of each fallback chain.")
@click.option("--require-pinned", is_flag=True, help="Fail on any artifact without a pinned sha256 (for CI).")
@click.option("--json", "as_json", is_flag=True, help="Emit progress as JSON events.")
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@click.pass_obj
def fetch(obj: Context, host, roles, with_fallbacks, require_pinned, as_json, verify) -> None:
    """Download, verify and cache the artifacts a compiled host uses (HOSTFIT_CACHE overrides the cache)."""
    def action() -> int:
        from .executor import fetch as fetcher

        settings = _settings()
        plan, cache, lock, reporter = _executor_setup(obj, host, roles, with_fallbacks, "json" if as_json else "auto",
                                                      settings)
        fetched = fetcher.fetch(plan.artifacts, cache, lock, reporter, require_pinned, verify=verify)
        _keep_under_limit(obj, cache, settings, fetched)
        for warning in cache.warnings:
            click.echo(f"warning: {warning}", err=True)
        return EXIT_OK

    run(action)


@main.command(name="lock")
@click.option("--host", metavar="H", help="A compiled host (default: this machine's).")
@click.option("--with-fallbacks", is_flag=True, help="Also pin the local models of each fallback chain.")
@click.pass_obj
def lock_command(obj: Context, host, with_fallbacks) -> None:
    """Pin url, revision, size and sha256 of every chosen artifact in out/<host>/models.lock."""
    def action() -> int:
        from .executor import fetch as fetcher
        from .executor.lock import record_facts

        plan, cache, lock, reporter = _executor_setup(obj, host, (), with_fallbacks)
        changed = fetcher.lock_all(plan.artifacts, cache, lock, reporter)
        click.echo(f"{lock.path}: {len(plan.artifacts)} artifact(s) pinned, {changed} changed", err=True)
        for note in record_facts(obj.root(), plan.artifacts, cache, lock):
            click.echo(note, err=True)
        return EXIT_OK

    run(action)


@main.command(name="load")
@click.argument("role")
@click.option("--host", metavar="H", help="A compiled host (default: this machine's).")
@click.option("--backend", type=click.Choice(LOADABLE),
              help="Load with this runtime (default: the one the compiled role chose for each model).")
@click.option("--prompt", default=None, help="The smoke-test prompt.")
@click.option("--threads", type=int, help="CPU threads (default: all).")
@click.option("--gpu-layers", type=int, help="Layers to offload (default: from the compiled placement).")
@click.option("--no-mmap", is_flag=True, help="Read the model into memory instead of mapping it.")
@click.option("--mlock", is_flag=True, help="Lock the model in RAM.")
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@click.pass_obj
def load_command(obj: Context, role, host, backend, prompt, threads, gpu_layers, no_mmap, mlock, verify) -> None:
    """Load ROLE's model (fetching it first), run a short generation, print load and first-token times."""
    def action() -> int:
        from . import usage
        from .executor.loaders import DEFAULT_PROMPT, load_role

        settings = _settings()
        plan, cache, lock, reporter = _executor_setup(obj, host, (role,), True, settings=settings)
        fetch_one = _fetch_one(obj, plan, cache, lock, reporter, verify, settings)
        overrides = {"threads": threads, "gpu_layers": gpu_layers, "mmap": not no_mmap, "mlock": mlock,
                     "interactive": True}
        loaded = load_role(plan.document, role, backend, prompt or DEFAULT_PROMPT, fetch_one, overrides,
                           say=lambda text: click.echo(text, err=True))
        click.echo(f"{role}: {loaded.model_id} loaded with {loaded.backend} in {loaded.load_seconds:.3f} s; "
                   f"first token after {loaded.first_token_seconds:.3f} s")
        click.echo(f"  output: {loaded.text.strip()!r}")
        usage.record_load(plan.document, role, loaded)
        return EXIT_OK

    run(action)


def _fetch_one(obj: Context, plan, cache, lock, reporter, verify: bool, settings):
    """model id -> its cached file, fetched and pinned first (`load`, `bench`)."""
    from .executor import fetch as fetcher

    artifacts = {a.model_id: a for a in plan.artifacts}

    def fetch_one(model_id: str):
        if model_id not in artifacts:
            from .errors import RuntimeFailure
            raise RuntimeFailure(f"{model_id}: {plan.skipped.get(model_id) or 'no artifact to fetch'}")
        # a corrupt cached file is refused, not replaced: `hostfit fetch` repairs
        fetched = fetcher.fetch_one(artifacts[model_id], cache, lock, reporter, verify, repair=False)
        if lock.pin(model_id, fetcher.lock_entry(fetched)):
            lock.save()
        _keep_under_limit(obj, cache, settings, [fetched])
        return fetched.path
    return fetch_one


@main.command(name="apply")
@click.option("--host", metavar="H", help="A compiled host (default: this machine's).")
@click.option("--from", "bundle_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Install from a bundle made by `hostfit bundle` (no network needed).")
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@click.pass_obj
def apply_command(obj: Context, host, bundle_file, verify) -> None:
    """Fetch, lock and install the compiled models.json where applications read it ($XDG_DATA_HOME/hostfit)."""
    def action() -> int:
        from .executor import apply as applier
        from .executor import fetch as fetcher

        if bundle_file:
            document, count = applier.apply_from(bundle_file)
        else:
            settings = _settings()
            plan, cache, lock, reporter = _executor_setup(obj, host, settings=settings)
            # a corrupt cached file is refused, never installed nor replaced: `hostfit fetch` repairs
            fetched = fetcher.fetch(plan.artifacts, cache, lock, reporter, verify=verify, repair=False)
            if not lock.path.exists():
                lock.save()
            document, count = applier.installed_document(plan.document, fetched), len(fetched)
        target = applier.install(document)
        if not bundle_file:
            _keep_under_limit(obj, cache, settings, fetched)
        click.echo(f"installed {target} ({document['host']['name']}, {count} artifact(s) verified)")
        return EXIT_OK

    run(action)


@main.command(name="bundle")
@click.argument("host")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@click.pass_obj
def bundle_command(obj: Context, host, output, verify) -> None:
    """Pack HOST's models.json, lock and artifacts into one file for an air-gapped machine."""
    def action() -> int:
        from .emit import output_mode
        from .executor import apply as applier
        from .executor import fetch as fetcher

        output_mode(output)  # a device, FIFO or link is refused before anything is downloaded
        settings = _settings()
        plan, cache, lock, reporter = _executor_setup(obj, host, settings=settings)
        # a corrupt cached file is refused, never packed nor replaced: `hostfit fetch` repairs
        fetched = fetcher.fetch(plan.artifacts, cache, lock, reporter, verify=verify, repair=False)
        count = applier.bundle(plan, lock, fetched, output)
        _keep_under_limit(obj, cache, settings, fetched)
        click.echo(f"wrote {output}: models.json, models.lock and {count} artifact(s)")
        return EXIT_OK

    run(action)


@main.group()
def cache() -> None:
    """Inspect and tidy the artifact cache ($XDG_CACHE_HOME/hostfit/models, or HOSTFIT_CACHE)."""


def _parsed(parse, text: str):
    """An option value through its parser; a bad one is a usage error (exit 2)."""
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _out_folder(obj: Context):
    try:
        return obj.root() / "out"
    except HostfitError:
        return None  # outside a catalog: no locks to respect


def _store():
    """The cache as it is: these commands never create one, and refuse a folder hostfit did not make."""
    from .executor.cache import Cache

    return Cache(create=False)


def _warn(store) -> None:
    for warning in store.warnings:
        click.echo(f"warning: {warning}", err=True)


@cache.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def cache_list(obj: Context, as_json: bool) -> None:
    """Every cached artifact: size, sha256, last use; `pinned` when a lock under out/ pins it."""
    def action() -> int:
        import json

        store = _store()
        pins = _pins(obj, store)
        entries = store.entries()
        if as_json:
            click.echo(json.dumps([{**e.to_dict(), "pinned": (e.id, e.sha256) in pins} for e in entries.values()],
                                  indent=2))
        for entry in entries.values() if not as_json else ():
            mark = " pinned" if (entry.id, entry.sha256) in pins else ""
            files = f" in {len(entry.files)} files" if entry.files else ""
            click.echo(f"{entry.id}  {entry.size / 2**20:,.1f} MiB{files}  sha256 {entry.sha256[:12]}  "
                       f"last used {entry.last_used} ({entry.use_count}x){mark}")
        _warn(store)
        return EXIT_OK

    run(action)


@cache.command(name="info")
def cache_info() -> None:
    """Where the cache is, how big, and what is left half-downloaded."""
    def action() -> int:
        store = _store()
        entries = store.entries()
        parts = store.parts()
        click.echo(f"cache:     {store.root}")
        click.echo(f"artifacts: {len(entries)}, {sum(e.size for e in entries.values()) / 2**30:,.2f} GiB")
        click.echo(f"partial:   {len(parts)} download(s), {sum(p.stat().st_size for p in parts) / 2**20:,.1f} MiB "
                   f"({len(store.stale_parts())} older than 24 h)")
        _warn(store)
        return EXIT_OK

    run(action)


@cache.command(name="verify")
def cache_verify() -> None:
    """Re-hash every cached artifact against the manifest; exit 3 on any mismatch."""
    def action() -> int:
        from .executor.cache import verify

        store = _store()
        bad = verify(store)
        for model_id, file, actual, expected in bad:
            click.echo(f"{model_id}{' ' + file if file else ''}: {'missing' if actual is None else 'sha256 ' + actual}"
                       f" (manifest: {expected})", err=True)
        broken = len({model_id for model_id, *_ in bad})  # a set with a bad file is one bad artifact
        click.echo(f"{len(store.entries()) - broken} ok, {broken} bad", err=True)
        _warn(store)
        return EXIT_RUNTIME if bad else EXIT_OK

    run(action)


@cache.command(name="remove")
@click.argument("models", nargs=-1, required=True)
def cache_remove(models) -> None:
    """Delete cached artifacts by model id."""
    def action() -> int:
        store = _store()
        missing = [m for m in models if not store.remove(m)]
        for model in missing:
            click.echo(f"{model}: not in the cache", err=True)
        _warn(store)
        return EXIT_INVALID if missing else EXIT_OK

    run(action)


@cache.command(name="clean")
@click.option("--older-than", default="30d", show_default=True, help="Remove artifacts unused this long.")
@click.pass_obj
def cache_clean(obj: Context, older_than: str) -> None:
    """Remove artifacts unused for a while (never a pinned one) and partial downloads older than 24 h."""
    def action() -> int:
        from .executor.cache import clean, parse_age

        limit = _parsed(parse_age, older_than)
        store = _store()
        removed, parts = clean(store, limit, _pins(obj, store))
        click.echo(f"removed {len(removed)} artifact(s) and {parts} stale partial download(s)", err=True)
        _warn(store)
        return EXIT_OK

    run(action)


@cache.command(name="prune")
@click.option("--max-size", required=True, help="Evict least recently used artifacts until the cache fits (20G).")
@click.pass_obj
def cache_prune(obj: Context, max_size: str) -> None:
    """LRU eviction down to --max-size; an artifact pinned by a lock under out/ is never evicted."""
    def action() -> int:
        from .executor.cache import parse_size, prune

        limit = _parsed(parse_size, max_size)
        store = _store()
        evicted, total = prune(store, limit, _pins(obj, store))
        click.echo(f"evicted {len(evicted)} artifact(s){': ' + ', '.join(evicted) if evicted else ''}; "
                   f"cache now {total / 2**30:,.2f} GiB" + (" (pinned artifacts keep it above the limit)"
                                                           if total > limit else ""), err=True)
        _warn(store)
        return EXIT_OK

    run(action)


@cache.command(name="clear")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def cache_clear(obj: Context, yes: bool) -> None:
    """Delete every cached artifact (pinned ones too) and partial download; the next fetch downloads again."""
    def action() -> int:
        from .executor.cache import clear

        store = _store()
        entries = store.entries()
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError("cache clear deletes every cached artifact: pass --yes to confirm")
            pins = _pins(obj, store)
            pinned_count = sum((e.id, e.sha256) in pins for e in entries.values())
            if not click.confirm(f"Delete {len(entries)} artifact(s), {sum(e.size for e in entries.values()) / 2**30:,.2f}"
                                 f" GiB, from {store.root} ({pinned_count} pinned by a lock)?", default=False):
                click.echo("nothing deleted", err=True)
                return EXIT_OK
        removed, parts = clear(store)
        click.echo(f"removed {len(removed)} artifact(s) and {parts} partial download(s)"
                   + (f"; {len(entries) - len(removed)} in use by a running fetch kept"
                      if len(removed) < len(entries) else ""), err=True)
        _warn(store)
        return EXIT_OK

    run(action)


IMPORT_FORMATS = ("gpt4all", "litellm", "openrouter", "llmfit", "registry")  # = importers.FORMATS (a test checks)


@main.command(name="import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(IMPORT_FORMATS))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the catalog layer here (default: standard output).")
def import_command(fmt: str, file: Path, output: Path | None) -> None:
    """Turn a foreign catalog (GPT4All, LiteLLM, OpenRouter, llmfit, registry) into a catalog layer."""
    def action() -> int:
        from . import importers, report
        from .emit import write_atomic
        from .load import load_yaml_text
        from .merge import Layer, merge_layers
        from .validate import check_document, check_merged

        imported = importers.run(fmt, file, str(file))
        text = importers.render(imported)
        doc = load_yaml_text(text, str(output or "<import>"))
        problems = sorted({p for p in check_document(doc) + check_merged(merge_layers([Layer("import", doc)]))
                           if p.severity == "error"})
        if problems:  # an importer bug: say so rather than write a layer that will not compile
            click.echo(report.diagnostics(problems, []), err=True)
            return EXIT_INVALID
        if output:
            write_atomic(output, text.encode())
            click.echo(imported.summary() + f"\nwrote {output}")
        else:
            click.echo(text, nl=False)
            click.echo(imported.summary(), err=True)
        return EXIT_OK

    run(action)


@main.command()
@click.argument("host")
@click.argument("subject", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@click.pass_obj
def explain(obj: Context, host: str, subject: str | None, as_json: bool) -> None:
    """Why HOST's roles got their models; or where a value came from (a /json/pointer)."""
    def action() -> int:
        from . import explain as explainer
        from .options import BuildOptions

        project = obj.project()
        result = project.compile(BuildOptions(hosts=(host,)), write=False)
        if result.errors:  # shown, but a host whose selection failed can still be explained
            from . import report
            click.echo(report.diagnostics(result.errors, result.warnings), err=True)
        if result.results:
            import json
            document = json.loads(result.results[0].explain_bytes)
            click.echo(explainer.render(document, subject, as_json))
        return EXIT_INVALID if result.errors else EXIT_OK

    run(action)


def _this_host(project, sources) -> str:
    from . import hosts

    declared = hosts.find_declared(hosts.machine_name(), sources.hosts)
    return declared.name if declared else hosts.machine_name()


@main.command(name="discover")
@click.option("--ollama", "base", metavar="URL", help="Ollama's address (default: OLLAMA_HOST, else 127.0.0.1:11434).")
@click.option("--write", is_flag=True, help="Write sources/discovered/<host>.yaml, a catalog layer.")
@click.pass_obj
def discover_command(obj: Context, base, write) -> None:
    """List the models this machine's Ollama has installed (a missing Ollama is only a warning)."""
    def action() -> int:
        from .discover import ollama
        from .emit import write_atomic
        from .load import dump_yaml, load_yaml_text
        from .validate import check_document

        project = obj.project()
        sources = project.load_sources()
        host = _this_host(project, sources)
        found = ollama.discover(host, base, project.ollama_names(sources))
        for warning in found.warnings:
            click.echo(f"warning: {warning}", err=True)
        for model_id, model in sorted(found.models.items()):
            facts = ", ".join(str(x) for x in (model.get("params_b") and f"{model['params_b']}B",
                                                model.get("quantization"),
                                                model.get("context_window") and f"ctx {model['context_window']}")
                              if x)
            click.echo(f"{model_id}  ({model['ollama']['name']}, {model['provider']}{', ' + facts if facts else ''})")
        if write:
            text = (f"# Discovered on {host} from Ollama by `hostfit discover --write`; the lowest layer:\n"
                    "# the catalog's own facts win over these.\n"
                    + dump_yaml(ollama.layer(found), sort_keys=False))
            target = project.root / "sources" / "discovered" / f"{host}.yaml"
            problems = [p for p in check_document(load_yaml_text(text, project.display(target)))
                        if p.severity == "error"]
            if problems:
                from . import report
                click.echo(report.diagnostics(problems, []), err=True)
                return EXIT_INVALID
            write_atomic(target, text.encode())
            click.echo(f"wrote {project.display(target)}: {len(found.models)} model(s)", err=True)
        return EXIT_OK

    run(action)


@main.command(name="ingest")
@click.option("--source", "chosen", multiple=True, type=click.Choice(["hf", "openrouter", "curated"]),
              help="What to refresh (default: all three); the others' candidates are kept as they are. "
                   "HF_ENDPOINT and OPENROUTER_BASE_URL are honoured.")
@click.option("--refresh", is_flag=True, help="Ignore cached responses (kept 6 hours).")
@click.option("--dry-run", is_flag=True, help="Print what would change (added, removed, changed, stale); write nothing.")
@click.pass_obj
def ingest_command(obj: Context, chosen, refresh, dry_run) -> None:
    """Stage candidate models from Hugging Face, OpenRouter and sources/curated.yaml for review."""
    def action() -> int:
        from .discover import ingest
        from .emit import write_atomic
        from .merge import merge_layers

        project = obj.project()
        target = project.root / "sources" / "staging" / "candidates.json"
        previous = ingest.read_staged_strict(project, target)
        sources = project.load_sources()  # the catalog, to mark what it has already; its errors are validate's
        harvests = []
        for source in chosen or ingest.SOURCES:
            harvest = (ingest.from_hf(refresh) if source == "hf" else ingest.from_openrouter(refresh)
                       if source == "openrouter" else ingest.from_curated(sources.curated, sources.errors))
            for warning in harvest.warnings:
                click.echo(f"warning: {warning}", err=True)
            kept = "; its earlier candidates are kept, marked stale" if harvest.failed else ""
            click.echo(f"{ingest.SOURCE_NAMES[source]}: {len(harvest.candidates)} candidate(s){kept}", err=True)
            harvests.append(harvest)
        candidates = ingest.merge(harvests, previous)
        models = merge_layers(sources.layers()).data.get("models")
        ingest.mark_in_catalog(candidates, ingest.catalog_index(models if isinstance(models, dict) else {}))
        for warning in ingest.size(candidates, lambda repo: ingest.hf_repo_details(repo, refresh)):
            click.echo(f"warning: {warning}", err=True)
        found = ingest.changes(previous, candidates)
        click.echo(ingest.render_changes(found))
        if dry_run:
            click.echo("(dry run: nothing written)", err=True)
            return EXIT_OK
        write_atomic(target, ingest.render(ingest.document(candidates)))
        unsized = sum(1 for c in candidates if c.get("unsized"))
        click.echo(f"wrote {project.display(target)}: {len(candidates)} candidate(s), {unsized} unsized; review it, "
                   "then `hostfit adopt MODEL --role R`", err=True)
        return EXIT_OK

    run(action)


def _apply_edits(project, edits, dry_run: bool) -> int:
    from . import edit

    rewrites = edit.edit_catalog(project, edits)
    for rewrite in rewrites:
        click.echo(rewrite.diff(), nl=False)
        if not dry_run:
            edit.write(rewrite)
    click.echo("(dry run: nothing written)" if dry_run else
               f"wrote {', '.join(r.display for r in rewrites if r.changed)}", err=True)
    return EXIT_OK


@main.command(name="adopt")
@click.argument("model")
@click.option("--role", required=True, metavar="R", help="The role that should use it.")
@click.option("--priority", type=int, metavar="N", help="The model's priority (lower wins).")
@click.option("--dry-run", is_flag=True, help="Print the diff, write nothing.")
@click.pass_obj
def adopt_command(obj: Context, model, role, priority, dry_run) -> None:
    """Move a staged candidate (or a catalog model) into service for ROLE, editing the source YAML."""
    def action() -> int:
        from .curation import adopt

        project = obj.project()
        return _apply_edits(project, adopt(project, model, role, priority), dry_run)

    run(action)


@main.command(name="retire")
@click.argument("model")
@click.option("--dry-run", is_flag=True, help="Print the diff, write nothing.")
@click.pass_obj
def retire_command(obj: Context, model, dry_run) -> None:
    """Mark a model retired and take it out of every prefer and fallback list."""
    def action() -> int:
        from .curation import retire

        project = obj.project()
        return _apply_edits(project, retire(project, model), dry_run)

    run(action)


@main.command(name="models")
@click.option("--host", metavar="H", help="A declared host (default: this machine).")
@click.option("--workload", metavar="W", help="Only models serving workload W.")
@click.option("--provider", metavar="P", help="Only models from provider P.")
@click.option("--all", "everything", is_flag=True, help="Also candidates, retired and other non-active models.")
@click.option("--show-aliases", is_flag=True, help="List aliases (case-insensitive) and the ids they name.")
@click.option("--include-suggestions", is_flag=True, help="Include staged candidates (sources/staging/).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_command(obj: Context, host, workload, provider, everything, show_aliases, include_suggestions,
                   as_json) -> None:
    """The catalog as a host sees it, in candidate order (priority, recommended first): memory, fit, speed,
    priority and why each model stands where it does (picked, fallback, or what kept it out)."""
    def action() -> int:
        import json

        from . import listing
        from .errors import did_you_mean
        from .kinds import SERVES
        from .options import BuildOptions

        if workload and workload not in SERVES:
            raise UsageError(f"unknown workload {workload!r}; "
                             + (did_you_mean(workload, SERVES) or "workloads: " + ", ".join(SERVES)))

        options = BuildOptions(hosts=(host,) if host else (), with_staging=include_suggestions)
        catalog, target, measured_runs = obj.project().host_catalog(options)
        if show_aliases:
            aliases = dict(sorted(catalog.aliases().items()))
            click.echo(json.dumps(aliases, indent=2) if as_json else
                       "\n".join(f"{alias} -> {model_id}" for alias, model_id in aliases.items()))
            return EXIT_OK
        found = listing.rows(catalog, target, workload, provider, everything, include_suggestions, measured_runs)
        click.echo(json.dumps(found, indent=2) if as_json else
                   f"{target.name}: {len(found)} model(s)\n" + listing.table(found))
        return EXIT_OK

    run(action)


@main.command(name="schema")
@click.argument("kind", type=click.Choice(["catalog", "profile", "hosts", "curated", "measured", "output"]))
def schema_command(kind: str) -> None:
    """Print the JSON Schema of a document kind (save it to point your editor at it)."""
    def action() -> int:
        from .schema import SCHEMA_DIR

        click.echo((SCHEMA_DIR / f"{kind}.v2.json").read_text(), nl=False)
        return EXIT_OK

    run(action)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def host(as_json: bool) -> None:
    """Print the facts detected on this machine (RAM, GPUs, runtimes) and the name builds use."""
    def action() -> int:
        from . import hosts

        detected = hosts.detect(hosts.machine_name())
        facts = {"name": detected.name, "ram_mb": detected.ram_mb, "available_mb": detected.available_mb,
                 "gpus": [g.to_dict() for g in detected.gpus], "runtimes": list(detected.runtimes or ())}
        if detected.unified_memory:
            facts["gpu_share_mb"] = detected.gpu_share_mb
        if as_json:
            import json
            click.echo(json.dumps(facts, indent=2, sort_keys=True))
        else:
            click.echo(f"name:      {facts['name']}")
            click.echo(f"ram:       {detected.ram_mb / 1024:.1f} GiB ({detected.ram_mb:,} MiB)")
            click.echo(f"available: {(detected.available_mb or 0) / 1024:.1f} GiB")
            gpus = ", ".join(f"{g.name} ({g.vram_mb / 1024:.0f} GiB)" for g in detected.gpus)
            click.echo(f"gpus:      {gpus or 'none detected (nvidia-smi, rocm-smi absent or report none)'}")
            if detected.unified_memory:
                click.echo(f"gpu share: {detected.gpu_share_mb / 1024:.1f} GiB of the RAM (unified memory)")
            click.echo(f"runtimes:  {', '.join(detected.runtimes or ()) or 'none detected'}")
        return EXIT_OK

    run(action)


@main.command(name="inspect")
@click.argument("target", metavar="FILE|URL")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as one JSON object.")
@click.option("--write", is_flag=True, help="Record the facts as sources/facts/<model>.yaml, a catalog layer.")
@click.option("--model", "model", metavar="ID", help="With --write: the catalog model they belong to "
              "(default: the one whose artifact has this file name).")
@click.pass_obj
def inspect_command(obj: Context, target: str, as_json: bool, write: bool, model: str | None) -> None:
    """Read a GGUF file's header (a local file, or an https URL with Range requests) and print its facts."""
    def action() -> int:
        from .inspect_gguf import inspect, render

        if model is not None and not write:
            raise UsageError("--model names where --write records the facts: give --write too")
        project = obj.project() if write else None  # before the read: outside a catalog there is nowhere to write
        found = inspect(target)
        click.echo(render(found, as_json))
        if project is not None:
            from .facts import record

            path, changed, model_id = record(project, target, found, model)
            click.echo(f"{'wrote' if changed else 'unchanged:'} {project.display(path)} ({model_id})", err=True)
        return EXIT_OK

    run(action)


# ------------------------------------------------------------------------------- profiles

@main.group(name="profile")
def profile_group() -> None:
    """List, show, create, delete, export, import, activate and deactivate profiles (profiles/)."""


def _profile_command(name: str):
    """Register `body(project, sources, **options)` as `profile NAME`, run on a valid catalog through the
    single exit point (click options go below this decorator, as on any command)."""
    def register(body):
        @functools.wraps(body)
        def command(obj: Context, **options) -> None:
            def action() -> int:
                from .profiles import sources_of

                project = obj.project()
                return body(project, sources_of(project), **options)

            run(action)
        return profile_group.command(name=name)(click.pass_obj(command))
    return register


@_profile_command("list")
@click.option("--json", "as_json", is_flag=True)
def profile_list(project, sources, as_json: bool) -> int:
    """Every profile: what it extends, the declared hosts that activate it, its file."""
    import json

    from .profiles import rows, table

    found = rows(sources)
    click.echo(json.dumps(found, indent=2) if as_json else table(found), nl=as_json)
    return EXIT_OK


@_profile_command("show")
@click.argument("name", metavar="P")
def profile_show(project, sources, name: str) -> int:
    """Print profile P as written, then resolved (its extends chain merged)."""
    from .profiles import show

    click.echo(show(project, sources, name), nl=False)
    return EXIT_OK


@_profile_command("create")
@click.argument("name", metavar="P")
@click.option("--extends", "extends", multiple=True, metavar="B", help="A profile P builds on (repeatable).")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="A value of the new profile (repeatable).")
@click.option("--description", metavar="TEXT", help="What the profile is for.")
def profile_create(project, sources, name: str, extends, sets, description) -> int:
    """Write profiles/P.yaml, checked with the whole catalog first."""
    from .emit import write_atomic
    from .profiles import create

    path, text = create(project, sources, name, tuple(extends), tuple(sets), description)
    write_atomic(path, text.encode())
    click.echo(f"wrote {project.display(path)}", err=True)
    return EXIT_OK


@_profile_command("delete")
@click.argument("name", metavar="P")
def profile_delete(project, sources, name: str) -> int:
    """Remove profile P; refused while a host, this machine or another profile's extends uses it."""
    from .profiles import delete

    path = delete(project, sources, name)
    path.unlink()
    click.echo(f"deleted {project.display(path)}", err=True)
    return EXIT_OK


@_profile_command("export")
@click.argument("name", metavar="P")
@click.option("-o", "output", type=click.Path(dir_okay=False, path_type=Path), help="Write FILE (default: stdout).")
@click.option("--resolved", "flatten", is_flag=True, help="Its extends chain merged in: needs no other profile.")
def profile_export(project, sources, name: str, output: Path | None, flatten: bool) -> int:
    """Write profile P as one file `profile import` reads back byte for byte."""
    from .emit import write_atomic
    from .profiles import export

    data = export(project, sources, name, flatten)
    if output is None:
        click.echo(data.decode(), nl=False)
    else:
        write_atomic(output, data)
        click.echo(f"wrote {output}", err=True)
    return EXIT_OK


@_profile_command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a profile of the same name.")
def profile_import(project, sources, file: Path, force: bool) -> int:
    """Add the profile in FILE to profiles/, checked with the whole catalog first."""
    from .emit import write_atomic
    from .profiles import import_

    path, data, replaced = import_(project, sources, file, force)
    write_atomic(path, data)
    click.echo(f"{'replaced' if replaced else 'wrote'} {project.display(path)}", err=True)
    return EXIT_OK


def _toggle(project, sources, name: str, host: str | None, on: bool) -> int:
    from .profiles import activation

    change = activation(project, sources, name, host, on)
    state = "active" if on else "inactive"
    if change.write is None:
        click.echo(f"{name} already {state} for {change.where}; nothing written", err=True)
        return EXIT_OK
    change.write()
    click.echo(f"{name} {state} for {change.where}: profiles [{', '.join(change.before)}] -> "
               f"[{', '.join(change.after)}]", err=True)
    return EXIT_OK


@_profile_command("activate")
@click.argument("name", metavar="P")
@click.option("--host", metavar="H", help="A declared host, or 'local' (default: this machine).")
def profile_activate(project, sources, name: str, host: str | None) -> int:
    """Add P to a declared host's profiles (sources/hosts.yaml), or this undeclared machine's (config.yaml)."""
    return _toggle(project, sources, name, host, True)


@_profile_command("deactivate")
@click.argument("name", metavar="P")
@click.option("--host", metavar="H", help="A declared host, or 'local' (default: this machine).")
def profile_deactivate(project, sources, name: str, host: str | None) -> int:
    """Take P out of a declared host's profiles, or this undeclared machine's."""
    return _toggle(project, sources, name, host, False)


# ------------------------------------------------------------------------------------------- mirror

@main.command(name="mirror")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", "hosts", multiple=True, metavar="H", help="A compiled host (repeatable; default: this machine's).")
@click.option("--all", "all_hosts", is_flag=True, help="Every compiled host under out/.")
@click.option("--verify", is_flag=True, help="Hash every file already in DIR, not only those changed since hashed.")
@click.option("--json", "as_json", is_flag=True, help="Emit progress as JSON events.")
@click.pass_obj
def mirror_command(obj: Context, directory: Path, hosts, all_hosts, verify, as_json) -> None:
    """Fill DIR with every artifact file the compiled hosts use, verified, as DIR/sha256/<sha256> for any static
    HTTP server (hosts list it as `mirrors:`)."""
    def action() -> int:
        from .executor import fetch as fetcher
        from .executor.mirror import Mirror, wanted_files

        out = obj.root() / "out"
        if all_hosts:
            folders = sorted(path.parent for path in out.glob("*/models.json"))
            if not folders:
                raise UsageError(f"no compiled host under {out}: run `hostfit build --all` first")
        else:
            folders = [fetcher.host_folder(out, host) for host in (hosts or (None,))]
        wanted, unpinned = wanted_files(folders)
        for item in unpinned:
            click.echo(f"warning[W820]: {item}: no sha256 (neither the catalog nor models.lock pins it), so no host "
                       "could fetch it from a mirror; not mirrored: run `hostfit lock` for that host", err=True)
        result = Mirror(directory).fill(wanted, fetcher.Reporter("json" if as_json else "auto"), verify, _mirror_cache())
        for sha, why in sorted(result.failed.items()):
            click.echo(f"error: {sha}: {why}", err=True)
        click.echo(f"{directory}: {len(wanted)} file(s): {len(result.present)} already present, "
                   f"{len(result.copied)} copied from the cache, {len(result.downloaded)} downloaded, "
                   f"{len(result.failed)} failed", err=True)
        return EXIT_RUNTIME if result.failed else EXIT_OK

    run(action)


def _mirror_cache():
    """This machine's artifact cache as it is, to copy verified files from; None when there is none usable."""
    from .executor.cache import Cache

    try:
        return Cache(create=False)
    except HostfitError:  # a folder hostfit did not make, or no cache at all: download instead
        return None


# ------------------------------------------------------------------------------ usage statistics

@main.command(name="stats")
@click.option("--role", metavar="R", help="Only calls of role R.")
@click.option("--model", metavar="M", help="Only calls to (and measurements of) model M.")
@click.option("--since", metavar="AGE", help="Only the last AGE: 30m, 12h, 7d, 2w.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--repair", is_flag=True, help="Rebuild an unusable usage store, keeping the rows still readable.")
@click.pass_obj
def stats_command(obj: Context, role, model, since, fmt, repair) -> None:
    """Calls per model and role (success, latency, tokens/s, cost) and measurements vs estimates."""
    def action() -> int:
        from . import stats

        if repair:
            result = stats.rebuild()
            kept = ", ".join(f"{rows:,} {table}" for table, rows in sorted(result["kept"].items())) or "nothing"
            moved = f"; the old file is {result['moved_to']}" if result["moved_to"] else ""
            click.echo(f"rebuilt {result['path']}: kept {kept}{moved}")
            return EXIT_OK
        cutoff = stats.parse_since(since, stats.now())
        calls, measured, path = stats.gather(role, model and stats.recorded_name(model), cutoff)
        try:
            root = obj.root()
        except UsageError:
            root = None
        measured = stats.with_estimates(measured, stats.catalog_reader(root))
        click.echo(stats.render_json(calls, measured) if fmt == "json"
                   else stats.render_text(calls, measured, since, str(path)))
        return EXIT_OK
    run(action)


# ------------------------------------------------------------------------------ measured facts

@main.group(name="measured")
def measured_group() -> None:
    """The measured layer: sources/measured/<host>.yaml, from the usage store's measurements."""


@measured_group.command(name="export")
@click.option("--host", metavar="H", help="The host whose measurements to export (default: this machine's name, "
                                          "as build names it).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.pass_obj
def measured_export(obj: Context, host, dry_run) -> None:
    """Write sources/measured/<host>.yaml from the measurements `hostfit load` and `bench` recorded."""
    def action() -> int:
        from . import measured, usage
        from .errors import RuntimeFailure
        from .executor.fetch import HOST_NAME
        from .paths import usage_db

        project = obj.project()
        name = host or _this_host(project, project.load_sources())
        if not HOST_NAME.match(name):  # the file's name: one file under sources/measured/, never a path
            raise UsageError(f"{name!r} is not a host name (letters, digits, '.', '_' and '-')")
        try:
            rows = usage.measurements(host=name)
            hosts = [] if rows else sorted({row["host"] for row in usage.measurements()})
        except usage.StoreError as exc:
            raise RuntimeFailure(f"E640 the usage store cannot be read: {exc}") from exc
        rows, unplaced = measured.exportable(rows)
        if unplaced:
            click.echo(f"warning: W641 {len(unplaced)} measurement(s) of {name} left out: no known runtime, no "
                       f"placement of {', '.join(measured.PLACEMENTS)} or no context recorded", err=True)
        if not rows:
            click.echo(f"warning: W640 no measurements of host {name!r} in {usage_db()}"
                       + (f" (it holds {', '.join(hosts)}; --host H)" if hosts else "")
                       + "; `hostfit load` and `hostfit bench` record them. Nothing written.", err=True)
            return EXIT_OK
        path, changed, lines = measured.export_changes(project.root, name, rows, dry_run)
        for line in lines:
            click.echo(line)
        where = project.display(path)
        if not changed:
            click.echo(f"{where}: unchanged ({len(rows)} measurement(s) of {name})", err=True)
        else:
            click.echo(f"{where}: {'would be written' if dry_run else 'written'} ({len(rows)} measurement(s) of "
                       f"{name}); review it and commit it, then `hostfit build`", err=True)
        return EXIT_OK

    run(action)


# ------------------------------------------------------------------------------ benchmarks

BENCH_TOKENS = 128  # decoded by default: enough for a steady tokens/s, seconds on a laptop


@main.command(name="bench")
@click.argument("target", metavar="ROLE|MODEL")
@click.option("--host", metavar="H", help="A compiled host (default: this machine's).")
@click.option("--context", type=click.IntRange(min=1), help="Load with this context (default: the compiled one).")
@click.option("--tokens", type=click.IntRange(min=2), default=BENCH_TOKENS, show_default=True,
              help="Tokens to decode.")
@click.option("--prompt", default=None, help="The prompt.")
@click.option("--threads", type=int, help="CPU threads (default: all).")
@click.option("--gpu-layers", type=int, help="Layers to offload (default: from the compiled placement).")
@click.option("--verify", is_flag=True, help=VERIFY_HELP)
@click.pass_obj
def bench_command(obj: Context, target, host, context, tokens, prompt, threads, gpu_layers, verify) -> None:
    """Load ROLE's model (or MODEL) as compiled, decode N tokens, record the figures beside the estimates."""
    def action() -> int:
        from . import stats, usage
        from .executor import fetch as fetcher
        from .executor.documents import read_models
        from .executor.loaders import DEFAULT_PROMPT, load_role

        settings = _settings()
        # read once: the target is looked up in it, then the plan is made from it
        compiled = read_models(fetcher.host_folder(obj.root() / "out", host) / "models.json").data
        role, model_id = _bench_target(compiled, target)
        plan, cache, lock, reporter = _executor_setup(obj, host, (role,), True, settings=settings, compiled=compiled)
        fetch_one = _fetch_one(obj, plan, cache, lock, reporter, verify, settings)
        overrides = {"threads": threads, "gpu_layers": gpu_layers, "interactive": True, "context": context,
                     "max_tokens": tokens}
        loaded = load_role(plan.document, role, None, prompt or DEFAULT_PROMPT, fetch_one, overrides,
                           say=lambda text: click.echo(text, err=True), only=model_id)
        row = usage.record_load(plan.document, role, loaded, source="bench")
        [row] = stats.with_estimates([row], lambda _host: plan.document)
        click.echo(stats.render_bench(row, loaded.figures))
        return EXIT_OK

    run(action)


def _bench_target(compiled: dict, target: str) -> tuple[str, str | None]:
    """(role, model or None for the role's chain) that `bench TARGET` names: a compiled role, else a model
    (id or alias, in any case) of a role's chain, benched with that role's compiled settings."""
    roles = compiled["roles"]
    if target in roles:
        return target, None
    wanted = target.lower()
    aliases = {name.lower(): model_id for name, model_id in (compiled.get("aliases") or {}).items()}
    model_id = next((m for m in compiled["models"] if m.lower() == wanted), None) or aliases.get(wanted)
    for name in sorted(roles):
        spec = roles[name]
        if model_id and model_id in [spec.get("model"), *spec.get("fallbacks", ())]:
            return name, model_id
    from .errors import did_you_mean
    hint = did_you_mean(target, [*roles, *compiled["models"]]) or f"roles: {', '.join(sorted(roles))}"
    raise UsageError(f"{target!r} is neither a role of {compiled['host']['name']} nor a model one of its roles "
                     f"uses; {hint}")


if __name__ == "__main__":  # pragma: no cover
    main()
