"""Ingest: candidates from the Hugging Face Hub, OpenRouter's model index and a curated list,
normalized to {model_id, provider, license, source, popularity_score, tags}, de-duplicated with
additive provenance, and staged in sources/staging/candidates.json for review.

A source that is unreachable, slow or malformed yields no candidates and a warning. Responses are
cached under $XDG_CACHE_HOME/hostfit/ingest for MAX_AGE seconds; pagination stops at MAX_PAGES.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import paths
from ..importers import kinds as model_kinds
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


@dataclass
class Harvest:
    candidates: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
    out = Harvest()
    base = paths.hf_endpoint()
    url = f"{base}/api/models"
    params: dict | None = {"pipeline_tag": "text-generation", "sort": "downloads", "direction": "-1",
                           "limit": str(PAGE_SIZE)}
    for _ in range(MAX_PAGES):
        body, following = _cached_get("hf", url, params, refresh, out.warnings)
        if body is None:
            break
        if not isinstance(body, list):
            out.warnings.append("hf: the listing is not a JSON array; no candidates from it")
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
    out = Harvest()
    base = paths.openrouter_base()
    body, _ = _cached_get("openrouter", f"{base}/models", None, refresh, out.warnings)
    if body is not None:
        out.candidates += openrouter_candidates(body, out.warnings)
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
        found.append({
            "model_id": hf_id if "/" in hf_id else entry["id"],
            "provider": "huggingface" if "/" in hf_id else "openrouter", "license": None,
            "source": "openrouter_index", "popularity_score": len(entries) - rank,  # listing order, as a rank
            "tags": sorted(set(_strings(mapping(entry.get("architecture")).get("input_modalities"))))})
    return found


def from_curated(root: Path) -> Harvest:
    out = Harvest()
    path = root / "sources" / "curated.yaml"
    if not os.path.lexists(path):
        return out
    from ..errors import InputError
    from ..load import load_file

    try:  # the catalog's own loader: positions, no special files, bounded nesting, finite numbers
        data = load_file(path, "sources/curated.yaml").data
    except InputError as exc:
        first = exc.diagnostics[0]
        out.warnings.append(f"curated: {first.where}: {first.message}; no candidates from it")
        return out
    entries = (data.get("candidates") or []) if isinstance(data, dict) else []
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("model_id"), str):
            provider, licence = entry.get("provider"), entry.get("license")
            out.candidates.append({"model_id": entry["model_id"],
                                   "provider": provider if isinstance(provider, str) and provider else "huggingface",
                                   "license": licence if isinstance(licence, str) else None, "source": "curated",
                                   "popularity_score": 0, "tags": sorted(set(_strings(entry.get("tags"))))})
    return out


def merge(harvests: list[Harvest], previous: dict[str, dict]) -> list[dict]:
    """De-duplicate by model id (case-insensitive); provenance adds up, popularity is the highest,
    and a status set by review (trial, adopted, rejected) survives a re-ingest."""
    merged: dict[str, dict] = {}
    order = {name: i for i, name in enumerate(SOURCE_NAMES.values())}
    for harvest in harvests:
        for candidate in harvest.candidates:
            key = candidate["model_id"].lower()
            known = merged.get(key)
            if known is None:
                merged[key] = dict(candidate)
                continue
            sources = set(known["source"].split("+")) | {candidate["source"]}
            known["source"] = "+".join(sorted(sources, key=lambda s: order.get(s, 99)))
            known["popularity_score"] = max(known["popularity_score"], candidate["popularity_score"])
            known["license"] = known["license"] or candidate["license"]
            known["tags"] = sorted(set(known["tags"]) | set(candidate["tags"]))
            if known["provider"] != "huggingface" and candidate["provider"] == "huggingface":
                known["provider"], known["model_id"] = "huggingface", candidate["model_id"]
    for key, candidate in merged.items():
        candidate["status"] = (previous.get(key) or {}).get("status", "pending")
    return [merged[key] for key in sorted(merged)]


def read_staged(path: Path) -> dict[str, dict]:
    try:
        return {c["model_id"].lower(): c for c in json.loads(path.read_text())["candidates"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):  # a hand-edited file
        return {}


def document(candidates: list[dict], fetched_at: datetime | None = None) -> dict:
    stamp = (fetched_at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"schema_version": 2, "kind": "candidates", "fetched_at": stamp, "candidates": candidates}


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
    `candidate` models (listed, never selected), trial ones active; adopted and rejected stay out."""
    from ..migrate import normalize_id

    models = {}
    candidates = data.get("candidates") if isinstance(data, dict) else None
    for candidate in candidates if isinstance(candidates, list) else ():  # validated, but used even when invalid
        status = candidate.get("status", "pending") if isinstance(candidate, dict) else None
        if status not in ("pending", "trial") or not isinstance(candidate.get("model_id"), str):
            continue
        kind = staged_type(candidate)
        model = {"name": candidate["model_id"], "provider": candidate.get("provider") or "huggingface",
                 "workloads": model_kinds.workloads(kind, ["chat"]), "type": kind, "priority": 900, "status": "active" if status == "trial" else "candidate",
                 "tags": _strings(candidate.get("tags")) or None, "license": candidate.get("license"),
                 "x-staged": {"source": candidate.get("source"), "popularity_score": candidate.get("popularity_score")}}
        models[normalize_id(candidate["model_id"])] = {k: v for k, v in model.items() if v is not None}
    return {"schema_version": 2, "kind": "catalog", "models": models}


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
    from ..importers import hf_repo

    warnings: list[str] = []
    if hf_repo(repo) != repo:
        return {}, [f"hf: {repo!r} is not a repository name (owner/name)"]
    body, _ = _cached_get("hf", f"{paths.hf_endpoint()}/api/models/{repo}", {"blobs": "true"}, refresh, warnings)
    if body is None:
        return {}, warnings
    if not isinstance(body, dict) or not isinstance(body.get("siblings"), list):
        return {}, [f"hf: {repo} has no file list (`siblings`); no variants from it"]
    variants, notes = gguf_variants(repo, body["siblings"])
    return variants, [f"hf: {repo}: {note}" for note in notes]
