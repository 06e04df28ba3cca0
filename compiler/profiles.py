"""Profile commands: list, show, create, delete, export, import, activate and deactivate profiles,
each edit checked against the whole catalog on a copy before anything is written, then written atomically."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import edit, hosts as hostmod, paths, validate
from .emit import write_atomic
from .errors import Diagnostic, InputError, UsageError, did_you_mean
from .load import Document, dump_yaml, read_regular
from .merge import Layer, merge_layers, parse_set

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the profile schema's `name` pattern; also a safe file name
HEADER_KEYS = ("$schema", "$comment", "schema_version", "kind", "name", "extends", "merge")
CONFIG_KEY = "profiles"  # in config.yaml: the profiles of this machine when it is not a declared host


# -------------------------------------------------------------------------------- reading

def sources_of(project):
    """The catalog's files, loaded; the profile commands work on a valid catalog only."""
    sources = project.load_sources()
    if sources.errors:
        raise InputError(sources.errors)
    return sources


def known(sources, name: str) -> Document:
    if name not in sources.profiles:
        hint = did_you_mean(name, sources.profiles) or f"profiles: {', '.join(sorted(sources.profiles)) or 'none'}"
        raise UsageError(f"unknown profile {name!r}; {hint}")
    return sources.profiles[name]


def parents(doc: Document) -> list[str]:
    return [parent for _, parent in validate.str_items(doc.data.get("extends"))]


@dataclass(frozen=True)
class User:
    """One place that names a profile: another profile's `extends`, a host's `profiles`, or config.yaml."""

    what: str  # "profile 'coding' extends it", "host 'laptop-16' activates it", "this machine activates it"
    path: str
    line: int
    col: int


def users(sources, name: str) -> list[User]:
    found = []
    for other, doc in sorted(sources.profiles.items()):
        for index, parent in validate.str_items(doc.data.get("extends")):
            if parent == name:
                found.append(User(f"profile {other!r} extends it", doc.path, *doc.where(("extends", index))))
    for doc in sources.hosts_docs:
        for host_name, spec in sorted(validate.mapping(doc.data.get("hosts")).items()):
            for index, profile in validate.str_items(validate.mapping(spec).get("profiles")):
                if profile == name:
                    found.append(User(f"host {host_name!r} activates it", doc.path,
                                      *doc.where(("hosts", host_name, "profiles", index))))
    config = _read_config()
    if config is not None:
        for index, profile in validate.str_items(config.data.get(CONFIG_KEY)):
            if profile == name:
                found.append(User("this machine activates it", config.path, *config.where((CONFIG_KEY, index))))
    return found


def rows(sources) -> list[dict]:
    """One row per profile: its parents, the declared hosts that activate it (directly), its file."""
    out = []
    for name, doc in sorted(sources.profiles.items()):
        hosts = sorted(h.name for h in sources.hosts.values() if name in h.profiles)
        out.append({"name": name, "extends": parents(doc), "hosts": hosts,
                    "description": doc.data.get("description") or "", "file": doc.path})
    return out


def table(found: list[dict]) -> str:
    header = ("PROFILE", "EXTENDS", "HOSTS", "FILE", "DESCRIPTION")
    lines = [header] + [(r["name"], ", ".join(r["extends"]) or "-", ", ".join(r["hosts"]) or "-", r["file"],
                         r["description"]) for r in found]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]
                     for line in lines).rstrip() + "\n"


def resolved(project, sources, name: str) -> dict:
    """The profile as one document: its chain merged (RFC 7386, as a build applies it), extends dropped."""
    chain = project.profile_chain([name], sources)
    merged = merge_layers([Layer(f"profile:{p}", sources.profiles[p]) for p in chain]).data
    body = {key: value for key, value in merged.items() if key not in HEADER_KEYS}
    head = {"schema_version": 2, "kind": "profile", "name": name}
    description = sources.profiles[name].data.get("description")
    return {**head, **({"description": description} if description else {}), **body}


def show(project, sources, name: str) -> str:
    doc = known(sources, name)
    written = _text(project, doc)
    links = " -> ".join(project.profile_chain([name], sources))
    return (f"# as written: {doc.path}\n{written}{'' if written.endswith(chr(10)) else chr(10)}"
            f"\n# resolved: {links} (its extends chain merged, as a build applies it)\n"
            + dump_yaml(resolved(project, sources, name), sort_keys=False))


def _text(project, doc: Document) -> str:
    return read_regular(project.root / doc.path, doc.path).decode("utf-8-sig")


# -------------------------------------------------------------------------------- edits

def create(project, sources, name: str, extends: tuple[str, ...], sets: tuple[str, ...],
           description: str | None) -> tuple[Path, str]:
    """The new profile's file and text, checked with the whole catalog; nothing written."""
    _check_name(name)
    if name in sources.profiles:
        doc = sources.profiles[name]
        raise InputError([Diagnostic(doc.path, *doc.where(("name",)), "E700", f"profile {name!r} already exists",
                                     f"edit {doc.path}, or `hostfit profile delete {name}` first")])
    for parent in extends:
        known(sources, parent)
    # dump_yaml quotes a name such as `123`, `true` or `null` that YAML would read as another type
    head = {"schema_version": 2, "kind": "profile", "name": name}
    if description:
        head["description"] = description
    text = dump_yaml(head, sort_keys=False, width=4096)
    if extends:  # `extends: [a, b]`, flow style as the catalog writes it
        text += dump_yaml({"extends": list(extends)}, default_flow_style=None, width=4096)
    yaml, tree = edit.roundtrip(text)
    for layer in parse_set(sets):  # a path outside models/roles/selection is a usage error there
        _patch(tree, {key: value for key, value in layer.doc.data.items() if key not in ("schema_version", "kind")})
    text = edit.dump(yaml, tree)
    path = _free(project, sources, project.root / "profiles" / f"{name}.yaml")
    edit.check_changes(project, {path: text})
    return path, text


def _patch(tree, data: dict) -> None:
    """Set each leaf of `data` in the round-trip tree, creating the mappings on its way."""
    from ruamel.yaml.comments import CommentedMap

    for key, value in data.items():
        if isinstance(value, dict) and value:
            if not isinstance(tree.get(key), dict):
                tree[key] = CommentedMap()
            _patch(tree[key], value)
        elif isinstance(value, list) and not any(isinstance(item, (dict, list)) for item in value):
            tree[key] = _flow(value)  # `prefer: [a, b]`, as the catalog writes its lists
        else:
            tree[key] = value


def delete(project, sources, name: str) -> Path:
    """The file to remove, after refusing while anything uses the profile; nothing removed here."""
    doc = known(sources, name)
    found = users(sources, name)
    if found:
        raise InputError([Diagnostic(u.path, u.line, u.col, "E701",
                                     f"profile {name!r} cannot be deleted: {u.what}",
                                     f"take {name!r} out of it first; nothing deleted") for u in found])
    path = project.root / doc.path
    edit.check_changes(project, {path: None})
    return path


def export(project, sources, name: str, flatten: bool = False) -> bytes:
    """The profile as a file of its own: its bytes as written (so an import restores them), its
    `name` added when the file left it to its file name; `flatten`: the resolved form, no `extends`."""
    doc = known(sources, name)
    if flatten:
        return dump_yaml(resolved(project, sources, name), sort_keys=False).encode()
    text = _text(project, doc)
    if doc.data.get("name") is None and doc.path.endswith(".json"):  # JSON keeps no layout to round-trip
        items = [item for item in json.loads(text).items() if item[0] != "name"]
        items.insert([key for key, _ in items].index("kind") + 1 if "kind" in doc.data else 0, ("name", name))
        text = json.dumps(dict(items), indent=2, ensure_ascii=False) + "\n"
    elif doc.data.get("name") is None:
        yaml, tree = edit.roundtrip(text)
        tree.insert(list(tree).index("kind") + 1 if "kind" in tree else 0, "name", name)
        text = edit.dump(yaml, tree)
    return text.encode()


def import_(project, sources, file: Path, force: bool) -> tuple[Path, bytes, bool]:
    """Where the imported profile goes, its bytes (unchanged) and whether it replaces one;
    checked with the whole catalog, nothing written."""
    display = str(file)
    raw = read_regular(file, display)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError([Diagnostic(display, 0, 0, "E001", f"cannot read file: {exc}")]) from exc
    doc = edit.load_text(text, display)
    if doc.kind != "profile":
        raise InputError([Diagnostic(display, *doc.where(("kind",)), "E702",
                                     f"not a profile: kind is {doc.kind!r}", "a profile file says `kind: profile`")])
    name = doc.data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InputError([Diagnostic(display, *doc.where(("name",) if "name" in doc.data else ()), "E702",
                                     f"a profile to import needs a `name` matching {NAME.pattern}, found {name!r}",
                                     "`hostfit profile export` writes it")])
    existing = sources.profiles.get(name)
    if existing is not None and not force:
        raise InputError([Diagnostic(existing.path, *existing.where(("name",)), "E700",
                                     f"profile {name!r} already exists; {display} not imported",
                                     "--force replaces it")])
    suffix = ".json" if file.suffix == ".json" else ".yaml"
    if existing is not None and existing.path.endswith(".json") != (suffix == ".json"):  # its bytes go there unchanged
        kinds = ("JSON", "YAML") if suffix == ".json" else ("YAML", "JSON")
        raise InputError([Diagnostic(existing.path, *existing.where(("name",)), "E700",
                                     f"profile {name!r} is {existing.path}, a {kinds[1]} file; {display} is "
                                     f"{kinds[0]}, not imported over it", f"remove {existing.path} first")])
    path = (project.root / existing.path if existing is not None
            else _free(project, sources, project.root / "profiles" / f"{name}{suffix}"))
    changes: dict[Path, str | None] = {path: text}
    try:
        edit.check_changes(project, changes)
    except InputError as exc:  # the copy's file is the one being imported: show the user's name for it
        shown = project.display(path)
        raise InputError([Diagnostic(display if d.path == shown else d.path, d.line, d.col, d.code, d.message, d.hint)
                          for d in exc.diagnostics]) from exc
    return path, raw, existing is not None


def _free(project, sources, path: Path) -> Path:
    """`path`, refused when a file is already there (one whose `name` says it is another profile)."""
    if os.path.lexists(path):
        display = project.display(path)
        other = next((n for n, doc in sources.profiles.items() if doc.path == display), None)
        raise InputError([Diagnostic(display, 1, 1, "E700", f"{display} already exists"
                                     + (f" and defines profile {other!r}" if other else ""),
                                     "rename that file to match its `name`, or remove it")])
    return path


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise UsageError(f"profile name {name!r}: letters, digits, '.', '_' and '-', starting with a letter or digit")


# ----------------------------------------------------------------------- activate, deactivate

@dataclass
class Activation:
    where: str  # "host laptop-16 (sources/hosts.yaml)" or "this machine (~/.config/hostfit/config.yaml)"
    before: list[str]
    after: list[str]
    write: "callable | None"  # None: nothing to change (idempotent)


def activation(project, sources, name: str, host: str | None, on: bool) -> Activation:
    """What activating (`on`) or deactivating `name` changes for a declared host (its `profiles` in
    the hosts file) or for this undeclared machine (`profiles` in config.yaml); checked, not written."""
    known(sources, name)
    declared = _target_host(sources, host)
    if declared is None:
        return _local_activation(sources, name, on)
    before = list(declared.profiles)
    after = _toggled(before, name, on)
    doc = _hosts_doc(sources, declared.name)
    where = f"host {declared.name} ({doc.path})"
    if after == before:
        return Activation(where, before, after, None)

    def change(tree, host_name=declared.name, after=after):
        entry = tree["hosts"][host_name]
        current = entry.get("profiles")
        if isinstance(current, list):  # edited in place: the list keeps its style and comments
            current[:] = after
        else:
            entry["profiles"] = _flow(after)

    rewrites = edit.edit_catalog(project, {project.root / doc.path: change})
    return Activation(where, before, after, lambda: [edit.write(r) for r in rewrites])


def _toggled(current: list[str], name: str, on: bool) -> list[str]:
    if on:
        return current if name in current else current + [name]
    return [p for p in current if p != name]


def _target_host(sources, host: str | None):
    """The declared host to edit; None for this machine when it is not declared (or `--host local`)."""
    if host is None:
        return hostmod.find_declared(hostmod.machine_name(), sources.hosts)
    if host == hostmod.LOCAL:
        return None
    found = hostmod.find_declared(host, sources.hosts)
    if found is None:
        hint = did_you_mean(host, sources.hosts) or f"declared hosts: {', '.join(sources.hosts) or 'none'}"
        raise UsageError(f"unknown host {host!r}; {hint} (or `--host local` for this machine)")
    return found


def _hosts_doc(sources, host_name: str) -> Document:
    """The hosts file whose `profiles` for the host wins (lists replace: the last that sets it), else the
    last that declares the host."""
    declaring = [d for d in sources.hosts_docs if host_name in validate.mapping(d.data.get("hosts"))]
    setting = [d for d in declaring if "profiles" in validate.mapping(d.data["hosts"][host_name])]
    return (setting or declaring)[-1]


def _flow(items: list[str]):
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _local_activation(sources, name: str, on: bool) -> Activation:
    path = paths.config_file()
    before = list(local_profiles(sources.profiles))
    after = _toggled(before, name, on)
    where = f"this machine ({path})"
    if after == before:
        return Activation(where, before, after, None)
    if path.is_file():
        text = read_regular(path, str(path)).decode("utf-8-sig")
        yaml, tree = edit.roundtrip(text)
        if tree is None:  # empty, or comments only: they stay above the new line
            new = text + ("" if text.endswith("\n") or not text else "\n") + _config_line(after)
        else:
            current = tree.get(CONFIG_KEY)
            if isinstance(current, list):
                current[:] = after
            else:
                tree[CONFIG_KEY] = _flow(after)
            new = edit.dump(yaml, tree)
    else:
        new = _config_line(after)
    return Activation(where, before, after, lambda: write_atomic(path, new.encode()))


def _config_line(names: list[str]) -> str:
    """`profiles: [a, b]`, each name quoted where YAML would read it as another type (`123`)."""
    return dump_yaml({CONFIG_KEY: names}, default_flow_style=None, width=4096)


# ------------------------------------------------------------------------ this machine's profiles

def _read_config() -> Document | None:
    from .executor import config

    return config.document()


def local_profiles(profiles: dict) -> tuple[str, ...]:
    """The profiles of this machine when it is not declared: config.yaml's `profiles` when it has
    that key (`hostfit profile activate`), else `base` when the catalog has one."""
    config = _read_config()
    if config is None or not isinstance(config.data, dict) or CONFIG_KEY not in config.data:
        return ("base",) if "base" in profiles else ()
    value = config.data[CONFIG_KEY]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InputError([Diagnostic(config.path, *config.where((CONFIG_KEY,)), "E703",
                                     f"`{CONFIG_KEY}` must be a list of profile names",
                                     "hostfit profile activate P writes it")])
    unknown = [Diagnostic(config.path, *config.where((CONFIG_KEY, index)), "E704", f"unknown profile {item!r}",
                          did_you_mean(item, profiles) or f"profiles: {', '.join(sorted(profiles)) or 'none'}")
               for index, item in enumerate(value) if item not in profiles]
    if unknown:
        raise InputError(unknown)
    return tuple(dict.fromkeys(value))
