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
from collections.abc import Callable
from urllib.parse import urlsplit

from . import schema
from .errors import Diagnostic, did_you_mean
from .load import Document, YamlPath
from .merge import Merged, origin

KNOWN_DOLLAR_KEYS = {"$schema": "top", "$comment": "any", "$merge": "any"}
Locate = Callable[[YamlPath], tuple[str, int, int]]


def check_document(doc: Document) -> list[Diagnostic]:
    kind = doc.kind

    def locate(path):
        return (doc.path, *doc.where(path))

    problems = schema_diagnostics(schema.iter_errors(kind, doc.data, layer=True), locate)
    problems += _dollar_keys(doc)
    if kind in ("catalog", "profile"):
        problems += _artifacts(doc.data.get("models"), locate)
    return problems


def check_merged(merged: Merged) -> list[Diagnostic]:
    """The strict schema and cross references of one merged catalog."""

    def locate(path):
        return origin(merged.layers, path)

    data = merged.data
    document = {"schema_version": 2, "kind": "catalog",
                **{k: v for k, v in data.items() if k in ("models", "roles", "selection")}}
    problems = schema_diagnostics(schema.iter_errors("catalog", document, layer=False), locate)
    models = data.get("models") or {}
    names, alias_problems = alias_table(models, locate)
    problems += alias_problems
    for role_name, role in (data.get("roles") or {}).items():
        if not isinstance(role, dict):
            continue
        for field in ("prefer", "fallback"):
            for index, ref in enumerate(role.get(field) or ()):
                if isinstance(ref, str) and ref.lower() not in names:
                    file, line, col = locate(("roles", role_name, field, index))
                    problems.append(Diagnostic(file, line, col, "E200",
                                               f"role {role_name!r} {field}s unknown model {ref!r}",
                                               did_you_mean(ref, list(models) + _aliases(models))))
    return problems


def _aliases(models: dict) -> list[str]:
    return [a for m in models.values() if isinstance(m, dict) for a in m.get("aliases") or () if isinstance(a, str)]


def alias_table(models: dict, locate: Locate) -> tuple[dict[str, str], list[Diagnostic]]:
    """Lower-cased id or alias -> model id, and a diagnostic per collision naming both places."""
    names: dict[str, tuple[str, YamlPath]] = {}
    problems = []
    for model_id in models:
        names[model_id.lower()] = (model_id, ("models", model_id))
    for model_id, model in models.items():
        if not isinstance(model, dict):
            continue
        for index, alias in enumerate(model.get("aliases") or ()):
            if not isinstance(alias, str):
                continue
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
        for index, parent in enumerate(doc.data.get("extends") or ()):
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
            index = (doc.data.get("extends") or []).index(cycle[1 % len(cycle)])
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
        for parent in profiles[name].data.get("extends") or ():
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
    for name, spec in hosts.items():
        for index, profile in enumerate((spec if isinstance(spec, dict) else {}).get("profiles") or ()):
            if profile not in profiles:
                file, line, col = locate(("hosts", name, "profiles", index))
                problems.append(Diagnostic(file, line, col, "E206", f"host {name!r} names unknown profile {profile!r}",
                                           did_you_mean(profile, profiles)))
    return problems


# --------------------------------------------------------------------- schema error -> text

_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _type_of(value) -> str:
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
        patterns = list(error.schema.get("patternProperties", {}))
        import re
        extra = [k for k in value if k not in known and not any(re.search(p, k) for p in patterns)]
        return [at(path + (key,), "E101", f"unknown field {key!r}" + (f" in {field!r}" if path else ""),
                   did_you_mean(key, known) or f"known fields: {', '.join(sorted(known))}") for key in extra]
    if keyword == "required":
        missing = [k for k in expected if isinstance(value, dict) and k not in value]
        return [at(path, "E102", f"{field!r} is missing required field {key!r}") for key in missing]
    if keyword == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in wanted)
        shown = f" {value!r}" if not isinstance(value, (dict, list)) else ""
        return [at(path, "E100", f"{field!r} must be {names}, found {_type_of(value)}{shown}")]
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


def url_problem(url: str) -> str | None:
    """Why a download URL is refused, or None: https anywhere, http only to loopback."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        if host in LOOPBACK_NAMES:
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return "plain http is allowed only to loopback (127.0.0.0/8, ::1, localhost)"
    return f"scheme {parts.scheme or '(none)'!r} is not allowed; use https"


def file_name_problem(name: str) -> str | None:
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name in (".", "..") or ".." in name.split("/"):
        return "is a relative path component"
    if name.startswith("~") or (len(name) > 1 and name[1] == ":"):
        return "looks like an absolute path"
    return None


def _artifacts(models, locate: Locate) -> list[Diagnostic]:
    problems = []
    if not isinstance(models, dict):
        return problems
    for model_id, model in models.items():
        artifact = model.get("artifact") if isinstance(model, dict) else None
        if not isinstance(artifact, dict):
            continue
        base = ("models", model_id, "artifact")
        name = artifact.get("file")
        if isinstance(name, str):
            problem = file_name_problem(name)
            if problem:
                problems.append(Diagnostic(*locate(base + ("file",)), "E204",
                                           f"artifact file {name!r} {problem}",
                                           "a plain file name: the cache decides where it is stored"))
        urls = [(base + ("url",), artifact.get("url"))]
        urls += [(base + ("mirrors", i), u) for i, u in enumerate(artifact.get("mirrors") or ())]
        for path, url in urls:
            if isinstance(url, str):
                problem = url_problem(url)
                if problem:
                    from .net import redact_url  # a password in a URL is never printed

                    problems.append(Diagnostic(*locate(path), "E205", f"download URL {redact_url(url)!r}: {problem}"))
    return problems
