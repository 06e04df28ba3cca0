"""llmfit's hf_models.json: Hugging Face models with parameter counts, architecture and RAM needs."""

from __future__ import annotations

import math
import re

from ..runtimes import infer
from . import (FormatMismatch, IMPORT_PRIORITY, Imported, context, count, day, hf_repo, named, number, plain,
               quantization, strings, text)
from . import kinds

FORMATS = {"gguf": "gguf", "mlx": "mlx", "awq": "safetensors", "gptq": "safetensors", "autoround": "safetensors"}
KEPT = ("recommended_ram_gb", "min_vram_gb", "is_moe", "active_experts", "moe_intermediate_size",
        "shared_expert_intermediate_size", "hf_downloads", "hf_likes", "format", "gguf_sources")
MAPPED = {"name", "parameters_raw", "min_ram_gb", "quantization", "context_length", "use_case", "capabilities",
          "architecture", "num_hidden_layers", "num_key_value_heads", "head_dim", "hidden_size", "num_experts",
          "active_parameters", "pipeline_tag", "license", "num_attention_heads", "vocab_size", "release_date", *KEPT}
RANDOM_REPO = re.compile(r"(^|[/_-])random([/_-]|$)", re.I)
EMBEDDING_TAGS = {"sentence-similarity", "feature-extraction"}
AUDIO_TAGS = {"automatic-speech-recognition", "audio-to-audio", "text-to-speech", "audio-classification",
              "text-to-audio"}
VISION_TAGS = {"image-text-to-text", "any-to-any", "visual-question-answering"}


def convert(data, out: Imported) -> None:
    if not isinstance(data, list):
        raise FormatMismatch("expected a JSON array of models")
    siblings = kinds.tuned_siblings(name for entry in data if isinstance(entry, dict) and (name := text(entry.get("name"))))
    for entry in data:
        name = named(out, entry, "name")
        if name is None:
            continue
        if RANDOM_REPO.search(name):
            out.skip(name, "test repository with random weights")
            continue
        window = context(entry.get("context_length"), out, name)
        if window is False:
            continue
        raw = number(entry.get("parameters_raw"))
        if not raw or raw < 0:
            out.skip(name, "no parameter count")
            continue
        use = str(entry.get("use_case") or "").lower()
        if "embedding" in use or text(entry.get("pipeline_tag")) in EMBEDDING_TAGS:
            workloads = ["embedding"]
        elif "code" in use:
            workloads = ["code", "chat"]
        else:
            workloads = ["chat"]
        caps = strings(entry.get("capabilities"))
        kind = model_type(name, entry, workloads, caps, siblings)
        arch = {"layers": entry.get("num_hidden_layers"), "kv_heads": entry.get("num_key_value_heads"),
                "head_dim": entry.get("head_dim"), "hidden_size": entry.get("hidden_size"),
                "experts": entry.get("num_experts"), "heads": entry.get("num_attention_heads"),
                "vocab_size": entry.get("vocab_size")}
        arch = {k: v for k, v in arch.items() if count(v)}
        active = round((number(entry.get("active_parameters")) or 0) / 1e9, 4)
        if active > 0:
            arch["active_params_b"] = active
        ram = number(entry.get("min_ram_gb"))
        repo = hf_repo(name)
        fmt = text(entry.get("format"))  # "gguf" is llmfit's default, not evidence: names say FP8, bnb, MLX...
        container, method = infer((fmt if fmt != "gguf" else None, text(entry.get("quantization")), name))
        quant = quantization(entry.get("quantization"))
        artifact_repo = repo
        if container is None and fmt in ("gguf", None):
            # llmfit rates every plain repository as if a Q4_K_M GGUF of it were at hand. One is only
            # where llmfit names a GGUF repository for it; otherwise the repository holds the
            # checkpoint itself (16-bit safetensors), which llama.cpp and Ollama cannot load.
            ggufs = [found for source in entry.get("gguf_sources") or () if isinstance(source, dict)
                     and (found := hf_repo(source.get("repo")))]
            if ggufs:
                container, artifact_repo = "gguf", ggufs[0]
            else:
                container, quant = "safetensors", None
        elif container == "mlx":  # llmfit labels every MLX conversion Q4_K_M; its name says what it holds
            quant = mlx_quantization(name)
        model = {
            "name": name,
            "family": text(entry.get("architecture")),
            "params_b": round(raw / 1e9, 6) if raw >= 1e5 else 1e-4,
            "quantization": quant,
            "context_window": window,
            "provider": "local",
            "workloads": kinds.workloads(kind, workloads),
            "type": kind,
            "capabilities": {"tools": "tool_use" in caps, "vision": "vision" in caps},
            "arch": arch or None,
            "memory": {"ram_mb": ram_mb} if (ram_mb := count(math.ceil(ram * 1024)) if ram else None) else None,
            "priority": IMPORT_PRIORITY,
            "downloads": count(entry.get("hf_downloads")),  # best_fit's tie-breaker within a size class
            # a code model by its name: llmfit's "Code generation and completion" use case follows the whole
            # name (it files coder3101's Gemma there, some Devstral conversions under "edge")
            "specialty": kinds.specialty(name) if kind in kinds.GENERATIVE else None,
            "release_date": day(entry.get("release_date")),  # best_fit's last tie-breaker: the newer of equals
            "license": text(entry.get("license")),
            "hf_repo": repo,
            "artifact": {"format": container or FORMATS.get(fmt, "safetensors"), "repo": artifact_repo}
            | ({"quant_method": method} if method != "plain" else {}) if repo else None,
            "x-llmfit": {key: entry[key] for key in KEPT if entry.get(key) not in (None, [], {}) and plain(entry[key])},
        }
        out.add(name, model)
        out.unmapped_fields(key for key in entry if key not in MAPPED)


def model_type(name: str, entry: dict, workloads: list[str], caps: list[str], siblings: set[str]) -> str:
    """What the entry says it is: its name first (a reranker's use case reads "embeddings"), then its
    use case and pipeline tag, then its architecture, then base or instruct from its name."""
    tag, arch = text(entry.get("pipeline_tag")), text(entry.get("architecture"))
    if named := kinds.from_name(name):
        return named
    if workloads == ["embedding"]:
        return "embedding"
    if tag in AUDIO_TAGS and not kinds.INSTRUCT_NAME.search(name):  # Phi-4-multimodal-instruct is tagged ASR
        return "audio"
    return kinds.infer(name, arch, vision="vision" in caps or tag in VISION_TAGS, siblings=siblings)


MLX_BITS = re.compile(r"(?<![a-z0-9])([1-8])-?bit(?![a-z0-9])", re.I)
MLX_FLOAT = {"bf16": "BF16", "fp16": "F16", "f16": "F16", "mxfp4": "MXFP4"}


def mlx_quantization(name: str) -> str | None:
    """An MLX conversion's quantization from its name ("...-MLX-6bit" -> MLX_6BIT); None (unknown,
    sized as 16-bit) when the name says nothing."""
    if found := MLX_BITS.search(name):
        return f"MLX_{found.group(1)}BIT"
    lowered = name.lower()
    return next((quant for word, quant in MLX_FLOAT.items() if re.search(rf"(?<![a-z0-9]){word}(?![a-z0-9])", lowered)),
                None)
