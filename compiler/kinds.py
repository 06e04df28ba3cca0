"""Model kinds: the `type` values a model may have and which types serve which workload (declared data)."""

from __future__ import annotations

# Every model type, with what it is. A newcomer adds a type here, to SERVES below, and to the
# `type` enum of schemas/catalog.v2.json and output.v2.json (test_kinds checks the three agree).
TYPES = {
    "instruct": "a generative model tuned to follow instructions or chat",
    "base": "a pretrained model not tuned for any task (completion, fill-mask, a draft model)",
    "embedding": "maps text (or images) to vectors",
    "reranker": "scores how well a passage answers a query",
    "vision-language": "an instruct model that also takes images",
    "audio": "speech recognition, speech synthesis or an audio codec",
    "guard": "classifies prompts and replies as safe or unsafe",
    "classifier": "assigns labels to text (sentiment, natural language inference, zero-shot)",
    # seq2seq models fine-tuned for one text task: BART-CNN or Pegasus summarize and do nothing else
    "summarizer": "a sequence-to-sequence model fine-tuned to summarize",
    # OCR and document-parsing models take images like vision-language ones but answer fixed task
    # prompts, not a conversation, so they must not compete for chat
    "ocr": "reads text out of images and documents",
}

# Which model types serve each workload when a role does not say (`roles.<name>.types` replaces the
# row for that role). Types absent from every row (base, reranker, audio, guard, ocr) serve a role
# only when it names them: a base model completes text but does not follow a prompt, and the
# others do one narrow job no workload here describes.
SERVES = {
    "chat": ("instruct", "vision-language"),
    "code": ("instruct", "vision-language"),
    "summarization": ("instruct", "vision-language", "summarizer"),
    "extraction": ("instruct", "vision-language"),
    "creative": ("instruct", "vision-language"),
    "classification": ("instruct", "vision-language", "classifier"),
    "embedding": ("embedding",),
}


def accepted(role: dict) -> tuple[str, ...]:
    """The model types a role takes: its own `types`, else those serving its workload."""
    return tuple(role.get("types") or SERVES.get(role.get("workload"), ()))


def problem(model_type: str, role: dict) -> str | None:
    """Why a model of `model_type` cannot serve `role`, or None when it can."""
    types = accepted(role)
    if model_type in types:
        return None
    taken = ", ".join(types) or "no type"
    if role.get("types"):
        return f"type {model_type} is not among the role's types ({taken})"
    return (f"type {model_type} does not serve workload {role.get('workload')} (takes {taken}); "
            f"widen with role types")
