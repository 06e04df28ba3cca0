"""The flat registry JSON: a list of {ID, Name, Family, Parameters, Quantization, ContextWindow,
FileSizeMB, RAMRequiredMB, HuggingFaceRepo, Filename, SHA256, Recommended, Description, Tags}."""

from __future__ import annotations

import re

from . import FormatMismatch, IMPORT_PRIORITY, Imported, context, hf_repo, number, params_b, quantization, \
    unsafe_names

MAPPED = {"ID", "Name", "Family", "Parameters", "Quantization", "ContextWindow", "FileSizeMB", "RAMRequiredMB",
          "HuggingFaceRepo", "Filename", "SHA256", "Recommended", "Description", "Tags"}
WORKLOAD_TAGS = {"code": "code", "coding": "code", "embedding": "embedding", "embeddings": "embedding",
                 "summarization": "summarization", "creative": "creative", "writing": "creative",
                 "extraction": "extraction", "classification": "classification", "chat": "chat"}
MIB = 1024 * 1024


def convert(data, out: Imported) -> None:
    if not isinstance(data, list):
        raise FormatMismatch("expected a JSON array of models")
    for entry in data:
        name = str(entry.get("ID") or "") if isinstance(entry, dict) else ""
        if not name:
            out.skip(str(entry)[:60], "no ID")
            continue
        window = context(entry.get("ContextWindow"), out, name)
        if window is False:
            continue
        tags = entry.get("Tags") or []
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        tags = [str(t).lower() for t in tags]
        workloads = sorted({WORKLOAD_TAGS[t] for t in tags if t in WORKLOAD_TAGS}) or ["chat"]
        filename = str(entry.get("Filename") or "")
        if unsafe_names(out, name, file=filename or None):
            continue
        sha = str(entry.get("SHA256") or "").strip().lower()
        size_mb, ram_mb = number(entry.get("FileSizeMB")), number(entry.get("RAMRequiredMB"))
        artifact = {"format": "gguf" if filename.lower().endswith(".gguf") else None,
                    "repo": hf_repo(entry.get("HuggingFaceRepo")), "revision": "main" if filename else None,
                    "file": filename or None, "size_bytes": int(size_mb * MIB) if size_mb else None,
                    "sha256": sha if re.fullmatch(r"[0-9a-f]{64}", sha) else None}
        if sha and not artifact["sha256"]:
            out.unmapped_fields(["SHA256 (not 64 hex digits)"])
        model = {
            "name": entry.get("Name") or None,
            "family": str(entry.get("Family") or "").lower() or None,
            "params_b": params_b(entry.get("Parameters")),
            "quantization": quantization(entry.get("Quantization")),
            "context_window": window,
            "provider": "local",
            "workloads": workloads,
            "memory": {"ram_mb": int(ram_mb)} if ram_mb and ram_mb > 0 else None,
            "recommended": bool(entry.get("Recommended")),
            "priority": IMPORT_PRIORITY,
            "tags": tags or None,
            "description": entry.get("Description") or None,
            "artifact": {k: v for k, v in artifact.items() if v is not None} or None,
        }
        out.add(name, model)
        out.unmapped_fields(key for key in entry if key not in MAPPED)
