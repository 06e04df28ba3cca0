"""What kind of model a foreign entry is (compiler/kinds.py's types), from its name and architecture.

Rules are declared data, tried in order; the first match wins. Each importer adds what its own
source states (llmfit's pipeline_tag, GPT4All's embeddingModel, LiteLLM's mode, OpenRouter's
modalities) before falling back to these.
"""

from __future__ import annotations

import re

# Names that say what a model does, whatever its architecture. Order matters: a reranker or a
# guard is often built on an instruct model ("Qwen3-Reranker", "Llama-Guard-3-8B"), and an
# embedding model on an encoder or an LLM ("gte-Qwen2-7B-instruct", "multilingual-e5-large-instruct").
_W = r"(^|[/_.\s-])"  # a word boundary in a model name
_E = r"([/_.\s-]|$)"
NAME_RULES = (
    ("reranker", re.compile(r"rerank|cross-encoder|ms-marco|ranking/", re.I)),
    # in the model's own name, not its publisher's ("shieldstar/Qwen3.5-122B-A10B" is no guard)
    ("guard", re.compile(r"(guard|shield)[^/]*$|moderation", re.I)),
    ("embedding", re.compile(
        r"embed|sentence|simcse|sbert|sapbert|splade|sparse-encod|biencoder|bi-encoder|labse|minilm|mpnet"
        rf"|retriev|vlm2vec|clip-vit|jina-clip|japanese-clip|clip-japanese|open-?clip"
        rf"|{_W}(bge|gte|e5|cde|frida|kure|luar|scincl|jobbert|medcpt){_E}|-encoder{_E}|harrier-oss"
        r"|text_encoders", re.I)),
    ("audio", re.compile(r"whisper|wav2vec|hubert|speech|audio|codec|moshi|parler|kokoro"
                         rf"|{_W}(tts|asr|dac|eat|mimi|voice){_E}", re.I)),
    ("ocr", re.compile(r"ocr|docling|nemotron-parse|florence-2|texify|donut|mineru|churro|udop", re.I)),
    ("classifier", re.compile(r"mnli|{w}nli{e}|sst-?2|sentiment|emotion|toxic|classif|aesthetic|{w}(ner|cls){e}"
                              .format(w=_W, e=_E), re.I)),
    # Google's Pegasus summarizers, not TwelveLabs' Pegasus video model
    ("summarizer", re.compile(rf"summar|{_W}cnn{_E}|xsum|(google/|bigbird[-_])pegasus|pegasus[-_](large|arxiv|pubmed)",
                              re.I)),
    # draft models for speculative decoding: they only propose tokens for a bigger model
    ("base", re.compile(rf"speculator|{_W}eagle3?{_E}|{_W}draft{_E}", re.I)),
)

# Architectures (config.json model_type, as llmfit and GGUF headers name them) that cannot chat.
ARCH_TYPES = {
    **dict.fromkeys(("whisper", "wav2vec2", "wav2vec2-bert", "hubert", "encodec", "dac", "mimi", "xcodec", "moshi",
                     "higgs_audio_v2_tokenizer", "moss-audio-tokenizer", "eat", "seamless_m4t"), "audio"),
    **dict.fromkeys(("dots_ocr", "got_ocr2", "paddleocr_vl", "deepseekocr", "qianfan_ocr", "nemotron_parse",
                     "florence2", "vision-encoder-decoder", "udop"), "ocr"),
    # image encoders: features for retrieval or a downstream head
    **dict.fromkeys(("dinov2", "vit", "clip", "clip_vision_model", "clyp", "jina_clip", "siglip", "internvl_vision"),
                    "embedding"),
    **dict.fromkeys(("aesthetics_predictor",), "classifier"),
}
# Encoder-only and sequence-to-sequence architectures: when nothing above placed them, a pretrained
# checkpoint (fill-mask, span corruption) that serves no workload by itself.
NOT_GENERATIVE = frozenset((
    "bert", "roberta", "xlm-roberta", "distilbert", "deberta", "deberta-v2", "modernbert", "mpnet", "nomic_bert",
    "eurobert", "neobert", "canine", "roformer", "xlnet", "squeezebert", "flaubert", "lilt", "electra", "albert",
    "camembert", "new", "relik-reader", "t5", "mt5", "bart", "mbart", "t5gemma", "t5gemma2", "bigbird_pegasus",
    "reformer", "hyenadna", "molformer", "progen", "reve", "reve-position-bank", "starvector", "magi", "echo",
))
VISION_ARCH = re.compile(r"vl|vision|llava|internvl|minicpmv|idefics|paligemma|blip|molmo|ovis|moondream|fuyu"
                         r"|chameleon|emu3|aria|smolvlm|mllama|h2ovl|isaac|perception_lm|kimi_vl|phi3_v|phi4mm"
                         r"|gemma3n|heron|libra|ristretto|video_l|instructblip|omni|hulumed|glm4v|interns1|siglip"
                         r"|^vlm$|^r$", re.I)
VISION_NAME = re.compile(rf"{_W}(vlm?{_E}|vision|llava|internvl|minicpm-v|smolvlm|paligemma|molmo|ovis\d|moondream|"
                         rf"pixtral|idefics|qwen\d?(\.\d)?-?vl|glm-?4(\.\d+)?v)|-vl{_E}|vision", re.I)

# A name that says its model was tuned to follow instructions (or chat, or reason) ...
INSTRUCT_NAME = re.compile(
    rf"instruct|chat|{_W}it{_E}|-it-|thinking|think{_E}|reason|{_W}sft{_E}|dpo|rlhf|orpo|grpo|{_W}rl{_E}"
    r"|hermes|zephyr|vicuna|wizard|dolphin|openorca|orca|abliterated|uncensored|heretic|tool-calling|assistant"
    rf"|{_W}r1{_E}|-r1-|distill|bloomz|flan|{_W}tk-|snoozy|gpt4all|qwq|nemotron-nano|-mpo{_E}", re.I)
# ... or a pretrained checkpoint: "-Base" (whatever else the name says), Gemma's "-pt" ...
BASE_WORD = re.compile(rf"{_W}base{_E}|gemma[^/]*-pt{_E}|pretrain|-4e1t", re.I)
# ... or the plain name of an official pretrained release from a publisher who puts "Instruct",
# "Chat" or "-it" on its tuned models (Baidu's "-PT" means post-trained, so "pt" alone proves nothing).
BASE_RELEASE = re.compile(
    # the model part of the name, once a repacker's quantization suffix is gone (see _core), so
    # "unsloth/Meta-Llama-3.1-8B-bnb-4bit" is Llama 3.1 8B's base release too
    r"^(llama-\d+b|llama-2-\d+b(-hf)?|(meta-)?llama-3(\.\d)?-\d+b|codellama-\d+b(-hf)?|mistral-7b-v0\.\d|mixtral-8x\d+b-v0\.\d"
    r"|qwen(1\.5|2|2\.5)(-coder|-math)?-\d+(\.\d+)?b(-a\d+b)?|gemma-(\d+(\.\d)?-)?\d+b|codegemma-\d+b"
    r"|recurrentgemma-\d+b|internlm2?(\.5)?-\d+b|yi-\d+b|baichuan2?-\d+b|(ft:)?(babbage|davinci)-002|grok-1)$"
    # and whole publishers or lines that release only pretrained checkpoints under plain names
    r"|^(eleutherai/|facebook/opt-|openai-community/|(distilbert/)?distilgpt2$|bigscience/bloom(-\d+[mb]\d*)?$"
    r"|tiiuae/falcon-(rw-)?\d+b$|bigcode/|state-spaces/mamba|microsoft/phi-(1|1_5|2)$|stabilityai/stable-code-3b$"
    r"|allenai/olmo(e)?-[^/]*\d+b(-\d+)*(-hf)?$|cyberagent/open-calm|rinna/japanese-gpt|abeja/gpt-neox"
    r"|erwanf/|gratefulasi/|aubmindlab/|pfnet/plamo-\d+-\d+b$|fla-hub/|bytedance/ouro-\d+(\.\d)?b$)",
    re.I)
REPACK_SUFFIX = re.compile(r"([-_.](bnb|\d+bit|awq|gptq|gguf|mlx|fp8|fp16|bf16|int[48]|w\d+a\d+|nvfp4|mxfp4|dwq|hf"
                           r"|unsloth|quantized|dynamic))+$", re.I)


def _core(name: str) -> str:
    return REPACK_SUFFIX.sub("", name.rsplit("/", 1)[-1])


def from_name(name: str, arch: str | None = None) -> str | None:
    """The type a model's name or architecture states outright, or None when they are silent on it."""
    for kind, pattern in NAME_RULES:
        if pattern.search(name):
            return kind
    arch = (arch or "").lower()
    if arch in ARCH_TYPES:
        return ARCH_TYPES[arch]
    if arch in NOT_GENERATIVE:
        return "base"
    return None


TUNED_SIBLING = re.compile(r"^(.+?)[-_](instruct|chat|it)$", re.I)


def tuned_siblings(names) -> set[str]:
    """Names whose own source also lists "<name>-Instruct", "-Chat" or "-it": the plain one is the
    pretrained model those were tuned from (allenai/OLMo-2-0425-1B beside OLMo-2-0425-1B-Instruct)."""
    return {match.group(1).lower() for name in names if (match := TUNED_SIBLING.match(name))}


def generative(name: str, vision: bool = False, arch: str | None = None, releases: bool = True,
               siblings: set[str] = frozenset()) -> str:
    """A text generator's type: base when its name marks a pretrained checkpoint and no tuning,
    else vision-language when it takes images, else instruct. `releases=False` for a chat API, where
    "llama-3.1-8b" names the tuned model the endpoint serves, not the pretrained release; `siblings`
    from tuned_siblings, over the whole source."""
    released = releases and (BASE_RELEASE.search(_core(name)) or BASE_RELEASE.search(name)
                             or name.lower() in siblings)
    if BASE_WORD.search(name) or (released and not INSTRUCT_NAME.search(name)):
        return "base"
    if vision or VISION_NAME.search(name) or (arch and VISION_ARCH.search(arch)):
        return "vision-language"
    return "instruct"


def infer(name: str, arch: str | None = None, vision: bool = False, siblings: set[str] = frozenset()) -> str:
    return from_name(name, arch) or generative(name, vision, arch, siblings=siblings)


# What an imported model of a narrow type is for, in place of the importer's guess from its use case
# (a reranker or guard scores text; the selection rules in compiler/kinds.py still decide the roles).
WORKLOADS = {"embedding": ["embedding"], "reranker": ["classification"], "guard": ["classification"],
             "classifier": ["classification"], "summarizer": ["summarization"], "ocr": ["extraction"]}


# What any instruction-following chat model also does: its sources list "chat" (or a use case), while
# a team's summarization and extraction roles want every such model among their candidates.
CHAT_ALSO = ("summarization", "extraction")


def workloads(kind: str, guessed: list[str]) -> list[str]:
    if kind in WORKLOADS:
        return WORKLOADS[kind]
    if kind in ("instruct", "vision-language") and "chat" in guessed:
        return list(dict.fromkeys([*guessed, *CHAT_ALSO]))
    return guessed


GENERATIVE = ("instruct", "vision-language", "base")  # the types a specialty applies to

# A name that says its model is a code specialist: tuned for code beyond general instruction following
# ("Qwen3-Coder-Next", "DeepSeek-Coder-V2-Lite", Codestral, Devstral, StarCoder, "granite-8b-code-instruct")
CODE_NAME = re.compile(rf"coder|codestral|devstral|codellama|code-llama|codegemma|codegen|codeqwen|{_W}code{_E}", re.I)


def specialty(name: str) -> str | None:
    """The workload a generative model is tuned for, when its model name says it is a code model (not
    its publisher's name: coder3101/gemma-4-26b-a4b-it is Gemma): best_fit serves other roles with
    general models before it."""
    return "code" if CODE_NAME.search(name.rsplit("/", 1)[-1]) else None
