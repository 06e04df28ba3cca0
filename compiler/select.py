"""Select stage: for one host, which model serves each role, what follows it, and why.

Candidates are the role's `prefer` list in order, else every active local model serving the
role's workload ordered by priority (lower first), recommended first, larger first. Each is
rejected with a reason or survives; `first_fit` takes the first survivor, `largest_fit` the
largest (recommended first). Roles marked `resident` are packed into one shared budget (RAM,
VRAM and `max_loaded_models`); other roles are loaded one at a time and each gets the whole
budget. Cloud models are never chosen, only appended to the fallback chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Diagnostic
from .hosts import GIB_IN_MB, Host
from .memory import DEFAULT_KV_CACHE, Estimate, estimate, is_cloud
from .merge import origin
from .resolve import Catalog

ELIGIBLE_STATUS = ("active", "deprecated")
TRACE_LIMIT = 200  # candidates kept per role in explain.json; the rest are counted
CAPABILITIES = ("reasoning", "coding", "creativity", "multilingual")


@dataclass
class Budget:
    ram_mb: int
    vram_mb: int
    slots: int | None  # max_loaded_models for resident roles; None = no limit

    def place(self, need_mb: int) -> str | None:
        if self.vram_mb and need_mb <= self.vram_mb:
            return "gpu"
        if self.vram_mb and need_mb <= self.vram_mb + self.ram_mb:
            return "split"
        if need_mb <= self.ram_mb:
            return "cpu"
        return None

    def capacity(self) -> int:
        return self.vram_mb + self.ram_mb

    def take(self, need_mb: int, placement: str) -> None:
        if placement == "gpu":
            self.vram_mb -= need_mb
        elif placement == "split":
            self.ram_mb -= need_mb - self.vram_mb
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
    size: tuple = ()  # largest_fit's order: recommended first, then parameters, then memory
    capacity: int = 0  # MiB usable when it was judged

    def describe(self) -> str:
        if self.reason:
            return self.reason
        if self.placement:
            return f"fits ({self.placement})"
        return f"needs {self.memory.mb:,} MiB, {self.capacity:,} MiB usable"

    def to_dict(self) -> dict:
        out = {"model": self.model, "verdict": self.verdict, "reason": self.describe(), "placement": self.placement}
        if self.memory is not None:
            out["memory_mb"] = self.memory.mb
            out["memory"] = self.memory.to_dict()
        return out


@dataclass
class RolePlan:
    name: str
    workload: str
    required: bool
    resident: bool
    strategy: str
    context: int
    model: str | None = None
    fallbacks: list[str] = field(default_factory=list)
    placement: str | None = None
    memory_mb: int | None = None
    candidates: list[Verdict] = field(default_factory=list)
    cloud: list[str] = field(default_factory=list)
    note: str = ""
    kv_cache_type: str = DEFAULT_KV_CACHE  # what the memory was sized for: the loader's cache type

    def output(self) -> dict:
        out = {"model": self.model, "fallbacks": self.fallbacks, "placement": self.placement,
               "memory_mb": self.memory_mb, "context": self.context, "workload": self.workload,
               "required": self.required, "resident": self.resident}
        if self.kv_cache_type != DEFAULT_KV_CACHE:  # only then: outputs with the default stay as they were
            out["kv_cache_type"] = self.kv_cache_type
        return out

    def trace(self) -> dict:
        kept = self.candidates[:TRACE_LIMIT]
        out = {"workload": self.workload, "strategy": self.strategy, "context": self.context,
               "required": self.required, "resident": self.resident, "chosen": self.model,
               "fallbacks": self.fallbacks, "note": self.note, "candidates": [v.to_dict() for v in kept]}
        if len(self.candidates) > TRACE_LIMIT:
            out["omitted_candidates"] = len(self.candidates) - TRACE_LIMIT
        return out


@dataclass
class Plan:
    host: Host
    budget: Budget
    roles: dict[str, RolePlan]
    diagnostics: list[Diagnostic]

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
    if host.gpus and not host.unified_memory:
        vram = max(0, int(host.vram_mb - selection["vram_reserve_gb"] * GIB_IN_MB))
    return Budget(ram, vram, host.max_loaded_models)


def select(catalog: Catalog, host: Host) -> Plan:
    budget = host_budget(host, catalog.selection)
    plans = {name: _evaluate(name, catalog, budget) for name in catalog.roles}
    shared = Budget(budget.ram_mb, budget.vram_mb, budget.slots)
    loaded: dict[str, str] = {}
    for plan in sorted(plans.values(), key=lambda p: (not p.resident, not p.required, p.name)):
        _choose(plan, catalog, shared if plan.resident else None, loaded)
    diagnostics = [_unserved(plan, host, budget, catalog) for plan in plans.values()
                   if plan.required and plan.model is None]
    return Plan(host, budget, plans, diagnostics)


@dataclass(frozen=True)
class Screened:
    """A role's candidates judged on everything but memory fit, which depends on the host."""

    strategy: str
    context: int
    candidates: tuple[tuple[str, str | None, Estimate | None, tuple], ...]  # (model, rejection, need, size)
    cloud: tuple[str, ...]
    kv_cache_type: str = DEFAULT_KV_CACHE


def screen(name: str, catalog: Catalog) -> Screened:
    key = ("screen", name)
    if key not in catalog.memo:
        catalog.memo[key] = _screen(catalog.roles[name], catalog)
    return catalog.memo[key]


def _screen(role: dict, catalog: Catalog) -> Screened:
    selection = catalog.selection
    strategy = role.get("strategy") or selection["strategy"]
    if strategy == "auto":
        strategy = "first_fit" if role.get("prefer") else "largest_fit"
    requires = role.get("requires") or {}
    context = requires.get("context_min") or selection["context_default"]
    cache_type = role.get("kv_cache_type") or selection.get("kv_cache_type")  # None: arch.kv_bytes, else f16
    candidates = []
    for model_id in _candidate_ids(role, catalog):
        model = catalog.models[model_id]
        if is_cloud(model):
            candidates.append((model_id, "cloud models serve only as fallbacks", None, ()))
        elif model.get("status") not in ELIGIBLE_STATUS:
            candidates.append((model_id, f"status is {model.get('status')}", None, ()))
        else:
            problem = _requirement_problem(model, requires, context)
            need = None if problem else estimate(model, context, selection["runtime_overhead_mb"], cache_type)
            size = (bool(model.get("recommended")), model.get("params_b") or 0, need.mb if need else 0)
            candidates.append((model_id, problem, need, size))
    cloud = tuple(ref for ref in [*(role.get("prefer") or ()), *(role.get("fallback") or ())]
                  if ref in catalog.models and is_cloud(catalog.models[ref]))
    return Screened(strategy, context, tuple(candidates), cloud, cache_type or DEFAULT_KV_CACHE)


def _candidate_ids(role: dict, catalog: Catalog) -> list[str]:
    if role.get("prefer"):
        ids = [ref for ref in role["prefer"] if ref in catalog.models]
    else:
        workload = role["workload"]
        pool = [(model_id, m) for model_id, m in catalog.models.items()
                if workload in (m.get("workloads") or ()) and not is_cloud(m)
                and m.get("status") in ELIGIBLE_STATUS]
        pool.sort(key=lambda item: (item[1].get("priority", 100), not item[1].get("recommended"),
                                    -(item[1].get("params_b") or 0), item[0]))
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


def _evaluate(name: str, catalog: Catalog, budget: Budget) -> RolePlan:
    role = catalog.roles[name]
    screened = screen(name, catalog)
    plan = RolePlan(name, role["workload"], bool(role.get("required", False)), bool(role.get("resident", False)),
                    screened.strategy, screened.context, cloud=list(screened.cloud),
                    kv_cache_type=screened.kv_cache_type)
    verdicts = plan.candidates
    capacity = budget.capacity()
    for model_id, problem, need, size in screened.candidates:
        if problem:
            verdicts.append(Verdict(model_id, "rejected", problem))
            continue
        placement = budget.place(need.mb)
        verdicts.append(Verdict(model_id, "rejected" if placement is None else "survivor", "", need, placement,
                                size, capacity))
    return plan


def _choose(plan: RolePlan, catalog: Catalog, shared: Budget | None, loaded: dict[str, str]) -> None:
    """Pick the role's model and fallbacks; a resident role also takes its share of `shared`.

    `loaded` maps each resident model chosen so far to its placement."""
    survivors = [v for v in plan.candidates if v.verdict == "survivor"]
    if shared is not None:  # resident: must fit beside the resident models chosen so far
        fitting = []
        for verdict in survivors:
            if verdict.model in loaded:  # already resident for another role: it costs nothing more
                verdict.placement = loaded[verdict.model]
                fitting.append(verdict)
                continue
            placement = shared.place(verdict.memory.mb)
            if shared.slots is not None and len(loaded) >= shared.slots:
                verdict.reason = f"max_loaded_models ({shared.slots}) reached by the resident roles packed before it"
            elif placement is None:
                verdict.reason = (f"needs {verdict.memory.mb:,} MiB, {shared.capacity():,} MiB left beside "
                                  f"the resident roles packed before it")
            else:
                verdict.placement = placement
                fitting.append(verdict)
                continue
            verdict.verdict, verdict.placement = "rejected", None
        survivors = fitting
    if survivors:
        if plan.strategy == "largest_fit":
            chosen = max(survivors, key=lambda v: v.size)  # max keeps the first of equals
        else:
            chosen = survivors[0]
        chosen.verdict, chosen.reason = "chosen", f"{plan.strategy}: {chosen.describe()}"
        plan.model, plan.placement, plan.memory_mb = chosen.model, chosen.placement, chosen.memory.mb
        plan.context = chosen.memory.context  # what the memory was sized for: the loader's n_ctx
        if shared is not None and chosen.model not in loaded:
            shared.take(chosen.memory.mb, chosen.placement)
            loaded[chosen.model] = chosen.placement
    limit = catalog.selection["max_fallbacks"]
    for verdict in survivors:
        if verdict.verdict == "survivor" and len(plan.fallbacks) < limit:
            verdict.verdict = "fallback"
            plan.fallbacks.append(verdict.model)
    if catalog.selection["allow_cloud"]:
        plan.fallbacks.extend(ref for ref in plan.cloud if ref not in plan.fallbacks)
    elif plan.cloud:
        plan.note = "cloud fallbacks left out: selection.allow_cloud is false"


def _unserved(plan: RolePlan, host: Host, budget: Budget, catalog: Catalog) -> Diagnostic:
    file, line, col = origin(catalog.layers, ("roles", plan.name))
    short = [v for v in plan.candidates if v.memory is not None and v.verdict == "rejected"]
    if short:
        smallest = min(short, key=lambda v: (v.memory.mb, v.model))
        lack = smallest.memory.mb - budget.capacity()
        detail = (f"the smallest candidate {smallest.model!r} needs {smallest.memory.mb:,} MiB, "
                  f"{lack:,} MiB more than the {budget.capacity():,} MiB usable")
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
