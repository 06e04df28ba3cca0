"""The flat registry JSON: a list of {ID, Name, Family, Parameters, Quantization, ContextWindow,
FileSizeMB, RAMRequiredMB, HuggingFaceRepo, Filename, SHA256, Recommended, Description, Tags}."""

from __future__ import annotations

import re

from . import (FormatMismatch, IMPORT_PRIORITY, Imported, context, count, group_variants, hf_repo, named, number,
               params_b, quantization, strings, text, unsafe_names)
from . import kinds

MAPPED = {"ID", "Name", "Family", "Parameters", "Quantization", "ContextWindow", "FileSizeMB", "RAMRequiredMB",
          "HuggingFaceRepo", "Filename", "SHA256", "Recommended", "Description", "Tags"}
WORKLOAD_TAGS = {"code": "code", "coding": "code", "embedding": "embedding", "embeddings": "embedding",
                 "summarization": "summarization", "creative": "creative", "writing": "creative",
                 "extraction": "extraction", "classification": "classification", "chat": "chat"}
MIB = 1024 * 1024


def convert(data, out: Imported) -> None:
    if not isinstance(data, list):
        raise FormatMismatch("expected a JSON array of models")
    entries = []  # (ID, model): a registry lists each quantized file of a model as an entry of its own
    for entry in data:
        name = named(out, entry, "ID", label="Name")
        if name is None:
            continue
        window = context(entry.get("ContextWindow"), out, name)
        if window is False:
            continue
        tags = entry.get("Tags")
        tags = [t.strip().lower() for t in (tags.split(",") if isinstance(tags, str) else strings(tags)) if t.strip()]
        workloads = sorted({WORKLOAD_TAGS[t] for t in tags if t in WORKLOAD_TAGS}) or ["chat"]
        filename = text(entry.get("Filename")) or ""
        kind = "embedding" if workloads == ["embedding"] else kinds.infer(" ".join(filter(None, (name, filename))))
        if unsafe_names(out, name, file=filename or None):
            continue
        sha = str(entry.get("SHA256") or "").strip().lower()
        size_mb, ram_mb = number(entry.get("FileSizeMB")), number(entry.get("RAMRequiredMB"))
        artifact = {"format": "gguf" if filename.lower().endswith(".gguf") else None,
                    "repo": hf_repo(entry.get("HuggingFaceRepo")), "revision": "main" if filename else None,
                    "file": filename or None, "size_bytes": count(int(size_mb * MIB)) if size_mb else None,
                    "sha256": sha if re.fullmatch(r"[0-9a-f]{64}", sha) else None}
        if sha and not artifact["sha256"]:
            out.unmapped_fields(["SHA256 (not 64 hex digits)"])
        model = {
            "name": text(entry.get("Name")),
            "family": (text(entry.get("Family")) or "").lower() or None,
            "params_b": params_b(entry.get("Parameters")),
            "quantization": quantization(entry.get("Quantization")),
            "context_window": window,
            "provider": "local",
            "workloads": kinds.workloads(kind, workloads),
            "type": kind,
            "memory": {"ram_mb": int(ram_mb)} if ram_mb and ram_mb >= 1 else None,
            "recommended": bool(entry.get("Recommended")),
            "priority": IMPORT_PRIORITY,
            "tags": tags or None,
            "specialty": kinds.specialty(name) if kind in kinds.GENERATIVE else None,
            "description": text(entry.get("Description")),
            "artifact": {k: v for k, v in artifact.items() if v is not None} or None,
        }
        entries.append((name, {key: value for key, value in model.items() if value is not None}))
        out.unmapped_fields(key for key in entry if key not in MAPPED)
    for name, model in group_variants(entries, out):
        out.add(name, model)
