"""A model's format, (container, quantization method), from what its entry or an importer's source says."""

from __future__ import annotations

import re
from typing import Iterable

from .base import Format

DEFAULT_CONTAINER = "gguf"  # a local model that says nothing of its files: hostfit's original assumption
# Words in names, quantization labels and source formats that say how the weights are quantized,
# first match wins ("AWQ-4bit", "GPTQ-Int4", "...-FP8-dynamic", "quantized.w8a8", "bnb-4bit").
METHOD_WORDS = (
    ("awq", "awq"), ("gptq", "gptq"), ("autoround", "autoround"), ("auto-round", "autoround"),
    ("nvfp4", "nvfp4"), ("fp8", "fp8"), ("w4a16", "w4a16"), ("w8a8", "w8a8"), ("bnb", "bnb"),
    ("bitsandbytes", "bnb"),
)
# Words that name the container itself (a GGUF repository, mlx-community's conversions).
CONTAINER_WORDS = (("gguf", "gguf"), ("mlx", "mlx"))
# Containers that carry their own quantization: their method is always "plain".
SELF_QUANTIZED = ("gguf", "mlx")
_PATTERNS = {word: re.compile(r"(?<![a-z0-9])" + re.escape(word)) for word, _ in (*METHOD_WORDS, *CONTAINER_WORDS)}


def infer(words: Iterable[str | None], container: str | None = None, method: str | None = None
          ) -> tuple[str | None, str]:
    """(container or None when nothing says, method) from declared values, which win, and words
    (names, repos, file names, quantization labels) where they say more. Pure: importers and
    `model_format` both use it."""
    text = " ".join(w.lower() for w in words if isinstance(w, str))
    found = method or next((m for word, m in METHOD_WORDS if _PATTERNS[word].search(text)), None)
    if container is None:
        container = next((c for word, c in CONTAINER_WORDS if _PATTERNS[word].search(text)), None)
    if container is None and found:
        container = "safetensors"  # the quantization methods are Hugging Face checkpoint formats
    if container in SELF_QUANTIZED and not method:
        found = None  # "Qwen3-8B-FP8-GGUF" is a GGUF file; its types are in `quantization`
    return container, found or "plain"


def model_format(model: dict, model_id: str | None = None) -> Format:
    """The format of a catalog entry: artifact.format and artifact.quant_method when declared, else
    inferred from its quantization, id, name, repository and file, else GGUF."""
    artifact = model.get("artifact") or {}
    container, method = infer((model.get("quantization"), model_id, model.get("name"), artifact.get("repo"),
                               artifact.get("file")), artifact.get("format"), artifact.get("quant_method"))
    return Format(container or DEFAULT_CONTAINER, method)


def sources(model: dict) -> frozenset:
    """Where a runtime can take the model from: its Ollama name, and a file unless it lives in Ollama."""
    offers = set()
    if (model.get("ollama") or {}).get("name"):
        offers.add("ollama")
    if model.get("provider") != "ollama":
        offers.add("file")
    return frozenset(offers)
