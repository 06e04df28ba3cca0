"""Load a role's model and prove it works with a short generation: llama.cpp (llama-cpp-python,
the optional `hostfit[llama]` extra) or Ollama (its HTTP API at OLLAMA_HOST), whichever runtime the
compiled role names (`--backend` overrides). A runtime hostfit has no loader for (vLLM, MLX,
transformers) is named with the command that runs the model by hand. When a model fails to load,
the next one of the role's fallback chain is fetched and tried, and the output says so.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths, runtimes
from ..errors import InputError, RuntimeFailure, UsageError
from ..memory import UNQUANTIZED_KV, is_cloud
from ..net import (IDENTITY, READ, Deadline, LimitExceeded, iter_lines, parse_json, parse_json_object,
                   redact_url, request)

DEFAULT_PROMPT = "Say hello in five words."
OLLAMA_START_TIMEOUT = 20.0
OLLAMA_ASK = 10.0  # seconds in all for a quick request (version, ps)
OLLAMA_SLOW_READ = 600.0  # seconds a pull or a generation may wait for the next bytes (a model loading)
OLLAMA_PULL = 6 * 3600.0  # seconds in all for a pull (gigabytes over a slow link)
OLLAMA_GENERATE = 900.0  # seconds in all to load a model and generate a few tokens
MAX_LINE = 1 << 20  # bytes per streamed pull status line (they are ~200 bytes)
MAX_REPLY = 16 << 20  # bytes per JSON reply
MAX_STATUSES = 1000  # distinct pull statuses shown; a stream of endless new ones is not echoed forever
# A role's kv_cache_type as llama.cpp's ggml type id (llama-cpp-python's type_k / type_v).
KV_CACHE_TYPES = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q5_1": 7, "q5_0": 6, "q4_1": 3, "q4_0": 2,
                  "iq4_nl": 20}


class LoadFailure(RuntimeFailure):
    """This model could not be loaded or did not generate; the next one may."""


class OllamaUnavailable(RuntimeFailure):
    """No Ollama server answers and hostfit may not, or could not, start one: every model on Ollama fails
    alike, so a chain asks (and says so) once."""


@dataclass
class Loaded:
    model_id: str
    backend: str
    load_seconds: float
    first_token_seconds: float
    text: str
    attempts: list[tuple[str, str]] = field(default_factory=list)  # (model, why it failed) before this one
    # what the loader measured besides the times (llama.cpp only; `probe` in llamacpp_load): context,
    # kv_cache_type, placement, tokens, decode_tps, buffers_mib, gpu_mib, gpu_source
    figures: dict = field(default_factory=dict)


@dataclass
class Settings:
    context: int
    threads: int
    gpu_layers: int
    mmap: bool = True
    mlock: bool = False
    flash_attention: bool = True  # what the compiled memory figure assumed
    kv_cache_type: str = "f16"
    tensor_split: tuple[int, ...] = ()  # several GPUs: each one's share, as compiled


def settings_for(role: dict, model: dict, threads: int | None, gpu_layers: int | None, mmap: bool,
                 mlock: bool, model_id: str | None = None) -> Settings:
    """llama.cpp parameters from the compiled role and model (`model_id`: a fallback's own GPU settings,
    in fallback_offload); flags override. GPU layers and tensor split are the compiled ones
    (compiler/offload.py); llama-cpp-python cannot keep expert tensors in RAM (--n-cpu-moe), so a
    mixture of experts' split loads by layers (gpu_layers) as a dense model's does."""
    compiled = role if model_id in (None, role.get("model")) else (role.get("fallback_offload") or {}).get(model_id, {})
    if gpu_layers is None:
        # outputs compiled before gpu_layers: every layer for a `gpu` placement, as they were loaded then
        legacy = -1 if role.get("placement") == "gpu" and "gpu_layers" not in role else 0
        gpu_layers = compiled.get("gpu_layers", legacy)
    context = role.get("context") or min(model.get("context_window") or 4096, 4096)
    flash = role.get("flash_attention", True)
    kv_type = role.get("kv_cache_type", "f16")
    if kv_type not in KV_CACHE_TYPES:
        raise LoadFailure(f"kv_cache_type {kv_type!r} is not one llama.cpp stores ({', '.join(KV_CACHE_TYPES)})")
    if kv_type not in UNQUANTIZED_KV and not flash:
        raise LoadFailure(f"llama.cpp quantizes the V cache ({kv_type}) only with flash attention, which this role "
                          "turns off")
    return Settings(context, threads or os.cpu_count() or 1, gpu_layers, mmap, mlock, flash, kv_type,
                    tuple(compiled.get("tensor_split") or ()))


def llamacpp_load(path: Path, settings: Settings, prompt: str, max_tokens: int = 8,
                  probe: dict | None = None, decode_all: bool = False) -> tuple[float, float, str]:
    """(load seconds, seconds to the first token, text) from llama-cpp-python. `probe` (a dict) is filled
    with what llama.cpp measured: decode tokens/s, its buffers per device, the placement they show,
    nvidia-smi's figure; `decode_all` generates all `max_tokens` (a benchmark: end of text ignored)."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise UsageError("the llama.cpp backend needs llama-cpp-python: pip install 'hostfit[llama]'") from exc
    started = time.perf_counter()
    kv_type = KV_CACHE_TYPES[settings.kv_cache_type]
    log: list[str] = []
    try:
        with _llama_log(log if probe is not None else None):
            llm = Llama(model_path=str(path), n_ctx=settings.context, n_threads=settings.threads,
                        n_gpu_layers=settings.gpu_layers, use_mmap=settings.mmap, use_mlock=settings.mlock,
                        flash_attn=settings.flash_attention, type_k=kv_type, type_v=kv_type,
                        tensor_split=[float(share) for share in settings.tensor_split] or None,
                        # sliding-window layers keep window + batch cells, as compiled and as llama-server
                        # does; llama-cpp-python would otherwise keep the whole context on them
                        swa_full=False, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise LoadFailure(f"llama.cpp could not load {path.name}: {exc}") from exc
    loaded = time.perf_counter()
    first = None
    pieces = []
    try:
        # a benchmark decodes all `max_tokens`: the end-of-text token is never sampled
        never_end = _without_token(llm.token_eos()) if decode_all else None
        for chunk in llm(prompt, max_tokens=max_tokens, temperature=0.0, stream=True, logits_processor=never_end):
            if first is None:
                first = time.perf_counter()
            pieces.append(chunk["choices"][0]["text"])
        if probe is not None:
            try:
                probe.update(_probe(llm, settings, "".join(log)))
            except (AttributeError, TypeError, ValueError, OSError):
                pass  # a llama-cpp-python without these counters: the load stands, its figures are unmeasured
    except (ValueError, RuntimeError) as exc:
        raise LoadFailure(f"llama.cpp loaded {path.name} but could not generate: {exc}") from exc
    finally:
        close = getattr(llm, "close", None)
        if close:
            close()
    return loaded - started, (first or time.perf_counter()) - loaded, "".join(pieces)


# llama.cpp's log lines naming a buffer it allocated: "CUDA0 KV buffer size =   256.00 MiB"
_BUFFER = re.compile(r"(\S+)\s+(?:model|KV|compute|output|RS|recurrent)\s+buffer size\s*=\s*([\d.]+)\s*MiB")


def _is_gpu_buffer(device: str) -> bool:
    """CPU, CPU_Mapped, CPU_REPACK and a GPU's pinned host memory (CUDA_Host) are RAM; the others a GPU's."""
    return not device.upper().startswith("CPU") and not device.endswith("_Host")


def buffers(log: str) -> dict[str, float]:
    """MiB per device that llama.cpp reported allocating (model, KV cache, compute and output buffers)."""
    found: dict[str, float] = {}
    for device, mib in _BUFFER.findall(log):
        found[device] = round(found.get(device, 0.0) + float(mib), 2)
    return found


class _llama_log:
    """While loading: llama.cpp's log text into `sink` (None: leave the log alone), then the
    llama-cpp-python logger back."""

    def __init__(self, sink: list[str] | None):
        self.sink = sink

    def __enter__(self):
        if self.sink is None:
            return self
        import ctypes

        import llama_cpp

        def collect(_level, text, _user_data):
            if text:
                self.sink.append(text.decode("utf-8", "replace"))
        self._callback = llama_cpp.llama_log_callback(collect)  # kept referenced while llama.cpp may call it
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        return self

    def __exit__(self, *_):
        if self.sink is None:
            return
        import ctypes

        import llama_cpp
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def _without_token(token: int):
    from llama_cpp import LogitsProcessorList

    def processor(_input_ids, scores):
        scores[token] = -float("inf")
        return scores
    return LogitsProcessorList([processor])


def _probe(llm, settings: Settings, log: str) -> dict:
    """What llama.cpp measured of this load: its decode timing, its buffers, and the placement they show."""
    import llama_cpp

    figures: dict = {"context": llm.n_ctx(), "kv_cache_type": settings.kv_cache_type}
    perf = llama_cpp.llama_perf_context(llm.ctx)
    figures["tokens"] = perf.n_eval
    if perf.n_eval and perf.t_eval_ms > 0:  # llama.cpp's own clock over the decoded tokens, prompt excluded
        figures["decode_tps"] = round(perf.n_eval / (perf.t_eval_ms / 1000), 2)
    found = buffers(log)
    figures["buffers_mib"] = found
    on_gpu = any(_is_gpu_buffer(device) for device in found)
    figures.update(placement_and_gpu(found, settings.gpu_layers, llama_cpp.llama_model_n_layer(llm.model),
                                     nvidia_smi_mib(os.getpid()) if on_gpu else None))
    return figures


def placement_and_gpu(found: dict[str, float], gpu_layers: int, layers: int, smi_mib: float | None) -> dict:
    """Where llama.cpp put the model (its buffers: none on a GPU is `cpu`, whatever was asked; no layer
    asked there is `cpu` too, beside the compute buffer a GPU build keeps) and the GPU memory it holds:
    nvidia-smi's figure, else its GPU buffers plus the CUDA context the buffers leave out
    (memory.GPU_RUNTIME_OVERHEAD_MB per GPU: the figure replaces an estimate that counts it, measured.py)."""
    gpu = {device: mib for device, mib in found.items() if _is_gpu_buffer(device)}
    if not gpu:
        return {"placement": "cpu"}
    placement = "cpu" if gpu_layers == 0 else "gpu" if gpu_layers < 0 or gpu_layers >= layers else "split"
    if smi_mib is not None:
        return {"placement": placement, "gpu_mib": smi_mib, "gpu_source": "nvidia-smi"}
    from ..memory import GPU_RUNTIME_OVERHEAD_MB

    return {"placement": placement, "gpu_mib": round(sum(gpu.values()) + GPU_RUNTIME_OVERHEAD_MB * len(gpu), 1),
            "gpu_source": "llama.cpp buffers"}


NVIDIA_SMI_TIMEOUT = 10.0  # seconds


def nvidia_smi_mib(pid: int) -> float | None:
    """The GPU memory nvidia-smi counts for process `pid`, MiB over every GPU; None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        done = subprocess.run([exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    total = None
    for line in done.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            try:
                total = (total or 0.0) + float(parts[1])
            except ValueError:
                continue
    return total


# ---------------------------------------------------------------------------------- Ollama

def ollama_base() -> str:
    """OLLAMA_HOST (or the default), checked: an unusable URL is a usage error, not a traceback."""
    from ..discover.ollama import base_url

    return base_url()


def auto_start_allowed(interactive: bool) -> bool:
    """Consent to start `ollama serve`: env HOSTFIT_OLLAMA_AUTO_START, config ollama.auto_start, or a prompt."""
    env = paths.env(paths.HOSTFIT_OLLAMA_AUTO_START)
    if env is not None:
        return env.strip().lower() in ("1", "true", "yes", "on")
    from .config import read

    try:
        value = (read()[1].get("ollama") or {}).get("auto_start")
    except InputError:  # a broken config.yaml is reported by the commands that need it; here, ask
        value = None
    if value is not None:
        return bool(value)
    if interactive and sys.stdin.isatty():
        import click

        return click.confirm(f"No Ollama server answers at {redact_url(ollama_base())}. Start `ollama serve`?",
                             default=False)
    return False


def _ask(client, method: str, path: str, seconds: float | None = None, read: float = READ, **kwargs):
    """(status, body) of one bounded request to Ollama (OLLAMA_ASK seconds in all unless told)."""
    response, body = request(client, method, path, Deadline(seconds or OLLAMA_ASK), MAX_REPLY, f"ollama {path}",
                             read=read, **kwargs)
    return response.status_code, body


def ensure_ollama(client, interactive: bool) -> None:
    import httpx

    try:
        _ask(client, "GET", "/api/version")
        return
    except (httpx.TransportError, LimitExceeded):
        pass
    if not auto_start_allowed(interactive):
        raise OllamaUnavailable(f"no Ollama server answers at {redact_url(ollama_base())}; start it (`ollama serve`), "
                             "or allow hostfit to: HOSTFIT_OLLAMA_AUTO_START=1 or `ollama: {auto_start: true}` in "
                             "$XDG_CONFIG_HOME/hostfit/config.yaml")
    exe = shutil.which("ollama")
    if not exe:
        raise OllamaUnavailable("starting Ollama was allowed, but no `ollama` program is installed")
    subprocess.Popen([exe, "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + OLLAMA_START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            _ask(client, "GET", "/api/version")
            return
        except (httpx.TransportError, LimitExceeded):
            time.sleep(0.25)
    raise OllamaUnavailable(f"started `ollama serve`, but it did not answer within {OLLAMA_START_TIMEOUT:.0f} s")


def ollama_load(name: str, settings: Settings, prompt: str, progress=None, interactive: bool = False,
                keep_alive: str = "30m") -> tuple[float, float, str]:
    """Pull (streamed), preload with a generation and keep_alive, confirm with /api/ps."""
    import httpx

    with httpx.Client(base_url=ollama_base()) as client:  # every request sets its own deadline
        ensure_ollama(client, interactive)
        try:
            _pull(client, name, progress)
            started = time.perf_counter()
            status, reply = _ask(client, "POST", "/api/generate", OLLAMA_GENERATE, OLLAMA_SLOW_READ, json={
                "model": name, "prompt": prompt, "stream": False, "keep_alive": keep_alive,
                "options": {"num_ctx": settings.context, "num_predict": 8, "temperature": 0,
                            # a split: the compiled layers (otherwise Ollama fits the GPU itself)
                            **({"num_gpu": settings.gpu_layers} if settings.gpu_layers > 0 else {})}})
            if status != 200:
                raise LoadFailure(f"ollama generate {name}: HTTP {status} "
                                  f"{reply[:200].decode('utf-8', 'replace')}")
            body = parse_json_object(reply, "ollama /api/generate")
            total = time.perf_counter() - started
            running = parse_json_object(_ask(client, "GET", "/api/ps")[1], "ollama /api/ps").get("models") or []
            loaded = [m.get("name") or m.get("model") for m in running if isinstance(m, dict)] \
                if isinstance(running, list) else []
            if name not in loaded:
                raise LoadFailure(f"ollama answered, but {name} is not among the loaded models ({loaded})")
        except (httpx.TransportError, ValueError, LimitExceeded) as exc:
            raise LoadFailure(f"ollama {name}: {exc}") from exc
    load = body["load_duration"] / 1e9 if _number(body.get("load_duration")) else 0.0
    first = body["prompt_eval_duration"] / 1e9 if _number(body.get("prompt_eval_duration")) \
        and body["prompt_eval_duration"] else total - load
    return load, first, str(body.get("response", ""))


def _pull(client, name: str, progress) -> None:
    """POST /api/pull and follow its newline-delimited JSON status lines, each bounded in size."""
    deadline = Deadline(OLLAMA_PULL)
    with client.stream("POST", "/api/pull", json={"model": name, "stream": True}, headers=IDENTITY,
                       timeout=deadline.timeout(read=OLLAMA_SLOW_READ)) as response:
        if response.status_code != 200:
            raise LoadFailure(f"ollama pull {name}: HTTP {response.status_code}")
        for line in iter_lines(response, deadline, MAX_LINE, f"ollama pull {name}"):
            if not line.strip():
                continue
            event = parse_json(line, f"ollama pull {name}")
            if not isinstance(event, dict):
                raise LoadFailure(f"ollama pull {name}: a status line is not a JSON object: {line[:80]!r}")
            if "error" in event:
                raise LoadFailure(f"ollama pull {name}: {event['error']}")
            if progress:
                progress(event)


# ------------------------------------------------------------------------------ the chain

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pull_progress(say, name: str):
    """One line per pull status (and per 25% of a layer), not one per streamed event."""
    shown: set = set()

    def progress(event: dict) -> None:
        status = str(event.get("status", ""))[:200]  # a server's text: shown, so bounded
        total, completed = event.get("total"), event.get("completed", 0)
        if _number(total) and total > 0 and _number(completed):
            quarter = max(0, min(4, int(4 * completed / total)))
            key = (status, quarter)
            text = f"ollama pull {name}: {status} {25 * quarter}%"
        else:
            key, text = (status, None), f"ollama pull {name}: {status}"
        if key not in shown and len(shown) < MAX_STATUSES:
            shown.add(key)
            say(text)
    return progress


LEGACY_RUNTIME = "llamacpp"  # what a models.json compiled before runtimes were recorded was loaded with


def runtime_of(role: dict, model_id: str) -> str:
    """The runtime the compiled role chose for one model of its chain."""
    if model_id == role.get("model"):
        return role.get("runtime") or LEGACY_RUNTIME
    return (role.get("fallback_runtimes") or {}).get(model_id) or LEGACY_RUNTIME


def no_loader(runtime: str, model_id: str, model: dict, context: int, host: dict | None = None) -> str:
    """Why hostfit cannot load it, and the command that runs it by hand when the runtime declares one."""
    known = runtimes.REGISTRY.get(runtime)
    command = runtimes.serve_command(known, model_id, model, context, host) if known else None
    return f"hostfit has no loader for {runtime}" + (f"; run it yourself: {command}" if command else "")


def load_role(compiled: dict, role_name: str, backend: str | None, prompt: str, fetch_one, overrides: dict,
              say=print, only: str | None = None) -> Loaded:
    """Try the role's model, then its fallbacks in order, until one loads and generates. Each model is
    loaded with the runtime the role chose for it, unless `backend` names one for all. `only`: that model
    of the chain alone (`hostfit bench MODEL`). overrides: threads, gpu_layers, mmap, mlock, interactive,
    context (instead of the compiled one), max_tokens (generated; a benchmark's decode length).
    `compiled` comes from documents.read_models (the plan's document): schema-checked, and every
    model its roles name is defined, so the lookups below cannot fail."""
    roles = compiled["roles"]
    if role_name not in roles:
        raise UsageError(f"unknown role {role_name!r}; roles: {', '.join(sorted(roles))}")
    role = roles[role_name]
    chain = [m for m in [role["model"], *role["fallbacks"]] if m]
    if only is not None:
        chain = [m for m in chain if m == only]
    attempts: list[tuple[str, str]] = []
    ollama_down = None  # why Ollama cannot serve, once asked: the later models on it are not asked again
    for model_id in chain:
        model = compiled["models"][model_id]
        if is_cloud(model):
            say(f"{role_name}: {model_id} is a cloud model ({model['provider']}); not loaded locally")
            continue
        if attempts:
            say(f"{role_name}: trying fallback {model_id}")
        settings = settings_for(role, model, overrides.get("threads"), overrides.get("gpu_layers"),
                                overrides.get("mmap", True), overrides.get("mlock", False), model_id)
        if overrides.get("context"):
            settings.context = overrides["context"]
        runtime = backend or runtime_of(role, model_id)
        known = runtimes.REGISTRY.get(runtime)
        if known is None or known.loader is None:
            why = no_loader(runtime, model_id, model, settings.context, compiled["host"])
            say(f"{role_name}: {model_id} runs on {runtime}: {why}")
            attempts.append((model_id, why))
            continue
        if known.loader == "ollama" and ollama_down:
            say(f"{role_name}: {model_id} runs on Ollama, which is not running (above)")
            attempts.append((model_id, ollama_down))
            continue
        figures: dict = {}
        try:
            if known.loader == "ollama":
                name = (model.get("ollama") or {}).get("name")
                if not name:
                    raise LoadFailure(f"{model_id} has no ollama.name")
                load, first, text = ollama_load(name, settings, prompt, progress=_pull_progress(say, name),
                                                interactive=overrides.get("interactive", False))
            else:
                fetched = fetch_one(model_id)
                load, first, text = llamacpp_load(fetched, settings, prompt, overrides.get("max_tokens", 8),
                                                  figures, decode_all="max_tokens" in overrides)
        except OllamaUnavailable as exc:
            ollama_down = str(exc)
            say(f"{role_name}: {model_id} runs on Ollama: {exc}")
            attempts.append((model_id, ollama_down))
            continue
        except LoadFailure as exc:
            say(f"{role_name}: {model_id} failed: {exc}")
            attempts.append((model_id, str(exc)))
            continue
        except RuntimeFailure as exc:  # a fetch that failed is a failed candidate too
            say(f"{role_name}: {model_id} could not be fetched: {exc}")
            attempts.append((model_id, str(exc)))
            continue
        return Loaded(model_id, runtime, load, first, text, attempts, figures)
    failed: dict[str, list[str]] = {}  # one sentence per reason, with the models it stopped
    for model_id, why in attempts:
        failed.setdefault(why, []).append(model_id)
    raise RuntimeFailure(f"no model of role {role_name!r} could be loaded: "
                         + ("; ".join(f"{', '.join(models)}: {why}" for why, models in failed.items())
                            or "no local model in its chain"))
