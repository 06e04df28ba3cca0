"""GPT4All's models3.json (and the older models2.json): every value a string, `filename` the key."""

from __future__ import annotations

from . import FormatMismatch, IMPORT_PRIORITY, Imported, params_b, plain_text, quantization, unsafe_names

MAPPED = {"name", "filename", "filesize", "ramrequired", "parameters", "quant", "type", "description", "url",
          "md5sum", "sha256sum", "removedIn", "embeddingModel"}


def convert(data, out: Imported) -> None:
    if not isinstance(data, list):
        raise FormatMismatch("expected a JSON array of models")
    for entry in data:
        if not isinstance(entry, dict) or not entry.get("filename"):
            out.skip(str(entry.get("name") if isinstance(entry, dict) else entry)[:60], "no filename")
            continue
        filename = entry["filename"]
        if unsafe_names(out, str(entry.get("name") or filename)[:60], file=filename, url=entry.get("url") or None):
            continue
        embedding = str(entry.get("embeddingModel", "")).lower() == "true"
        text = " ".join(str(entry.get(k, "")) for k in ("name", "filename")).lower()
        workloads = ["embedding"] if embedding else (["code", "chat"] if "code" in text or "coder" in text
                                                     else ["chat"])
        artifact = {"format": "gguf" if filename.lower().endswith(".gguf") else None, "file": filename,
                    "url": entry.get("url") or None}
        size = str(entry.get("filesize", "")).strip()
        if size.isdigit():
            artifact["size_bytes"] = int(size)
        if str(entry.get("sha256sum", "")).strip():
            artifact["sha256"] = entry["sha256sum"].strip().lower()
        if str(entry.get("md5sum", "")).strip():
            artifact["md5"] = entry["md5sum"].strip().lower()
        ram = str(entry.get("ramrequired", "")).strip()
        model = {
            "name": entry.get("name"),
            "family": str(entry.get("type") or "").lower() or None,
            "params_b": params_b(entry.get("parameters")),
            "quantization": quantization(entry.get("quant")),
            "provider": "local",
            "workloads": workloads,
            "memory": {"ram_mb": int(float(ram) * 1024)} if ram.replace(".", "", 1).isdigit() and float(ram) > 0
            else None,
            "priority": IMPORT_PRIORITY,
            "status": "retired" if entry.get("removedIn") else "active",
            "description": plain_text(entry.get("description", "")) or None,
            "artifact": {k: v for k, v in artifact.items() if v is not None},
        }
        out.add(filename.rsplit(".", 1)[0] if filename.lower().endswith(".gguf") else filename, model)
        out.unmapped_fields(key for key in entry if key not in MAPPED)
