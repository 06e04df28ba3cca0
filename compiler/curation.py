"""adopt and retire: move a model into (or out of) service by editing the catalog's own files."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError, did_you_mean
from .merge import merge_layers
from .migrate import normalize_id
from .resolve import DEFAULT_PRIORITY
from .validate import alias_table


def _defining(docs, *path) -> list:
    """The catalog documents whose data holds `path`, in layer order."""
    out = []
    for doc in docs:
        node = doc.data
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            out.append(doc)
    return out


def _resolve(name: str, models: dict) -> str | None:
    """A model id from an id or alias, case-insensitively (the table resolve uses)."""
    names, _ = alias_table(models, lambda path: ("", 0, 0))
    return names.get(name.lower())


def adopt(project, name: str, role: str, priority: int | None) -> dict[Path, callable]:
    from .discover.ingest import is_sized, read_staged, sized_fields, staged_type

    sources = project.load_sources()
    merged = merge_layers(sources.layers()).data
    models, roles = merged.get("models") or {}, merged.get("roles") or {}
    if role not in roles:
        raise UsageError(f"unknown role {role!r}; {did_you_mean(role, roles) or 'roles: ' + ', '.join(sorted(roles))}")
    edits: dict[Path, callable] = {}
    model_id = _resolve(name, models)
    workload = roles[role]["workload"]
    staged_path = project.root / "sources" / "staging" / "candidates.json"
    candidate = None  # the staged candidate adopted, when `name` is one
    if model_id is None:
        staged = read_staged(staged_path)
        candidate = staged.get(name.lower())
        if candidate is None:
            raise UsageError(f"{name!r} is neither a catalog model nor a staged candidate; "
                             + (did_you_mean(name, list(models) + [c["model_id"] for c in staged.values()])
                                or "run `hostfit ingest` to stage candidates"))
        model_id = _resolve(str(candidate.get("in_catalog") or ""), models)  # ingest found it in the catalog
    if model_id is None:
        if not is_sized(candidate):
            why = candidate.get("unsized") or "no parameter count and no file sizes"
            raise UsageError(f"{candidate['model_id']} has no size yet ({why}): a build could never select it; "
                             "mark it `trial` and run `hostfit ingest` (candidates under trial are sized first), "
                             "or add it by hand with the facts `hostfit inspect URL-OF-ITS-GGUF` prints")
        model_id = normalize_id(candidate["model_id"])
        home = next((doc for doc in sources.catalogs if isinstance(doc.data.get("models"), dict)
                     and doc.layer == "sources"), None)
        if home is None:
            raise UsageError("no file under sources/ holds `models:` to adopt into")
        entry = {"name": candidate["model_id"], "provider": candidate.get("provider") or "huggingface",
                 "workloads": [workload], "type": staged_type(candidate), "status": "active",
                 "priority": priority if priority is not None else DEFAULT_PRIORITY}
        if candidate.get("license"):
            entry["license"] = candidate["license"]
        if candidate.get("provider") == "huggingface" and "/" in candidate["model_id"]:
            entry["hf_repo"] = candidate["model_id"]
        entry |= sized_fields(candidate)  # what its sources publish: parameters, context, files

        def add_model(tree, model_id=model_id, entry=entry):
            tree["models"][model_id] = entry
        edits[project.root / home.path] = add_model
    else:
        home = _defining(sources.catalogs, "models", model_id)[0]
        model = models[model_id]

        def update_model(tree, model_id=model_id, model=model):
            entry = tree["models"][model_id]
            if priority is not None:
                entry["priority"] = priority
            if workload not in (model.get("workloads") or []) and not roles[role].get("prefer"):
                entry["workloads"].append(workload)
            if entry.get("status") in ("candidate", "retired"):
                entry["status"] = "active"
        edits[project.root / home.path] = update_model
    if candidate is not None:  # new to the catalog or, as ingest found, already in it: off the review queue

        def mark_adopted(data, key=name.lower()):
            for item in data["candidates"]:
                if item["model_id"].lower() == key:
                    item["status"] = "adopted"
        edits[staged_path] = mark_adopted
    prefer = roles[role].get("prefer") or []
    listed = any(_resolve(str(ref), models) == model_id for ref in prefer)  # by its id or an alias
    if prefer and (not listed or priority is not None):
        role_home = _defining(sources.catalogs, "roles", role, "prefer")[-1]
        ranks = {ref: (models.get(_resolve(ref, models) or "") or {}).get("priority", DEFAULT_PRIORITY)
                 for ref in prefer}

        def add_to_prefer(tree, model_id=model_id, previous=edits.get(project.root / role_home.path)):
            if previous:
                previous(tree)
            items = tree["roles"][role]["prefer"]
            for index in [i for i, ref in enumerate(items) if _resolve(str(ref), models) == model_id][::-1]:
                del items[index]  # moved, not listed twice
            items.insert(placed(items, ranks, priority), model_id)
        edits[project.root / role_home.path] = add_to_prefer
    return edits


def placed(items: list, ranks: dict, priority: int | None) -> int:
    """Where a model of `priority` goes in a prefer list: before the first entry ranked after it (a higher
    priority number; an entry's own priority, 100 by default), so after those of its own priority; at the
    end when no priority is given."""
    if priority is None:
        return len(items)
    return next((i for i, ref in enumerate(items) if ranks.get(str(ref), DEFAULT_PRIORITY) > priority), len(items))


def retire(project, name: str) -> dict[Path, callable]:
    sources = project.load_sources()
    merged = merge_layers(sources.layers()).data
    models = merged.get("models") or {}
    model_id = _resolve(name, models)
    if model_id is None:
        raise UsageError(f"unknown model {name!r}; {did_you_mean(name, models) or 'see `hostfit models --all`'}")
    names = {model_id, *[a.lower() for a in models[model_id].get("aliases") or []]}
    home = _defining(sources.catalogs, "models", model_id)[0]
    edits: dict[Path, callable] = {}

    def set_retired(tree):
        tree["models"][model_id]["status"] = "retired"
    edits[project.root / home.path] = set_retired
    for doc in [*sources.catalogs, *sources.profiles.values()]:
        roles = doc.data.get("roles") if isinstance(doc.data.get("roles"), dict) else {}
        if not any(isinstance(r, dict) and any(str(x).lower() in names for key in ("prefer", "fallback")
                                               for x in r.get(key) or []) for r in roles.values()):
            continue
        path = project.root / doc.path

        def drop(tree, previous=edits.get(path)):
            if previous:
                previous(tree)
            for spec in tree["roles"].values():
                for key in ("prefer", "fallback"):
                    items = spec.get(key) if spec else None
                    if items is None:
                        continue
                    for index in [i for i, x in enumerate(items) if str(x).lower() in names][::-1]:
                        del items[index]
        edits[path] = drop
    return edits
