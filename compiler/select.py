"""Select stage: for one host, which model serves each role, what follows it, and why.

Candidates are the role's `prefer` list in order, else every active local model serving the
role's workload ordered by priority (lower first), recommended first, larger first. Each is
rejected with a reason or survives, with a fit level (compiler/fit.py) and an estimated decode
speed (compiler/speed.py; a role's `requires.speed_min` rejects the slower). Every strategy takes a
comfortable survivor when there is one, a tight one only when none is comfortable: `first_fit` the
first, `largest_fit` the largest (priority, lower first, then recommended first), `best_fit` the highest
quality (`quality`: priority, lower first, then capability scores, then speed with a margin on a GPU host,
size class, downloads, parameters, bits) among those at `selection.speed_floor` tok/s or faster (all of
them when none is). A `prefer` list ranks before priority: first_fit takes it in order.
Roles marked `resident` are packed into one shared budget (RAM,
VRAM and `max_loaded_models`); other roles are loaded one at a time and each gets the whole
budget. Cloud models are never chosen, only appended to the fallback chain.

A candidate is a (model, runtime) pair: the first runtime of the host, in the host's order, that
loads the model's format, runs on the host's hardware and can place it (compiler/runtimes/). A model
no runtime of the host can load is rejected with the reason. Screening stays host-independent; the
runtime match is per host, in _evaluate. How the chosen model and each local fallback run on the GPU
(layers, expert offload, tensor split) is offload.py's, recorded with the role. Where the host measured
a model (sources/measured/<host>.yaml, compiler/measured.py), the measured memory and speed replace the
estimates for that host (measured_need, measured_speed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import fit, kinds, measured as measurements, memory, runtimes, speed
from .errors import Diagnostic
from .hosts import GIB_IN_MB, Host
from .memory import DEFAULT_KV_CACHE, Estimate, bits_per_weight, estimate, expert_weights_mib, is_cloud, size_unknown
from .merge import origin
from .offload import Offload, offload
from .resolve import DEFAULT_PRIORITY, Catalog

ELIGIBLE_STATUS = ("active", "deprecated")
SIZE_UNKNOWN = "size unknown: give params_b, artifact.size_bytes or memory.ram_mb"
TRACE_LIMIT = 200  # candidates kept per role in explain.json, beside the pick and fallbacks; the rest are counted
CAPABILITIES = ("reasoning", "coding", "creativity", "multilingual")
# The capability score that measures quality for each workload (best_fit), beside those a role's
# `requires` names; a workload absent here ranks by parameters, then bits.
WORKLOAD_CAPABILITY = {"chat": "reasoning", "code": "coding", "creative": "creativity",
                       "summarization": "reasoning", "extraction": "reasoning", "classification": "reasoning"}


@dataclass
class Budget:
    ram_mb: int
    vram_mb: int
    slots: int | None  # max_loaded_models for resident roles; None = no limit
    # unified memory (Apple silicon): one pool; vram_mb is the share of ram_mb its GPU may use, not more
    # memory, so a `gpu` placement takes from both and there is no `split` (the GPU already sees it all)
    unified: bool = False
    gpus: int = 0  # discrete GPUs: llama.cpp and Ollama open the GPU runtime's context on each
    # resident roles: VRAM a resident mixture-of-experts split holds in expert tensors, which llama-server
    # can keep in RAM instead (more --n-cpu-moe layers) to make room for a later resident model on the GPU
    movable_mb: int = 0
    moved_mb: int = 0  # how much of it later resident models took (the split's layout is recomputed for it)
    keep_free_mb: int = 0  # RAM the moved experts leave free: the RAM stays within selection.max_fill

    @property
    def gpu_room(self) -> int:
        """VRAM a model placed on the GPU may use: what is free, and expert tensors RAM has room for."""
        return self.vram_mb + max(0, min(self.movable_mb, self.ram_mb - self.keep_free_mb))

    def place(self, need_mb: int, allowed: tuple[str, ...] = runtimes.PLACEMENTS) -> str | None:
        """The first of `allowed` (a runtime's placements on this host) that holds `need_mb`."""
        if "gpu" in allowed and (self.vram_mb or self.movable_mb) and need_mb <= self.gpu_room:
            return "gpu"
        if "split" in allowed and self.vram_mb and not self.unified and need_mb <= self.vram_mb + self.ram_mb:
            return "split"
        if "cpu" in allowed and need_mb <= self.ram_mb:
            return "cpu"
        return None

    @property
    def gpu_contexts(self) -> int:
        """GPU runtime contexts a model opens here: one per discrete GPU on a host with VRAM (where the GPUs
        hold it whole or in part, every placement there), none on unified memory or without a GPU."""
        return max(1, self.gpus) if self.vram_mb and not self.unified else 0

    def capacity(self, allowed: tuple[str, ...] = runtimes.PLACEMENTS) -> int:
        if "split" in allowed and not self.unified:
            return self.vram_mb + self.ram_mb
        return max(self.vram_mb if "gpu" in allowed else 0, self.ram_mb if "cpu" in allowed else 0)

    def room(self, placement: str) -> int:
        """What a model already placed there can still grow into (a split grows in RAM)."""
        return self.vram_mb if placement == "gpu" else self.ram_mb

    def take(self, need_mb: int, placement: str, experts_mb: float = 0) -> None:
        """Take `need_mb` at `placement`; a split whose runtime keeps expert tensors in RAM says how many
        MiB of them (`experts_mb`): those left on the GPU can move to RAM for a later resident model."""
        if self.unified:
            self.ram_mb -= need_mb
            self.vram_mb = min(self.vram_mb - (need_mb if placement == "gpu" else 0), self.ram_mb)
        elif placement == "gpu":
            moved = max(0, need_mb - self.vram_mb)  # expert tensors of a resident split go to RAM for it
            self.vram_mb -= need_mb - moved
            self.movable_mb, self.ram_mb, self.moved_mb = self.movable_mb - moved, self.ram_mb - moved, self.moved_mb + moved
        elif placement == "split":
            self.ram_mb -= need_mb - self.vram_mb
            self.movable_mb = max(0, int(experts_mb) - (need_mb - self.vram_mb))  # the experts the GPU holds
            self.vram_mb = 0
        else:
            self.ram_mb -= need_mb


@dataclass(slots=True)
class Verdict:
    model: str
    verdict: str  # chosen | fallback | survivor | rejected
    reason: str  # empty for "does not fit the host", which `describe` words from the numbers
    memory: Estimate | None = None
    placement: str | None = None
    size: tuple = ()  # largest_fit's order: priority (lower first), recommended first, then parameters, then memory
    capacity: int = 0  # MiB usable when it was judged
    runtime: str | None = None  # the runtime that places it (a rejected one: the roomiest that loads it)
    options: tuple = ()  # (runtime name, placements) of every host runtime that could run it, host order
    fit: str | None = None  # fit.COMFORTABLE | fit.TIGHT once placed
    fill: str = ""  # the fit level's reason: how full the placement's budget gets
    speed: speed.Speed | None = None  # once placed
    too_slow: bool = False  # rejected by the role's speed_min: it fits, so E300 does not count it short
    runs: tuple = ()  # what the host measured of the model (measured.Run), which replace the estimates

    def describe(self) -> str:
        if self.reason:
            return self.reason
        if self.placement:
            return f"fits ({self.placement}, {self.fit}: {self.fill})" if self.fit else f"fits ({self.placement})"
        return f"needs {self.memory.mb:,} MiB, {self.capacity:,} MiB usable"

    def to_dict(self) -> dict:
        out = {"model": self.model, "verdict": self.verdict, "reason": self.describe(), "placement": self.placement}
        if self.memory is not None:
            out["memory_mb"] = self.memory.mb
            out["memory"] = self.memory.to_dict()
        if self.runtime:
            out["runtime"] = self.runtime
        if self.fit:
            out["fit"] = self.fit
        if self.speed is not None:
            out["speed"] = self.speed.to_dict()
        return out


@dataclass
class RolePlan:
    name: str
    workload: str
    required: bool
    resident: bool
    strategy: str
    context: int
    flash_attention: bool = True
    model: str | None = None
    fallbacks: list[str] = field(default_factory=list)
    runtime: str | None = None
    fallback_runtimes: dict[str, str] = field(default_factory=dict)  # local fallback -> its runtime
    placement: str | None = None
    memory_mb: int | None = None
    candidates: list[Verdict] = field(default_factory=list)
    cloud: list[str] = field(default_factory=list)
    note: str = ""
    kv_cache_type: str = DEFAULT_KV_CACHE  # what the memory was sized for: the loader's cache type
    offload: Offload | None = None  # the chosen model's GPU settings (offload.py); None: no GPU holds it
    fallback_offload: dict[str, Offload] = field(default_factory=dict)  # local fallback -> its GPU settings
    fit: str | None = None  # the chosen model's fit level
    speed: speed.Speed | None = None  # the chosen model's estimated decode speed
    variant: str | None = None  # the chosen model's variant (its quantization), when it is one of a model's
    copy_vram: int | None = None  # resident: the VRAM its model's one copy was placed in (shared by roles on it)

    def chosen(self) -> Verdict:
        """The verdict of the chosen model (only once one is chosen)."""
        return next(v for v in self.candidates if v.verdict == "chosen")

    def output(self) -> dict:
        out = {"model": self.model, "fallbacks": self.fallbacks, "placement": self.placement,
               "memory_mb": self.memory_mb, "context": self.context, "workload": self.workload,
               "required": self.required, "resident": self.resident, "flash_attention": self.flash_attention,
               "runtime": self.runtime, "fallback_runtimes": self.fallback_runtimes}
        if self.kv_cache_type != DEFAULT_KV_CACHE:  # only then: outputs with the default stay as they were
            out["kv_cache_type"] = self.kv_cache_type
        if self.offload is not None:  # likewise: only where a GPU holds the model
            out.update(self.offload.to_dict())
        if self.fallback_offload:
            out["fallback_offload"] = {model: o.to_dict() for model, o in sorted(self.fallback_offload.items())}
        out["fit"] = self.fit
        out["tokens_per_s"] = self.speed.tokens_per_s if self.speed else None
        if self.speed and self.speed.method == "measured":  # only then: unmeasured outputs stay as they were
            out["speed_method"] = "measured"
        if self.variant:  # only then: outputs of models without variants stay as they were
            out["variant"] = self.variant
        return out

    def trace(self) -> dict:
        # the pick and its fallbacks always, with their reasons (why the pick won), wherever they rank
        kept = [v for n, v in enumerate(self.candidates) if n < TRACE_LIMIT or v.verdict in ("chosen", "fallback")]
        out = {"workload": self.workload, "strategy": self.strategy, "context": self.context,
               "required": self.required, "resident": self.resident, "chosen": self.model,
               "runtime": self.runtime, "fallbacks": self.fallbacks, "fallback_runtimes": self.fallback_runtimes,
               "fit": self.fit, "tokens_per_s": self.speed.tokens_per_s if self.speed else None,
               "note": self.note, "candidates": [v.to_dict() for v in kept]}
        if self.offload is not None:
            out["offload"] = {**self.offload.to_dict(), "why": self.offload.why}
        if len(self.candidates) > len(kept):
            out["omitted_candidates"] = len(self.candidates) - len(kept)
        return out


@dataclass
class Plan:
    host: Host
    budget: Budget
    roles: dict[str, RolePlan]
    diagnostics: list[Diagnostic]
    available: runtimes.Available | None = None  # the host's runtimes and hardware

    def models_used(self) -> list[str]:
        used = set()
        for role in self.roles.values():
            if role.model:
                used.add(role.model)
            used.update(role.fallbacks)
        return sorted(used)


def host_budget(host: Host, selection: dict) -> Budget:
    reserve = host.ram_reserve_gb if host.ram_reserve_gb is not None else selection["ram_reserve_gb"]
    base = host.ram_mb
    if selection["basis"] == "available" and host.available_mb is not None:
        base = host.available_mb
    ram = max(0, int(base - reserve * GIB_IN_MB))
    vram = 0
    if host.unified_memory and host.gpus:  # the share macOS lets the GPU wire, within the usable RAM
        vram = min(host.gpu_share_mb, ram)
    elif host.gpus:
        vram = max(0, int(host.vram_mb - selection["vram_reserve_gb"] * GIB_IN_MB))
    return Budget(ram, vram, host.max_loaded_models, host.unified_memory, 0 if host.unified_memory else len(host.gpus))


def need_on(budget: Budget, model: dict, context: int, selection: dict, flash_attention: bool,
            kv_cache_type: str | None = None) -> Estimate:
    """The model's need on this host: where discrete GPUs hold it, whole or in part (every placement on a
    host with VRAM), the GPU runtime's own memory comes on top, once per GPU (each has its context).
    (Metal on unified memory has none beside the process's: gpu_runtime_overhead_mb is CUDA's, measured.)"""
    overhead = selection["runtime_overhead_mb"] + selection["gpu_runtime_overhead_mb"] * budget.gpu_contexts
    return estimate(model, context, overhead, kv_cache_type, flash_attention=flash_attention)


def select(catalog: Catalog, host: Host, measured: dict[str, tuple] | None = None) -> Plan:
    """`measured`: model id -> what this host measured of it (measured.runs_for), used over the estimates."""
    budget = host_budget(host, catalog.selection)
    available = runtimes.available(host)
    # A resident copy shared by roles runs with the layout of the longest context (_one_copy), which can
    # leave a role below its speed_min: that role may not share it, and the packing starts again without
    # it (each round excludes one more pair at least, so the resident candidates bound the rounds)
    excluded: dict[tuple[str, str], str] = {}  # (role, model) -> why the shared copy is too slow for the role
    rounds = 1 + sum(len(screen(name, catalog).candidates) for name, role in catalog.roles.items()
                     if role.get("resident"))
    lend = True  # resident GPU models may take VRAM a resident split's experts give up, unless that slows it
    for _ in range(rounds + 1):
        plans, starved = _pack(catalog, host, budget, available, excluded, lend, measured or {})
        if starved:
            lend = False
            continue
        slow = {key: why for key, why in _one_copy(plans, catalog, host).items() if key not in excluded}
        if not slow:
            break
        excluded.update(slow)
    diagnostics = [_unserved(plan, host, budget, catalog) for plan in plans.values()
                   if plan.required and plan.model is None]
    diagnostics += [_tight(plan, host, catalog) for plan in plans.values() if plan.fit == fit.TIGHT]
    return Plan(host, budget, plans, diagnostics, available)


def _pack(catalog: Catalog, host: Host, budget: Budget, available: runtimes.Available,
          excluded: dict[tuple[str, str], str], lend: bool,
          measured: dict[str, tuple]) -> tuple[dict[str, RolePlan], bool]:
    """Every role's plan: resident roles packed first into one shared budget, then the others; the
    (role, model) pairs of `excluded` rejected with their reason. With `lend`, a resident split of a mixture
    of experts gives later resident models on the GPU the VRAM of experts RAM can hold (within max_fill);
    returns whether that left the split below its role's speed_min."""
    plans = {name: _evaluate(name, catalog, budget, available, host, measured) for name in catalog.roles}
    for plan in plans.values():
        for verdict in plan.candidates:
            if (plan.name, verdict.model) in excluded and verdict.verdict == "survivor":
                verdict.verdict, verdict.placement, verdict.too_slow = "rejected", None, True
                verdict.reason = excluded[(plan.name, verdict.model)]
    keep_free = int(budget.ram_mb * (1 - catalog.selection["max_fill"])) if lend else budget.ram_mb
    shared = Budget(budget.ram_mb, budget.vram_mb, budget.slots, budget.unified, budget.gpus, keep_free_mb=keep_free)
    loaded: dict[str, tuple[str, str, int]] = {}
    for plan in sorted(plans.values(), key=lambda p: (not p.resident, not p.required, p.name)):
        left = shared.gpu_room if plan.resident else budget.vram_mb  # what the GPU has left for this role
        _choose(plan, catalog, shared if plan.resident else None, loaded, budget, host)
        vram = left
        if plan.resident and plan.model:  # a resident model shared by roles is loaded once: the VRAM it was placed in
            plan.copy_vram = vram = next((p.copy_vram for p in plans.values() if p.resident and p.model == plan.model
                                          and p.copy_vram is not None), left)
        _offload(plan, catalog, host, vram, left)
    return plans, bool(shared.moved_mb) and _yielded(plans, catalog, host, shared.moved_mb)


def _yielded(plans: dict[str, RolePlan], catalog: Catalog, host: Host, moved_mb: int) -> bool:
    """The resident split whose expert tensors moved to RAM for later resident models on the GPU: its
    layout for the VRAM it keeps (more --n-cpu-moe layers) and its speed from that layout. Whether that
    speed is below its role's speed_min."""
    starved = False
    for plan in plans.values():
        if plan.resident and plan.placement == "split" and plan.copy_vram is not None:
            plan.copy_vram -= moved_mb
            chosen = plan.chosen()
            layout = offload(catalog.models[plan.model], chosen.memory, "split", plan.copy_vram,
                             _gpu_vram(host))
            starved |= _laid_out(plan, chosen, catalog, host, plan.copy_vram, layout)
    return starved


def _laid_out(plan: RolePlan, chosen: Verdict, catalog: Catalog, host: Host, vram_mb: int,
              layout: Offload | None) -> bool:
    """The role runs its model with `layout` (GPU settings for `vram_mb` MiB left it): its speed from that
    layout (measured where the host measured it). Whether that speed is below the role's speed_min."""
    screened = screen(plan.name, catalog)
    model = catalog.models[plan.model]
    plan.offload = layout
    plan.speed = chosen.speed = measured_speed(
        placed_speed(model, host, plan.placement, chosen.memory, plan.runtime, vram_mb, screened.kv_cache_type,
                     layout), chosen, model, host, vram_mb, layout)
    return screened.speed_min is not None and plan.speed.tokens_per_s < screened.speed_min


@dataclass(frozen=True)
class Screened:
    """A role's candidates judged on everything but memory fit, which depends on the host."""

    strategy: str
    context: int
    candidates: tuple[tuple[str, str | None, Estimate | None, tuple], ...]  # (model, rejection, need, size)
    cloud: tuple[str, ...]
    kv_cache_type: str | None = None  # the role's or the selection's; None: f16 (arch.kv_bytes if more)
    speed_min: float | None = None  # requires.speed_min: tokens/s, judged per host


def screen(name: str, catalog: Catalog) -> Screened:
    key = ("screen", name)
    if key not in catalog.memo:
        catalog.memo[key] = _screen(catalog.roles[name], catalog)
    return catalog.memo[key]


def _screen(role: dict, catalog: Catalog) -> Screened:
    selection = catalog.selection
    strategy = role.get("strategy") or selection["strategy"]
    if strategy == "auto":
        strategy = "first_fit" if role.get("prefer") else "best_fit"
    requires = role.get("requires") or {}
    context = requires.get("context_min") or selection["context_default"]
    cache_type = role.get("kv_cache_type") or selection.get("kv_cache_type")  # None: f16 (arch.kv_bytes if more)
    candidates = []
    for model_id in _candidate_ids(role, catalog):
        model = catalog.models[model_id]
        if is_cloud(model):
            candidates.append((model_id, kinds.problem(model["type"], role)
                               or "cloud models serve only as fallbacks", None, ()))
        elif model.get("status") not in ELIGIBLE_STATUS:
            candidates.append((model_id, f"status is {model.get('status')}", None, ()))
        else:
            problem = (kinds.problem(model["type"], role) or _requirement_problem(model, requires, context)
                       or (SIZE_UNKNOWN if size_unknown(model) else None))
            need = None if problem else estimate(model, context, selection["runtime_overhead_mb"], cache_type,
                                                 flash_attention=role["flash_attention"])
            size = (-model.get("priority", DEFAULT_PRIORITY), bool(model.get("recommended")),
                    model.get("params_b") or 0, need.mb if need else 0)
            candidates.append((model_id, problem, need, size))
    cloud = []
    for ref in dict.fromkeys([*(role.get("prefer") or ()), *(role.get("fallback") or ())]):
        if ref in catalog.models and is_cloud(catalog.models[ref]):
            wrong = kinds.problem(catalog.models[ref]["type"], role)
            if not wrong:
                cloud.append(ref)
            elif ref not in (role.get("prefer") or ()):  # a prefer entry is a candidate already, with this reason
                candidates.append((ref, wrong, None, ()))
    return Screened(strategy, context, tuple(candidates), tuple(cloud), cache_type, requires.get("speed_min"))


def _candidate_ids(role: dict, catalog: Catalog) -> list[str]:
    if role.get("prefer"):
        ids = [ref for ref in role["prefer"] if ref in catalog.models]
    else:
        workload = role["workload"]
        pool = [(model_id, m) for model_id, m in catalog.models.items()
                if workload in (m.get("workloads") or ()) and not is_cloud(m)
                and m.get("status") in ELIGIBLE_STATUS]
        # a model's variants side by side, most bits first (resolve's order)
        pool.sort(key=lambda item: (item[1].get("priority", DEFAULT_PRIORITY), not item[1].get("recommended"),
                                    -(item[1].get("params_b") or 0), item[1].get("variant_of") or item[0],
                                    -bits_per_weight(item[1].get("quantization")), item[0]))
        ids = [model_id for model_id, _ in pool]
    for ref in role.get("fallback") or ():
        if ref in catalog.models and not is_cloud(catalog.models[ref]) and ref not in ids:
            ids.append(ref)
    return ids


def _requirement_problem(model: dict, requires: dict, context: int) -> str | None:
    window = model.get("context_window")
    if requires.get("context_min"):
        if not window:
            return f"context window unknown (needs >= {requires['context_min']:,})"
        if window < requires["context_min"]:
            return f"context window {window:,} < required {requires['context_min']:,}"
    capabilities = model.get("capabilities") or {}
    for name in CAPABILITIES:
        minimum = requires.get(f"{name}_min")
        if minimum is not None:
            score = capabilities.get(name)
            if score is None:
                return f"no {name} score (needs >= {minimum})"
            if score < minimum:
                return f"{name} {score} < required {minimum}"
    for flag in ("tools", "vision"):
        if requires.get(flag) and not capabilities.get(flag):
            return f"no {flag} support"
    return None


def runtime_options(model_id: str, catalog: Catalog, available: runtimes.Available) -> tuple[tuple[str, tuple], ...]:
    """(runtime name, its placements) of each runtime of the host that can run the model, host order."""
    matches = runtimes.match(*_format_of(model_id, catalog), available)
    return tuple((runtime.name, allowed) for runtime, allowed in matches)


def first_placed(budget: Budget, need_mb: int, options: tuple) -> tuple[str, str] | None:
    """(runtime, placement): the first runtime, in host order, that can place `need_mb` in `budget`."""
    return next(((rt, p) for rt, allowed in options if (p := budget.place(need_mb, allowed))), None)


def _format_of(model_id: str, catalog: Catalog) -> tuple[runtimes.Format, frozenset]:
    """A model's format and the sources it offers, once per catalog (they do not depend on the host)."""
    key = ("format", model_id)
    if key not in catalog.memo:
        model = catalog.models[model_id]
        catalog.memo[key] = (runtimes.model_format(model, model_id), runtimes.sources(model))
    return catalog.memo[key]


def _evaluate(name: str, catalog: Catalog, budget: Budget, available: runtimes.Available, host: Host,
              measured: dict[str, tuple]) -> RolePlan:
    role = catalog.roles[name]
    screened = screen(name, catalog)
    plan = RolePlan(name, role["workload"], bool(role.get("required", False)), bool(role.get("resident", False)),
                    screened.strategy, screened.context, role["flash_attention"], cloud=list(screened.cloud),
                    kv_cache_type=screened.kv_cache_type or DEFAULT_KV_CACHE)
    verdicts = plan.candidates
    capacity = budget.capacity()
    for model_id, problem, need, size in screened.candidates:
        if problem:
            verdicts.append(Verdict(model_id, "rejected", problem))
            continue
        if budget.gpu_contexts:  # else the screened need already is this host's (no GPU runtime beside it)
            key = ("need", name, model_id, budget.gpu_contexts)  # once per catalog for hosts with as many GPUs
            if key not in catalog.memo:
                catalog.memo[key] = need_on(budget, catalog.models[model_id], screened.context, catalog.selection,
                                            role["flash_attention"], screened.kv_cache_type)
            need = catalog.memo[key]
        options = runtime_options(model_id, catalog, available)
        if not options:
            rejection = runtimes.rejection(*_format_of(model_id, catalog), available)
            verdicts.append(Verdict(model_id, "rejected", rejection))
            continue
        runs = measured.get(model_id, ())
        if runs:
            need = measured_need(catalog.models[model_id], need, runs, options, role["flash_attention"])
        placed = first_placed(budget, need.mb, options)
        if placed:
            verdict = Verdict(model_id, "survivor", "", need, placed[1], size, capacity, placed[0], options, runs=runs)
            _judge(verdict, catalog, host, budget, budget, screened)
            verdicts.append(verdict)
        else:
            roomiest = max(options, key=lambda option: budget.capacity(option[1]))  # max keeps the first of equals
            verdicts.append(Verdict(model_id, "rejected", "", need, None, size, budget.capacity(roomiest[1]),
                                    roomiest[0], options, runs=runs))
    return plan


def measured_need(model: dict, need: Estimate, runs: tuple, options: tuple, flash_attention: bool) -> Estimate:
    """`need` replaced by the measured figure that sizes the model on this host (measured.for_memory: the
    first runtime of `options` that ran it), scaled to the role's context by memory.measured."""
    run = measurements.for_memory(runs, tuple(name for name, _ in options), need.context)
    if run is None:
        return need
    return memory.measured(model, need, run.memory_mb, run.context, run.kv_cache_type,
                           flash_attention=flash_attention)


def measured_speed(estimated: speed.Speed, verdict: Verdict, model: dict, host: Host, vram_mb: int,
                   layout: Offload | None = None) -> speed.Speed:
    """`estimated` replaced by the speed the host measured on the verdict's runtime and placement, when it
    has one (measured.for_speed), scaled to the role's context by speed.measured."""
    run = measurements.for_speed(verdict.runs, verdict.runtime, verdict.placement, verdict.memory.context)
    if run is None:
        return estimated
    at = placed_speed(model, host, verdict.placement, replace(verdict.memory, context=run.context), verdict.runtime,
                      vram_mb, run.kv_cache_type, layout)
    return speed.measured(estimated, at, run.tokens_per_s, run.context)


def placed_mb(budget: Budget, placement: str) -> int:
    """The usable MiB a placement draws on: VRAM on gpu, RAM on cpu, both on split; on unified memory the
    one pool whatever the placement (the GPU's share caps where a model goes, not the room left beside it)."""
    if budget.unified:
        return budget.ram_mb
    return {"gpu": budget.gpu_room, "cpu": budget.ram_mb}.get(placement, budget.vram_mb + budget.ram_mb)


def fit_and_speed(model: dict, host: Host, need: Estimate, placement: str, runtime: str | None, full: Budget,
                  now: Budget, selection: dict, kv_cache_type: str | None) -> tuple[str, str, speed.Speed]:
    """(fit level, its reason, decode speed) of `need` placed at `placement` by `runtime`, against `now`
    (what is left of the `full` budget beside resident models packed before it)."""
    budget_mb = placed_mb(full, placement)
    level, fill = fit.level(fit.Fill(need.mb, budget_mb - placed_mb(now, placement), budget_mb, placement,
                                     selection["max_fill"]))
    return level, fill, placed_speed(model, host, placement, need, runtime, now.vram_mb, kv_cache_type)


def _judge(verdict: Verdict, catalog: Catalog, host: Host, full: Budget, now: Budget, screened: Screened) -> None:
    """A placed verdict's fit level and speed, against `now` (what is left of the `full` budget);
    rejected when slower than the role's speed_min."""
    placement = verdict.placement
    model = catalog.models[verdict.model]
    verdict.fit, verdict.fill, verdict.speed = fit_and_speed(model, host, verdict.memory, placement, verdict.runtime,
                                                             full, now, catalog.selection, screened.kv_cache_type)
    if verdict.runs:
        verdict.speed = measured_speed(verdict.speed, verdict, model, host, now.vram_mb)
    if screened.speed_min is not None and verdict.speed.tokens_per_s < screened.speed_min:
        verdict.verdict, verdict.placement, verdict.too_slow = "rejected", None, True
        verdict.reason = f"{verdict.speed.rate} on {placement} < required {screened.speed_min:g}"


def placed_speed(model: dict, host: Host, placement: str, need: Estimate, runtime_name: str | None,
                 vram_mb: int, kv_cache_type: str | None, layout: Offload | None = None) -> speed.Speed:
    """The decode speed of `model` as its runtime lays it out: a split on a runtime that takes llama.cpp's
    GPU settings reads what offload.py puts on the GPU (the one layout the exports and loads pass; `layout`
    when given), another split the share of its need that `vram_mb` holds."""
    runtime = runtimes.REGISTRY.get(runtime_name or "")
    share = None
    if placement == "split" and runtime is not None and runtime.offload:
        layout = layout or offload(model, need, placement, vram_mb, _gpu_vram(host))
    elif placement == "split" and need.mb:
        share = min(1.0, vram_mb / need.mb)
    return speed.estimate(model, host, placement, need.context, kv_cache_type, share, layout,
                          bool(runtime and runtime.expert_offload))


# best_fit's size classes, upper bounds in billions of parameters: parameters rank models only across
# classes; within one, where the model runs and how widely it is used decide (bounds fall between the
# common release sizes: 1.5 | 3-4 | 7-9 | 12-15 | 20-27 | 30-36 | 46-72 | 100-123 ...)
SIZE_CLASSES_B = (1.0, 2.0, 5.0, 10.0, 18.0, 28.0, 40.0, 90.0, 200.0)
# On a host with a GPU, best_fit ranks candidates this many times selection.speed_floor or faster above
# slower ones of any size class: there a model on the GPU runs several times faster than one of similar
# size left on the CPU (or mostly so), so speed separates candidates that parameters do not. Not on a
# CPU-only host: there speed is about the inverse of size, and the floor alone keeps crawls out.
SPEED_MARGIN = 2.5  # 12.5 tok/s at the default floor: a comfortable chat pace, twice what a CPU gives a dense 30B


def size_class(params_b: float | None) -> int:
    """The index of the first SIZE_CLASSES_B bound above `params_b` (0 when unknown)."""
    return sum(1 for bound in SIZE_CLASSES_B if (params_b or 0) >= bound)


def popularity(downloads: int | None) -> int:
    """The order of magnitude of `downloads` (0 when unknown): a coarse signal, so two conversions of one
    model 8% apart tie and parameters, then bits decide, while an official release 10x as used wins."""
    return len(str(downloads)) if downloads else 0


BARELY_USED = 1_000  # downloads (a month, on Hugging Face) below which a model's source shows almost no one runs it
SUPERSEDED_MONTHS = 24  # released this long before the newest candidate: a generation or two behind it


def off_specialty(model: dict, role: dict) -> bool:
    """Whether `model` is a specialist serving a role outside its specialty (a coder for chat)."""
    specialty = model.get("specialty")
    return bool(specialty) and specialty != role.get("workload")


def superseded(model: dict, newest: str) -> bool:
    """Whether `model` was released SUPERSEDED_MONTHS or more before `newest` (dates YYYY-MM-DD)."""
    date = str(model.get("release_date") or "")
    if not date or not newest:
        return False
    return (int(newest[:4]) - int(date[:4])) * 12 + int(newest[5:7]) - int(date[5:7]) >= SUPERSEDED_MONTHS


# best_fit's demotions: a model one of these describes counts one size class lower per rule that applies,
# and below a model of the class it lands in that none describes. (name, applies(model, role, newest
# release date among the candidates)). So a general instruct model of the same class or the next one down
# takes chat from a coder, a well-used model from one almost nobody downloads, and a current release from
# one two years older; a model two classes down (a 4B against a 16B coder) is not enough of a model to
# pass over it. Add a rule here; explain names the one that decided.
DEMOTIONS = (
    ("a specialist off its specialty", lambda model, role, newest: off_specialty(model, role)),
    (f"barely used (under {BARELY_USED:,} downloads)",
     lambda model, role, newest: 0 < (model.get("downloads") or 0) < BARELY_USED),
    (f"superseded (released {SUPERSEDED_MONTHS}+ months before the newest candidate)",
     lambda model, role, newest: superseded(model, newest)),
)


def quality(model: dict, role: dict, brisk: bool = False, newest: str = "") -> tuple:
    """best_fit's order, higher first, one criterion after another (QUALITY_ORDER names them): the
    model's `priority` (lower first: the catalog's own ranking, above every estimate); then the mean
    of the capability scores that measure the role (its workload's and those its `requires` names)
    when the model has them; then `brisk` (on a GPU host, at SPEED_MARGIN x the floor); then the size class
    (one lower per DEMOTIONS rule that applies; `newest`: the newest release date among the candidates); then
    fewer demotions; then `downloads`' order of magnitude (official releases over a fine-tune of the same size);
    then parameters; then the quantization's bits per weight; then `release_date` (newer first, undated last)."""
    names = {f[:-4] for f in (role.get("requires") or {}) if f.endswith("_min") and f[:-4] in CAPABILITIES}
    if role.get("workload") in WORKLOAD_CAPABILITY:
        names.add(WORKLOAD_CAPABILITY[role["workload"]])
    capabilities = model.get("capabilities") or {}
    scores = [capabilities[n] for n in sorted(names) if isinstance(capabilities.get(n), (int, float))]
    score = sum(scores) / len(scores) if scores else None
    params = model.get("params_b") or 0
    spared = tuple(not applies(model, role, newest) for _, applies in DEMOTIONS)
    down = spared.count(False)
    return (-model.get("priority", DEFAULT_PRIORITY), score is not None, score or 0.0, brisk,
            size_class(params) - down, (-down, spared), popularity(model.get("downloads")), params,
            bits_per_weight(model.get("quantization")), str(model.get("release_date") or ""))


def _demotions(q: tuple) -> str:
    return ", ".join(name for (name, _), spared in zip(DEMOTIONS, q[5][1]) if not spared) or "none"


# What each element of `quality` is, worded for explain: the chosen reason names the first one that
# put the pick ahead of the runner-up
QUALITY_ORDER = (
    ("priority", lambda q: f"{-q[0]:g}"),
    ("capability scores", lambda q: "has them" if q[1] else "none"),
    ("capability score", lambda q: f"{q[2]:.2f}"),
    ("speed on a GPU host", lambda q: f"{'at or above' if q[3] else 'below'} {SPEED_MARGIN:g}x speed_floor"),
    ("size class", lambda q: _class_words(q[4]) if not q[5][0] else
     f"{_class_words(q[4] - q[5][0])} counted as {_class_words(q[4])}: {_demotions(q)}"),
    ("demotions", _demotions),
    ("downloads", lambda q: f"{10 ** (q[6] - 1):,}+" if q[6] else "none"),
    ("parameters", lambda q: f"{q[7]:g}B"),
    ("bits per weight", lambda q: f"{q[8]:g}"),
    ("release date", lambda q: q[9] or "unknown"),
)


def _class_words(index: int) -> str:
    index = max(0, index)  # a specialist below 1B counted one class lower stays in the lowest
    low = SIZE_CLASSES_B[index - 1] if index else 0
    return f"{low:g}B+" if index == len(SIZE_CLASSES_B) else f"{low:g}-{SIZE_CLASSES_B[index]:g}B"


def why_best(chosen: tuple, runner_up: tuple, runner_up_id: str) -> str:
    """The criterion of `quality` on which the pick beat the runner-up, e.g. "ahead of X on downloads
    (100,000+ over 10,000+)"; the id when every criterion ties."""
    for index, (name, words) in enumerate(QUALITY_ORDER):
        if chosen[index] != runner_up[index]:
            mine, theirs = words(chosen), words(runner_up)
            return f"ahead of {runner_up_id} on {name} ({mine} over {theirs})"
    return f"ahead of {runner_up_id}, equal on every criterion, by id"


def _choose(plan: RolePlan, catalog: Catalog, shared: Budget | None,
            loaded: dict[str, tuple[str, str, int]], full: Budget, host: Host) -> None:
    """Pick the role's model and fallbacks; a resident role also takes its share of `shared`.

    `loaded` maps each resident model chosen so far to its (runtime, placement, MiB taken); `full` is
    the host's budget."""
    survivors = [v for v in plan.candidates if v.verdict == "survivor"]
    if shared is not None:  # resident: must fit beside the resident models chosen so far
        fitting = []
        for verdict in survivors:
            if verdict.model in loaded:  # already resident for another role: that one copy, on its runtime,
                runtime, placement, taken = loaded[verdict.model]  # with the cache of the longest context
                extra = verdict.memory.mb - taken
                if extra <= 0 or extra <= shared.room(placement):
                    if extra > 0:
                        shared.take(extra, "cpu" if placement == "split" else placement)
                        loaded[verdict.model] = (runtime, placement, verdict.memory.mb)
                    verdict.runtime, verdict.placement = runtime, placement
                    fitting.append(verdict)
                    continue
                verdict.reason = (f"resident for another role; its {verdict.memory.context:,}-token context needs "
                                  f"{extra:,} MiB more, {shared.room(placement):,} MiB left beside the resident roles")
                verdict.verdict, verdict.placement = "rejected", None
                continue
            runtime, placement = first_placed(shared, verdict.memory.mb, verdict.options) or (None, None)
            if shared.slots is not None and len(loaded) >= shared.slots:
                verdict.reason = f"max_loaded_models ({shared.slots}) reached by the resident roles packed before it"
            elif placement is None:
                verdict.reason = (f"needs {verdict.memory.mb:,} MiB, {shared.capacity():,} MiB left beside "
                                  f"the resident roles packed before it")
            else:
                verdict.placement, verdict.runtime = placement, runtime
                _judge(verdict, catalog, host, full, shared, screen(plan.name, catalog))  # beside the others
                if verdict.verdict == "survivor":
                    fitting.append(verdict)
                continue
            verdict.verdict, verdict.placement = "rejected", None
        survivors = fitting
    if survivors:
        # a tight fit only when nothing comfortable serves the role
        pool = [v for v in survivors if v.fit == fit.COMFORTABLE] or survivors
        ranked: list[Verdict] = []  # best_fit's order, best first
        if plan.strategy == "largest_fit":
            chosen = max(pool, key=lambda v: v.size)  # max keeps the first of equals
        elif plan.strategy == "best_fit":
            # quality never buys a crawl: a model read as dense (active parameters unknown) or too
            # large for the memory's bandwidth wins on parameters alone unless a floor keeps it back
            floor = catalog.selection["speed_floor"]
            pool = [v for v in pool if v.speed and v.speed.tokens_per_s >= floor] or pool
            role = catalog.roles[plan.name]
            brisk = (full.vram_mb > 0 and SPEED_MARGIN * floor) or None

            newest = max((str(catalog.models[v.model].get("release_date") or "") for v in pool), default="")

            def rank(v: Verdict) -> tuple:
                return quality(catalog.models[v.model], role,
                               bool(brisk and v.speed and v.speed.tokens_per_s >= brisk), newest)
            ranked = sorted(sorted(pool, key=lambda v: v.model), key=rank, reverse=True)  # equal: the first id
            chosen = ranked[0]
        else:
            chosen = pool[0]
        chosen.verdict, chosen.reason = "chosen", f"{plan.strategy}: {chosen.describe()}"
        if plan.strategy == "best_fit" and len(ranked) > 1:
            chosen.reason += "; " + why_best(rank(chosen), rank(ranked[1]), ranked[1].model)
        if plan.strategy == "best_fit" and chosen.speed and chosen.speed.tokens_per_s < catalog.selection["speed_floor"]:
            chosen.reason += (f"; {chosen.speed.rate}, below selection.speed_floor "
                              f"{catalog.selection['speed_floor']:g}: nothing faster serves the role")
        if chosen.fit == fit.TIGHT:
            chosen.reason += "; no comfortable candidate serves the role"
        plan.model, plan.placement, plan.memory_mb = chosen.model, chosen.placement, chosen.memory.mb
        plan.runtime, plan.fit, plan.speed = chosen.runtime, chosen.fit, chosen.speed
        plan.variant = catalog.models[chosen.model].get("variant")
        plan.context = chosen.memory.context  # what the memory was sized for: the loader's n_ctx
        if shared is not None and chosen.model not in loaded:
            shared.take(chosen.memory.mb, chosen.placement, _movable_experts(chosen, catalog, shared))
            loaded[chosen.model] = (chosen.runtime, chosen.placement, chosen.memory.mb)
    limit = catalog.selection["max_fallbacks"]
    for verdict in survivors:
        if verdict.verdict == "survivor" and len(plan.fallbacks) < limit:
            verdict.verdict = "fallback"
            plan.fallbacks.append(verdict.model)
            plan.fallback_runtimes[verdict.model] = verdict.runtime
    if catalog.selection["allow_cloud"]:
        plan.fallbacks.extend(ref for ref in plan.cloud if ref not in plan.fallbacks)
    elif plan.cloud:
        plan.note = "cloud fallbacks left out: selection.allow_cloud is false"


def _movable_experts(verdict: Verdict, catalog: Catalog, budget: Budget) -> float:
    """The expert weights (MiB) of a split whose runtime keeps expert tensors in RAM, where it does
    (attention, shared weights and KV on the GPU, as offload.py lays it out); 0 otherwise."""
    runtime = runtimes.REGISTRY.get(verdict.runtime or "")
    if verdict.placement != "split" or runtime is None or not runtime.expert_offload:
        return 0
    experts = expert_weights_mib(catalog.models[verdict.model], verdict.memory.weights_mb)
    return experts if verdict.memory.mb - experts <= budget.vram_mb else 0


def _gpu_vram(host: Host) -> tuple[int, ...]:
    """Each GPU's VRAM in MiB, in the host's order (offload.py's `gpu_vram`)."""
    return tuple(gpu.vram_mb for gpu in host.gpus)


def _offload(plan: RolePlan, catalog: Catalog, host: Host, vram_mb: int, fallback_vram_mb: int) -> None:
    """The GPU settings of the role's model (with `vram_mb` left for it) and of each local fallback (which
    loads only when the model failed: with the whole VRAM, or a resident role's beside the other resident
    models, with the VRAM they leave, as its speed was judged), for runtimes that take them."""
    gpus = _gpu_vram(host)
    for verdict in plan.candidates:
        runtime = runtimes.REGISTRY.get(verdict.runtime or "")
        if verdict.verdict not in ("chosen", "fallback") or runtime is None or not runtime.offload:
            continue
        settings = offload(catalog.models[verdict.model], verdict.memory, verdict.placement,
                           vram_mb if verdict.verdict == "chosen" else fallback_vram_mb, gpus)
        if settings is None:
            continue
        if verdict.verdict == "chosen":
            plan.offload = settings
        else:
            plan.fallback_offload[verdict.model] = settings


def _one_copy(plans: dict[str, RolePlan], catalog: Catalog, host: Host) -> dict[tuple[str, str], str]:
    """Resident roles on one model share its one copy, sized for the longest of their contexts: each runs
    with that copy's GPU settings (in a MoE split the KV cache stays on the GPU, so a longer context keeps
    more expert layers in RAM), its speed read from them at its own context. Returns the (role, model)
    pairs that copy leaves below the role's speed_min, with the reason."""
    slow = {}
    for model_id in sorted({p.model for p in plans.values() if p.resident and p.model}):
        sharing = [p for p in plans.values() if p.resident and p.model == model_id]
        vram = sharing[0].copy_vram
        if len(sharing) < 2 or sharing[0].offload is None:
            continue
        chosen = {p.name: p.chosen() for p in sharing}
        largest = max(sharing, key=lambda p: (p.memory_mb, p.name))
        copy = offload(catalog.models[model_id], chosen[largest.name].memory, largest.placement, vram,
                       _gpu_vram(host))
        for plan in sharing:
            if _laid_out(plan, chosen[plan.name], catalog, host, vram, copy):
                slow[(plan.name, model_id)] = (
                    f"{plan.speed.rate} on {plan.placement} with the one resident copy it would "
                    f"share with role {largest.name!r} (laid out for {largest.context:,} tokens) < required "
                    f"{screen(plan.name, catalog).speed_min:g}")
    return slow


def _tight(plan: RolePlan, host: Host, catalog: Catalog) -> Diagnostic:
    """W320: the role runs a pick above selection.max_fill, as nothing comfortable serves it."""
    file, line, col = origin(catalog.layers, ("roles", plan.name))
    chosen = plan.chosen()
    return Diagnostic(file, line, col, "W320",
                      f"role {plan.name!r} on host {host.name!r} runs {plan.model!r} tight: {chosen.fill}; "
                      f"no comfortable candidate serves it",
                      "add a smaller model or quantization to the role, lower its context_min, or raise "
                      "selection.max_fill", severity="warning")


def _unserved(plan: RolePlan, host: Host, budget: Budget, catalog: Catalog) -> Diagnostic:
    file, line, col = origin(catalog.layers, ("roles", plan.name))
    short = [v for v in plan.candidates if v.memory is not None and v.verdict == "rejected" and not v.too_slow]
    if short:
        smallest = min(short, key=lambda v: (v.memory.mb, v.model))
        lack = smallest.memory.mb - smallest.capacity
        detail = (f"the smallest candidate {smallest.model!r} needs {smallest.memory.mb:,} MiB, "
                  f"{lack:,} MiB more than the {smallest.capacity:,} MiB usable")
        if lack <= 0:
            detail = (f"the smallest candidate {smallest.model!r} needs {smallest.memory.mb:,} MiB and does not fit "
                      f"beside the other resident roles")
        hint = "add a smaller model to the role, lower ram_reserve_gb, or mark the role `required: false`"
    elif plan.candidates:
        detail = "no candidate meets the requirements (" + "; ".join(
            f"{v.model}: {v.describe()}" for v in plan.candidates[:3]) + ")"
        hint = "relax the role's `requires` or add a model that meets them"
    else:
        detail = f"no model serves workload {plan.workload!r}"
        hint = f"add a model with `workloads: [{plan.workload}]` or a `prefer` list"
    return Diagnostic(file, line, col, "E300",
                      f"required role {plan.name!r} cannot be served on host {host.name!r}: {detail}", hint)
