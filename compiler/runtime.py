"""The reader applications use: find the compiled catalog, route a call to a model, record it.

Standard library only (with compiler/paths.py and compiler/usage.py), so any Python application can
vendor the three files or import them without hostfit's dependencies. Priority:
$XDG_DATA_HOME/hostfit/models.json (what `hostfit apply` installs), then a path the application ships, then a minimal built-in catalog (`test`, `silent`) so an
application still starts on a machine where nothing was applied. A catalog of an older schema
version is migrated in memory, a newer or broken one passed over, each with a RuntimeCatalogWarning.

    from compiler.runtime import Runtime
    rt = Runtime.load(app_default="config/models.json")
    rt.model_for("coder")      # -> {"id": ..., "provider": ..., "artifact": {...}, ...} or None
    with rt.call("coder") as call:           # routed: see Runtime.route
        reply = my_client(call.model["id"], prompt)
        call.tokens(reply.prompt_tokens, reply.completion_tokens)   # recorded in the usage store
"""

from __future__ import annotations

import difflib
import json
import os
import time
import warnings
from pathlib import Path

from . import usage
from .paths import installed_catalog

SCHEMA_VERSION = 2
BREAKER_THRESHOLD = 3  # consecutive failures of a model that open its circuit breaker
BREAKER_COOLDOWN_S = 60.0  # seconds an open breaker skips the model; then one trial call is let through
REQUIRED = ("schema_version", "host", "roles", "models", "aliases")
BUILTIN = {
    "schema_version": SCHEMA_VERSION,
    "host": {"name": "builtin", "ram_mb": 0, "usable_mb": 0, "gpus": [], "detected": False},
    "profiles": [],
    "roles": {},
    "models": {
        "test": {"provider": "builtin", "workloads": ["chat"], "description": "echoes its prompt, for tests",
                 "memory_mb": 0, "memory_method": "cloud"},
        "silent": {"provider": "builtin", "workloads": ["chat"], "description": "answers nothing",
                   "memory_mb": 0, "memory_method": "cloud"},
    },
    "aliases": {},
}


def installed_path() -> Path:
    return installed_catalog()


class RuntimeCatalogError(ValueError):
    pass


class RuntimeCatalogWarning(UserWarning):
    """An installed or shipped catalog was migrated from an older version, or passed over."""


class RouteError(LookupError):
    """No model can take the call: unknown model or role, or every candidate's breaker is open."""


def check(document) -> dict:
    if not isinstance(document, dict) or any(key not in document for key in REQUIRED):
        raise RuntimeCatalogError("not a compiled hostfit catalog")
    if document["schema_version"] != SCHEMA_VERSION:
        raise RuntimeCatalogError(f"schema_version {document['schema_version']!r}; this reader knows {SCHEMA_VERSION}")
    # the shapes this reader walks: a wrong one is a broken catalog (passed over), never an application's crash
    if not all(isinstance(document[key], dict) for key in ("host", "roles", "models", "aliases")) \
            or not all(isinstance(spec, dict) for spec in (*document["roles"].values(), *document["models"].values())) \
            or not all(isinstance(spec.get("fallbacks", []), list) for spec in document["roles"].values()):
        raise RuntimeCatalogError("not a compiled hostfit catalog (a section of the wrong shape)")
    return document


def _upgrade_1(document: dict) -> dict:
    """Version 1 models.json: roles could name their model as a bare string, and `profiles`,
    `aliases` and a role's `fallbacks` were optional (aliases were only listed on each model)."""
    roles = document.get("roles") or {}
    if isinstance(roles, dict):  # another shape is left for check() to refuse
        roles = {name: {"model": spec, "fallbacks": []} if isinstance(spec, str) or spec is None
                 else {"fallbacks": [], **spec} if isinstance(spec, dict) else spec for name, spec in roles.items()}
    return {"host": {"name": "unknown", "ram_mb": 0, "usable_mb": 0, "gpus": [], "detected": False},
            "profiles": [], "aliases": {}, **document, "roles": roles, "schema_version": 2}


UPGRADES = {1: _upgrade_1}  # version N -> N+1, applied in memory when a catalog is read


def migrate(document) -> tuple[dict, int | None]:
    """(a current-version document, the version it was written in when older, else None)."""
    if not isinstance(document, dict):
        raise RuntimeCatalogError("not a compiled hostfit catalog")
    if "role_mappings" in document or "model_profiles" in document:
        raise RuntimeCatalogError("a version-1 source catalog, not a compiled one (`hostfit build` compiles it)")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RuntimeCatalogError(f"schema_version {version!r} is not a version this reader knows")
    if version > SCHEMA_VERSION:
        raise RuntimeCatalogError(f"schema_version {version} is newer than this reader's {SCHEMA_VERSION}"
                                  " (update hostfit's compiler/runtime.py)")
    if not isinstance(document.get("models"), dict):
        raise RuntimeCatalogError("not a compiled hostfit catalog (no models)")
    older = version if version < SCHEMA_VERSION else None
    while version < SCHEMA_VERSION:
        document = UPGRADES[version](document)
        version = document["schema_version"]
    return check(document), older


class Breaker:
    """Per model: `threshold` failures in a row open it for `cooldown_s`; then one trial call is allowed,
    and its success closes the breaker, its failure opens it again. `clock` is injectable for tests."""

    def __init__(self, threshold: int = BREAKER_THRESHOLD, cooldown_s: float = BREAKER_COOLDOWN_S,
                 clock=time.monotonic):
        self.threshold, self.cooldown_s, self.clock = threshold, cooldown_s, clock
        self.failures: dict[str, int] = {}
        self.opened: dict[str, float] = {}  # model -> when its breaker opened

    def allows(self, model_id: str) -> bool:
        opened = self.opened.get(model_id)
        return opened is None or self.clock() - opened >= self.cooldown_s

    def success(self, model_id: str) -> None:
        self.failures.pop(model_id, None)
        self.opened.pop(model_id, None)

    def failure(self, model_id: str) -> None:
        self.failures[model_id] = self.failures.get(model_id, 0) + 1
        if self.failures[model_id] >= self.threshold or model_id in self.opened:  # a failed trial re-opens
            self.opened[model_id] = self.clock()


def cost_usd(model: dict, tokens_in: int | None, tokens_out: int | None) -> float | None:
    """What a call cost: the catalog's pricing per million tokens; 0 for a local model; None when unknown."""
    pricing = model.get("pricing")
    if isinstance(pricing, dict):
        return ((tokens_in or 0) * pricing.get("input_per_mtok", 0) +
                (tokens_out or 0) * pricing.get("output_per_mtok", 0)) / 1e6
    return None if model.get("memory_method") == "cloud" else 0.0


class Call:
    """One timed call (`with rt.call(...) as call:`); recorded when the block ends, an exception as a failure."""

    def __init__(self, runtime: "Runtime", role: str | None, model: dict):
        self.runtime, self.role, self.model = runtime, role, model
        self.tokens_in = self.tokens_out = None
        self.error: str | None = None
        self._start = 0.0

    def tokens(self, tokens_in: int | None, tokens_out: int | None) -> None:
        self.tokens_in, self.tokens_out = tokens_in, tokens_out

    def fail(self, error: str = "failed") -> None:
        """Mark the call failed without raising (an empty answer, a refusal)."""
        self.error = error

    def __enter__(self) -> "Call":
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        latency_ms = (time.perf_counter() - self._start) * 1000
        if exc_type is not None:
            self.error = exc_type.__name__
        ok = self.error is None
        model_id = self.model["id"]
        (self.runtime.breaker.success if ok else self.runtime.breaker.failure)(model_id)
        if self.runtime.store is not None:
            self.runtime.store.record_call(self.role, model_id, self.model.get("provider"), ok, self.error,
                                           latency_ms, self.tokens_in, self.tokens_out,
                                           cost_usd(self.model, self.tokens_in, self.tokens_out))
        return False  # the application's exception goes on


class Runtime:
    def __init__(self, document: dict, source: str, *, store: "usage.Store | None" = None,
                 breaker: Breaker | None = None):
        self.document, self.source = check(document), source
        self.store, self.breaker = store, breaker or Breaker()
        # every model by its id and by each alias, the catalog's alias map first, then each model's own list
        self._names = {model_id.lower(): model_id for model_id in document["models"]}
        for alias, model_id in document["aliases"].items():
            if model_id in document["models"]:
                self._names.setdefault(alias.lower(), model_id)
        for model_id, spec in document["models"].items():
            for alias in (spec.get("aliases") or []) if isinstance(spec, dict) else []:
                self._names.setdefault(str(alias).lower(), model_id)
        # a variant (one quantization of a model declaring `variants`) also answers to its model's id;
        # the variant a role picked first, as the one an application naming the model most likely means
        picked = [spec.get("model") for spec in document["roles"].values() if isinstance(spec, dict)]
        for model_id in [*picked, *sorted(document["models"])]:
            base = (document["models"].get(model_id) or {}).get("variant_of") if model_id else None
            if isinstance(base, str):
                self._names.setdefault(base.lower(), model_id)

    @classmethod
    def load(cls, app_default: str | os.PathLike | None = None, *,
             usage_store: "usage.Store | str | os.PathLike | bool | None" = None) -> "Runtime":
        """The first usable catalog in priority order; an older one is migrated, a broken or newer one
        passed over, each with a RuntimeCatalogWarning. `usage_store`: None the default store
        ($XDG_STATE_HOME/hostfit/usage.sqlite3), False records nothing, else a Store or a path."""
        if usage_store is None or usage_store is True:
            store = usage.Store()
        elif usage_store is False:
            store = None
        else:
            store = usage_store if isinstance(usage_store, usage.Store) else usage.Store(usage_store)
        for path in (installed_path(), Path(app_default) if app_default else None):
            if path is None or not path.is_file():
                continue
            try:
                document, older = migrate(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                warnings.warn(f"W602 hostfit catalog {path} passed over: {exc}", RuntimeCatalogWarning, stacklevel=2)
                continue
            if older is not None:
                warnings.warn(f"W601 hostfit catalog {path} has schema_version {older}; read as version "
                              f"{SCHEMA_VERSION} (reinstall it with `hostfit apply` to update the file)",
                              RuntimeCatalogWarning, stacklevel=2)
            return cls(document, str(path), store=store)
        return cls(BUILTIN, "builtin", store=store)

    def resolve(self, name: str) -> str | None:
        """A model id from an id or alias, case-insensitively."""
        return self._names.get(str(name).lower())

    def model(self, name: str) -> dict | None:
        model_id = self.resolve(name)
        return {"id": model_id, **self.document["models"][model_id]} if model_id else None

    def model_for(self, role: str) -> dict | None:
        """The role's model, else the first of its fallbacks, else (built-in catalog) `test`."""
        spec = self.document["roles"].get(role)
        if spec is None:
            return self.model("test") if self.source == "builtin" else None
        for model_id in [spec.get("model"), *spec.get("fallbacks", [])]:
            if model_id:
                return self.model(model_id)
        return None

    def route(self, role: str | None = None, model: str | None = None, provider: str | None = None) -> dict:
        """The model to call: `model` if given, else the models of provider `provider`, else the role's
        model, then its fallbacks, in that order, skipping any model whose circuit breaker is open."""
        candidates = self._candidates(role, model, provider)
        for model_id in candidates:
            if self.breaker.allows(model_id):
                return self.model(model_id)
        raise RouteError(f"every candidate has failed {self.breaker.threshold} times in a row and is resting "
                         f"for {self.breaker.cooldown_s:g} s: {', '.join(candidates)}")

    def call(self, role: str | None = None, model: str | None = None, provider: str | None = None) -> Call:
        """A routed call, timed and recorded: `with rt.call("chat") as call: ...; call.tokens(i, o)`."""
        return Call(self, role, self.route(role, model, provider))

    def _candidates(self, role, model, provider) -> list[str]:
        if role is None and model is None and provider is None:
            raise RouteError("route needs a role, a model or a provider")
        models = self.document["models"]
        found: list[str] = []
        if model is not None:
            model_id = self.resolve(model)
            if model_id is None:
                close = difflib.get_close_matches(str(model).lower(), list(self._names), n=1)
                raise RouteError(f"unknown model {model!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            found.append(model_id)
        chain: list[str] = []
        spec = self.document["roles"].get(role) if role is not None else None
        if role is not None:
            if spec is None and self.source != "builtin":
                close = difflib.get_close_matches(role, list(self.document["roles"]), n=1)
                raise RouteError(f"unknown role {role!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            chain = [self.resolve(m) for m in ([spec.get("model"), *spec.get("fallbacks", [])] if spec else ["test"])
                     if m and self.resolve(m)]
        if provider is not None:
            wanted = str(provider).lower()
            workload = (spec or {}).get("workload")
            others = sorted((m for m, s in models.items() if str(s.get("provider", "")).lower() == wanted
                             and (workload is None or workload in s.get("workloads", []))),
                            key=lambda m: (models[m].get("priority", 100), m))
            found += [m for m in chain if str(models[m].get("provider", "")).lower() == wanted] + others
        found += chain
        unique = list(dict.fromkeys(found))
        if not unique:
            asked = ([f"for role {role!r}"] if role is not None else []) + (
                [f"from provider {provider!r}"] if provider is not None else [])
            raise RouteError(" ".join(["no model", *asked]))
        return unique
