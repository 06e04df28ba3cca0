"""Issue 10's real-catalog scenario, each pick judged by an oracle built here from tests/data/ alone.

Print the table of picks:  .venv/bin/python -m pytest -s -q tests/test_real_catalog.py -k every_pick
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass

import pytest
import yaml

from conftest import FIXTURES, REPO, run_cli

DATA = REPO / "tests" / "data"
SCENARIO = FIXTURES / "real_catalog"
MIB = 1024 * 1024
GIB = 1024 * MIB
RESERVE_GIB = 2  # hostfit's documented default RAM reserve (selection.ram_reserve_gb)
VRAM_RESERVE_GIB = 1  # and VRAM reserve (selection.vram_reserve_gb), taken once from the GPUs' total
ROLES = yaml.safe_load((SCENARIO / "roles.yaml").read_text())["roles"]
HOSTS = yaml.safe_load((SCENARIO / "hosts.yaml").read_text())["hosts"]
CONTEXT = {role: spec["requires"]["context_min"] for role, spec in ROLES.items()}
CODE_ROLES = {"code"}  # roles whose "clearly servable" check asks for a code model

# ----------------------------------------------------------------------------------------------
# The oracle. Everything below reads only tests/data/ and the two fixture files.
# ----------------------------------------------------------------------------------------------

# -- kinds --------------------------------------------------------------------------------------
# All four roles are instruction-driven: applications send them a prompt through a chat API, so
# each needs an instruction-tuned model (or a vision-language one, which is also instruction-tuned).
# A base model continues text instead of answering; a code *completion* model needs FIM prompts.
SERVES_CHAT_LIKE = {"instruct", "vision-language"}

# Kinds that never generate answers, recognised from the repository or file name (first match wins).
NAME_KINDS = (
    ("reranker", r"rerank"),
    ("embedding", r"embed|(^|[/_.-])(e5|bge|gte|sbert|simcse|contriever)([_.-]|$)|minilm|mpnet|"
                  r"sentence-transformers/|colbert|retriev"),
    ("ocr", r"(^|[/_.-])(got-)?ocr|ocr([/_.-]|$)|nougat|donut|(^|[/_.-])parse([/_.-]|$)"),
    ("guard", r"guard|shield|safeguard|safety|moderat|toxic|(^|[/_.-])(reward|prm|nli|mnli)([_.-]|$)|"
              r"[-_]rm([_.-]|$)|classif|sentiment"),
    ("draft", r"speculator|eagle3|dflash"),  # speculative-decoding heads: they run only beside their target
    ("audio", r"whisper|speech|(^|[/_.-])(tts|asr|stt)([/_.-]|$)|voxtral|audio|wav2vec|hubert|parakeet|musicgen|"
              r"kokoro|orpheus|voice|codec|moshi"),
)
# Architectures (llmfit's `architecture`, from config.json model_type) that are not chat LMs.
ARCH_KINDS = {
    "encoder": {"bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "modernbert", "electra",
                "albert", "squeezebert", "flaubert", "canine", "mpnet", "nomic_bert", "roformer", "eurobert", "neobert",
                "xlnet", "reformer", "lilt", "udop", "LUAR", "relik-reader", "llama_bidirec",
                "bidirectional_pplx_qwen3", "gigarembed", "new"},
    "seq2seq": {"t5", "bart", "bigbird_pegasus", "t5gemma", "t5gemma2", "vision-encoder-decoder", "florence2",
                "blip-2"},
    "vision-encoder": {"clip", "clip_vision_model", "jina_clip", "dinov2", "vit", "aesthetics_predictor", "clyp"},
    "audio": {"encodec", "hubert", "dac", "mimi", "xcodec", "moss-audio-tokenizer", "higgs_audio_v2_tokenizer",
              "wav2vec2-bert", "eat"},
    "science": {"hyenadna", "molformer", "progen", "biogpt"},  # DNA, molecules, proteins, biomedical text
    "other": {"reve", "reve-position-bank", "starvector", "openvla", "spatiallm_qwen", "Dream", "llada2_moe"},
}
PIPELINE_KINDS = {"sentence-similarity": "embedding", "feature-extraction": "embedding", "translation": "seq2seq",
                  "automatic-speech-recognition": "audio", "audio-to-audio": "audio", "text-to-speech": "audio"}
TOY_PARAMS = 100e6  # below this a "model" is a test fixture or a position table, not a chat model

# Evidence of instruction tuning in a name: -Instruct, -it, -Chat, SFT/DPO/RL stages, reasoning
# and distilled chat models, well-known chat fine-tune lines, dots.llm1.inst.
INSTRUCT_NAME = re.compile(
    r"instruct|(^|[/_.-])(it|inst|sft|dpo|rlhf|orpo|kto|grpo|rl|r1|fc)([/_.-]|$)|chat|think|reason|distill|"
    r"hermes|assistant|vicuna|zephyr|openchat|wizard|orca|tulu|dolphin|starling|xlam|qwq|magistral|devstral|"
    r"codestral|function|abliterated")  # abliteration edits an instruct model's refusals
BASE_NAME = re.compile(r"(^|[/_.-])(base|pretrain|pretrained)([/_.-]|$)|gemma.*-pt([/_.-]|$)")
# Lines whose plain-named checkpoints are the post-trained chat models (the pretrained ones are
# published as "-Base"): Qwen3/3.5 ("Qwen3-8B" vs "Qwen3-8B-Base"), gpt-oss (chat only), Phi-3/4,
# DeepSeek V2.5/V3/R1/V4 ("DeepSeek-V3" vs "-Base"), Kimi K2, GLM-4.5+ ("GLM-4.5" vs "-Base"),
# MiniMax M1/M2, Llama-Nemotron, SmolLM3, ERNIE 4.5 ("-PT" is PyTorch weights, "-Base-PT" the base),
# EXAONE 4/Deep, LFM2, Apriel, Command R, Intern-S1, GLM-4-0414/Z1, Granite 4 ("-base" for the
# pretrained), MiniCPM 3/4 and MiniCPM-V, Aya Expanse/23/Vision, InternVL and LLaVA (chat VLMs),
# NuExtract (instruction-tuned for extraction), inclusionAI's Ling/Ring ("-base" for the pretrained).
INSTRUCT_LINES = re.compile(
    r"(^|[/_-])qwen3(\.\d+)?-|gpt-oss|(^|/)phi-(3|3\.5|4)(-|$)|deepseek-(v2\.5|v3|r1|v4)|kimi-k2|"
    r"glm-(4\.[5-9]|5)|minimax-(m1|m2|text)|nemotron|smollm3|ernie-4\.5|exaone-(4|deep)|k-exaone|(^|/)lfm2|apriel|"
    r"command-r|c4ai|intern-s1|glm-4-\d+b-0414|glm-z1|granite-4\.|minicpm[34]|minicpm-v|minicpm-llama3-v|"
    r"aya-(expanse|23|vision)|tiny-aya-global|internvl|llava|nuextract|(^|/)(ling|ring)-")
VISION = re.compile(r"(^|[/_.-])vl([/_.-]|$)|vision|llava|vlm|omni|multimodal|pixtral|paligemma|idefics|molmo|"
                    r"minicpm-v|internvl|moondream")
VISION_ARCHS = re.compile(r"_vl|vl_|llava|internvl|mllama|paligemma|idefics|minicpmv|glm4v|molmo|ovis|aria|"
                          r"smolvlm|kimi_vl|phi3_v|florence|fast_vlm|video_llama|heron|isaac|h2ovl|deepseek_vl")


def llmfit_kind(entry: dict) -> tuple[str, str]:
    """(kind, why) of an entry of llmfit's hf_models.json."""
    name = entry["name"].lower()
    arch = entry.get("architecture") or ""
    use = (entry.get("use_case") or "").lower()
    tag = entry.get("pipeline_tag") or ""
    if (entry.get("parameters_raw") or 0) < TOY_PARAMS:
        return "toy", f"{entry.get('parameters_raw'):,} parameters"
    for kind, pattern in NAME_KINDS:  # names first: llmfit calls a reranker "Text embeddings for RAG"
        if re.search(pattern, name):
            return kind, f"name matches {kind}"
    if "embedding" in use:
        return "embedding", f"use_case {entry.get('use_case')!r}"
    if tag in PIPELINE_KINDS:
        return PIPELINE_KINDS[tag], f"pipeline_tag {tag}"
    for kind, archs in ARCH_KINDS.items():
        if arch in archs:
            return kind, f"architecture {arch}"
    vision = tag == "image-text-to-text" or bool(VISION.search(name) or VISION_ARCHS.search(arch))
    if BASE_NAME.search(name):
        return "base", "name says base/pretrained"
    if INSTRUCT_NAME.search(name) or INSTRUCT_LINES.search(name):
        return ("vision-language" if vision else "instruct"), "name"
    if "instruction following" in use or "chat" in use:
        return ("vision-language" if vision else "instruct"), f"use_case {entry.get('use_case')!r}"
    return "base", "no sign of instruction tuning in name or use_case"


def gpt4all_kind(entry: dict) -> tuple[str, str]:
    """(kind, why) of an entry of GPT4All's models3.json (its descriptions say what each model is)."""
    if str(entry.get("embeddingModel", "")).lower() == "true":
        return "embedding", "embeddingModel"
    words = " ".join(str(entry.get(k) or "") for k in ("name", "filename", "description")).lower()
    if "code completion" in words or "not available for chat" in words:
        return "base", "description: code completion, not for chat"
    if re.search(r"instruct|chat based|instruction based|chat model|\bdpo\b|hermes|distillation of deepseek-r1|"
                 r"reasoner", words):
        return "instruct", "description"
    return "unknown", "description does not say it is instruction-tuned"


# -- formats ------------------------------------------------------------------------------------
# What a repository really holds, from its name first: llmfit labels most repositories "gguf"
# (its own plan is to run a Q4_K_M conversion), including FP8, NVFP4, W4A16 and bnb-4bit ones that
# llama.cpp cannot convert from. A plain repository holds safetensors; llama.cpp and Ollama load
# it only through a published GGUF conversion (llmfit's `gguf_sources`).
NAME_FORMATS = (
    ("gguf", r"gguf"),
    ("mlx", r"(^|[/_.-])mlx([/_.-]|$)|mlx-community/"),
    ("awq", r"awq"),
    ("gptq", r"gptq"),
    ("autoround", r"autoround|auto-round"),
    ("fp8", r"fp8"),
    ("fp4", r"nvfp4|mxfp4|(^|[/_.-])fp4"),
    ("compressed-tensors", r"w4a16|w8a8|w4a4|w8a16|int8wo|int4wo|quantized\.w"),
    ("bnb", r"bnb|bitsandbytes"),
    ("onnx", r"onnx"),
    ("exl2", r"exl2|exl3"),
    ("int-safetensors", r"(^|[/_.-])int[48]([/_.-]|$)"),
)
# "-4bit"/"-8bit" with no other marker: MLX when llmfit says so, else some safetensors quantization
BITS_ONLY = re.compile(r"(^|[/_.-])[2-8]bit([/_.-]|$)|dwq")
LOADERS = {"gguf": {"llamacpp", "ollama"}, "mlx": {"mlx"}}  # what the default runtimes load


def default_runtimes(host: dict) -> set[str]:
    """The documented default for a host without `runtimes:`: llama.cpp and Ollama, plus MLX on Apple."""
    apple = any(g.get("vendor") == "apple" for g in host.get("gpus") or ())
    return {"llamacpp", "ollama"} | ({"mlx"} if apple else set())


def runtime_name(recorded: str) -> str:
    """A runtime as models.json may spell it ("llama.cpp", "llama-cpp-python", "Ollama") -> a LOADERS name."""
    name = re.sub(r"[^a-z]", "", recorded.lower())
    return "llamacpp" if name.startswith("llamacpp") else name


def llmfit_format(entry: dict) -> str:
    name = entry["name"].lower()
    for fmt, pattern in NAME_FORMATS:
        if re.search(pattern, name):
            return fmt
    declared = entry.get("format")
    if declared in ("awq", "gptq", "autoround", "mlx"):
        return declared
    if BITS_ONLY.search(name):
        return "int-safetensors"
    return "gguf" if entry.get("gguf_sources") else "safetensors"


def gpt4all_format(entry: dict) -> str:
    return "gguf" if str(entry.get("filename", "")).lower().endswith(".gguf") else "unknown"


# -- memory -------------------------------------------------------------------------------------
# weights: the real file when its size is known (GPT4All), else parameters x bits per weight, where
# llama.cpp stores the output matrix (or the tied embedding) at Q6_K in Q4 files. Calibrated on
# GPT4All's real Q4_0 files (test_oracle_weights_match_real_files): within 1% where llmfit has
# the vocabulary and hidden size.
BODY_BITS = {"Q4_0": 4.5, "Q4_K_M": 4.85, "Q8_0": 8.5, "F16": 16.0, "BF16": 16.0}
OUTPUT_BITS = {"Q4_0": 6.5625, "Q4_K_M": 6.5625, "Q8_0": 8.5, "F16": 16.0, "BF16": 16.0}
FORMAT_BITS = {"awq": 4.25, "gptq": 4.25, "autoround": 4.25, "fp8": 8.0, "fp4": 4.5, "compressed-tensors": 4.25,
               "bnb": 4.5, "int-safetensors": 8.0, "safetensors": 16.0, "onnx": 16.0, "exl2": 4.5}
# When llmfit gives no vocabulary or hidden size, assume a 152,064 x 4,096 output matrix: larger
# than every model's here below 30B, so the weights are never under-counted.
FALLBACK_OUTPUT_PARAMS = 152_064 * 4_096
# KV cache without architecture facts (GPT4All's files): 128 KiB per token per billion parameters,
# above the classic multi-head-attention models those files hold (KiB/token/B: Llama-2-7B 76,
# Phi-3-mini 101, OpenLLaMA-3B 95, Replit-3B 118 at GPT4All's "3 billion" 107); GQA models need
# far less. Per *active* parameter for a mixture of experts.
FALLBACK_KV_BYTES_PER_TOKEN_PER_B = 128 * 1024
# Runtime overhead: a floor, from what llama.cpp itself reports (tests/test_llamacpp_memory.py): its
# compute buffer with flash attention (llama-server's default) is the f32 logits of one 512-token
# batch plus the activations beside them (about 6 floats per hidden unit and token), and the process
# itself needs some 41 MiB measured; 128 MiB leaves room for Ollama's server.
OVERHEAD_BYTES = 128 * MIB
LOGITS_BATCH = 512
ACTIVATION_FLOATS = 6
FALLBACK_VOCAB = 152_064  # the largest vocabulary among GPT4All's files (Qwen2)
FALLBACK_HIDDEN = 4_096  # a 7B model's, the size of most of GPT4All's files
CUDA_CONTEXT_BYTES = 512 * MIB


def quant_bits(entry: dict, fmt: str) -> tuple[float, float]:
    """(body bits, output-matrix bits) per weight for an llmfit entry in format `fmt`."""
    name = entry["name"].lower()
    if fmt == "gguf":
        quant = (entry.get("quantization") or "").upper()
        # a GGUF repository named for one quantization holds that one; any other repository is
        # converted at llmfit's quantization (its name's "BF16" describes the source weights)
        explicit = re.search(r"(q4_0|q4_k_m|q8_0|bf16|f16)", name) if "gguf" in name else None
        quant = explicit.group(1).upper() if explicit else quant
        return BODY_BITS.get(quant, 16.0), OUTPUT_BITS.get(quant, 16.0)
    if fmt == "mlx":
        bits = re.search(r"(^|[/_.-])([2-8])bit", name)
        if bits:  # MLX affine quantization: a 16-bit scale and bias per 64 weights adds 0.5 bits
            return int(bits.group(2)) + 0.5, int(bits.group(2)) + 0.5
        if "mxfp4" in name:  # experts in MXFP4 (4.25 bits), the rest 8-bit ("-mxfp4-q8")
            return 4.5, 8.5
        return 16.0, 16.0
    if fmt in ("awq", "gptq", "autoround"):
        bits = 8.25 if re.search(r"8bit|int8|8-bit", (entry.get("quantization") or "").lower() + name) else 4.25
        return bits, 16.0  # the embedding and output stay 16-bit
    return FORMAT_BITS.get(fmt, 16.0), 16.0


@dataclass(frozen=True)
class Need:
    weights: int
    kv: int
    overhead: int
    kv_method: str

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.overhead

    def mib(self) -> str:
        return f"{self.total / MIB:,.0f} (w {self.weights / MIB:,.0f} + kv {self.kv / MIB:,.0f} " \
               f"+ oh {self.overhead / MIB:,.0f})"


def llmfit_weights(entry: dict, fmt: str) -> int:
    params = entry["parameters_raw"]
    body, out = quant_bits(entry, fmt)
    vocab, hidden = entry.get("vocab_size"), entry.get("hidden_size")
    output = vocab * hidden if vocab and hidden else FALLBACK_OUTPUT_PARAMS
    output = min(output, params)
    return int(params * body / 8 + output * (out - body) / 8)


def kv_bytes(entry: dict | None, params: float, active: float | None, context: int) -> tuple[int, str]:
    """f16 K and V for every layer at `context` tokens: 2 x layers x context x kv_heads x head_dim x 2."""
    entry = entry or {}
    layers, heads = entry.get("num_hidden_layers"), entry.get("num_attention_heads")
    kv_heads = entry.get("num_key_value_heads") or heads
    head_dim = entry.get("head_dim") or (entry["hidden_size"] // heads if entry.get("hidden_size") and heads else None)
    if layers and kv_heads and head_dim:
        return 2 * layers * context * kv_heads * head_dim * 2, "arch"
    billions = (active or params) / 1e9
    return int(FALLBACK_KV_BYTES_PER_TOKEN_PER_B * billions * context), "bound"


def overhead(vocab: int | None, hidden: int | None) -> int:
    return OVERHEAD_BYTES + ((vocab or FALLBACK_VOCAB) + ACTIVATION_FLOATS * (hidden or FALLBACK_HIDDEN)) * LOGITS_BATCH * 4


def llmfit_need(entry: dict, context: int) -> Need:
    kv, method = kv_bytes(entry, entry["parameters_raw"], entry.get("active_parameters"), context)
    return Need(llmfit_weights(entry, llmfit_format(entry)), kv, overhead(entry.get("vocab_size"), entry.get("hidden_size")), method)


def gpt4all_need(entry: dict, context: int) -> Need:
    params = gpt4all_params(entry)
    kv, method = kv_bytes(None, params, None, context)
    return Need(int(entry["filesize"]), kv, overhead(None, None), method)


def gpt4all_params(entry: dict) -> float:
    """GPT4All's "parameters" ("7 billion", "137 million") as a number."""
    number, unit = str(entry["parameters"]).split()
    return float(number) * {"billion": 1e9, "million": 1e6}[unit.lower()]


def usable_bytes(host: dict) -> int:
    """RAM minus the default reserve; discrete GPUs add their VRAM minus the VRAM reserve (a model
    may be split across them); unified memory is the RAM itself, counted once."""
    ram = int(host["ram_gb"] * GIB) - RESERVE_GIB * GIB
    if host.get("unified_memory") or not host.get("gpus"):
        return ram
    return ram + sum(int(g["vram_gb"] * GIB) for g in host["gpus"]) - VRAM_RESERVE_GIB * GIB


def gpu_context_bytes(host: dict) -> int:
    """llama.cpp and Ollama offload to every discrete GPU they see, and each costs the runtime's
    context beside the buffers (issue 10: nvidia-smi showed 15,723 MiB for 15,127 MiB of buffers)."""
    return 0 if host.get("unified_memory") else CUDA_CONTEXT_BYTES * len(host.get("gpus") or ())


# -- the sources, indexed as hostfit's importers name what they produce --------------------------

@dataclass(frozen=True)
class Source:
    origin: str  # llmfit | gpt4all
    entry: dict

    @property
    def label(self) -> str:
        return self.entry["name"] if self.origin == "llmfit" else self.entry["filename"]

    def kind(self) -> tuple[str, str]:
        return llmfit_kind(self.entry) if self.origin == "llmfit" else gpt4all_kind(self.entry)

    def format(self) -> str:
        return llmfit_format(self.entry) if self.origin == "llmfit" else gpt4all_format(self.entry)

    def window(self) -> int | None:
        return self.entry.get("context_length") if self.origin == "llmfit" else None  # GPT4All says none

    def need(self, context: int) -> Need:
        return llmfit_need(self.entry, context) if self.origin == "llmfit" else gpt4all_need(self.entry, context)

    def is_code(self) -> bool:
        words = (self.label + " " + str(self.entry.get("use_case") or "")).lower()
        return bool(re.search(r"code|coder|codestral|devstral", words))


LLMFIT = json.loads((DATA / "hf_models.json").read_text())
GPT4ALL = json.loads((DATA / "models3.json").read_text())
BY_NAME: dict[str, list[Source]] = {}
for _entry in LLMFIT:
    BY_NAME.setdefault(_entry["name"], []).append(Source("llmfit", _entry))
BY_FILE = {e["filename"]: Source("gpt4all", e) for e in GPT4ALL}


def sources_of(model: dict) -> list[Source]:
    """The raw entries a compiled model came from: GPT4All's by file name, llmfit's by repository
    name (microsoft/Phi-3-mini-4k-instruct is listed twice with different facts: both are judged)."""
    file = (model.get("artifact") or {}).get("file")
    if file in BY_FILE:
        return [BY_FILE[file]]
    return BY_NAME.get(model.get("name"), [])


# ----------------------------------------------------------------------------------------------
# The scenario: imported and built once per module through hostfit's own CLI.
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """The scenario's catalog directory, imported and built."""
    catalog = tmp_path_factory.mktemp("real-catalog")
    (catalog / "sources").mkdir()
    (catalog / "sources" / "10-roles.yaml").write_bytes((SCENARIO / "roles.yaml").read_bytes())
    (catalog / "sources" / "hosts.yaml").write_bytes((SCENARIO / "hosts.yaml").read_bytes())
    for fmt, name, layer in (("llmfit", "hf_models.json", "20-llmfit.yaml"),
                             ("gpt4all", "models3.json", "30-gpt4all.yaml")):
        result = run_cli("import", fmt, str(DATA / name), "-o", str(catalog / "sources" / layer))
        assert result.exit_code == 0, result.output
    result = run_cli("-C", str(catalog), "build", "--all", "-q")
    assert result.exit_code == 0, result.output
    return catalog


@pytest.fixture(scope="module")
def built(scenario) -> dict[str, dict]:
    """out/<host>/models.json of every host, parsed."""
    return {host: json.loads((scenario / "out" / host / "models.json").read_text()) for host in HOSTS}


@dataclass
class Pick:
    host: str
    role: str
    rank: str  # "pick" or "fallback N"
    model_id: str
    runtime: str | None
    sources: list[Source]


def picks(built: dict[str, dict]) -> list[Pick]:
    """Every local model a host may load for a role: the chosen one, then its fallbacks."""
    out = []
    for host in HOSTS:
        document = built[host]
        for role in ROLES:
            plan = document["roles"][role]
            chain = ([plan["model"]] if plan.get("model") else []) + list(plan.get("fallbacks") or ())
            if not chain:
                out.append(Pick(host, role, "-", "(none)", None, []))
            for n, model_id in enumerate(chain):
                model = document["models"].get(model_id, {})
                if model.get("provider", "local") not in ("local", "ollama", "huggingface"):
                    continue  # a cloud fallback runs nowhere on the host
                out.append(Pick(host, role, "pick" if n == 0 else f"fallback {n}", model_id,
                                plan.get("runtime") if n == 0 else None, sources_of(model)))
    return out


def judge(pick: Pick) -> tuple[list[str], list[str]]:
    """(table cells, violations) of one pick."""
    host = HOSTS[pick.host]
    context = CONTEXT[pick.role]
    usable = usable_bytes(host)
    where = f"{pick.host}/{pick.role} {pick.rank} {pick.model_id}"
    if pick.model_id == "(none)":  # unserved: test_every_role_is_served_... judges whether it should be
        return [pick.host, pick.role, pick.rank, pick.model_id, "", "", "", f"{usable / MIB:,.0f}", "unserved"], []
    if not pick.sources:
        return [pick.host, pick.role, pick.rank, pick.model_id, "?", "?", "?", f"{usable / MIB:,.0f}", "source"], \
            [f"source: {where}: in neither hf_models.json nor models3.json"]
    problems, kinds, formats, needs = [], set(), set(), []
    for source in pick.sources:  # a name listed twice: each entry must pass
        kind, why = source.kind()
        fmt = source.format()
        need = source.need(context)
        kinds.add(kind)
        formats.add(fmt)
        needs.append((need.total + gpu_context_bytes(host), need))
        if kind not in SERVES_CHAT_LIKE:
            problems.append(f"kind: {where}: {kind} ({why}) cannot serve {pick.role}")
        loaders = LOADERS.get(fmt, set()) & default_runtimes(host)
        if not loaders:
            problems.append(f"format: {where}: {fmt} is loaded by none of {sorted(default_runtimes(host))}")
        elif pick.runtime and runtime_name(pick.runtime) not in loaders:
            problems.append(f"runtime: {where}: recorded runtime {pick.runtime!r} does not load {fmt}")
        window = source.window()
        if window and window < context:
            problems.append(f"context: {where}: window {window:,} < the role's {context:,}")
        gpu = gpu_context_bytes(host)
        if need.total + gpu > usable:
            extra = f" + {gpu / MIB:,.0f} GPU context" if gpu else ""
            problems.append(f"memory: {where}: needs {need.mib()}{extra} MiB at {context:,} tokens "
                            f"(kv by {need.kv_method}), {usable / MIB:,.0f} MiB usable")
    total, worst = max(needs, key=lambda item: item[0])
    shown = worst.mib() + (f" + {(total - worst.total) / MIB:,.0f} GPU" if total > worst.total else "")
    verdict = ",".join(sorted({p.split(":", 1)[0] for p in problems})) or "ok"
    cells = [pick.host, pick.role, pick.rank, pick.model_id, "/".join(sorted(kinds)), "/".join(sorted(formats)),
             shown, f"{usable / MIB:,.0f}", verdict]
    return cells, sorted(set(problems))


def print_table(rows: list[list[str]]) -> None:
    header = ["host", "role", "rank", "model", "kind (oracle)", "format", "oracle MiB", "usable MiB", "verdict"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


# ----------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------

def test_every_pick_is_a_model_that_serves_the_role_loads_and_fits(built):
    """Each role's model and local fallbacks on every host: a kind that serves the role, a format a
    default runtime of the host loads, and memory (weights + f16 KV at the role's context +
    overhead) within the host's usable memory. Every violation is listed, then the test fails."""
    rows, violations = [], []
    for pick in picks(built):
        cells, problems = judge(pick)
        rows.append(cells)
        violations += problems
    print_table(rows)
    judged = sum(1 for row in rows if row[-1] != "unserved")
    counts = dict(Counter(problem.split(":", 1)[0] for problem in violations))
    assert not violations, f"{len(violations)} violations in {judged} picks {counts}:\n" + "\n".join(violations)


@functools.cache
def clearly_servable(host_name: str, role: str) -> list[tuple[int, Source]]:
    """Models that obviously serve `role` on the host: instruction-tuned by the oracle (a code model
    for a code role), loadable by a default runtime, a known window >= the role's context, and
    needing at most 75% of usable memory, so an estimate above the oracle's floor still fits."""
    host, context = HOSTS[host_name], CONTEXT[role]
    found = []
    for source in [*(s for group in BY_NAME.values() for s in group), *BY_FILE.values()]:
        if source.kind()[0] not in SERVES_CHAT_LIKE or (role in CODE_ROLES and not source.is_code()):
            continue
        if not LOADERS.get(source.format(), set()) & default_runtimes(host):
            continue
        if not (source.window() or 0) >= context:
            continue
        need = source.need(context).total + gpu_context_bytes(host)
        if need <= 0.75 * usable_bytes(host):
            found.append((need, source))
    return sorted(found, key=lambda item: -item[0])


def test_every_role_is_served_where_a_sensible_model_clearly_fits(built):
    """A fix that rejects everything must not pass: where the oracle finds a model that obviously
    serves the role on the host, hostfit must choose a local model for it."""
    unserved = []
    print("\nhost/role: hostfit's pick | the largest-memory model the oracle finds clearly fitting")
    for host in HOSTS:
        for role in ROLES:
            fits = clearly_servable(host, role)
            print(f"{host}/{role}: {built[host]['roles'][role].get('model')} | "
                  f"{fits[0][1].label if fits else None}")
            if built[host]["roles"][role].get("model"):
                continue
            if fits:
                shown = ", ".join(f"{s.label} ({need / MIB:,.0f} MiB)" for need, s in fits[:3])
                unserved.append(f"{host}/{role}: no model, though {len(fits)} clearly fit, e.g. {shown}")
    assert not unserved, f"{len(unserved)} roles unserved:\n" + "\n".join(unserved)


def test_the_scenario_has_servable_models_on_every_host():
    """The oracle itself: every role has an obvious model on every host, so the test above bites."""
    empty = [f"{host}/{role}" for host in HOSTS for role in ROLES if not clearly_servable(host, role)]
    assert not empty


# GPT4All's real Q4_0 files, and the llmfit entry with the same model's parameter count,
# vocabulary and hidden size (published config.json figures).
CALIBRATION = {
    "qwen2-1_5b-instruct-q4_0.gguf": "Qwen/Qwen2-1.5B-Instruct",
    "qwen2.5-coder-7b-instruct-q4_0.gguf": "Qwen/Qwen2.5-Coder-7B-Instruct",
    "DeepSeek-R1-Distill-Qwen-1.5B-Q4_0.gguf": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "DeepSeek-R1-Distill-Qwen-7B-Q4_0.gguf": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "DeepSeek-R1-Distill-Qwen-14B-Q4_0.gguf": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "DeepSeek-R1-Distill-Llama-8B-Q4_0.gguf": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "Phi-3-mini-4k-instruct.Q4_0.gguf": "microsoft/Phi-3-mini-4k-instruct",
}
# The same without a vocabulary in llmfit: the fallback output matrix must not under-count them.
CALIBRATION_FALLBACK = {
    "Llama-3.2-1B-Instruct-Q4_0.gguf": "meta-llama/Llama-3.2-1B-Instruct",
    "Llama-3.2-3B-Instruct-Q4_0.gguf": "meta-llama/Llama-3.2-3B-Instruct",
    "Meta-Llama-3-8B-Instruct.Q4_0.gguf": "meta-llama/Meta-Llama-3-8B-Instruct",
}


def test_oracle_weights_match_real_files():
    """The oracle's weight arithmetic, at Q4_0, against the byte counts of GPT4All's real files."""
    for file, name in {**CALIBRATION, **CALIBRATION_FALLBACK}.items():
        entry = {**BY_NAME[name][0].entry, "quantization": "Q4_0", "format": "gguf", "gguf_sources": [{}]}
        real = int(BY_FILE[file].entry["filesize"])
        error = llmfit_weights(entry, "gguf") / real - 1
        if file in CALIBRATION:
            assert abs(error) <= 0.01, (file, f"{error:+.2%}")
        else:
            assert 0 <= error <= 0.12, (file, f"{error:+.2%}")


# The oracle on the picks issue 10 names (and a few plain cases), so its rules can be reviewed
# against examples: (source, name or file, kind, format, context, the hosts it must not fit or None).
ISSUE_EXAMPLES = [
    ("llmfit", "Qwen/Qwen2.5-Coder-3B-Instruct-AWQ", "instruct", "awq", 16384, None),
    ("llmfit", "RedHatAI/Qwen3-8B-quantized.w4a16", "instruct", "compressed-tensors", 4096, None),
    ("llmfit", "unsloth/Qwen3-Coder-Next-FP8-Dynamic", "instruct", "fp8", 16384, None),
    ("llmfit", "casperhansen/llama-3.3-70b-instruct-awq", "instruct", "awq", 4096, "mac-36"),
    ("llmfit", "rednote-hilab/dots.llm1.inst", "instruct", "gguf", 4096, "gpu-64"),
    ("llmfit", "Qwen/Qwen2.5-7B", "base", "safetensors", 4096, None),
    ("llmfit", "Qwen/Qwen2.5-7B-Instruct", "instruct", "gguf", 4096, None),
    ("llmfit", "BAAI/bge-reranker-large", "reranker", "safetensors", 4096, None),
    ("llmfit", "nomic-ai/nomic-embed-text-v1.5", "embedding", "gguf", 4096, None),
    ("llmfit", "meta-llama/Llama-Guard-3-1B", "guard", "gguf", 4096, None),
    ("llmfit", "deepseek-ai/DeepSeek-OCR", "ocr", "safetensors", 4096, None),
    ("llmfit", "lmstudio-community/Qwen3-8B-MLX-4bit", "instruct", "mlx", 4096, None),
    ("gpt4all", "starcoder-newbpe-q4_0.gguf", "base", "gguf", 16384, "cpu-8"),
    ("gpt4all", "Meta-Llama-3-8B-Instruct.Q4_0.gguf", "instruct", "gguf", 4096, None),
    ("gpt4all", "nomic-embed-text-v1.f16.gguf", "embedding", "gguf", 4096, None),
]


@pytest.mark.parametrize("origin, name, kind, fmt, context, too_small", ISSUE_EXAMPLES)
def test_oracle_judges_the_issue_examples(origin, name, kind, fmt, context, too_small):
    source = BY_FILE[name] if origin == "gpt4all" else BY_NAME[name][0]
    assert (source.kind()[0], source.format()) == (kind, fmt)
    if too_small:
        host = HOSTS[too_small]
        assert source.need(context).total + gpu_context_bytes(host) > usable_bytes(host)


def test_oracle_memory_follows_the_issue_figures():
    """Nemotron-Super-49B's 80-layer, 64-KV-head cache is about 20 GiB at 8k; StarCoder's file is
    8.4 GiB, whatever GPT4All's ramrequired says."""
    nemotron = BY_NAME["nvidia/Llama-3_3-Nemotron-Super-49B-v1_5"][0].entry
    assert kv_bytes(nemotron, nemotron["parameters_raw"], None, 8192) == (20 * GIB, "arch")
    starcoder = BY_FILE["starcoder-newbpe-q4_0.gguf"]
    assert starcoder.need(4096).weights == 8_987_411_904 > int(starcoder.entry["ramrequired"]) * GIB


# best_fit without capability scores (imported models have none). Before downloads and the speed margin
# ranked them, parameters alone did: a community fine-tune beat the official release it was made from,
# and the 36 GB Mac ran a 47B Mixtral on its CPU (~10 tok/s) beside a GPU a 35B-A3B fits.
# (host, role, the old pick, how much faster the new one must run: 0.95 where both share one architecture)
BEFORE = (("cpu-32", "chat", "jackrong/qwen3.5-35b-a3b-claude-4.6-opus-reasoning-distilled", 0.95),
          ("cpu-8", "code", "bigatuna/qwen3-1.7b-sushi-coder", 1.5),
          ("mac-36", "chat", "nousresearch/nous-hermes-2-mixtral-8x7b-dpo", 3.0))


def downloads(built: dict, host: str, model_id: str) -> int:
    """llmfit's own download count for the compiled model (tests/data), not hostfit's copy of it."""
    return max(source.entry.get("hf_downloads") or 0 for source in sources_of(built[host]["models"][model_id]))


@pytest.mark.parametrize("host, role, before, faster", BEFORE)
def test_best_fit_picks_a_more_used_model_that_runs_as_fast_as_the_one_it_used_to(
        scenario, built, host, role, before, faster):
    """The pick is not the old one, has 5x its downloads or more (an official release) and runs
    `faster` times its speed (on the Mac, on the GPU where the old one ran on the CPU)."""
    pick = built[host]["roles"][role]
    explained = json.loads((scenario / "out" / host / "explain.json").read_text())["roles"][role]
    old = next(c for c in explained["candidates"] if c["model"] == before)
    assert old["verdict"] == "fallback" and pick["model"] != before
    assert downloads(built, host, pick["model"]) >= 5 * downloads(built, host, before)
    assert pick["tokens_per_s"] >= faster * old["speed"]["tokens_per_s"]
    assert pick["fit"] == "comfortable"
    if host.startswith("mac"):
        assert pick["placement"] == "gpu" and old["placement"] == "cpu"
