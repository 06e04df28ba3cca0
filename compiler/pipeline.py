"""The front door: a Project runs the stages over a catalog folder and reports what happened.

    per file:  load -> migrate -> validate.check_document
    per host:  merge -> validate.check_merged -> resolve -> select -> emit

Files are read once; hosts that share the same layers share one merged, checked and resolved
catalog, so compiling 100 hosts costs one merge plus 100 selections. One bad file never hides
the problems of the others, and nothing is written unless every host compiled cleanly.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import emit, exports, facts, fleet, hosts as hostmod, measured, migrate, paths, publish, runtimes, validate
from .errors import Diagnostic, InputError, UsageError, did_you_mean
from .hosts import LOCAL, Host
from .load import Document, load_file
from .merge import Layer, Merged, merge_layers, origin, parse_set
from .options import BuildOptions
from .resolve import Catalog, resolve
from .select import Plan, select

SOURCE_SUFFIXES = (".yaml", ".yml", ".json")


def folder_files(folder: Path) -> list[Path]:
    """The catalog files of one folder, by name: every entry with a source suffix that is not a
    folder. Dangling links, FIFOs and devices are listed too, for load_file to refuse by name
    (skipping them would hide a file the user meant to be read)."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.suffix in SOURCE_SUFFIXES and not p.is_dir()]


@dataclass
class Sources:
    """Every file of the catalog, loaded and checked on its own."""

    warnings: list[Diagnostic] = field(default_factory=list)
    catalogs: list[Document] = field(default_factory=list)
    facts: list[Document] = field(default_factory=list)  # sources/facts/: GGUF header facts, below catalogs
    hosts_docs: list[Document] = field(default_factory=list)
    curated: list[Document] = field(default_factory=list)  # kind curated: what `ingest` stages, never a layer
    profiles: dict[str, Document] = field(default_factory=dict)
    discovered: dict[str, Document] = field(default_factory=dict)
    measured: dict[str, Document] = field(default_factory=dict)  # host -> sources/measured/<host>.yaml
    errors: list[Diagnostic] = field(default_factory=list)
    hosts: dict[str, Host] = field(default_factory=dict)
    inventory: Merged | None = None  # the merged hosts documents, for positions

    def layers(self) -> list[Layer]:
        """The catalog layers of sources/ (and staging/ when loaded), lowest first: the facts of
        sources/facts/ below every hand-written file, so they fill only what those leave out."""
        return [Layer(facts.LAYER, doc) for doc in self.facts] + [Layer(doc.layer, doc) for doc in self.catalogs]


@dataclass
class Target:
    host: Host
    folder: str  # out/<folder>/
    user_files: tuple[Path, ...] = ()
    this_machine: bool = False  # what --discover may look at


@dataclass
class Job:
    """One host to compile: its target, its profiles (after `extends`) and its checked catalog."""
    target: Target
    profiles: list[str]
    catalog: Catalog
    measured: object = None  # the host's sources/measured/<host>.yaml document, if any


@dataclass
class HostResult:
    host: Host
    folder: Path
    output: dict | None  # None in a result that keeps no outputs (Project.compile)
    models_bytes: bytes
    explain_bytes: bytes
    models_stale: bool
    plan: Plan | None
    exports: dict[str, bytes] = field(default_factory=dict)
    stale_exports: list[str] = field(default_factory=list)
    staged: bool = False  # its outputs were staged for publication (they differ from out/<host>/)

    @property
    def stale(self) -> bool:
        return self.models_stale or bool(self.stale_exports)

    def slim(self) -> HostResult:
        """What a build reports of a host once its outputs are staged or compared: no bytes, documents or plan."""
        return HostResult(self.host, self.folder, None, b"", b"", self.models_stale, None, {}, self.stale_exports,
                          self.staged)

    def outputs(self) -> dict[str, bytes]:
        """Everything the build writes into out/<host>/, by relative path."""
        return {emit.MODELS_JSON: self.models_bytes, emit.EXPLAIN_JSON: self.explain_bytes,
                **{f"{emit.EXPORTS}/{name}": data for name, data in self.exports.items()}}


@dataclass
class Report:
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    results: list[HostResult] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)  # out/ folders staged, in order, for publish.Publication

    @property
    def ok(self) -> bool:
        return not self.errors


def route(problems: list[Diagnostic], errors: list[Diagnostic], warnings: list[Diagnostic]) -> None:
    """File each problem under errors or warnings, once (a set per call: linear, as
    10,000 problems in one file would make a list search quadratic)."""
    for found, is_error in ((errors, True), (warnings, False)):
        new = [p for p in problems if (p.severity == "error") == is_error]
        if new:
            known = set(found)
            for problem in new:
                if problem not in known:
                    known.add(problem)
                    found.append(problem)


class Project:
    def __init__(self, root: Path, here: Host | None = None):
        self.root = root
        self._here = here  # this machine's detected facts, when the caller detected them already
        self._compiled: dict[tuple, tuple[Catalog | None, list[Diagnostic]]] = {}
        self._user_docs: dict[Path, tuple[Document | None, list[Diagnostic]]] = {}
        # files read beyond sources/, profiles/ and templates/ (hosts' `user:` lists), as the no-op
        # cache's stat rows taken before reading; None once one cannot be statted
        self.read_inputs: list[list] | None = []

    # ------------------------------------------------------------------------------ files

    def display(self, path: Path) -> str:
        try:
            # the parent resolved, not the file: a link is shown by its own name (even a dangling one)
            return str((path.parent.resolve() / path.name).relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def read(self, path: Path, layer: str = "sources") -> tuple[Document | None, list[Diagnostic]]:
        """load -> migrate -> check_document; a file that fails a stage yields its diagnostics
        (errors, and warnings such as "migrated from version 1")."""
        try:
            doc = migrate.migrate(load_file(path, self.display(path), layer))
        except InputError as exc:
            return None, exc.diagnostics
        return doc, doc.notes + validate.check_document(doc)

    def source_files(self, with_staging: bool = False) -> list[Path]:
        folders = [self.root / "sources"] + ([self.root / "sources" / "staging"] if with_staging else [])
        return [p for folder in folders for p in folder_files(folder)]

    def catalog_files(self) -> list[Path]:
        """Every document of the catalog: sources/ (staging/ and discovered/ too) and profiles/."""
        folders = ("sources", "sources/staging", "sources/discovered", "sources/facts", "sources/measured",
                   "profiles")
        return [p for name in folders for p in folder_files(self.root / name)]

    def load_sources(self, with_staging: bool = False) -> Sources:
        sources = Sources()
        for path in self.source_files(with_staging):
            doc, problems = self.read(path, "staging" if path.parent.name == "staging" else "sources")
            route(problems, sources.errors, sources.warnings)
            if doc is None:
                continue
            if doc.kind == "hosts":
                sources.hosts_docs.append(doc)
            elif doc.kind == "catalog":
                sources.catalogs.append(doc)
            elif doc.kind == "curated" and doc.layer == "sources":
                sources.curated.append(doc)
            elif doc.kind == "candidates" and doc.layer == "staging":
                from .discover.ingest import as_catalog
                from .load import Positions
                sources.catalogs.append(Document(doc.path, as_catalog(doc.data), Positions({(): (1, 1)}), "staging"))
            else:
                sources.errors.append(Diagnostic(doc.path, *doc.where(("kind",)), "E013",
                                                 f"a {doc.kind} does not belong in sources/",
                                                 "profiles live in profiles/<name>.yaml"))
        self._load_facts(sources)
        for path in folder_files(self.root / "sources" / "discovered"):
            doc, problems = self.read(path, "discovered")
            route(problems, sources.errors, sources.warnings)
            if doc is not None and doc.kind != "catalog":
                sources.errors.append(Diagnostic(doc.path, *doc.where(("kind",)), "E013",
                                                 f"discovered/ holds catalog layers, found kind {doc.kind!r}"))
            elif doc is not None:
                sources.discovered[path.stem] = doc
        for path in folder_files(self.root.joinpath(*measured.FOLDER)):
            doc, problems = self.read(path, measured.LAYER)
            route(problems, sources.errors, sources.warnings)
            if doc is not None and doc.kind != measured.KIND:
                sources.errors.append(Diagnostic(doc.path, *doc.where(("kind",)), "E013",
                                                 f"measured/ holds measured layers, found kind {doc.kind!r}"))
            elif doc is not None:
                sources.measured[path.stem] = doc
        for path in folder_files(self.root / "profiles"):
            doc, problems = self.read(path, "profile")
            route(problems, sources.errors, sources.warnings)
            if doc is None:
                continue
            if doc.kind != "profile":
                sources.errors.append(Diagnostic(doc.path, *doc.where(("kind",)), "E013",
                                                 f"profiles/ holds profiles, found kind {doc.kind!r}"))
                continue
            name = doc.data.get("name")
            name = name if isinstance(name, str) and name else path.stem  # a wrong shape: the schema says so
            if name in sources.profiles:
                sources.errors.append(Diagnostic(doc.path, *doc.where(("name",)), "E208",
                                                 f"profile {name!r} is also defined in "
                                                 f"{sources.profiles[name].path}"))
                continue
            sources.profiles[name] = doc
        sources.errors += validate.check_profiles(sources.profiles)
        inventory = sources.inventory = merge_layers([Layer("hosts", doc) for doc in sources.hosts_docs])
        route(validate.check_hosts(inventory, sources.profiles), sources.errors, sources.warnings)
        if not sources.errors:
            sources.hosts = hostmod.declared_hosts(inventory.data.get("hosts") or {})
            route(measured.undeclared(sources.measured, sources.hosts), sources.errors, sources.warnings)
        return sources

    def _load_facts(self, sources: Sources) -> None:
        """sources/facts/: catalog layers of header facts, each entry kept only for a model the
        catalog files define (W291 otherwise), and checked against what those files say (W290)."""
        found = []
        for path in folder_files(self.root.joinpath(*facts.FOLDER)):
            doc, problems = self.read(path, facts.LAYER)
            route(problems, sources.errors, sources.warnings)
            if doc is not None and doc.kind != "catalog":
                sources.errors.append(Diagnostic(doc.path, *doc.where(("kind",)), "E013",
                                                 f"facts/ holds catalog layers, found kind {doc.kind!r}"))
            elif doc is not None:
                found.append(doc)
        if not found:
            return
        known = validate.mapping(merge_layers([Layer(d.layer, d) for d in sources.catalogs]).data.get("models"))
        sources.facts, problems = facts.orphans(found, known)
        route(problems + facts.disagreements(sources.facts, sources.layers()), sources.errors, sources.warnings)

    # ---------------------------------------------------------------------------- targets

    def targets(self, sources: Sources, options: BuildOptions, report: Report) -> list[Target]:
        declared = sources.hosts
        if options.all_hosts:
            return [Target(h, h.name, self._user_files(h)) for h in declared.values()]
        names = options.hosts or ()
        out = []
        for name in names:
            if name == LOCAL:
                out.append(self._local_target(sources))
                continue
            host = hostmod.find_declared(name, declared)
            if host is None:
                hint = did_you_mean(name, declared) or f"declared hosts: {', '.join(declared) or 'none'}"
                raise UsageError(f"unknown host {name!r}; {hint} (or `--host local` for this machine)")
            out.append(Target(host, host.name, self._user_files(host)))
        if not names:  # this machine: its declaration if it has one, else what we detect
            host = hostmod.find_declared(hostmod.machine_name(), declared)
            if host is None:
                out.append(self._local_target(sources))
            else:
                warning = hostmod.disagreement(host, self._detected(host.name, with_runtimes=False))  # RAM only
                if warning:
                    where = origin(sources.inventory.layers, ("hosts", host.name))
                    report.warnings.append(Diagnostic(*where, "W401", warning, severity="warning"))
                out.append(Target(host, host.name, self._user_files(host), this_machine=True))
        for target in out:
            if target.host.detected and target.host.runtimes is None:
                default = ", ".join(runtimes.default_names(runtimes.hardware(target.host.gpus)))  # mlx on Apple too
                report.warnings.append(Diagnostic(
                    "(this machine)", 0, 0, "W403", "no runtime detected here (llama-cpp-python, Ollama, mlx-lm, "
                    f"vLLM, transformers); compiling for the default runtimes, {default}",
                    "install one (pip install 'hostfit[llama]') or start Ollama", severity="warning"))
        return out

    def _local_target(self, sources: Sources) -> Target:
        """This machine, undeclared: detected facts, the profiles config.yaml activates (else `base` if
        there is one), the personal layer."""
        from .profiles import local_profiles

        personal = paths.user_layer()
        profiles = local_profiles(sources.profiles)
        # anything at that path is read: a FIFO or a dangling link is an error naming it (E018, E019)
        return Target(replace(self._detected(hostmod.machine_name()), profiles=profiles), LOCAL,
                      (personal,) if os.path.lexists(personal) else (), this_machine=True)

    def _detected(self, name: str, with_runtimes: bool = True) -> Host:
        if self._here is not None:
            return replace(self._here, name=name)
        return hostmod.detect(name, with_runtimes=with_runtimes)

    def _user_files(self, host: Host) -> tuple[Path, ...]:
        return tuple(self.root / name for name in host.user)

    # ---------------------------------------------------------------------------- compile

    def profile_chain(self, names: list[str], sources: Sources) -> list[str]:
        """Each profile after its own `extends` chain, parents first, each once."""
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order or name not in sources.profiles:
                return
            for _, parent in validate.str_items(sources.profiles[name].data.get("extends")):
                visit(parent)
            order.append(name)

        for name in names:
            visit(name)
        return order

    def ollama_names(self, sources: Sources) -> dict[str, str]:
        """ollama.name -> model id across the catalog layers, so discoveries patch known models."""
        merged = merge_layers(sources.layers())
        names = {}
        for model_id, model in validate.mapping(merged.data.get("models")).items():
            name = validate.mapping(validate.mapping(model).get("ollama")).get("name")
            if isinstance(name, str) and name:
                names[name] = model_id
        return names

    def discover_live(self, host: str, sources: Sources, report: Report) -> None:
        from .discover import ollama
        from .load import Positions

        found = ollama.discover(host, ids_by_ollama_name=self.ollama_names(sources))
        report.warnings += [Diagnostic("ollama", 0, 0, "W500", w, severity="warning") for w in found.warnings]
        sources.discovered[host] = Document(f"<ollama at {found.base}>", ollama.layer(found), Positions(),
                                            "discovered")

    def layers_for(self, target: Target, sources: Sources, options: BuildOptions,
                   report: Report) -> tuple[list[Layer], list[str]]:
        layers = []
        if options.discover and target.this_machine:
            self.discover_live(target.host.name, sources, report)
        discovered = sources.discovered.get(target.host.name)
        if discovered is not None:
            layers.append(Layer("discovered", discovered))
        layers += sources.layers()
        for path in target.user_files:
            if path not in self._user_docs:
                self._note_input(path)
                self._user_docs[path] = self.read(path, "user")
            doc, problems = self._user_docs[path]
            route(problems, report.errors, report.warnings)
            if doc is not None:
                layers.append(Layer("user", doc))
        wanted = list(target.host.profiles) + [p for p in options.profiles if p not in target.host.profiles]
        for name in options.profiles:
            if name not in sources.profiles:
                raise UsageError(f"unknown profile {name!r}; "
                                 f"{did_you_mean(name, sources.profiles) or 'known: ' + ', '.join(sources.profiles)}")
        chain = self.profile_chain(wanted, sources)
        layers += [Layer(f"profile:{name}", sources.profiles[name]) for name in chain]
        layers += parse_set(options.sets)
        return layers, chain

    def _note_input(self, path: Path) -> None:
        from . import buildcache
        try:
            if self.read_inputs is not None:
                self.read_inputs.append(buildcache.stat_row(path))
        except OSError:
            self.read_inputs = None

    def catalog_for(self, layers: list[Layer]) -> tuple[Catalog | None, list[Diagnostic]]:
        key = tuple(id(layer.doc) for layer in layers)
        if key not in self._compiled:
            merged = merge_layers(layers)
            problems = validate.check_merged(merged)
            catalog = None
            if not problems:
                catalog, problems = resolve(merged)  # warnings, or errors of declared templates
            self._compiled[key] = (catalog, problems)
        return self._compiled[key]

    def compile(self, options: BuildOptions, write: bool = True, keep_outputs: bool = True, on_wait=None,
                committed=None) -> Report:
        """Compile the hosts `options` names; with `write` (and not --check), publish them when every host
        compiled cleanly, then call `committed(report)` with the build lock still held. Without
        `keep_outputs` the results carry no bytes, documents or plans (each host is staged or compared as
        soon as it is compiled, so memory stays flat however many hosts), and a large inventory is
        compiled by worker processes (compiler/fleet.py). The lock (`on_wait` is told if another build
        holds it) is taken when the first host is staged: a build that fails before writes nothing."""
        sources = self.load_sources(options.with_staging)
        if not write or options.check:
            report = self._compile(options, sources, keep_outputs=keep_outputs)
        else:
            out_root = self.out_root(options)
            with contextlib.ExitStack() as stack:
                made: list[publish.Publication] = []

                def publication() -> publish.Publication:
                    if not made:
                        stack.enter_context(publish.locked(out_root, on_wait=on_wait))
                        made.append(stack.enter_context(publish.Publication(out_root)))
                    return made[0]

                report = self._compile(options, sources, publication, keep_outputs)
                if report.ok:
                    with publish.locked(out_root, on_wait=on_wait):  # held already once a host was staged
                        if made:
                            made[0].commit(report.staged)
                            made[0].close()  # before the no-op cache's record: a build it skips cleans nothing up
                        if committed is not None:
                            committed(report)
        report.errors = sorted(set(report.errors))
        report.warnings = sorted(set(report.warnings))
        return report

    def out_root(self, options: BuildOptions) -> Path:
        return options.out_root(self.root)

    def _compile(self, options: BuildOptions, sources: Sources, publication=None, keep_outputs: bool = True) -> Report:
        """The per-host stage over every target; `publication`, when given, is called for the
        publish.Publication each compiled host is staged in."""
        report = Report(errors=list(sources.errors), warnings=list(sources.warnings))
        if report.errors:
            return report
        out_root = self.out_root(options)
        jobs = []
        for target in self.targets(sources, options, report):
            layers, profiles = self.layers_for(target, sources, options, report)
            catalog = self._checked_catalog(layers, report)
            if catalog is not None:
                jobs.append(Job(target, profiles, catalog, sources.measured.get(target.host.name)))
        if not keep_outputs and fleet.parallel(len(jobs)):
            fleet.run(self, jobs, out_root, publication, report)
            return report
        for job in jobs:
            result, problems = self.compile_host(job, out_root, None, keep_outputs or publication is not None)
            route(problems, report.errors, report.warnings)
            if result is not None:
                report.results.append(result)
        if publication is not None and report.ok:  # staged once all compiled: a failed build writes nothing at all
            staging = publication()
            for index, result in enumerate(report.results):
                result.staged = staging.stage(result.folder.name, result.outputs()) is not None
                if result.staged:
                    report.staged.append(result.folder.name)
                if not keep_outputs:
                    report.results[index] = result.slim()
        return report

    def compile_host(self, job: Job, out_root: Path, publication=None,
                     keep_outputs: bool = True) -> tuple[HostResult | None, list[Diagnostic]]:
        """select -> emit (+ exports) for one host; with a publication, its outputs staged there (unless
        out/<host>/ holds them already). Without `keep_outputs`, a result without bytes, documents or plan."""
        target, catalog = job.target, job.catalog
        runs, problems = measured.runs_for(job.measured, catalog.models, catalog.names)  # W621
        plan = select(catalog, target.host, runs)
        problems += plan.diagnostics  # E300 errors, W320 warnings
        output = emit.output_document(plan, catalog, job.profiles)
        broken = emit.output_problems(output)
        if broken:  # the compiler's own fault: say so plainly rather than write a bad file
            raise AssertionError(f"compiled output for {target.host.name} breaks its schema: {broken[:3]}")
        folder = out_root / target.folder
        models_bytes = emit.render_output(output, job.catalog)
        try:
            files = exports.render(output, list(target.host.exports) if target.host.exports is not None
                                   else None, self.root / "templates")
        except InputError as exc:
            return None, problems + exc.diagnostics
        result = HostResult(target.host, folder, output, models_bytes, emit.explain_bytes(plan, catalog, output),
                            emit.is_stale(folder / emit.MODELS_JSON, models_bytes), plan,
                            files, emit.stale_exports(folder, files))
        if publication is not None and not any(p.severity == "error" for p in problems):
            result.staged = publication().stage(target.folder, result.outputs()) is not None
        return (result if keep_outputs else result.slim()), problems

    def host_catalog(self, options: BuildOptions) -> tuple[Catalog, Host, dict]:
        """The resolved catalog of one host (the first target of `options`) and what the host measured
        (measured.runs_for), for listings: they select as the build does."""
        report = Report()
        sources = self.load_sources(options.with_staging)
        if sources.errors:
            raise InputError(sources.errors)
        target = self.targets(sources, options, report)[0]
        layers, _ = self.layers_for(target, sources, options, report)
        catalog = self._checked_catalog(layers, report)
        if catalog is None:
            raise InputError(report.errors)
        runs, _ = measured.runs_for(sources.measured.get(target.host.name), catalog.models, catalog.names)
        return catalog, target.host, runs

    def _checked_catalog(self, layers: list[Layer], report: Report) -> Catalog | None:
        """The catalog for these layers, its problems added to the report (each once)."""
        catalog, problems = self.catalog_for(layers)
        route(problems, report.errors, report.warnings)
        return None if any(p.severity == "error" for p in problems) else catalog

    def validate(self, paths: list[Path] | None = None) -> Report:
        """Check files alone (`paths`); or the whole catalog: compiled for every declared host,
        and merged with each profile, so a profile no host uses is checked too."""
        if paths:
            report = Report()
            for path in paths:
                route(self.read(path)[1], report.errors, report.warnings)
        else:
            sources = self.load_sources()
            report = self._compile(BuildOptions(all_hosts=True), sources, keep_outputs=False)  # problems only
            if not sources.errors:
                base = sources.layers()
                self._checked_catalog(base, report)
                for name in sources.profiles:
                    chain = [Layer(f"profile:{p}", sources.profiles[p]) for p in self.profile_chain([name], sources)]
                    self._checked_catalog(base + chain, report)
        report.errors = sorted(set(report.errors))
        report.warnings = sorted(set(report.warnings))
        return report
