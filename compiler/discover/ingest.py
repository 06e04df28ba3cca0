"""Ingest: candidates from the Hugging Face Hub, OpenRouter's model index and curated lists,
normalized to {model_id, provider, license, source, popularity_score, tags}, de-duplicated with
additive provenance, sized from what the sources publish, and staged in
sources/staging/candidates.json for review.

A source that is unreachable, slow or malformed yields a warning, and the candidates it listed
before stay, marked stale: a refresh never drops review work. Responses are cached under
$XDG_CACHE_HOME/hostfit/ingest for MAX_AGE seconds; pagination stops at MAX_PAGES, and at most
SIZE_BUDGET repositories are asked for their files per run.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import paths
from ..importers import count, kinds as model_kinds
from ..resolve import DEFAULT_PRIORITY
from ..net import Deadline, DeadlinePassed, LimitExceeded, parse_json, redact_url, request
from ..validate import file_name_problem, mapping
from . import text

SOURCES = ("hf", "openrouter", "curated")
SOURCE_NAMES = {"hf": "huggingface_hub", "openrouter": "openrouter_index", "curated": "curated"}
MAX_AGE = 6 * 3600
MAX_PAGES = 5
PAGE_SIZE = 100
TIMEOUT = 10.0  # seconds per request, all of it (connect, every read, redirects)
MAX_BODY = 32 << 20  # bytes per response; a page of 100 models is ~100 KB
STATUSES = ("pending", "trial", "adopted", "rejected")
# Repositories asked for their file list (one request each) per run: curated ones first, then those
# under trial, then by popularity. The rest stay `unsized` until they rank within the budget.
SIZE_BUDGET = 25
SIZE_TIME = 60.0  # seconds for all of them: past it, the rest wait for the next run
# What a source publishes about a candidate's size; kept from an earlier run when not asked again.
SIZE_FIELDS = ("params_b", "context_window", "variants", "format")


@dataclass
class Harvest:
    candidates: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    source: str | None = None  # SOURCE_NAMES' value
    failed: str | None = None  # why the listing is incomplete: its earlier candidates are kept, stale


def _cache_file(name: str) -> Path:
    return paths.ingest_cache() / f"{name}.json"


def _cached_get(name: str, url: str, params: dict | None, refresh: bool, warnings: list[str]):
    """GET url (JSON), through the response cache; (body, next url) or (None, None) with a warning."""
    import httpx

    import hashlib

    digest = hashlib.sha256(json.dumps([url, params or {}], sort_keys=True).encode()).hexdigest()[:16]
    key = _cache_file(f"{name}-{digest}")
    if not refresh:
        try:
            if time.time() - key.stat().st_mtime < MAX_AGE:
                cached = parse_json(key.read_bytes(), str(key))  # a server's answer, kept
                return cached["body"], cached.get("next")
        except (OSError, ValueError, KeyError):
            pass
    shown = redact_url(url)
    try:
        with httpx.Client(follow_redirects=True) as client:
            response, raw = request(client, "GET", url, Deadline(TIMEOUT), MAX_BODY, shown, params=params)
        if response.status_code >= 400:
            warnings.append(f"{name}: {shown} failed (HTTP {response.status_code}); no candidates from it")
            return None, None
        body = parse_json(raw, shown)
    except (httpx.TimeoutException, DeadlinePassed):
        warnings.append(f"{name}: {shown} did not answer within {TIMEOUT:g} s; no candidates from it")
        return None, None
    except (httpx.HTTPError, ValueError, LimitExceeded) as exc:
        warnings.append(f"{name}: {shown} failed ({type(exc).__name__}: {str(exc)[:120]}); no candidates from it")
        return None, None
    following = response.links.get("next", {}).get("url")
    try:
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(json.dumps({"url": shown, "body": body, "next": following}))
    except OSError:
        pass
    return body, following


def _license(tags: list) -> str | None:
    for tag in tags:
        if isinstance(tag, str) and tag.startswith("license:"):
            return tag.split(":", 1)[1]
    return None


def from_hf(refresh: bool = False) -> Harvest:
    out = Harvest(source=SOURCE_NAMES["hf"])
    base = paths.hf_endpoint()
    url = f"{base}/api/models"
    params: dict | None = {"pipeline_tag": "text-generation", "sort": "downloads", "direction": "-1",
                           "limit": str(PAGE_SIZE)}
    for _ in range(MAX_PAGES):
        body, following = _cached_get("hf", url, params, refresh, out.warnings)
        if body is None:
            out.failed = out.warnings[-1]
            break
        if not isinstance(body, list):
            out.warnings.append("hf: the listing is not a JSON array; no candidates from it")
            out.failed = out.warnings[-1]
            break
        out.candidates += hf_candidates(body)
        if not following:
            break
        url, params = following, None
    return out


def hf_candidates(body) -> list[dict]:
    """Candidates from one page of the Hub's model listing (any JSON: malformed entries are left out)."""
    found = []
    for entry in body if isinstance(body, list) else ():
        model_id = text(entry.get("id") or entry.get("modelId")) if isinstance(entry, dict) else None
        if not model_id or "/" not in model_id:
            continue
        tags = _strings(entry.get("tags"))
        downloads = entry.get("downloads")
        downloads = downloads if type(downloads) is int and 0 <= downloads < 1 << 53 else 0  # what JSON holds exactly
        found.append({
            "model_id": model_id, "provider": "huggingface", "license": _license(tags),
            "source": "huggingface_hub", "popularity_score": downloads,
            "tags": sorted(t for t in tags if ":" not in t)[:12]})
    return found


def _strings(value) -> list[str]:
    return [item for item in value if text(item)] if isinstance(value, list) else []


def from_openrouter(refresh: bool = False) -> Harvest:
    out = Harvest(source=SOURCE_NAMES["openrouter"])
    base = paths.openrouter_base()
    body, _ = _cached_get("openrouter", f"{base}/models", None, refresh, out.warnings)
    if body is not None:
        out.candidates += openrouter_candidates(body, out.warnings)
    if body is None or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        out.failed = out.warnings[-1] if out.warnings else "openrouter: no listing"
    return out


def openrouter_candidates(body, warnings: list[str]) -> list[dict]:
    """Candidates from OpenRouter's model index (any JSON: malformed entries are left out)."""
    entries = body.get("data") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        warnings.append("openrouter: the response has no `data` array; no candidates from it")
        return []
    found = []
    for rank, entry in enumerate(entries):
        if not isinstance(entry, dict) or not text(entry.get("id")):
            continue
        pricing = mapping(entry.get("pricing"))
        if "-1" in (str(pricing.get("prompt")), str(pricing.get("completion"))):
            continue  # routers are not models
        hf_id = text(entry.get("hugging_face_id")) or ""
        window = entry.get("context_length") or mapping(entry.get("top_provider")).get("context_length")
        found.append({
            "model_id": hf_id if "/" in hf_id else entry["id"],
            "provider": "huggingface" if "/" in hf_id else "openrouter", "license": None,
            "source": "openrouter_index", "popularity_score": len(entries) - rank,  # listing order, as a rank
            "tags": sorted(set(_strings(mapping(entry.get("architecture")).get("input_modalities"))))}
            | ({"context_window": window} if count(window) else {}))
    return found


CURATED_FILE = "sources/curated.yaml"  # where the README puts the list; any sources/ file of kind curated is one


def from_curated(documents, problems) -> Harvest:
    """Candidates from the loaded documents of kind `curated` (sources/curated.yaml): a list whose file
    has errors (it cannot be read, or fails its schema) is a warning naming the first, and no candidates."""
    out = Harvest(source=SOURCE_NAMES["curated"])
    files = {doc.path for doc in documents} | {CURATED_FILE}
    broken = {}
    for problem in problems:
        if problem.path in files and problem.severity == "error":
            broken.setdefault(problem.path, problem)
    for path, first in sorted(broken.items()):
        out.warnings.append(f"curated: {first.where}: {first.message}; no candidates from it")
    for doc in documents:
        if doc.path in broken:
            continue
        entries = doc.data.get("candidates") or []
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("model_id"), str):
                provider, licence = entry.get("provider"), entry.get("license")
                out.candidates.append({"model_id": entry["model_id"],
                                       "provider": provider if isinstance(provider, str) and provider else "huggingface",
                                       "license": licence if isinstance(licence, str) else None, "source": "curated",
                                       "popularity_score": 0, "tags": sorted(set(_strings(entry.get("tags"))))})
    if broken:
        out.failed = out.warnings[0]
    return out


def merge(harvests: list[Harvest], previous: dict[str, dict], now: str | None = None) -> list[dict]:
    """De-duplicate by model id (case-insensitive); provenance adds up, popularity is the highest,
    and a status set by review (trial, adopted, rejected) survives a re-ingest.

    What this run did not list stays where it cannot be judged gone: a previous candidate of a
    source that was not asked, or failed (then marked `stale` with when and why), keeps its entry;
    one that every source asked no longer lists is dropped while pending, kept (stale) once reviewed."""
    now = now or stamp()
    merged: dict[str, dict] = {}
    order = {name: i for i, name in enumerate(SOURCE_NAMES.values())}

    def joined(sources) -> str:
        return "+".join(sorted(set(sources), key=lambda s: (order.get(s, 99), s)))

    for harvest in harvests:
        for candidate in harvest.candidates:
            key = candidate["model_id"].lower()
            known = merged.get(key)
            if known is None:
                merged[key] = dict(candidate)
                continue
            known["source"] = joined([*known["source"].split("+"), candidate["source"]])
            known["popularity_score"] = max(known["popularity_score"], candidate["popularity_score"])
            known["license"] = known["license"] or candidate["license"]
            known["tags"] = sorted(set(known["tags"]) | set(candidate["tags"]))
            for name in SIZE_FIELDS:
                if name not in known and name in candidate:
                    known[name] = candidate[name]
            if known["provider"] != "huggingface" and candidate["provider"] == "huggingface":
                known["provider"], known["model_id"] = "huggingface", candidate["model_id"]
    listed = {h.source for h in harvests if h.source and not h.failed}  # complete listings of this run
    failed = {h.source: h.failed for h in harvests if h.source and h.failed}
    for key, old in previous.items():
        if not isinstance(old, dict) or not isinstance(old.get("model_id"), str):
            continue
        was = [s for s in str(old.get("source") or "").split("+") if s]
        unheard = [s for s in was if s not in listed]  # sources that said nothing of it this run
        status = old.get("status") if old.get("status") in STATUSES else "pending"
        known = merged.get(key)
        if known is not None:  # listed again: fresh; provenance from sources not asked stays
            known["source"] = joined([*known["source"].split("+"), *unheard])
            for name in SIZE_FIELDS:
                if name not in known and name in old:
                    known[name] = old[name]
            continue
        if not unheard and status == "pending":
            continue  # every source that listed it was asked, completely, and none lists it now
        kept = {k: v for k, v in old.items() if k not in ("in_catalog", "unsized")}
        reasons = [failed[s] for s in unheard if s in failed]
        if not unheard:
            reasons = [f"no longer listed by {joined(was) or 'its source'}"]
        if reasons:
            previous_stale = old.get("stale") if isinstance(old.get("stale"), dict) else {}
            kept["stale"] = {"since": previous_stale.get("since") or now, "reason": "; ".join(reasons)[:300]}
        merged[key] = kept
    for key, candidate in merged.items():
        status = (previous.get(key) or {}).get("status", "pending")
        candidate["status"] = status if status in STATUSES else "pending"
    return [merged[key] for key in sorted(merged)]


def stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_staged_strict(project, path: Path) -> dict[str, dict]:
    """The staged candidates by lower-cased id, for a refresh that must keep their review statuses:
    a file that exists but has errors stops ingest (E500, with the file's own diagnostics)."""
    import os

    from ..errors import Diagnostic, InputError

    if not os.path.lexists(path):
        return {}
    doc, problems = project.read(path, "staging")
    errors = [p for p in problems if p.severity == "error"]
    if doc is not None and not errors and doc.kind == "candidates":
        return staged_by_id(doc.data)  # the document just read and checked: no second read of the file
    shown = project.display(path)
    raise InputError(errors + [Diagnostic(shown, 1, 1, "E500", "the staged candidates cannot be read: a refresh "
                                          "would lose their review statuses; nothing written",
                                          "fix the file (or move it away to start afresh), then run ingest again")])


def read_staged(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # a hand-edited file
        return {}
    return staged_by_id(data)


def staged_by_id(data) -> dict[str, dict]:
    """A candidates document's candidates by lower-cased id; {} when its shape is not that."""
    try:
        return {c["model_id"].lower(): c for c in data["candidates"]}
    except (KeyError, TypeError, AttributeError):  # a hand-edited file
        return {}


def document(candidates: list[dict], fetched_at: datetime | None = None) -> dict:
    return {"schema_version": 2, "kind": "candidates", "fetched_at": stamp(fetched_at), "candidates": candidates}


def render(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def staged_type(candidate: dict) -> str:
    """A staged model's type from its id (and an OpenRouter entry's image input): a Hub text-generation
    id such as "meta-llama/Llama-3.1-8B" is the pretrained release; an API id is the tuned model served."""
    model_id, source = candidate["model_id"], str(candidate.get("source") or "")
    return model_kinds.from_name(model_id) or model_kinds.generative(
        model_id, vision="image" in _strings(candidate.get("tags")), releases="openrouter" not in source)


def as_catalog(data: dict) -> dict:
    """Staged candidates as a catalog layer (for `build --with-staging`): pending ones become
    `candidate` models (listed, never selected), trial ones active, each with the sizes its sources
    publish; adopted and rejected ones, and those the catalog already has (`in_catalog`), stay out.
    A trial model gets the priority `adopt` would give it, so the trial shows the build it would make."""
    from ..migrate import normalize_id

    models = {}
    candidates = data.get("candidates") if isinstance(data, dict) else None
    for candidate in candidates if isinstance(candidates, list) else ():  # validated, but used even when invalid
        status = candidate.get("status", "pending") if isinstance(candidate, dict) else None
        if status not in ("pending", "trial") or not isinstance(candidate.get("model_id"), str) \
                or candidate.get("in_catalog"):
            continue
        kind = staged_type(candidate)
        model = {"name": candidate["model_id"], "provider": candidate.get("provider") or "huggingface",
                 "workloads": model_kinds.workloads(kind, ["chat"]), "type": kind,
                 "priority": DEFAULT_PRIORITY if status == "trial" else 900,
                 "status": "active" if status == "trial" else "candidate",
                 "tags": _strings(candidate.get("tags")) or None, "license": candidate.get("license"),
                 **sized_fields(candidate),
                 "x-staged": {"source": candidate.get("source"), "popularity_score": candidate.get("popularity_score")}}
        models[normalize_id(candidate["model_id"])] = {k: v for k, v in model.items() if v is not None}
    return {"schema_version": 2, "kind": "catalog", "models": models}


def sized_fields(candidate: dict) -> dict:
    """The catalog fields a candidate's published sizes give its model: parameters, context window,
    and the GGUF repository's variants or the safetensors checkpoint (an artifact naming the repository)."""
    out = {}
    if _number(candidate.get("params_b")):
        out["params_b"] = candidate["params_b"]
    if count(candidate.get("context_window")):
        out["context_window"] = candidate["context_window"]
    variants = candidate.get("variants")
    if isinstance(variants, dict) and variants:
        out["variants"] = variants
    elif candidate.get("format") == "safetensors" and "params_b" in out:
        from ..importers import hf_repo

        if repo := hf_repo(candidate.get("model_id")):
            out["artifact"] = {"format": "safetensors", "repo": repo}
    return out


def is_sized(candidate: dict) -> bool:
    """True when a build can size the model the candidate becomes (memory.size_unknown judges it, as for
    any model): a cloud one, or a local one with its parameters or, in one variant at least, its files' sizes."""
    from ..memory import size_unknown

    model = {"provider": candidate.get("provider") or "huggingface", **sized_fields(candidate)}
    variants = model.pop("variants", None) or {}
    return not size_unknown(model) or any(not size_unknown({**model, "artifact": mapping(v).get("artifact")})
                                          for v in variants.values())


def _number(value) -> bool:
    return type(value) in (int, float) and 0 < value < 1e6


# ---------------------------------------------------------------------------- what the catalog has already

def catalog_index(models: dict) -> dict[str, str]:
    """Lower-cased names -> catalog model id: ids, aliases, names, Ollama names and Hugging Face
    repositories (hf_repo, artifact.repo, a variant's artifact.repo)."""
    index: dict[str, str] = {}
    for model_id, model in sorted((models or {}).items()):
        if not isinstance(model, dict):
            continue
        names = [model_id, model.get("name"), *(model.get("aliases") or []), mapping(model.get("ollama")).get("name"),
                 model.get("hf_repo"), mapping(model.get("artifact")).get("repo"),
                 *[mapping(mapping(v).get("artifact")).get("repo") for v in mapping(model.get("variants")).values()]]
        for name in names:
            if isinstance(name, str) and name:
                index.setdefault(name.lower(), model_id)
    return index


def mark_in_catalog(candidates: list[dict], index: dict[str, str]) -> None:
    """`in_catalog: <id>` on each candidate the catalog already has, by its full id (a repository, an
    Ollama name, an alias) or, for `owner/name`, by the name alone against catalog ids and aliases
    (`openai/gpt-oss-20b` is the catalog's `gpt-oss-20b`)."""
    for candidate in candidates:
        model_id = candidate["model_id"].lower()
        found = index.get(model_id) or ("/" in model_id and index.get(model_id.rsplit("/", 1)[1]))
        if found:
            candidate["in_catalog"] = found
        else:
            candidate.pop("in_catalog", None)


# ------------------------------------------------------------------------------------ sizing candidates

def repo_facts(repo: str, body) -> tuple[dict, list[str]]:
    """What a Hub repository's details (GET /api/models/{repo}?blobs=true) publish about its size:
    a GGUF repository's variants (gguf_variants) with `gguf.total` parameters and `gguf.context_length`;
    else a safetensors checkpoint's `safetensors.total` parameters. Notes say what was left out."""
    if not isinstance(body, dict):
        return {}, ["no repository details"]
    facts: dict = {}
    gguf, safetensors = mapping(body.get("gguf")), mapping(body.get("safetensors"))
    variants, notes = gguf_variants(repo, body.get("siblings"))
    if variants:
        facts["variants"], facts["format"] = variants, "gguf"
        total, window = gguf.get("total"), gguf.get("context_length")
    else:
        total, window = safetensors.get("total"), None
        if count(total):
            facts["format"] = "safetensors"
    if count(total):
        facts["params_b"] = round(total / 1e9, 3)
    if count(window):
        facts["context_window"] = window
    return facts, notes


def hf_repo_details(repo: str, refresh: bool = False) -> tuple[object, list[str]]:
    """A Hub repository's details with its file list, asked for as every ingest request is (bounded
    time and size, cached); (None, warnings) when the name is not a repository's or the request fails."""
    from ..importers import hf_repo

    warnings: list[str] = []
    if hf_repo(repo) != repo:
        return None, [f"hf: {repo!r} is not a repository name (owner/name)"]
    body, _ = _cached_get("hf", f"{paths.hf_endpoint()}/api/models/{repo}", {"blobs": "true"}, refresh, warnings)
    return body, [w.replace("; no candidates from it", "; no sizes from it") for w in warnings]


def size_order(candidates: list[dict]) -> list[dict]:
    """The candidates worth a request for their files, most wanted first: Hugging Face repositories not
    in the catalog and not adopted or rejected; curated ones, then those under trial, then by popularity."""
    wanted = [c for c in candidates if c.get("provider") == "huggingface" and "/" in c["model_id"]
              and not c.get("in_catalog") and c.get("status") in ("pending", "trial")]
    return sorted(wanted, key=lambda c: ("curated" not in str(c.get("source")), c.get("status") != "trial",
                                         -(c.get("popularity_score") or 0), c["model_id"].lower()))


def size(candidates: list[dict], ask, budget: int | None = None) -> list[str]:
    """Size the first `budget` candidates of size_order from `ask(repo) -> (details, warnings)`, in place;
    every other local candidate without sizes gets `unsized` saying why. Returns the warnings."""
    budget = SIZE_BUDGET if budget is None else budget
    warnings: list[str] = []
    order = size_order(candidates)
    deadline = time.monotonic() + SIZE_TIME
    for index, candidate in enumerate(order[:budget]):
        if time.monotonic() > deadline:
            warnings.append(f"hf: sizing stopped after {SIZE_TIME:g} s; {min(budget, len(order)) - index} "
                            "repositories left for the next run")
            for rest in order[index:budget]:
                rest["unsized"] = f"sizing stopped after {SIZE_TIME:g} s (ingest.SIZE_TIME); run ingest again"
            break
        body, problems = ask(candidate["model_id"])
        warnings += problems
        if body is None:
            candidate["unsized"] = "its repository's details could not be read (see the warnings of this run)"
            continue
        facts, notes = repo_facts(candidate["model_id"], body)
        warnings += [f"hf: {candidate['model_id']}: {note}" for note in notes]
        for name in SIZE_FIELDS:  # what the repository says now replaces what it said before
            if name in facts:
                candidate[name] = facts[name]
            elif name != "context_window":  # a context window may come from OpenRouter
                candidate.pop(name, None)
    asked = {id(c) for c in order[:budget]}
    for candidate in candidates:
        if is_sized(candidate):
            candidate.pop("unsized", None)
        elif id(candidate) in asked:
            candidate.setdefault("unsized", "its repository lists no GGUF file with a quantization in its name "
                                            "and no safetensors parameter count")
        elif not candidate.get("in_catalog"):
            candidate["unsized"] = (f"not among the {budget} repositories ingest asks for their files "
                                    "(curated, then trial, then most popular); mark it trial and run ingest again")
    return warnings


# ----------------------------------------------------------------------------------- what a run changes

def changes(previous: dict[str, dict], candidates: list[dict]) -> dict[str, list]:
    """What replacing the staged `previous` with `candidates` does: ids added and removed, ids whose
    entry changed with the fields that did, and ids that became stale (with why)."""
    now = {c["model_id"].lower(): c for c in candidates}
    out: dict[str, list] = {"added": [], "removed": [], "changed": [], "stale": []}
    for key, candidate in sorted(now.items()):
        old = previous.get(key)
        if old is None:
            out["added"].append(candidate["model_id"])
            continue
        fields = sorted(k for k in set(old) | set(candidate) if old.get(k) != candidate.get(k) and k != "stale")
        if fields:
            out["changed"].append((candidate["model_id"], fields))
        if candidate.get("stale") and candidate.get("stale") != old.get("stale"):
            out["stale"].append((candidate["model_id"], candidate["stale"]["reason"]))
    out["removed"] = [old.get("model_id", key) for key, old in sorted(previous.items()) if key not in now]
    return out


def render_changes(found: dict[str, list]) -> str:
    lines = [f"{len(found['added'])} added, {len(found['removed'])} removed, {len(found['changed'])} changed, "
             f"{len(found['stale'])} stale"]
    lines += [f"+ {m}" for m in found["added"]] + [f"- {m}" for m in found["removed"]]
    lines += [f"~ {m}: {', '.join(fields)}" for m, fields in found["changed"]]
    lines += [f"! {m}: stale ({reason})" for m, reason in found["stale"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------ a GGUF repository's variants

# A quantization as GGUF file names spell it, delimited by anything but a letter or digit:
# Q4_K_M, Q5_K_S, Q8_0, Q4_0, IQ4_XS, IQ2_XXS, TQ1_0, F16, FP16, BF16, F32, MXFP4 (the last one in the name wins)
GGUF_QUANT = re.compile(r"(?<![A-Za-z0-9])(I?Q[1-8](?:_[0-9A-Za-z]+)*|TQ[12]_0|BF16|FP16|F16|F32|MXFP4)(?![A-Za-z0-9])",
                        re.I)
GGUF_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.I)  # llama.cpp's gguf-split naming
QUANT_SPELLINGS = {"FP16": "F16"}
NOT_WEIGHTS = ("mmproj",)  # vision projectors beside the weights: not a quantization of the model


def gguf_variants(repo: str, siblings) -> tuple[dict[str, dict], list[str]]:
    """Variants keyed by quantization from a GGUF repository's file list (the Hub API's `siblings`,
    [{rfilename, size, lfs: {sha256}}] with ?blobs=true): one file is the variant's `file`, split shards
    -0000N-of-0000M its `files` in order; and a note for each .gguf file left out, with why."""
    found: dict[str, dict[str, list]] = {}  # quantization -> file name less shard suffix -> [(index, total, file)]
    notes = []
    for sibling in siblings if isinstance(siblings, list) else ():
        name = text(sibling.get("rfilename")) if isinstance(sibling, dict) else None
        if not name or not name.lower().endswith(".gguf"):
            continue
        if "/" in name:  # an artifact's files are fetched into one folder by their names
            notes.append(f"{name}: in a folder of the repository")
            continue
        if name.lower().startswith(NOT_WEIGHTS):
            continue
        if problem := file_name_problem(name):
            notes.append(f"{name!r}: file name {problem}")
            continue
        shard = GGUF_SHARD.search(name)
        stem = name[:shard.start()] if shard else name[:-len(".gguf")]
        quants = GGUF_QUANT.findall(stem)
        if not quants:
            notes.append(f"{name}: no quantization in its name")
            continue
        quant = QUANT_SPELLINGS.get(quants[-1].upper(), quants[-1].upper())
        lfs = sibling.get("lfs") if isinstance(sibling.get("lfs"), dict) else {}
        sha = str(lfs.get("sha256") or "")
        size = sibling.get("size") if sibling.get("size") is not None else lfs.get("size")
        entry = {"name": name, "size_bytes": size if type(size) is int and 0 < size < 1 << 53 else None,
                 "sha256": sha if re.fullmatch(r"[0-9a-f]{64}", sha) else None}
        index, total = (int(shard.group(1)), int(shard.group(2))) if shard else (1, 1)
        found.setdefault(quant, {}).setdefault(stem, []).append((index, total, entry))
    variants = {}
    for quant, stems in sorted(found.items()):
        if len(stems) > 1:
            notes.append(f"{quant}: {len(stems)} different files ({', '.join(sorted(stems))}); which one is meant?")
            continue
        (stem, parts), = stems.items()
        parts.sort(key=lambda part: part[0])
        total = parts[0][1]
        if [(i, t) for i, t, _ in parts] != [(i, total) for i in range(1, total + 1)]:
            notes.append(f"{quant}: shards of {stem} missing or repeated ({len(parts)} of {total})")
            continue
        files = [{k: v for k, v in entry.items() if v is not None} for _, _, entry in parts]
        artifact = {"format": "gguf", "repo": repo}
        if len(files) == 1:
            artifact |= {"file": files[0]["name"], **{k: v for k, v in files[0].items() if k != "name"}}
        else:
            artifact["files"] = files
        variants[quant] = {"artifact": artifact}
    return variants, notes


def hf_gguf_variants(repo: str, refresh: bool = False) -> tuple[dict[str, dict], list[str]]:
    """A Hub GGUF repository's variants (gguf_variants), its file list asked for as every ingest request
    is (bounded time and size, cached); a repository that fails is a warning and no variants."""
    body, warnings = hf_repo_details(repo, refresh)
    if body is None:
        return {}, warnings
    if not isinstance(body, dict) or not isinstance(body.get("siblings"), list):
        return {}, [f"hf: {repo} has no file list (`siblings`); no variants from it"]
    variants, notes = gguf_variants(repo, body["siblings"])
    return variants, [f"hf: {repo}: {note}" for note in notes]
