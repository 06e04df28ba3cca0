"""Ingest: candidates from the Hugging Face Hub, OpenRouter's model index and a curated list,
normalized to {model_id, provider, license, source, popularity_score, tags}, de-duplicated with
additive provenance, and staged in sources/staging/candidates.json for review.

A source that is unreachable, slow or malformed yields no candidates and a warning. Responses are
cached under $XDG_CACHE_HOME/hostfit/ingest for MAX_AGE seconds; pagination stops at MAX_PAGES.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import paths
from ..net import Deadline, DeadlinePassed, LimitExceeded, parse_json, redact_url, request

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
    rank = 0
    for _ in range(MAX_PAGES):
        body, following = _cached_get("hf", url, params, refresh, out.warnings)
        if body is None:
            break
        if not isinstance(body, list):
            out.warnings.append("hf: the listing is not a JSON array; no candidates from it")
            break
        for entry in body:
            model_id = entry.get("id") or entry.get("modelId") if isinstance(entry, dict) else None
            if not isinstance(model_id, str) or "/" not in model_id:
                continue
            rank += 1
            tags = [t for t in entry.get("tags") or [] if isinstance(t, str)]
            downloads = entry.get("downloads")
            out.candidates.append({
                "model_id": model_id, "provider": "huggingface", "license": _license(tags),
                "source": "huggingface_hub", "popularity_score": int(downloads) if isinstance(downloads, int) else 0,
                "tags": sorted(t for t in tags if ":" not in t)[:12]})
        if not following:
            break
        url, params = following, None
    return out


def from_openrouter(refresh: bool = False) -> Harvest:
    out = Harvest()
    base = paths.openrouter_base()
    body, _ = _cached_get("openrouter", f"{base}/models", None, refresh, out.warnings)
    if body is None:
        return out
    entries = body.get("data") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        out.warnings.append("openrouter: the response has no `data` array; no candidates from it")
        return out
    total = len(entries)
    for rank, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("id"):
            continue
        pricing = entry.get("pricing") or {}
        if "-1" in (str(pricing.get("prompt")), str(pricing.get("completion"))):
            continue  # routers are not models
        hf_id = entry.get("hugging_face_id") or ""
        out.candidates.append({
            "model_id": hf_id if "/" in hf_id else entry["id"],
            "provider": "huggingface" if "/" in hf_id else "openrouter", "license": None,
            "source": "openrouter_index", "popularity_score": total - rank,  # its listing order, as a rank
            "tags": sorted({m for m in (entry.get("architecture") or {}).get("input_modalities") or []
                            if isinstance(m, str)})})
    return out


def from_curated(root: Path) -> Harvest:
    out = Harvest()
    path = root / "sources" / "curated.yaml"
    if not path.exists():
        return out
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
        entries = data.get("candidates") or []
    except (yaml.YAMLError, AttributeError) as exc:
        out.warnings.append(f"curated: {path.name} is unreadable ({exc}); no candidates from it")
        return out
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("model_id"), str):
            out.candidates.append({"model_id": entry["model_id"], "provider": entry.get("provider") or "huggingface",
                                   "license": entry.get("license"), "source": "curated", "popularity_score": 0,
                                   "tags": sorted(entry.get("tags") or [])})
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
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def document(candidates: list[dict], fetched_at: datetime | None = None) -> dict:
    stamp = (fetched_at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"schema_version": 2, "kind": "candidates", "fetched_at": stamp, "candidates": candidates}


def render(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def as_catalog(data: dict) -> dict:
    """Staged candidates as a catalog layer (for `build --with-staging`): pending ones become
    `candidate` models (listed, never selected), trial ones active; adopted and rejected stay out."""
    from ..migrate import normalize_id

    models = {}
    for candidate in data.get("candidates") or []:
        status = candidate.get("status", "pending")
        if status not in ("pending", "trial"):
            continue
        model = {"name": candidate["model_id"], "provider": candidate.get("provider") or "huggingface",
                 "workloads": ["chat"], "priority": 900, "status": "active" if status == "trial" else "candidate",
                 "tags": list(candidate.get("tags") or []) or None, "license": candidate.get("license"),
                 "x-staged": {"source": candidate.get("source"), "popularity_score": candidate.get("popularity_score")}}
        models[normalize_id(candidate["model_id"])] = {k: v for k, v in model.items() if v is not None}
    return {"schema_version": 2, "kind": "catalog", "models": models}
