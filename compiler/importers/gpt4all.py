"""GPT4All's models3.json (and the older models2.json): every value a string, `filename` the key."""

from __future__ import annotations

import re

from . import (FormatMismatch, IMPORT_PRIORITY, Imported, count, number, params_b, plain_text, quantization, shown, text,
               unsafe_names)
from . import kinds

# GPT4All's own words for a model that only continues text ("Code completion based", "WARNING: Not
# available for chat GUI"): StarCoder, Replit and Rift Coder are base code models
COMPLETION_ONLY = re.compile(r"completion based|not available for chat", re.I)
MAPPED = {"name", "filename", "filesize", "ramrequired", "parameters", "quant", "type", "description", "url",
          "md5sum", "sha256sum", "removedIn", "embeddingModel"}


def convert(data, out: Imported) -> None:
    if not isinstance(data, list):
        raise FormatMismatch("expected a JSON array of models")
    for entry in data:
        if not isinstance(entry, dict):
            out.skip(shown(entry), "not a model entry")
            continue
        filename = text(entry.get("filename"))
        if filename is None:
            wrong = entry.get("filename") is not None and not isinstance(entry["filename"], str)
            out.skip(text(entry.get("name")) or "(unnamed)", "filename is not a string" if wrong else "no filename")
            continue
        if unsafe_names(out, text(entry.get("name")) or filename, file=filename, url=text(entry.get("url"))):
            continue
        embedding = str(entry.get("embeddingModel", "")).lower() == "true"
        words = " ".join(str(entry.get(k, "")) for k in ("name", "filename")).lower()
        workloads = ["embedding"] if embedding else (["code", "chat"] if "code" in words or "coder" in words
                                                     else ["chat"])
        artifact = {"format": "gguf" if filename.lower().endswith(".gguf") else None, "file": filename,
                    "url": text(entry.get("url"))}
        size = str(entry.get("filesize", "")).strip()
        if re.fullmatch(r"[0-9]{1,16}", size):  # ASCII digits: str.isdigit() accepts "²"
            artifact["size_bytes"] = count(int(size))
        for key, field, digits in (("sha256sum", "sha256", 64), ("md5sum", "md5", 32)):
            digest = str(entry.get(key) or "").strip().lower()
            if re.fullmatch(f"[0-9a-f]{{{digits}}}", digest):
                artifact[field] = digest
            elif digest:
                out.unmapped_fields([f"{key} (not {digits} hex digits)"])
        ram = number(entry.get("ramrequired"))  # GiB
        description = plain_text(entry.get("description")) or None
        if embedding:
            kind = "embedding"
        elif COMPLETION_ONLY.search(description or ""):
            kind = "base"
        else:
            kind = kinds.infer(" ".join(filter(None, (text(entry.get("name")), filename))))
        model = {
            "name": text(entry.get("name")),
            "family": (text(entry.get("type")) or "").lower() or None,
            "params_b": params_b(entry.get("parameters")),
            "quantization": quantization(entry.get("quant")),
            "provider": "local",
            "workloads": kinds.workloads(kind, workloads),
            "type": kind,
            "memory": {"ram_mb": ram_mb} if (ram_mb := count(int(ram * 1024)) if ram else None) else None,
            "priority": IMPORT_PRIORITY,
            "specialty": kinds.specialty(words) if kind in kinds.GENERATIVE else None,
            "status": "retired" if entry.get("removedIn") else "active",
            "description": description,
            "artifact": {k: v for k, v in artifact.items() if v is not None},
        }
        out.add(filename.rsplit(".", 1)[0] if filename.lower().endswith(".gguf") else filename, model)
        out.unmapped_fields(key for key in entry if key not in MAPPED)
