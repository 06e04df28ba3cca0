"""The usage store (compiler/usage.py), recording and routing in compiler/runtime.py, and `hostfit stats`."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from compiler import usage
from compiler.runtime import Breaker, RouteError, Runtime, RuntimeCatalogWarning, cost_usd
from conftest import run_cli

REPO = Path(__file__).parent.parent
DAY = 86400.0
NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15): the fixtures' timestamps are relative to it


def catalog(**roles) -> dict:
    """A compiled models.json with two local models, two cloud ones and the given roles."""
    return {
        "schema_version": 2,
        "host": {"name": "box", "ram_mb": 16384, "usable_mb": 14000, "gpus": [], "detected": False},
        "profiles": [],
        "roles": roles or {
            "chat": {"model": "local-a", "fallbacks": ["local-b", "cloud-c"], "placement": "cpu", "memory_mb": 4000,
                     "workload": "chat"},
        },
        "models": {
            "local-a": {"provider": "local", "workloads": ["chat"], "memory_mb": 4000, "memory_method": "estimated",
                        "aliases": ["Alpha"]},
            "local-b": {"provider": "local", "workloads": ["chat"], "memory_mb": 3000, "memory_method": "estimated"},
            "cloud-c": {"provider": "openai", "workloads": ["chat"], "memory_mb": 0, "memory_method": "cloud",
                        "pricing": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}, "priority": 50},
            "cloud-d": {"provider": "OpenAI", "workloads": ["chat"], "memory_mb": 0, "memory_method": "cloud",
                        "priority": 10},
        },
        "aliases": {"bee": "local-b"},
    }


class Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------ the store

def _writer(path: str, count: int, queue) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = usage.Store(path)
        written = sum(store.record_call("chat", f"model-{i % 3}", "local", True, None, 1.0, 1, 2, 0.0)
                      for i in range(count))
        store.close()
    queue.put((written, [str(w.message) for w in caught]))


def test_eight_processes_recording_at_once_lose_nothing(tmp_path):
    path, processes, each = str(tmp_path / "usage.sqlite3"), 8, 2000
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_writer, args=(path, each, queue)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert [written for written, _ in results] == [each] * processes, "every record_call reported success"
    assert all(not caught for _, caught in results), "no warning (no 'database is locked') in any writer"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == processes * each
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_schema_version_is_migrated_on_open(tmp_path):
    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript((REPO / "tests" / "data" / "usage-v1.sql").read_text())
    store = usage.Store(path, clock=Clock(1795000010.0))
    assert store.record_call("chat", "gpt-4o-mini", "openai", True, None, 50.0, 1000, 500, 0.00045)
    assert store.record_measurement(host="box", model="phi-3-mini", decode_tps=9.5)
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == usage.SCHEMA_VERSION
        rows = db.execute("SELECT model, provider, ok, error, cost_usd FROM calls ORDER BY ts").fetchall()
    assert rows == [("phi-3-mini", None, 1, None, None), ("phi-3-mini", None, 0, "TimeoutError", None),
                    ("qwen2.5-coder-7b-q5", None, 1, None, None), ("gpt-4o-mini", "openai", 1, None, 0.00045)]
    summary = {(g["model"], g["role"]): g for g in usage.Store(path).summary()}
    assert summary[("phi-3-mini", "chat")]["calls"] == 2 and summary[("phi-3-mini", "chat")]["ok"] == 1


def test_a_version_2_store_gains_ok_and_kv_cache_type_on_open(tmp_path):
    """Version 3 adds what the measured layer needs; the measurements already there were successful loads
    with the default cache, and read back as such."""
    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript((REPO / "tests" / "data" / "usage-v2.sql").read_text())
    store = usage.Store(path, clock=Clock(1795000300.0))
    assert store.record_measurement(host="box", model="phi-3-mini", runtime="llamacpp", placement="cpu",
                                    context=4096, kv_cache_type="q8_0", ok=False, source="bench")
    rows = store.measurements(host="box")
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == usage.SCHEMA_VERSION == 3
    assert [(r["ok"], r["kv_cache_type"], r["source"]) for r in rows] == [
        (True, None, "bench"), (True, None, "load"), (False, "q8_0", "bench")]
    assert (rows[0]["decode_tps"], rows[0]["peak_rss_mib"], rows[0]["ts"]) == (9.5, 2900.0, 1795000100.0)
    assert set(rows[0]) == set(usage.MEASUREMENT_FIELDS)


def test_a_newer_schema_version_is_refused_not_rewritten(tmp_path):
    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {usage.SCHEMA_VERSION + 1}")
    with pytest.warns(usage.UsageWarning, match="newer") as caught:
        assert not usage.Store(path).record_call("chat", "m", "local", True)
    advice = str(caught[0].message)
    assert "upgrade hostfit" in advice.lower() and "--repair" not in advice, "a repair would rebuild it at the older schema"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == usage.SCHEMA_VERSION + 1


def truncated_store(folder: Path) -> Path:
    path = folder / "usage.sqlite3"
    store = usage.Store(path)
    for i in range(3000):
        store.record_call("chat", "local-a", "local", True, None, float(i), 10, 20, 0.0)
    store.record_measurement(host="box", model="local-a", decode_tps=10.0)
    store.close()
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 3)
    return path


def test_a_truncated_store_warns_once_the_application_keeps_working_and_repair_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTFIT_STATE", str(tmp_path))
    path = truncated_store(tmp_path)
    rt = Runtime(catalog(), "test", store=usage.Store(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            with rt.call("chat") as call:
                call.tokens(3, 4)
    assert [w.category for w in caught] == [usage.UsageWarning], "exactly one warning for all five calls"
    assert "stats --repair" in str(caught[0].message)
    broken = run_cli("stats")
    assert broken.exit_code == 3 and "E600" in broken.stderr and "--repair" in broken.stderr
    repaired = run_cli("stats", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "rebuilt" in repaired.stdout and list(tmp_path.glob("usage.sqlite3.broken-*"))
    assert usage.Store(path).record_call("chat", "local-a", "local", True, None, 5.0)
    after = run_cli("stats", "--format", "json")
    assert after.exit_code == 0, after.output
    assert sum(group["calls"] for group in json.loads(after.stdout)["calls"]) >= 1


def test_an_unwritable_state_folder_turns_recording_off_without_breaking_the_call(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    rt = Runtime(catalog(), "test", store=usage.Store(blocker / "usage.sqlite3"))
    with pytest.warns(usage.UsageWarning):
        with rt.call("chat") as call:
            call.tokens(1, 1)
    assert rt.route("chat")["id"] == "local-a"


# ------------------------------------------------------------------------------------ statistics

def fixture_store(path: Path) -> usage.Store:
    """Known calls: 10 successes of local-a/chat at 10..100 ms plus 2 failures; 4 priced cloud calls,
    2 of them 40 days old (rolled up by the 30-day retention)."""
    store = usage.Store(path, clock=Clock(NOW))
    for i in range(1, 11):
        store.record_call("chat", "local-a", "local", True, None, 10.0 * i, 100, 50, 0.0, ts=NOW - 3600 - i)
    for error in ("TimeoutError", "ConnectionError"):
        store.record_call("chat", "local-a", "local", False, error, 5000.0, 100, None, 0.0, ts=NOW - 7200)
    price = cost_usd(catalog()["models"]["cloud-c"], 1000, 500)
    for age in (1 * DAY, 2 * DAY, 40 * DAY, 41 * DAY):
        store.record_call("code", "cloud-c", "openai", True, None, 200.0 + age / DAY, 1000, 500, price, ts=NOW - age)
    return store


def test_statistics_match_the_fixture_exactly(tmp_path):
    store = fixture_store(tmp_path / "usage.sqlite3")
    assert store.rollup() == 2, "the two 40-day-old calls are folded into daily rows"
    groups = {(g["model"], g["role"]): g for g in store.summary()}
    local = groups[("local-a", "chat")]
    assert (local["calls"], local["ok"], local["success_rate"]) == (12, 10, 10 / 12)
    # nearest rank over the 10 successful latencies 10..100 ms: p50 is the 5th, p95 the 10th
    assert (local["p50_ms"], local["p95_ms"]) == (50.0, 100.0)
    assert local["tokens_per_s"] == pytest.approx(10 * 50 / (sum(10.0 * i for i in range(1, 11)) / 1000))
    assert local["cost_usd"] == 0.0 and local["tokens_in"] == 1200 and local["tokens_out"] == 500
    cloud = groups[("cloud-c", "code")]
    assert cost_usd(catalog()["models"]["cloud-c"], 1000, 500) == pytest.approx(1000 * 0.15 / 1e6 + 500 * 0.6 / 1e6)
    assert cloud["calls"] == 4 and cloud["cost_usd"] == pytest.approx(4 * 0.00045, abs=1e-12)
    assert (cloud["p50_ms"], cloud["p95_ms"]) == (201.0, 202.0), "percentiles come from the raw calls left"
    recent = {(g["model"], g["role"]): g for g in store.summary(since=NOW - 7 * DAY)}
    assert recent[("cloud-c", "code")]["calls"] == 2 and recent[("cloud-c", "code")]["cost_usd"] == pytest.approx(
        2 * 0.00045, abs=1e-12)
    # a window starting within today: today's calls from then on, counted from the raw rows
    [last_hour] = store.summary(since=NOW - 3600 - 5.5)
    assert (last_hour["model"], last_hour["calls"]) == ("local-a", 5)
    assert (last_hour["p50_ms"], last_hour["p95_ms"]) == (30.0, 50.0)
    assert last_hour["tokens_per_s"] == pytest.approx(5 * 50 / 0.150)
    assert [g["role"] for g in store.summary(role="code")] == ["code"]
    assert [g["model"] for g in store.summary(model="local-a")] == ["local-a"]


def test_stats_command_text_and_json(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTFIT_STATE", str(tmp_path))
    store = fixture_store(tmp_path / "usage.sqlite3")
    store.record_measurement(host="box", model="local-a", runtime="llamacpp", placement="cpu", context=4096,
                             load_s=1.5, decode_tps=12.0, peak_rss_mib=5000.0, ts=NOW - 100)
    store.close()
    result = run_cli("stats", "--format", "json", "--since", "100000w")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {(g["model"], g["role"], g["calls"]) for g in document["calls"]} == {("local-a", "chat", 12),
                                                                                ("cloud-c", "code", 4)}
    assert document["measurements"][0]["peak_rss_mib"] == 5000.0
    text = run_cli("stats", "--role", "chat")
    assert text.exit_code == 0 and "local-a" in text.stdout and "83.3%" in text.stdout and "cloud-c" not in text.stdout
    assert run_cli("stats", "--since", "yesterday").exit_code == 2
    by_alias = run_cli("stats", "--model", "LOCAL-A", "--format", "json")
    assert [g["model"] for g in json.loads(by_alias.stdout)["calls"]] == ["local-a"], "any case names the model"


def test_measurements_sit_beside_the_catalog_estimate(tmp_path):
    from compiler import stats

    rows = [{"ts": 1.0, "host": "box", "model": "local-a", "runtime": "llamacpp", "placement": "cpu",
             "context": 4096, "load_s": 1.0, "ttft_s": 0.2, "decode_tps": 10.0, "peak_rss_mib": 5000.0,
             "gpu_mib": None, "source": "bench"}]
    document = catalog(chat={"model": "local-a", "fallbacks": [], "placement": "cpu", "memory_mb": 4000,
                             "tokens_per_s": 8.0})
    [entry] = stats.with_estimates(rows, lambda host: document if host == "box" else None)
    assert (entry["estimated_mb"], entry["memory_error_pct"]) == (4000, -20.0), "the estimate was 20% low"
    assert (entry["estimated_tps"], entry["speed_error_pct"]) == (8.0, -20.0)


def test_a_measurement_is_compared_with_the_estimate_at_its_own_context(tmp_path):
    """A model two roles use at different contexts: the role compiled at the measured context gives the
    estimate (the model's memory_mb is its largest need, at another context)."""
    from compiler import stats

    row = {"ts": 1.0, "host": "box", "model": "local-a", "runtime": "llamacpp", "placement": "cpu",
           "context": 4096, "load_s": None, "ttft_s": None, "decode_tps": 10.0, "peak_rss_mib": 3000.0,
           "gpu_mib": None, "source": "bench"}
    document = catalog(
        code={"model": "local-a", "fallbacks": [], "placement": "cpu", "context": 32768, "memory_mb": 4000,
              "tokens_per_s": 6.0},
        chat={"model": "local-a", "fallbacks": [], "placement": "cpu", "context": 4096, "memory_mb": 3300,
              "tokens_per_s": 9.0})
    [entry] = stats.with_estimates([row], lambda host: document)
    assert (entry["estimated_tps"], entry["estimated_mb"]) == (9.0, 3300)
    assert (entry["speed_error_pct"], entry["memory_error_pct"]) == (-10.0, 10.0)
    [other] = stats.with_estimates([{**row, "context": 8192}], lambda host: document)
    assert (other["estimated_tps"], other["estimated_mb"]) == (6.0, 4000), "no role at 8192: the model's own figures"


def test_a_gpu_measurement_is_compared_by_the_figure_the_measured_layer_uses(tmp_path):
    """On gpu the compile checks (and the measured layer replaces) VRAM; the process's resident set there
    holds mapped weights on the host side: adding it called an estimate 9% low 61.5% low."""
    from compiler import measured, stats

    row = {"ts": 1.0, "host": "box", "model": "local-a", "runtime": "llamacpp", "placement": "gpu",
           "context": 4096, "load_s": 1.0, "ttft_s": 0.2, "decode_tps": 50.0, "peak_rss_mib": 6000.0,
           "gpu_mib": 4400.0, "source": "bench"}
    document = catalog(chat={"model": "local-a", "fallbacks": [], "placement": "gpu", "context": 4096,
                             "memory_mb": 4000, "tokens_per_s": 50.0})
    [entry] = stats.with_estimates([row], lambda host: document)
    layer = measured.export_layer("box", [{**row, "ok": True}], None)
    [run] = layer["models"]["local-a"]
    assert run["memory_mb"] == 4400, "the layer sizes a gpu run by its VRAM"
    assert entry["memory_error_pct"] == round((4000 - run["memory_mb"]) / run["memory_mb"] * 100, 1)
    assert "4,400" in stats.render_bench(entry, {}).split("memory MiB")[1].splitlines()[0]
    unplaced = stats.with_estimates([{**row, "placement": None}], lambda host: document)[0]
    assert unplaced["memory_error_pct"] == round((4000 - 10400) / 10400 * 100, 1), "no placement: all it held"


def test_a_speed_is_compared_only_with_an_estimate_on_its_runtime_and_placement(tmp_path):
    """As the compile uses a measured speed (measured.for_speed): a CPU run says nothing of the role's GPU
    estimate."""
    from compiler import stats

    row = {"ts": 1.0, "host": "box", "model": "local-a", "runtime": "llamacpp", "placement": "cpu",
           "context": 4096, "load_s": None, "ttft_s": None, "decode_tps": 10.0, "peak_rss_mib": 3000.0,
           "gpu_mib": None, "source": "bench"}
    document = catalog(chat={"model": "local-a", "fallbacks": [], "placement": "gpu", "runtime": "llamacpp",
                             "context": 4096, "memory_mb": 3300, "tokens_per_s": 50.0})
    [entry] = stats.with_estimates([row], lambda host: document)
    assert (entry["estimated_tps"], entry["speed_error_pct"]) == (None, None)
    [on_gpu] = stats.with_estimates([{**row, "placement": "gpu", "gpu_mib": 3000.0}], lambda host: document)
    assert (on_gpu["estimated_tps"], on_gpu["speed_error_pct"]) == (50.0, 400.0)
    [ollama] = stats.with_estimates([{**row, "placement": "gpu", "runtime": "ollama"}], lambda host: document)
    assert ollama["estimated_tps"] is None


def test_a_catalog_that_is_no_compiled_catalog_gives_no_estimate(tmp_path, monkeypatch):
    from compiler import stats

    installed = tmp_path / "xdg-data" / "hostfit" / "models.json"
    installed.parent.mkdir(parents=True)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    out = tmp_path / "catalog" / "out" / "box" / "models.json"
    out.parent.mkdir(parents=True)
    for text in ("[1, 2]", '{"host": "box"}', '{"host": {"name": "box"}, "models": [], "roles": []}'):
        installed.write_text(text)
        out.write_text(text)
        assert stats.catalog_reader(tmp_path / "catalog")("box") is None, text
        assert stats.catalog_reader(None)("box") is None, text
    installed.write_text(json.dumps(catalog()))
    assert stats.catalog_reader(tmp_path / "catalog")("box")["host"]["name"] == "box", "the installed one, for box"
    assert stats.catalog_reader(None)("other") is None


def test_measurement_api_round_trips(tmp_path):
    store = usage.Store(tmp_path / "usage.sqlite3", clock=Clock(NOW))
    store.record_measurement(host="a", model="m1", runtime="llamacpp", placement="gpu", context=8192, load_s=2.0,
                             ttft_s=0.1, decode_tps=50.0, peak_rss_mib=900.0, gpu_mib=4500.0, source="bench")
    store.record_measurement(host="b", model="m1", decode_tps=20.0)
    [row] = store.measurements(host="a")
    assert row == {"ts": NOW, "host": "a", "model": "m1", "runtime": "llamacpp", "placement": "gpu", "context": 8192,
                   "kv_cache_type": None, "ok": True, "load_s": 2.0, "ttft_s": 0.1, "decode_tps": 50.0, "peak_rss_mib": 900.0, "gpu_mib": 4500.0,
                   "source": "bench"}
    assert [r["host"] for r in store.measurements()] == ["a", "b"]


# ------------------------------------------------------------------------------------ recording and routing

def test_a_call_records_role_model_provider_outcome_tokens_and_cost(tmp_path):
    store = usage.Store(tmp_path / "usage.sqlite3")
    rt = Runtime(catalog(), "test", store=store)
    with rt.call("chat", model="CLOUD-C") as call:
        call.tokens(1000, 500)
    with pytest.raises(TimeoutError):
        with rt.call("chat"):
            raise TimeoutError("slow")
    with rt.call("chat", model="bee") as call:
        call.fail("empty answer")
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT role, model, provider, ok, error, tokens_in, tokens_out, cost_usd, latency_ms >= 0"
                          " FROM calls ORDER BY id").fetchall()
    assert rows == [("chat", "cloud-c", "openai", 1, None, 1000, 500, pytest.approx(0.00045), 1),
                    ("chat", "local-a", "local", 0, "TimeoutError", None, None, 0.0, 1),
                    ("chat", "local-b", "local", 0, "empty answer", None, None, 0.0, 1)]


def test_route_order_explicit_model_then_provider_then_role_chain():
    rt = Runtime(catalog(), "test")
    assert rt.route("chat")["id"] == "local-a"
    assert rt.route("chat", model="ALPHA")["id"] == "local-a", "a model's own alias, any case"
    assert rt.route(model="Bee")["id"] == "local-b"
    # a provider hint: the chain's models of that provider first, then the provider's others by priority
    assert rt._candidates("chat", None, "openai") == ["cloud-c", "cloud-d", "local-a", "local-b"]
    assert rt.route(provider="OPENAI")["id"] == "cloud-d"
    with pytest.raises(RouteError, match="did you mean 'local-a'"):
        rt.route(model="local-aa")
    with pytest.raises(RouteError, match="unknown role"):
        rt.route("chta")


def test_circuit_breaker_skips_a_failing_model_and_lets_it_back_after_the_cool_down():
    clock = Clock(1000.0)
    rt = Runtime(catalog(), "test", breaker=Breaker(threshold=3, cooldown_s=60, clock=clock))
    for attempt in range(3):
        assert rt.route("chat")["id"] == "local-a", f"still closed after {attempt} failures"
        with pytest.raises(ConnectionError), rt.call("chat"):
            raise ConnectionError
    assert rt.route("chat")["id"] == "local-b", "open: the fallback takes the call"
    clock.now += 59.9
    assert rt.route("chat")["id"] == "local-b"
    clock.now += 0.1
    assert rt.route("chat")["id"] == "local-a", "after the cool-down one trial is let through"
    with pytest.raises(ConnectionError), rt.call("chat"):
        raise ConnectionError
    assert rt.route("chat")["id"] == "local-b", "a failed trial opens it again at once"
    clock.now += 60
    with rt.call("chat") as call:
        assert call.model["id"] == "local-a"
    assert rt.route("chat")["id"] == "local-a" and not rt.breaker.opened, "a successful trial closes it"
    for model_id in ("local-a", "local-b", "cloud-c"):
        for _ in range(3):
            rt.breaker.failure(model_id)
    with pytest.raises(RouteError, match="resting"):
        rt.route("chat")


def test_a_provider_without_models_names_what_was_asked():
    rt = Runtime(catalog(), "test", breaker=Breaker(clock=Clock()))
    with pytest.raises(RouteError) as alone:
        rt.route(provider="nosuch")
    assert str(alone.value) == "no model from provider 'nosuch'", "no role was asked for"
    assert rt.route("chat", provider="nosuch")["id"] == "local-a", "the role's chain still serves"
    empty = Runtime({**catalog(), "roles": {"chat": {"model": None, "fallbacks": []}}}, "test")
    with pytest.raises(RouteError, match="^no model for role 'chat' from provider 'nosuch'$"):
        empty.route("chat", provider="nosuch")


def test_a_success_resets_the_failure_count():
    rt = Runtime(catalog(), "test", breaker=Breaker(threshold=3, clock=Clock()))
    for outcome in (False, False, True, False, False):
        (rt.breaker.success if outcome else rt.breaker.failure)("local-a")
    assert rt.route("chat")["id"] == "local-a", "two failures since the last success: still closed"


# ------------------------------------------------------------------------------------ the installed catalog

def test_an_older_installed_catalog_is_migrated_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    installed = tmp_path / "data" / "hostfit" / "models.json"
    installed.parent.mkdir(parents=True)
    old = catalog()
    old["schema_version"] = 1
    del old["aliases"], old["profiles"], old["host"]
    old["roles"] = {"chat": "local-a", "code": {"model": "local-b"}}
    installed.write_text(json.dumps(old))
    with pytest.warns(RuntimeCatalogWarning, match="schema_version 1"):
        rt = Runtime.load(usage_store=False)
    assert rt.source == str(installed), "not replaced by the built-in catalog"
    assert rt.route("chat")["id"] == "local-a" and rt.model_for("code")["id"] == "local-b"
    assert rt.resolve("alpha") == "local-a", "aliases listed on a model resolve without the alias map"


@pytest.mark.parametrize("text, reason", [('{"schema_version": 3, "models": {}}', "newer"),
                                          ("{not json", "passed over"),
                                          ('{"schema_version": 1, "role_mappings": {}}', "source catalog")])
def test_an_unusable_installed_catalog_is_passed_over_with_a_warning(tmp_path, monkeypatch, text, reason):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    installed = tmp_path / "data" / "hostfit" / "models.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(text)
    with pytest.warns(RuntimeCatalogWarning, match=reason):
        assert Runtime.load(usage_store=False).source == "builtin"


@pytest.mark.parametrize("field, value", [("aliases", []), ("roles", ["chat"]), ("models", {"local-a": "x"}),
                                          ("roles", {"chat": {"model": "local-a", "fallbacks": "local-b"}})])
def test_a_catalog_of_the_wrong_shape_is_passed_over_not_raised(tmp_path, monkeypatch, field, value):
    """An application's start-up never fails on the installed file: a wrong shape is a broken catalog."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    installed = tmp_path / "data" / "hostfit" / "models.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps({**catalog(), field: value}))
    with pytest.warns(RuntimeCatalogWarning, match="passed over"):
        rt = Runtime.load(usage_store=False)
    assert rt.source == "builtin" and rt.model_for("chat")["id"] == "test"


@pytest.mark.parametrize("roles", [["chat"], {"chat": 5}, {"chat": ["local-a"]}])
def test_a_version_1_catalog_of_the_wrong_shape_is_passed_over_not_raised(tmp_path, monkeypatch, roles):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    installed = tmp_path / "data" / "hostfit" / "models.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps({"schema_version": 1, "models": catalog()["models"], "roles": roles}))
    with pytest.warns(RuntimeCatalogWarning, match="passed over"):
        assert Runtime.load(usage_store=False).source == "builtin"


@pytest.mark.parametrize("output", sorted((REPO / "out").glob("*/models.json")), ids=lambda p: p.parent.name)
def test_every_shipped_model_resolves_by_id_and_every_alias_in_any_case(output):
    document = json.loads(output.read_text())
    rt = Runtime(document, str(output))
    for model_id, spec in document["models"].items():
        for name in (model_id, *spec.get("aliases", [])):
            for spelling in (name, name.upper(), name.lower()):
                assert rt.resolve(spelling) == model_id, (output, spelling)
    for alias, model_id in document["aliases"].items():
        assert rt.resolve(alias.swapcase()) == model_id


def test_the_runtime_reader_and_its_store_import_only_the_standard_library():
    code = ("import sys; import compiler.runtime, compiler.usage; "
            "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    foreign = set(loaded.stdout.split()) - set(sys.stdlib_module_names) - {"compiler", "__main__"}
    assert not foreign, f"the runtime reader pulls in {sorted(foreign)}"


def test_repair_of_a_readable_store_keeps_every_count_exact(tmp_path):
    path = tmp_path / "usage.sqlite3"
    store = fixture_store(path)
    store.rollup()
    store.record_measurement(host="box", model="local-a", decode_tps=7.0)
    before = store.summary()
    store.close()
    result = usage.repair(path)
    assert result["kept"]["measurements"] == 1 and result["moved_to"]
    after = usage.Store(path, clock=Clock(NOW)).summary()
    assert after == before, "raw rows and the rolled-up days are each counted once"


def test_repair_keeps_a_rolled_up_day_that_a_late_call_of_the_same_day_joined(tmp_path):
    """A call recorded with a time past the retention window (a clock set back, an import) sits as a raw row
    beside its day's aggregate, which also counts the calls rolled up before it: repair keeps the aggregate."""
    path = tmp_path / "usage.sqlite3"
    old = NOW - 40 * usage.DAY_S
    store = usage.Store(path, clock=Clock(NOW))
    for _ in range(3):
        store.record_call("chat", "local-a", "local", True, latency_ms=100.0, tokens_out=10, ts=old)
    assert store.rollup() == 3
    store.record_call("chat", "local-a", "local", True, latency_ms=200.0, tokens_out=10, ts=old + 60)
    before = store.summary()
    store.close()
    assert before[0]["calls"] == 4
    usage.repair(path)
    [after] = usage.Store(path, clock=Clock(NOW)).summary()  # opening it rolls the late raw row up too
    counts = ("calls", "ok", "tokens_out", "tokens_per_s")
    assert [after[key] for key in counts] == [before[0][key] for key in counts], "the rolled-up calls are kept"


def test_a_lock_held_past_every_retry_drops_that_record_only(tmp_path, monkeypatch):
    monkeypatch.setattr(usage, "BUSY_TIMEOUT_MS", 10)
    monkeypatch.setattr(usage, "RETRIES", 1)
    store = usage.Store(tmp_path / "usage.sqlite3")
    assert store.record_call("chat", "m", "local", True)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing for a very long time
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not store.record_call("chat", "m", "local", True)
        assert not store.record_call("chat", "m", "local", True)
    assert [str(w.message)[:4] for w in caught] == ["W600"] and "locked" in str(caught[0].message)
    holder.execute("ROLLBACK")
    holder.close()
    assert store.record_call("chat", "m", "local", True), "recording goes on once the lock is released"
    assert (store.broken, store.dropped) == (None, 2)
    assert store.summary()[0]["calls"] == 2


def test_a_variant_resolves_by_its_models_id():
    document = catalog(chat={"model": "base-m:q8_0", "fallbacks": [], "placement": "cpu", "memory_mb": 1})
    for name in ("q4_k_m", "q8_0"):
        document["models"][f"base-m:{name}"] = {"provider": "local", "workloads": ["chat"], "memory_mb": 1,
                                                "memory_method": "estimated", "variant_of": "base-m", "variant": name}
    rt = Runtime(document, "test")
    assert rt.resolve("Base-M") == "base-m:q8_0", "the variant the role uses"
    assert rt.route(model="base-m")["id"] == "base-m:q8_0"
    assert rt.resolve("base-m:q4_k_m") == "base-m:q4_k_m"


def test_stats_model_filter_takes_an_alias_of_the_installed_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTFIT_STATE", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    installed = tmp_path / "data" / "hostfit" / "models.json"
    installed.parent.mkdir(parents=True)
    installed.write_text((REPO / "out" / "laptop-16" / "models.json").read_text())
    store = usage.Store()
    store.record_call("code", "qwen2.5-coder-7b-q5", "local", True, None, 10.0, 1, 1, 0.0)
    store.record_call("chat", "llama-3.1-8b-instruct", "local", True, None, 10.0, 1, 1, 0.0)
    store.close()
    result = run_cli("stats", "--model", "Qwen-Coder", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [g["model"] for g in json.loads(result.stdout)["calls"]] == ["qwen2.5-coder-7b-q5"]


def test_the_module_level_measurement_api_uses_the_default_store(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTFIT_STATE", str(tmp_path / "state"))
    assert usage.measurements() == [], "no store yet: nothing measured, nothing created"
    assert not (tmp_path / "state").exists()
    assert usage.record_measurement("box", "m1", runtime="llamacpp", peak_rss_mib=812.5, source="bench")
    [row] = usage.measurements(host="box")
    assert (row["model"], row["runtime"], row["peak_rss_mib"]) == ("m1", "llamacpp", 812.5)
    assert (tmp_path / "state" / "usage.sqlite3").is_file()


def test_the_benchmarks_bulk_load_keeps_the_daily_counts_exact(tmp_path: Path):
    """tests/bench/usage_bench.py fills a store with the per-call trigger off and counts the days after:
    the store it leaves must read as if every call had been recorded (and keep counting new ones)."""
    sys.path.insert(0, str(Path(__file__).parent / "bench"))
    try:
        from usage_bench import fill
    finally:
        sys.path.pop(0)
    path = tmp_path / "usage.sqlite3"
    fill(path, 500)
    db = sqlite3.connect(path)
    raw = db.execute("SELECT count(*), sum(ok) FROM calls").fetchone()
    daily = db.execute("SELECT sum(calls), sum(ok) FROM calls_daily").fetchone()
    assert raw == daily and raw[0] == 500
    db.execute("INSERT INTO calls (ts, role, model, provider, ok, latency_ms) VALUES (strftime('%s','now'), 'r', 'm', 'p', 1, 5)")
    db.commit()
    assert db.execute("SELECT sum(calls) FROM calls_daily").fetchone()[0] == 501, "the trigger is back"


def test_stats_repair_refuses_a_newer_store_and_fails_cleanly_where_it_cannot_write(tmp_path, monkeypatch):
    """--repair rebuilds at this hostfit's schema: a newer store would lose what it adds (E601, kept as it
    is); a folder it cannot write is the machine's fault (E600, exit 3), never a traceback."""
    monkeypatch.setenv("HOSTFIT_STATE", str(tmp_path))
    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {usage.SCHEMA_VERSION + 1}")
    refused = run_cli("stats", "--repair")
    assert refused.exit_code == 3 and "E601" in refused.output and "Traceback" not in refused.output, refused.output
    assert path.exists() and not list(tmp_path.glob("usage.sqlite3.broken-*")), "the newer store is left as it is"
    path.unlink()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the state folder should be")
    monkeypatch.setenv("HOSTFIT_STATE", str(blocked))
    failed = run_cli("stats", "--repair")
    assert failed.exit_code == 3 and "E600" in failed.output, failed.output
    assert isinstance(failed.exception, SystemExit), failed.exception  # an exit, not an escaped exception
