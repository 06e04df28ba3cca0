"""Migrate stage: check a document's schema version and bring it up to the current one.

Schema versions are integers. STEPS holds one function per upgrade (N -> N+1); loading runs
every step from the document's version to CURRENT, in memory. A document newer than CURRENT,
or without an integer version, is refused: guessing would compile the wrong thing.

A step rewrites a mapping *in place* through a handful of operations (rename a key where it
stands, insert, pop) that work alike on plain dicts and on ruamel.yaml's round-trip maps. So the
same step serves the compile path, where it also records which old path became which new one
(diagnostics keep pointing into the original file), and `hostfit migrate --write`, where ruamel
keeps the comments, order and quoting of every line the step does not touch.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import Diagnostic, VersionError
from .load import Document, Positions, YamlPath

CURRENT = 2
KINDS = ("catalog", "profile", "hosts", "candidates", "curated", "measured")
V1_KEYS = ("role_mappings", "model_profiles", "cloud_providers")


def fail(doc: Document, path: tuple, code: str, message: str, hint: str | None = None):
    line, col = doc.where(path)
    raise VersionError([Diagnostic(doc.path, line, col, code, message, hint)])


def supported() -> str:
    return str(CURRENT) if OLDEST == CURRENT else f"{OLDEST} to {CURRENT}"


def check_version(doc: Document) -> int:
    data = doc.data
    if "schema_version" not in data:
        if any(key in data for key in V1_KEYS):
            return 1  # the earlier layout never wrote a version
        fail(doc, (), "E010", f"missing schema_version (supported: {supported()})",
             f"add `schema_version: {CURRENT}` at the top of the file")
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        fail(doc, ("schema_version",), "E010",
             f"schema_version must be an integer, found {version!r} (supported: {supported()})",
             f"write `schema_version: {CURRENT}` without quotes")
    if version > CURRENT:
        fail(doc, ("schema_version",), "E011",
             f"schema_version {version} is newer than this compiler supports (supported: {supported()})",
             "upgrade hostfit to compile this catalog")
    if version < OLDEST:
        fail(doc, ("schema_version",), "E011",
             f"schema_version {version} is older than this compiler can migrate (supported: {supported()})")
    kind = data.get("kind")
    if version == 1 and kind in (None, "catalog"):
        return version
    if kind not in KINDS:
        found = "missing" if kind is None else repr(kind)
        fail(doc, ("kind",) if "kind" in data else (), "E012",
             f"kind must be one of {', '.join(KINDS)}; found {found}",
             "catalog layers say `kind: catalog`, profiles `kind: profile`, sources/hosts.yaml `kind: hosts`, "
             "sources/curated.yaml `kind: curated`")
    return version


def migrate(doc: Document) -> Document:
    version = check_version(doc)
    if version == CURRENT:
        return doc
    from . import schema, validate

    problems = validate.schema_diagnostics(schema.iter_errors("catalog", doc.data, layer=False, version=version),
                                           lambda path: (doc.path, *doc.where(path)))
    if problems:
        raise VersionError(problems)
    line, col = doc.where(("schema_version",) if "schema_version" in doc.data else ())
    notes = [Diagnostic(doc.path, line, col, "W100",
                        f"schema version {version}: migrated to version {CURRENT} in memory",
                        f"`hostfit migrate --write {doc.path}` rewrites the file", severity="warning")]
    while version < CURRENT:
        doc = STEPS[version](doc)
        version += 1
    doc.notes = notes + doc.notes
    return doc


# ------------------------------------------------------------------ in-place tree operations

def insert(mapping, index: int, key, value) -> None:
    """Insert `key` at position `index` of a dict or a ruamel.yaml CommentedMap."""
    if hasattr(mapping, "insert"):
        mapping.insert(index, key, value)
        return
    items = list(mapping.items())
    items.insert(index, (key, value))
    mapping.clear()
    mapping.update(items)


def rename(mapping, old, new) -> None:
    """Rename a key where it stands, keeping a ruamel.yaml map's comments on it."""
    if old == new or old not in mapping:
        return
    index = list(mapping).index(old)
    value = mapping.pop(old)
    insert(mapping, index, new, value)
    comments = getattr(getattr(mapping, "ca", None), "items", None)
    if comments is not None and old in comments:
        comments[new] = comments.pop(old)


def carry_comment(source, source_key, target, target_key) -> None:
    """Move the end-of-line comment of `source_key` onto `target_key` (ruamel.yaml maps only)."""
    comments = getattr(getattr(source, "ca", None), "items", None)
    if comments and source_key in comments and hasattr(target, "ca"):
        target.ca.items[target_key] = comments.pop(source_key)


def new_like(node, kind: str = "map"):
    """An empty map or list of the same family as `node` (plain, or ruamel round-trip)."""
    module = type(node).__module__
    if module.startswith("ruamel"):
        from ruamel.yaml.comments import CommentedMap, CommentedSeq
        return CommentedMap() if kind == "map" else CommentedSeq()
    return {} if kind == "map" else []


@dataclass
class StepLog:
    """What a step did: which old paths moved where, and what it had to keep aside."""

    moves: dict[YamlPath, YamlPath] = field(default_factory=dict)
    warnings: list[tuple[YamlPath, str, str]] = field(default_factory=list)  # (old path, code, message)

    def move(self, old: YamlPath, new: YamlPath) -> None:
        self.moves[tuple(old)] = tuple(new)

    def warn(self, old: YamlPath, code: str, message: str) -> None:
        self.warnings.append((tuple(old), code, message))

    def new_path(self, old: YamlPath) -> YamlPath:
        """Where `old` ended up: the most specific recorded move that covers it."""
        for depth in range(len(old), 0, -1):
            target = self.moves.get(old[:depth])
            if target is not None:
                return target + old[depth:]
        return old


# ----------------------------------------------------------------------------- v1 -> v2

ID_INVALID = re.compile(r"[^a-z0-9._:/-]+")
ROLE_WORKLOADS = (("embed", "embedding"), ("summar", "summarization"), ("extract", "extraction"),
                  ("classif", "classification"), ("code", "code"), ("coder", "code"), ("program", "code"),
                  ("creativ", "creative"), ("writ", "creative"), ("story", "creative"))
SOURCE_PROVIDERS = {"ollama": "ollama", "huggingface": "huggingface", "hf": "huggingface", "local": "local",
                    "llamacpp": "local", "llama.cpp": "local", "gguf": "local"}
SCORES = {"reasoning_strength": "reasoning", "coding_strength": "coding", "creativity": "creativity",
          "multilingual_score": "multilingual"}
REQUIREMENTS = {"reasoning_strength": "reasoning_min", "context_length_min": "context_min",
                "supports_tools": "tools"}


def normalize_id(name: str) -> str:
    """A v2 model id: lower case, [a-z0-9._:/-], starting with a letter or digit."""
    text = ID_INVALID.sub("-", str(name).strip().lower())
    text = re.sub(r"^[^a-z0-9]+", "", text).rstrip("-")
    return text or "model"


def unique_id(name: str, taken: set[str]) -> str:
    base = normalize_id(name)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def role_workload(role: str) -> str:
    lowered = role.lower()
    for fragment, workload in ROLE_WORKLOADS:
        if fragment in lowered:
            return workload
    return "chat"


def params_billions(size: Any) -> float | None:
    """`model_size` as written in v1 ("7B", "500M", 7.6, 7615616512) in billions."""
    if isinstance(size, bool):
        return None
    if isinstance(size, (int, float)):
        return size / 1e9 if size >= 1e6 else float(size)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([bBmMkK]?)\s*", str(size))
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2).lower()
    return number * {"b": 1, "m": 1e-3, "k": 1e-6}.get(unit, 1 if number < 1e6 else 1e-9)


def score(value: Any) -> float | None:
    """A 0..1 score; v1 files also used 0..10 and 0..100 scales."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    for scale in (1, 10, 100):
        if value <= scale:
            return round(value / scale, 4)
    return None


def v1_to_v2(root, log: StepLog) -> None:
    """Rewrite a version-1 catalog into version 2, in place."""
    if "schema_version" in root:
        root["schema_version"] = 2
    else:
        insert(root, 0, "schema_version", 2)
    if "kind" not in root:
        insert(root, list(root).index("schema_version") + 1, "kind", "catalog")
    profiles = root.get("model_profiles") or {}
    roles = root.get("role_mappings") or {}
    providers = root.get("cloud_providers") or {}
    taken: set[str] = set()
    ids = {name: unique_id(name, taken) for name in profiles}
    for name, new in ids.items():
        if new != normalize_id(name):
            log.warn(("model_profiles", name), "W102",
                     f"model {name!r} collides with another after normalization; its id is {new!r}")
    cloud_ids: dict[tuple[str, str], str] = {}

    def cloud_id(provider: str, model: str) -> str:
        if (provider, model) not in cloud_ids:
            cloud_ids[(provider, model)] = unique_id(model, taken)
        return cloud_ids[(provider, model)]

    for pname, spec in providers.items():
        for mname in (spec or {}).get("models") or {}:
            cloud_id(pname, mname)
    workloads: dict[str, list[str]] = {}
    for rname, role in roles.items():
        workload = role_workload(rname)
        refs = [ids.get(ref, normalize_id(ref)) for ref in role.get("preferred") or ()]
        fallback = role.get("cloud_fallback")
        if fallback:
            pname, _, mname = fallback.partition(":")
            refs.append(cloud_id(pname, mname))
        for ref in refs:
            bucket = workloads.setdefault(ref, [])
            if workload not in bucket:
                bucket.append(workload)
    for name, body in list(profiles.items()):
        _model(root, profiles, name, body, ids[name], workloads, log)
    for rname, role in roles.items():
        _role(rname, role, ids, cloud_id, log)
    if "model_profiles" in root:
        rename(root, "model_profiles", "models")
        log.move(("model_profiles",), ("models",))
    if "role_mappings" in root:
        rename(root, "role_mappings", "roles")
        log.move(("role_mappings",), ("roles",))
    if providers or cloud_ids:
        _cloud(root, providers, cloud_ids, workloads, log)


def _model(root, profiles, name, body, model_id, workloads, log: StepLog) -> None:
    old, new = ("model_profiles", name), ("models", model_id)
    rename(profiles, name, model_id)
    log.move(old, new)
    caps = body.pop("capabilities", None) or new_like(body)
    fields: list[tuple[str, Any, YamlPath]] = []  # (v2 key, value, old path) in v2 order
    legacy = new_like(body)

    def keep(key, value, path):
        legacy[key] = value
        log.warn(path, "W101", f"{key!r} of {name!r} has no version-2 home; kept under x-legacy")

    source = caps.get("model_source")
    provider = SOURCE_PROVIDERS.get(str(source).lower()) if source is not None else "ollama"
    if source is not None and provider is None:
        provider = "ollama"
        keep("model_source", source, old + ("capabilities", "model_source"))
    fields.append(("provider", provider, old + ("capabilities", "model_source")))
    listed = new_like(body, "list")
    listed.extend(workloads.get(model_id) or ["chat"])
    fields.append(("workloads", listed, old))
    for key, value in caps.items():
        path = old + ("capabilities", key)
        if key == "context_length":
            fields.append(("context_window", value, path))
        elif key == "quantization_level":
            if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_]+", value):
                fields.append(("quantization", value.upper() if value != value.upper() else value, path))
            else:
                keep(key, value, path)
        elif key == "model_size":
            billions = params_billions(value)
            if billions:
                fields.append(("params_b", round(billions, 4), path))
            else:
                keep(key, value, path)
        elif key == "memory_gb_estimate" and isinstance(value, (int, float)) and value > 0:
            memory = new_like(body)
            memory["ram_mb"] = math.ceil(value * 1024)
            fields.append(("memory", memory, path))
        elif key not in SCORES and key not in ("supports_function_calling", "supports_tools", "supports_vision",
                                               "model_source"):
            keep(key, value, path)
    capabilities = new_like(body)
    for key, target in SCORES.items():
        if key in caps:
            value = score(caps[key])
            if value is None:
                keep(key, caps[key], old + ("capabilities", key))
            else:
                capabilities[target] = value
                carry_comment(caps, key, capabilities, target)
                log.move(old + ("capabilities", key), new + ("capabilities", target))
    if "supports_function_calling" in caps or "supports_tools" in caps:
        capabilities["tools"] = bool(caps.get("supports_function_calling") or caps.get("supports_tools"))
    if "supports_vision" in caps:
        capabilities["vision"] = bool(caps["supports_vision"])
    if capabilities:
        fields.append(("capabilities", capabilities, old + ("capabilities",)))
    ollama = new_like(body)
    ollama["name"] = name
    fields.append(("ollama", ollama, old))
    for key in [k for k in body if k not in ("description", "name")]:
        keep(key, body.pop(key), old + (key,))
    if legacy:
        fields.append(("x-legacy", legacy, old))
    for index, (key, value, path) in enumerate(fields):
        insert(body, index, key, value)
        if path[:-1] == old + ("capabilities",):  # a value that came straight from a v1 capability
            carry_comment(caps, path[-1], body, key)
        if path != old and key not in ("capabilities",):
            log.move(path, new + (key,))


def _role(rname, role, ids, cloud_id, log: StepLog) -> None:
    old = ("role_mappings", rname)
    insert(role, 0, "workload", role_workload(rname))
    if "preferred" in role:
        prefer = role["preferred"]
        for index, ref in enumerate(prefer):
            target = ids.get(ref, normalize_id(ref))
            if target != ref:
                prefer[index] = target
        rename(role, "preferred", "prefer")
        log.move(old + ("preferred",), ("roles", rname, "prefer"))
    if "cloud_fallback" in role:
        fallback = role["cloud_fallback"]
        index = list(role).index("cloud_fallback")
        role.pop("cloud_fallback")
        if fallback:
            pname, _, mname = fallback.partition(":")
            chain = new_like(role, "list")
            chain.append(cloud_id(pname, mname))
            insert(role, index, "fallback", chain)
            log.move(old + ("cloud_fallback",), ("roles", rname, "fallback"))
    if "requirements" in role:
        requires = role["requirements"]
        rename(role, "requirements", "requires")
        log.move(old + ("requirements",), ("roles", rname, "requires"))
        for key, target in REQUIREMENTS.items():
            if key in requires:
                rename(requires, key, target)
                log.move(old + ("requirements", key), ("roles", rname, "requires", target))
        if "reasoning_min" in requires and score(requires["reasoning_min"]) is not None:
            requires["reasoning_min"] = score(requires["reasoning_min"])
        for key in [k for k in requires if k not in REQUIREMENTS.values()]:
            legacy = role.get("x-legacy")
            if legacy is None:
                legacy = role["x-legacy"] = new_like(role)
            legacy[key] = requires.pop(key)
            log.warn(old + ("requirements", key), "W101",
                     f"requirement {key!r} of role {rname!r} has no version-2 home; kept under x-legacy")


def _cloud(root, providers, cloud_ids, workloads, log: StepLog) -> None:
    models = root.get("models")
    if models is None:
        position = list(root).index("cloud_providers") if "cloud_providers" in root else len(root)
        models = new_like(root)
        insert(root, position, "models", models)
    for (pname, mname), model_id in cloud_ids.items():
        spec = (providers.get(pname) or {})
        entry = ((spec.get("models") or {}).get(mname)) or new_like(root)
        path = ("cloud_providers", pname, "models", mname)
        out = new_like(root)
        out["provider"] = normalize_id(pname).replace(":", "-").replace("/", "-")
        listed = new_like(root, "list")
        listed.extend(workloads.get(model_id) or ["chat"])
        out["workloads"] = listed
        legacy = new_like(root)
        for key, value in entry.items():
            if key == "context_length":
                out["context_window"] = value
                log.move(path + (key,), ("models", model_id, "context_window"))
            else:
                legacy[key] = value
                log.warn(path + (key,), "W101", f"{key!r} of cloud model {mname!r} has no version-2 home; "
                                                f"kept under x-legacy")
        out["api_key_env"] = spec.get("api_key_env") or f"{re.sub(r'[^A-Z0-9]+', '_', pname.upper())}_API_KEY"
        if spec.get("api_endpoint"):
            legacy["api_endpoint"] = spec["api_endpoint"]
            log.warn(("cloud_providers", pname, "api_endpoint"), "W101",
                     f"api_endpoint of provider {pname!r} has no version-2 home; kept under x-legacy of {model_id!r}")
        if legacy:
            out["x-legacy"] = legacy
        models[model_id] = out
        log.move(path, ("models", model_id))
    root.pop("cloud_providers", None)


def _step_v1(doc: Document) -> Document:
    data = copy.deepcopy(doc.data)  # aliased values must not be rewritten twice
    log = StepLog()
    v1_to_v2(data, log)
    table = {}
    for path, position in doc.positions.items():
        table.setdefault(log.new_path(path), position)
    notes = sorted(Diagnostic(doc.path, *doc.where(path), code, message, severity="warning")
                   for path, code, message in log.warnings)
    return Document(doc.path, data, Positions(table), doc.layer, doc.notes + notes)


# version N -> the function that turns a version-N document into a version-(N+1) one.
STEPS: dict[int, Callable[[Document], Document]] = {1: _step_v1}
# the same steps on a bare tree (a ruamel.yaml round-trip map, for `hostfit migrate --write`)
TREE_STEPS: dict[int, Callable[[Any, StepLog], None]] = {1: v1_to_v2}
OLDEST = min(STEPS, default=CURRENT)
