"""Validate stage: JSON Schema, then the semantic rules a schema cannot express.

Two levels, each reporting every problem it finds:
- a document alone (check_document): the layer schema, reserved `$` keys, artifact file
  names, download URLs; positions come straight from the document;
- a merged catalog (check_merged): the strict schema, model references, alias collisions;
  positions come from provenance, i.e. the layer that set the offending value.
Profiles' `extends` graph and the hosts' profile names are checked once for the whole catalog.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from contextlib import contextmanager
from urllib.parse import urlsplit

from . import schema
from .artifacts import SINGLE_FILE_KEYS
from .errors import Diagnostic, did_you_mean
from .load import Document, YamlPath
from .merge import Merged, origin, provenance

KNOWN_DOLLAR_KEYS = {"$schema": "top", "$comment": "any", "$merge": "any"}
MAX_GUESSES = 100  # unknown fields of one mapping that get a did-you-mean hint each
Locate = Callable[[YamlPath], tuple[str, int, int]]


# The semantic checks run beside the schema, on data it may have rejected: they read every
# value through these two, so a wrong shape (reported by the schema) is skipped, never a crash.

def mapping(value) -> dict:
    """`value` if it is a mapping, else an empty one."""
    return value if isinstance(value, dict) else {}


def str_items(value) -> list[tuple[int, str]]:
    """(index, item) for the string items of a list; nothing for any other shape."""
    return [(i, item) for i, item in enumerate(value) if isinstance(item, str)] if isinstance(value, list) else []


def check_document(doc: Document) -> list[Diagnostic]:
    kind = doc.kind

    def locate(path):
        return (doc.path, *doc.where(path))

    # a measured layer is a whole document, never a patch of another: checked strictly
    problems = schema_diagnostics(schema.iter_errors(kind, doc.data, layer=kind != "measured"), locate)
    problems += _dollar_keys(doc)
    if kind in ("catalog", "profile"):
        problems += _artifacts(doc.data.get("models"), locate) + _names(doc.data.get("models"), locate)
    elif kind == "measured":
        from .measured import check
        problems += check(doc)
    return problems


def check_merged(merged: Merged) -> list[Diagnostic]:
    """The strict schema and cross references of one merged catalog."""

    def locate(path):
        return origin(merged.layers, path)

    data = merged.data
    document = {"schema_version": 2, "kind": "catalog",
                **{k: v for k, v in data.items() if k in ("models", "roles", "selection")}}
    problems = schema_diagnostics(schema.iter_errors("catalog", document, layer=False), locate)
    if data.get("models") is not None and not isinstance(data["models"], dict):
        return problems  # every reference would be "unknown": the schema's error says why
    models = mapping(data.get("models"))
    names, alias_problems = alias_table(models, locate)
    # again on the merged values: --set, discovered and staged layers skip check_document (a problem of a
    # file layer is located at the same place twice, and callers report each diagnostic once)
    problems += alias_problems + _names(models, locate) + _artifacts(models, locate) + _variants(models, names, locate)
    unknown = [(role_name, field, index, ref) for role_name, role in mapping(data.get("roles")).items()
               for field in ("prefer", "fallback") for index, ref in str_items(mapping(role).get(field))
               if ref.lower() not in names]
    choices = list(models) + _aliases(models) if len(unknown) <= MAX_GUESSES else []  # as for unknown fields
    for role_name, field, index, ref in unknown:
        file, line, col = locate(("roles", role_name, field, index))
        problems.append(Diagnostic(file, line, col, "E200", f"role {role_name!r} {field}s unknown model {ref!r}",
                                   _deleted(merged, ref) or (did_you_mean(ref, choices) if choices else None)))
    return problems


def _deleted(merged: Merged, ref: str) -> str | None:
    """Where a layer deleted the model `ref` names (`id: null`, `models: null`, `$merge: replace` or
    `merge: replace`): the cause of a reference left dangling, which the reference's own position does not show."""
    for model_id in dict.fromkeys((ref, ref.lower())):
        chain = provenance(merged.layers, ("models", model_id))
        if not chain or chain[-1].action == "set":
            continue
        step = chain[-1]
        layer = next(la for la in merged.layers if la.doc.path == step.file and la.name == step.layer)
        data = layer.doc.data
        if step.action == "replace":
            how = "`merge: replace`"
        elif "models" in data and data["models"] is None:
            how = "`models: null`"
        elif model_id in mapping(data.get("models")):
            how = f"`{model_id}: null`"
        else:
            how = "`$merge: replace`"
        return (f"{model_id!r} was deleted at {step.file}:{step.line}:{step.col} ({how}); "
                "take it out of this list too, or drop the deletion")
    return None


def _aliases(models: dict) -> list[str]:
    return [a for m in models.values() for _, a in str_items(mapping(m).get("aliases"))]


def alias_table(models: dict, locate: Locate) -> tuple[dict[str, str], list[Diagnostic]]:
    """Lower-cased id or alias -> model id, and a diagnostic per collision naming both places."""
    names: dict[str, tuple[str, YamlPath]] = {}
    problems = []
    for model_id in models:
        names[model_id.lower()] = (model_id, ("models", model_id))
    for model_id, model in models.items():
        for index, alias in str_items(mapping(model).get("aliases")):
            key = alias.lower()
            path = ("models", model_id, "aliases", index)
            if key in names and names[key][0] != model_id:
                other_id, other_path = names[key]
                file, line, col = locate(path)
                ofile, oline, ocol = locate(other_path)
                what = "the id" if len(other_path) == 2 else "an alias"
                problems.append(Diagnostic(
                    file, line, col, "E201",
                    f"alias {alias!r} of model {model_id!r} collides with {what} of model {other_id!r}",
                    f"aliases compare case-insensitively; the other is at {ofile}:{oline}:{ocol}"))
            elif key not in names:
                names[key] = (model_id, path)
    return {key: value[0] for key, value in names.items()}, problems


def check_profiles(profiles: dict[str, Document]) -> list[Diagnostic]:
    """Unknown `extends` targets and `extends` cycles (each cycle reported once)."""
    problems = []
    for name, doc in sorted(profiles.items()):
        for index, parent in str_items(doc.data.get("extends")):
            if parent not in profiles:
                line, col = doc.where(("extends", index))
                problems.append(Diagnostic(doc.path, line, col, "E206", f"profile {name!r} extends unknown profile "
                                           f"{parent!r}", did_you_mean(parent, profiles)))
    reported: set[frozenset] = set()
    for start in sorted(profiles):
        cycle = _find_cycle(start, profiles)
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            doc = profiles[cycle[0]]
            index = next(i for i, parent in str_items(doc.data.get("extends")) if parent == cycle[1 % len(cycle)])
            line, col = doc.where(("extends", index))
            problems.append(Diagnostic(doc.path, line, col, "E202",
                                       "profile extends cycle: " + " -> ".join(cycle + [cycle[0]]),
                                       "a profile may not extend itself, directly or through others"))
    return problems


def _find_cycle(start: str, profiles: dict[str, Document]) -> list[str] | None:
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return path[path.index(name):]
        if name not in profiles:
            return None
        path.append(name)
        for _, parent in str_items(profiles[name].data.get("extends")):
            found = visit(parent)
            if found:
                return found
        path.pop()
        return None

    cycle = visit(start)
    if not cycle:
        return None
    smallest = cycle.index(min(cycle))  # a canonical rotation, so each cycle reads the same way
    return cycle[smallest:] + cycle[:smallest]


def check_hosts(merged: Merged, profiles: dict) -> list[Diagnostic]:
    """The merged inventory against the strict hosts schema, and the profiles each host names."""

    def locate(path):
        return origin(merged.layers, path)

    hosts = merged.data.get("hosts") or {}
    problems = schema_diagnostics(
        schema.iter_errors("hosts", {"schema_version": 2, "kind": "hosts", "hosts": hosts}, layer=False), locate)
    for name, spec in mapping(hosts).items():
        for index, profile in str_items(mapping(spec).get("profiles")):
            if profile not in profiles:
                file, line, col = locate(("hosts", name, "profiles", index))
                problems.append(Diagnostic(file, line, col, "E206", f"host {name!r} names unknown profile {profile!r}",
                                           did_you_mean(profile, profiles)))
        problems += _host_runtimes(name, mapping(spec), locate)
    return problems + _host_classes(mapping(hosts), locate)


def _host_classes(hosts: dict, locate: Locate) -> list[Diagnostic]:
    """Classes (`count` or `names`): E800 both given, E801 a class with `hostnames` (one machine's other
    names cannot be shared), E802 a host name two entries declare."""
    from .hosts import members

    problems, taken = [], {}
    for entry, spec in hosts.items():
        spec = mapping(spec)
        count, names = spec.get("count"), spec.get("names")
        if count is not None and names is not None:
            problems.append(Diagnostic(*locate(("hosts", entry, "names")), "E800",
                                       f"host class {entry!r} gives both `count` and `names`",
                                       "name the hosts, or number them with count, not both"))
            continue
        if (count is not None or names is not None) and spec.get("hostnames") is not None:
            problems.append(Diagnostic(*locate(("hosts", entry, "hostnames")), "E801",
                                       f"host class {entry!r} declares `hostnames`; a class's hosts cannot share "
                                       "one machine's other names", "declare that machine as a host of its own"))
        well_formed = (isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= 100_000) \
            or (isinstance(names, list) and names and all(isinstance(n, str) for n in names)) \
            or (count is None and names is None)
        if not well_formed:
            continue  # the schema's error
        for index, name in enumerate(members(entry, spec)):
            if name.lower() in taken:
                where = ("hosts", entry, "names", index) if names is not None else ("hosts", entry)
                problems.append(Diagnostic(*locate(where), "E802", f"host {name!r} is declared twice: by "
                                           f"{entry!r} and by {taken[name.lower()]!r}",
                                           "host names are unique across hosts and classes"))
            else:
                taken[name.lower()] = entry
    return problems


def _host_runtimes(name: str, spec: dict, locate: Locate) -> list[Diagnostic]:
    """E241: a runtime the registry does not know; W402: one the host has no hardware for."""
    from . import runtimes
    from .hosts import Gpu

    problems = []
    # a vendor that is not a word is the schema's error (E103); here it brings no hardware
    vendors = [g.get("vendor") for g in spec.get("gpus") or () if isinstance(g, dict)]
    gpus = [Gpu("gpu", 0, v if v is None or isinstance(v, str) else "unknown") for v in vendors]
    hardware = runtimes.hardware(gpus)
    for index, runtime in str_items(spec.get("runtimes")):
        file, line, col = locate(("hosts", name, "runtimes", index))
        known = runtimes.REGISTRY.get(runtime)
        if known is None:
            problems.append(Diagnostic(file, line, col, "E241", f"host {name!r} names unknown runtime {runtime!r}",
                                       did_you_mean(runtime, runtimes.REGISTRY)
                                       or f"known runtimes: {', '.join(runtimes.REGISTRY)}"))
        elif not runtimes.placements(known, hardware):
            needs = " or ".join(runtimes.HARDWARE_NAMES[h] for h in known.hardware)
            problems.append(Diagnostic(file, line, col, "W402", f"host {name!r} lists runtime {runtime!r}, which needs "
                                       f"{needs}; the host declares no such GPU, so it will run nothing there",
                                       "declare the GPU (with its `vendor`) or drop the runtime",
                                       severity="warning"))
    return problems


# --------------------------------------------------------------------- schema error -> text

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def type_name(value) -> str:
    """A value's type in the words of YAML and JSON (never Python's: NoneType, dict)."""
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {dict: "mapping", list: "list", str: "string", int: "integer", float: "number"}.get(type(value), "value")


def _leaves(error):
    """Unwrap the layer schema's `anyOf: [X, null]` so errors speak of X."""
    if error.validator == "anyOf" and error.schema["anyOf"][1:] == [schema.NULL]:
        inner = [e for e in error.context if e.relative_schema_path and e.relative_schema_path[0] == 0]
        for sub in inner:
            yield from _leaves(sub)
        if not inner:
            yield error
    else:
        yield error


def schema_diagnostics(errors, locate: Locate) -> list[Diagnostic]:
    out = []
    for top in errors:
        for error in _leaves(top):
            out.extend(_describe(error, locate))
    return out


# An entry put in the other collection: its unknown fields are the other kind's (`provider` in a role)
MISPLACED = {"roles": ("role", "model", "models"), "models": ("model", "role", "roles")}


def _misplaced(path: tuple, extra: list[str]) -> tuple[str, str] | None:
    """(what the entry was read as, a hint) when the unknown fields of `roles.X` are a model's, or those
    of `models.X` a role's; None otherwise."""
    if len(path) != 2 or path[0] not in MISPLACED:
        return None
    read_as, other, home = MISPLACED[path[0]]
    defs = schema.strict_schema("catalog")["$defs"]
    theirs = set(defs[other]["properties"]) - set(defs[read_as]["properties"])
    strays = [key for key in extra if key in theirs]
    if not strays:
        return None
    return (f"read as a {read_as}: it sits under `{path[0]}:`",
            f"{', '.join(map(repr, strays))} {'is a' if len(strays) == 1 else 'are'} {other} field"
            f"{'s' if len(strays) > 1 else ''}; a {other} belongs under `{home}:`")


def _describe(error, locate: Locate) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    field = str(path[-1]) if path else "document"
    value, keyword = error.instance, error.validator
    expected = error.validator_value

    def at(p, code, message, hint=None):
        file, line, col = locate(p)
        return Diagnostic(file, line, col, code, message, hint)

    if keyword == "additionalProperties" and isinstance(value, dict):
        known = set(error.schema.get("properties", {}))
        patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
        extra = [k for k in value if k not in known and not any(p.search(k) for p in patterns)]
        listing = f"known fields: {', '.join(sorted(known))}"
        # A guess per key helps with a few typos; hundreds of unknown keys in one mapping are
        # the wrong data, not typos, and guessing for each (difflib) would dominate the run.
        guess = len(extra) <= MAX_GUESSES
        where, misplaced = (f" in {field!r}" if path else ""), _misplaced(path, extra)
        if misplaced:
            where, listing = f"{where} ({misplaced[0]})", misplaced[1]
        return [at(path + (key,), "E101", f"unknown field {key!r}{where}",
                   (not misplaced and guess and did_you_mean(key, known)) or listing) for key in extra]
    if keyword == "required":
        missing = [k for k in expected if isinstance(value, dict) and k not in value]
        return [at(path, "E102", f"{field!r} is missing required field {key!r}") for key in missing]
    if keyword == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in wanted)
        shown = f" {value!r}" if not isinstance(value, (dict, list)) else ""
        return [at(path, "E100", f"{field!r} must be {names}, found {type_name(value)}{shown}")]
    if keyword == "enum":
        return [at(path, "E103", f"{field!r} is {value!r}, expected one of: "
                   + ", ".join(str(v) for v in expected if v is not None),
                   did_you_mean(str(value), [str(v) for v in expected if v is not None]))]
    if keyword == "const":
        return [at(path, "E103", f"{field!r} must be {expected!r}, found {value!r}")]
    if "propertyNames" in error.absolute_schema_path:  # `value` is the offending key itself
        hint = f"names must match {expected}" if keyword == "pattern" else error.message
        if field == "models":
            hint = "model ids are lower case: letters, digits and . _ : / - (aliases may keep any case)"
        return [at(path + (value,), "E104", f"{value!r} is not a valid name in {field!r}", hint)]
    if keyword == "pattern":
        return [at(path, "E103", f"{field!r} is {value!r}, which does not match {expected}")]
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        relation = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[keyword]
        return [at(path, "E103", f"{field!r} is {value!r}, must be {relation} {expected}")]
    if keyword in ("minItems", "uniqueItems", "minLength", "maxLength"):
        return [at(path, "E103", f"{field!r}: {error.message}")]
    return [at(path, "E103", f"{field!r}: {error.message[:200]}")]


# ------------------------------------------------------------------------ semantic, per file

def _dollar_keys(doc: Document) -> list[Diagnostic]:
    problems = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key[:1] == "$":
                    where = KNOWN_DOLLAR_KEYS.get(key)
                    if where is None or (where == "top" and path):
                        line, col = doc.where(path + (key,))
                        problems.append(Diagnostic(
                            doc.path, line, col, "E203", f"unknown reserved key {key!r}",
                            "keys starting with $ are reserved; known: $schema (top level), $comment, "
                            "$merge: replace"))
                    elif key == "$merge" and value != "replace":
                        line, col = doc.where(path + (key,))
                        problems.append(Diagnostic(doc.path, line, col, "E203",
                                                   f"$merge must be 'replace', found {value!r}"))
                    continue
                walk(value, path + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, path + (index,))

    walk(doc.data, ())
    return problems


LOOPBACK_NAMES = {"localhost"}


# host names the configuration lists as team mirrors (hosts.yaml or config.yaml `mirrors`), to which plain
# http is allowed too; set only for the duration of a fetch by `plain_http_to` (module-wide, not a context
# variable, so threads a download starts see it as well)
_PLAIN_HTTP_HOSTS: frozenset[str] = frozenset()


@contextmanager
def plain_http_to(urls):
    """Allow plain http to the hosts of `urls` (the configured mirrors) within the block."""
    global _PLAIN_HTTP_HOSTS
    before = _PLAIN_HTTP_HOSTS
    _PLAIN_HTTP_HOSTS = before | {(urlsplit(url).hostname or "").lower() for url in urls} - {""}
    try:
        yield
    finally:
        _PLAIN_HTTP_HOSTS = before


def url_problem(url: str) -> str | None:
    """Why a download URL is refused, or None: https anywhere, http only to loopback and to the mirrors
    the configuration lists (plain_http_to)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        if host in LOOPBACK_NAMES or host.lower() in _PLAIN_HTTP_HOSTS:
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return "plain http is allowed only to loopback (127.0.0.0/8, ::1, localhost)"
    return f"scheme {parts.scheme or '(none)'!r} is not allowed; use https"


# Names that reach exports (shell scripts, Modelfiles, YAML, Markdown) and cache paths keep to characters
# none of those languages treats specially, and start with a letter or digit: never an option (`-x`), a
# hidden file or `~`. The export templates quote every value as well; this keeps outputs plain and readable.
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")
FILE_NAME_HINT = "a plain file name: letters, digits and . _ + -, starting with a letter or digit " \
                 "(the cache decides where it is stored)"
# what may appear in a URL at all (RFC 3986): no spaces, quotes, backslashes, control or non-ASCII characters
URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")
# kind -> (code, what, pattern, hint)
NAMES = {
    "ollama": ("E230", "Ollama name", re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}"),
               "letters, digits and . _ : / -, starting with a letter or digit (e.g. qwen2.5-coder:7b)"),
    "revision": ("E231", "artifact revision", re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}"),
                 "a branch, tag or commit: letters, digits and . _ / -, starting with a letter or digit"),
    "alias": ("E232", "alias", re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+@-]{0,199}"),
              "letters (any case), digits and . _ : / + @ -, starting with a letter or digit"),
}


def file_name_problem(name: str) -> str | None:
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name in (".", ".."):
        return "is a relative path component"
    if name.startswith("~") or (len(name) > 1 and name[1] == ":"):
        return "looks like an absolute path"
    if len(name) > 255:
        return "is longer than 255 characters"
    if not FILE_NAME.fullmatch(name):
        bad = sorted({c for c in name[1:] if not FILE_NAME.fullmatch("a" + c)})
        if bad or not name:
            return "contains " + ", ".join(repr(c) for c in bad[:5]) if bad else "is empty"
        return "does not start with a letter or digit"
    return None


def name_problem(kind: str, value: str) -> str | None:
    """Why an identifier of this kind (see NAMES) is refused, or None."""
    _, what, pattern, _ = NAMES[kind]
    if pattern.fullmatch(value):
        return None
    bad = sorted({c for c in value if not pattern.fullmatch("a" + c)})
    why = f"contains {', '.join(repr(c) for c in bad[:5])}" if bad else \
        ("is empty" if not value else "is too long" if len(value) > 200 else "does not start with a letter or digit")
    return f"{what} {value!r} {why}"


def _entries(models) -> list[tuple[YamlPath, dict]]:
    """(path, entry) of each model and each of its variants: what carries an artifact and an Ollama name."""
    found = []
    for model_id, model in mapping(models).items():
        found.append((("models", model_id), mapping(model)))
        found += [(("models", model_id, "variants", name), mapping(variant))
                  for name, variant in mapping(mapping(model).get("variants")).items()]
    return found


def _names(models, locate: Locate) -> list[Diagnostic]:
    """Identifiers that reach exports (Ollama names, revisions, aliases), each in its character set."""
    problems = []
    for where, model in _entries(models):
        found = [("ollama", ("ollama", "name"), mapping(model.get("ollama")).get("name")),
                 ("revision", ("artifact", "revision"), mapping(model.get("artifact")).get("revision"))]
        found += [("alias", ("aliases", i), a) for i, a in str_items(model.get("aliases"))]
        for kind, path, value in found:
            problem = name_problem(kind, value) if isinstance(value, str) else None
            if problem:
                code, _, _, hint = NAMES[kind]
                problems.append(Diagnostic(*locate((*where, *path)), code, problem, hint))
    return problems


VARIANT_OWN = ("quantization", "artifact", "memory")  # a model with variants leaves these to each variant


def _variants(models: dict, names: dict[str, str], locate: Locate) -> list[Diagnostic]:
    """E242: a variant whose id (<model>:<name>, lower-cased) is another model's id or alias, or another
    variant's of the same model; a model with variants that declares its own file facts as well."""
    from .resolve import variant_id

    problems = []
    for model_id, model in models.items():
        variants = mapping(mapping(model).get("variants"))
        for key in VARIANT_OWN:
            if variants and mapping(model).get(key) is not None:
                problems.append(Diagnostic(
                    *locate(("models", model_id, key)), "E242", f"model {model_id!r} has variants and declares "
                    f"{key} as well: each variant has its own", f"move {key} into the variants"))
        seen: dict[str, str] = {}
        for name in variants:
            vid = variant_id(model_id, name)
            where = locate(("models", model_id, "variants", name))
            if vid in seen:
                problems.append(Diagnostic(*where, "E242", f"variant {name!r} of {model_id!r} is variant "
                                           f"{seen[vid]!r} again (variant names compare case-insensitively)"))
            elif vid in names:
                problems.append(Diagnostic(*where, "E242", f"variant {name!r} of {model_id!r} has id {vid!r}, "
                                           f"which names model {names[vid]!r}", "rename the variant or that model"))
            seen.setdefault(vid, name)
    return problems


def _artifacts(models, locate: Locate) -> list[Diagnostic]:
    problems = []
    for where, model in _entries(models):
        artifact = mapping(model.get("artifact"))
        if not artifact:
            continue
        base = (*where, "artifact")
        names = [(base + ("file",), artifact.get("file"))]
        names += [(base + ("files", i, "name"), mapping(item).get("name")) for i, item in _items(artifact.get("files"))]
        for path, name in names:
            problem = file_name_problem(name) if isinstance(name, str) else None
            if problem:
                problems.append(Diagnostic(*locate(path), "E204", f"artifact file {name!r} {problem}", FILE_NAME_HINT))
        problems += _file_set(artifact, base, names[1:], locate)
        urls = [(base + ("url",), artifact.get("url"))]
        urls += [(base + ("mirrors", i), u) for i, u in str_items(artifact.get("mirrors"))]
        template = artifact.get("url_template")
        for path, url in urls + [(base + ("url_template",), template)]:
            if isinstance(url, str) and not URL_CHARS.fullmatch(url.replace("{", "").replace("}", "")
                                                              if path[-1] == "url_template" else url):
                problems.append(Diagnostic(*locate(path), "E233", f"URL {url!r} holds characters a URL cannot hold",
                                           "percent-encode spaces, quotes, backslashes, control and non-ASCII "
                                           "characters (a space is %20)"))
            elif isinstance(url, str) and path[-1] != "url_template":
                problem = url_problem(url)
                if problem:
                    from .net import redact_url  # a password in a URL is never printed

                    problems.append(Diagnostic(*locate(path), "E205", f"download URL {redact_url(url)!r}: {problem}"))
    return problems


def _items(value) -> list[tuple[int, object]]:
    return list(enumerate(value)) if isinstance(value, list) else []


def _file_set(artifact: dict, base: tuple, names: list, locate: Locate) -> list[Diagnostic]:
    """E240: `files` says what the one-file shorthand says (file, size_bytes, sha256), or carries what only
    one file can have (a plain url, mirrors: each is one file's address), or names a file twice."""
    if not isinstance(artifact.get("files"), list):
        return []
    problems = []
    for key in SINGLE_FILE_KEYS:
        if artifact.get(key) is not None:
            problems.append(Diagnostic(*locate(base + (key,)), "E240", f"artifact has both {key} and files",
                                       "give either the one-file shorthand (file, size_bytes, sha256) or files "
                                       "(each with its name, size_bytes and sha256); a layer replacing one with "
                                       f"the other sets {key}: null"))
    if len(artifact["files"]) > 1:
        for key in ("url", "mirrors"):
            if artifact.get(key) is not None:
                problems.append(Diagnostic(*locate(base + (key,)), "E240",
                                           f"artifact {key} names one file, but files lists {len(artifact['files'])}",
                                           "give repo (and revision) or url_template, rendered once per file "
                                           "with its name as `file`"))
    seen: dict[str, tuple] = {}
    for path, name in names:  # by case-folded name: macOS and Windows file systems hold M.gguf and m.gguf as one
        if isinstance(name, str) and name.casefold() in seen:
            file, line, col = locate(seen[name.casefold()])
            problems.append(Diagnostic(*locate(path), "E240", f"artifact files names {name!r} twice",
                                       f"the first is at {file}:{line}:{col} (names differing only in case are "
                                       "one file on macOS and Windows)"))
        elif isinstance(name, str):
            seen[name.casefold()] = path
    return problems
