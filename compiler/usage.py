"""The usage store: calls and measurements in SQLite, written by applications and read by `hostfit stats`.

Standard library only (compiler/runtime.py imports it). One file, `$XDG_STATE_HOME/hostfit/usage.sqlite3`
(`HOSTFIT_STATE` overrides the folder), in WAL mode so many processes record at once. The schema is
versioned with `PRAGMA user_version`; MIGRATIONS brings an older file up to date when it is opened.
A trigger counts every call into one row per day, role, model and provider; raw calls (kept only for
latency percentiles) are deleted once older than the retention window, so the file stays bounded. A store that cannot be opened or written (corrupt, truncated, read-only)
turns recording into a no-op with one UsageWarning; `hostfit stats --repair` rebuilds it.

    from compiler import usage
    usage.record_measurement("box", "phi-3-mini", runtime="llamacpp", decode_tps=21.5)   # the default store
    usage.measurements(host="box")        # -> [{"ts": ..., "host": "box", "model": "phi-3-mini", ...}, ...]
    usage.Store(path)                     # the same, and calls and statistics, on any file
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import threading
import time
import warnings
from pathlib import Path

from .paths import usage_db

SCHEMA_VERSION = 3
RETENTION_DAYS = 30  # raw calls kept this long; older ones live on as daily aggregates
BUSY_TIMEOUT_MS = 5000  # SQLite waits this long for another writer before answering "locked"
RETRIES = 8  # then this many more tries, with a short random back-off each
DAY_S = 86400

# the columns of a measurement, in order (record_measurement's keywords; measurements()'s keys; the rows
# measured.export_layer reads, so an export is a straight call)
MEASUREMENT_FIELDS = ("ts", "host", "model", "runtime", "placement", "context", "kv_cache_type", "ok", "load_s",
                      "ttft_s", "decode_tps", "peak_rss_mib", "gpu_mib", "source")

# calls_daily: one row per day, role, model and provider ('' for none), kept by a trigger on calls
_DAILY_COLUMNS = ("day, role, model, provider, calls, ok, tokens_in, tokens_out, ok_latency_ms, ok_tokens_out,"
                  " cost_usd")
_DAILY_SELECT = ("SELECT date(ts, 'unixepoch'), coalesce(role, ''), coalesce(model, ''), coalesce(provider, ''),"
                 " count(*), sum(ok), total(tokens_in), total(tokens_out),"
                 " total(CASE WHEN ok AND latency_ms IS NOT NULL THEN latency_ms END),"
                 " total(CASE WHEN ok AND latency_ms IS NOT NULL THEN tokens_out END), sum(cost_usd)"
                 " FROM calls GROUP BY 1, 2, 3, 4")
_DAILY_ADD = (" ON CONFLICT (day, role, model, provider) DO UPDATE SET calls = calls + excluded.calls,"
              " ok = ok + excluded.ok, tokens_in = tokens_in + excluded.tokens_in,"
              " tokens_out = tokens_out + excluded.tokens_out, ok_latency_ms = ok_latency_ms + excluded.ok_latency_ms,"
              " ok_tokens_out = ok_tokens_out + excluded.ok_tokens_out, cost_usd = CASE WHEN excluded.cost_usd IS NULL"
              " THEN cost_usd ELSE coalesce(cost_usd, 0) + excluded.cost_usd END")

# version N's statements bring a version N-1 file to N (0: an empty file)
MIGRATIONS = {
    1: ("CREATE TABLE calls (id INTEGER PRIMARY KEY, ts REAL NOT NULL, role TEXT, model TEXT, ok INTEGER NOT NULL,"
        " error TEXT, latency_ms REAL, tokens_in INTEGER, tokens_out INTEGER)",
        "CREATE INDEX calls_ts ON calls (ts)"),
    2: ("ALTER TABLE calls ADD COLUMN provider TEXT",
        "ALTER TABLE calls ADD COLUMN cost_usd REAL",
        # percentiles read this index in order, without touching the table
        "CREATE INDEX calls_latency ON calls (role, model, ok, latency_ms, ts)",
        # every call counted per day as it is inserted: statistics read these few rows, not every call,
        # and raw calls past the retention window can go (they are only needed for percentiles)
        "CREATE TABLE calls_daily (day TEXT NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL,"
        " provider TEXT NOT NULL, calls INTEGER NOT NULL, ok INTEGER NOT NULL, tokens_in INTEGER NOT NULL,"
        " tokens_out INTEGER NOT NULL, ok_latency_ms REAL NOT NULL, ok_tokens_out INTEGER NOT NULL, cost_usd REAL,"
        " PRIMARY KEY (day, role, model, provider))",
        f"INSERT INTO calls_daily ({_DAILY_COLUMNS}) {_DAILY_SELECT}",  # the calls already there
        f"CREATE TRIGGER calls_count AFTER INSERT ON calls BEGIN INSERT INTO calls_daily ({_DAILY_COLUMNS})"
        " VALUES (date(NEW.ts, 'unixepoch'), coalesce(NEW.role, ''), coalesce(NEW.model, ''),"
        " coalesce(NEW.provider, ''), 1, NEW.ok, coalesce(NEW.tokens_in, 0), coalesce(NEW.tokens_out, 0),"
        " CASE WHEN NEW.ok AND NEW.latency_ms IS NOT NULL THEN NEW.latency_ms ELSE 0 END,"
        " CASE WHEN NEW.ok AND NEW.latency_ms IS NOT NULL THEN coalesce(NEW.tokens_out, 0) ELSE 0 END,"
        " NEW.cost_usd)" + _DAILY_ADD + "; END",
        "CREATE TABLE measurements (id INTEGER PRIMARY KEY, ts REAL NOT NULL, host TEXT NOT NULL, model TEXT NOT NULL,"
        " runtime TEXT, placement TEXT, context INTEGER, load_s REAL, ttft_s REAL, decode_tps REAL,"
        " peak_rss_mib REAL, gpu_mib REAL, source TEXT)",
        "CREATE INDEX measurements_host ON measurements (host, model)"),
    # what the measured layer needs besides the figures: whether the run succeeded (its success_rate; every
    # measurement before version 3 was a successful load, the only kind recorded) and the KV cache type it
    # ran with (a measurement's key; NULL: f16, the only type loaded before)
    3: ("ALTER TABLE measurements ADD COLUMN ok INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE measurements ADD COLUMN kv_cache_type TEXT"),
}
assert max(MIGRATIONS) == SCHEMA_VERSION


class UsageWarning(RuntimeWarning):
    """The usage store cannot be used; recording is off for this process."""


class StoreError(Exception):
    """The usage store cannot be read (for `hostfit stats`, which has nothing to show without it)."""


class NewerSchema(sqlite3.DatabaseError):
    """The file was written by a newer hostfit: readable by it, not by this one (and not to be rebuilt)."""


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Store:
    """One process's handle on the usage file; safe to share between threads (one lock around it)."""

    def __init__(self, path: str | os.PathLike | None = None, *, retention_days: float = RETENTION_DAYS,
                 clock=time.time):
        self.path = Path(path) if path is not None else usage_db()
        self.retention_days, self.clock = retention_days, clock
        self._db: sqlite3.Connection | None = None
        self._pid = None
        self._lock = threading.Lock()
        self.broken: str | None = None  # why recording is off, once it is
        self.dropped = 0  # records lost to a lock held past every retry (or to a broken store)

    # ------------------------------------------------------------------------- opening

    def _connect(self) -> sqlite3.Connection:
        """The connection, opened (and migrated) on first use and again in a forked child."""
        if self._db is not None and self._pid == os.getpid():
            return self._db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                             check_same_thread=False)
        try:
            self._retry(lambda: db.execute("PRAGMA journal_mode=WAL").fetchone())
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash may lose the last calls, never corrupt
            self._retry(lambda: self._migrate(db))
            self._retry(lambda: self._rollup(db))  # an index seek when there is nothing to delete
        except BaseException:
            db.close()
            raise
        self._db, self._pid = db, os.getpid()
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise NewerSchema(f"schema version {version} is newer than this hostfit's {SCHEMA_VERSION}")
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then find it done
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _retry(action):
        """`action()`, again after a short random pause while another writer holds the file."""
        for attempt in range(RETRIES + 1):
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or attempt == RETRIES:
                    raise
                time.sleep(random.uniform(0.001, 0.01 * (attempt + 1)))

    def _write(self, action) -> bool:
        """Run a write; on failure turn recording off with one warning. Never raises."""
        if self.broken is not None:
            return False
        with self._lock:
            try:
                self._retry(lambda: action(self._connect()))
                return True
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    self._give_up(exc)
                elif not self.dropped:  # still locked after every retry: lose this row, not the store
                    warnings.warn(f"W600 hostfit usage store {self.path} stayed locked; a record was dropped",
                                  UsageWarning, stacklevel=3)
                self.dropped += 1
                return False
            except (sqlite3.Error, OSError) as exc:
                self._give_up(exc)
                return False

    def _give_up(self, exc: Exception) -> None:
        self.broken = f"{type(exc).__name__}: {exc}"
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        remedy = ("Upgrade hostfit to read it: a newer one wrote it." if isinstance(exc, NewerSchema)
                  else "Run `hostfit stats --repair` to rebuild it.")
        warnings.warn(f"W600 hostfit usage store {self.path} is unusable ({self.broken}); usage is not recorded. "
                      + remedy, UsageWarning, stacklevel=4)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------------- writing

    def record_call(self, role: str | None, model: str | None, provider: str | None, ok: bool,
                    error: str | None = None, latency_ms: float | None = None, tokens_in: int | None = None,
                    tokens_out: int | None = None, cost_usd: float | None = None, ts: float | None = None) -> bool:
        """One call an application made; False when the store is unusable (nothing raised)."""
        row = (self.clock() if ts is None else ts, role, model, provider, 1 if ok else 0, error, latency_ms,
               tokens_in, tokens_out, cost_usd)
        return self._write(lambda db: db.execute(
            "INSERT INTO calls (ts, role, model, provider, ok, error, latency_ms, tokens_in, tokens_out, cost_usd)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)", row))

    def record_measurement(self, host: str, model: str, *, runtime: str | None = None,
                           placement: str | None = None, context: int | None = None,
                           kv_cache_type: str | None = None, ok: bool = True, load_s: float | None = None,
                           ttft_s: float | None = None, decode_tps: float | None = None,
                           peak_rss_mib: float | None = None, gpu_mib: float | None = None,
                           source: str | None = None, ts: float | None = None) -> bool:
        """A measured load or benchmark of `model` on `host` (seconds, tokens/s, MiB; `ok`: it ran)."""
        row = (self.clock() if ts is None else ts, host, model, runtime, placement, context, kv_cache_type,
               1 if ok else 0, load_s, ttft_s, decode_tps, peak_rss_mib, gpu_mib, source)
        columns = ", ".join(MEASUREMENT_FIELDS)
        return self._write(lambda db: db.execute(
            f"INSERT INTO measurements ({columns}) VALUES ({', '.join('?' * len(row))})", row))

    def rollup(self) -> int:
        """Delete raw calls older than the retention window (calls_daily keeps their sums); how many went."""
        done = []
        self._write(lambda db: done.append(self._rollup(db)))
        return done[0] if done else 0

    def _cutoff(self) -> float:
        return math.floor((self.clock() - self.retention_days * DAY_S) / DAY_S) * DAY_S  # whole days only

    def _rollup(self, db: sqlite3.Connection) -> int:
        return db.execute("DELETE FROM calls WHERE ts < ?", (self._cutoff(),)).rowcount

    # ------------------------------------------------------------------------- reading

    def open(self) -> sqlite3.Connection:
        """The connection, opened and migrated now; StoreError when the store is unusable."""
        try:
            with self._lock:
                return self._retry(self._connect)
        except (sqlite3.Error, OSError) as exc:
            raise self._unreadable(exc) from exc

    def _unreadable(self, exc: Exception) -> StoreError:
        return StoreError(f"{self.path}: {exc}; `hostfit stats --repair` rebuilds it")

    def measurements(self, host: str | None = None, model: str | None = None) -> list[dict]:
        """Every measurement (of `host`, of `model`), oldest first, as dicts keyed by MEASUREMENT_FIELDS."""
        where, args = _where(host=host, model=model)
        try:
            rows = self.open().execute(f"SELECT {', '.join(MEASUREMENT_FIELDS)} FROM measurements WHERE 1{where}"
                                        " ORDER BY ts, id", args).fetchall()
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from exc
        found = [dict(zip(MEASUREMENT_FIELDS, row)) for row in rows]
        for measurement in found:
            measurement["ok"] = bool(measurement["ok"])
        return found

    def summary(self, role: str | None = None, model: str | None = None, since: float | None = None) -> list[dict]:
        """Per (model, role): calls, ok, tokens, cost, tokens/s and latency percentiles (README, "Usage statistics").

        Counts, tokens, cost and tokens/s are exact for any `since` inside the retention window (whole
        days before it); p50/p95 are nearest-rank over the successful raw calls still kept."""
        try:
            return self._summary(self.open(), role, model, since)
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from exc

    def _summary(self, db, role, model, since) -> list[dict]:
        groups: dict[tuple, dict] = {}

        def add(rows) -> None:
            for row in rows:
                key = (row[0] or None, row[1] or None)
                if key in groups:
                    _merge(groups[key], _group(*key, *row[2:]))
                else:
                    groups[key] = _group(*key, *row[2:])

        filters, args = _where(role=role, model=model)
        daily = ("SELECT model, role, total(calls), total(ok), total(tokens_in), total(tokens_out), sum(cost_usd),"
                 f" total(ok_latency_ms), total(ok_tokens_out) FROM calls_daily WHERE 1{filters}")
        if since is None:
            add(db.execute(daily + " GROUP BY 1, 2", args))
        else:
            first_day = math.floor(since / DAY_S) * DAY_S
            if since < self._cutoff():  # its raw calls are gone: count the whole first day
                add(db.execute(daily + " AND day >= date(?, 'unixepoch') GROUP BY 1, 2", (*args, since)))
            else:  # whole days after the first, and the first day's calls from `since` on
                add(db.execute(daily + " AND day > date(?, 'unixepoch') GROUP BY 1, 2", (*args, since)))
                add(db.execute(
                    "SELECT model, role, count(*), total(ok), total(tokens_in), total(tokens_out), sum(cost_usd),"
                    " total(CASE WHEN ok AND latency_ms IS NOT NULL THEN latency_ms END),"
                    " total(CASE WHEN ok AND latency_ms IS NOT NULL THEN tokens_out END)"
                    f" FROM calls WHERE ts >= ? AND ts < ?{filters} GROUP BY 1, 2",
                    (since, first_day + DAY_S, *args)))
        time_clause, time_args = (" AND ts >= ?", (since,)) if since is not None else ("", ())
        ranked = (" FROM calls WHERE role IS ? AND model IS ? AND ok = 1 AND latency_ms IS NOT NULL"
                  + time_clause)
        for (model_id, role_name), group in groups.items():
            group["p50_ms"] = group["p95_ms"] = None
            timed = db.execute("SELECT count(*)" + ranked, (role_name, model_id, *time_args)).fetchone()[0]
            for label, fraction in (("p50_ms", 0.50), ("p95_ms", 0.95)):
                if not timed:
                    continue
                rank = max(1, math.ceil(fraction * timed))  # nearest rank, 1-based, from the fastest
                # read from whichever end is nearer: p95 steps over 5% of the index, not 95%
                order, offset = ("ASC", rank - 1) if rank <= timed / 2 else ("DESC", timed - rank)
                group[label] = db.execute(f"SELECT latency_ms{ranked} ORDER BY latency_ms {order} LIMIT 1 OFFSET ?",
                                          (role_name, model_id, *time_args, offset)).fetchone()[0]
        for group in groups.values():
            if group["cost_usd"] is not None:
                group["cost_usd"] = round(group["cost_usd"], 9)  # sums of floats: drop the last-bit noise
            group["success_rate"] = group["ok"] / group["calls"] if group["calls"] else None
            seconds = group.pop("_ok_latency_ms") / 1000
            group["tokens_per_s"] = group.pop("_ok_tokens_out") / seconds if seconds > 0 else None
        return [groups[key] for key in sorted(groups, key=lambda k: tuple(part or "" for part in k))]


def _group(model, role, calls, ok, tokens_in, tokens_out, cost, ok_latency_ms, ok_tokens_out) -> dict:
    return {"model": model, "role": role, "calls": int(calls), "ok": int(ok), "tokens_in": int(tokens_in),
            "tokens_out": int(tokens_out), "cost_usd": cost, "_ok_latency_ms": ok_latency_ms,
            "_ok_tokens_out": int(ok_tokens_out)}


def _merge(into: dict, extra: dict) -> None:
    for key in ("calls", "ok", "tokens_in", "tokens_out", "_ok_latency_ms", "_ok_tokens_out"):
        into[key] += extra[key]
    if extra["cost_usd"] is not None:
        into["cost_usd"] = (into["cost_usd"] or 0) + extra["cost_usd"]


def _where(**equal) -> tuple[str, tuple]:
    """` AND name = ?` for each given value, and the values."""
    pairs = [(name, value) for name, value in equal.items() if value is not None]
    return "".join(f" AND {name} = ?" for name, _ in pairs), tuple(value for _, value in pairs)


def record_measurement(host: str, model: str, **fields) -> bool:
    """Store.record_measurement on the default store (`hostfit load`, benchmarks)."""
    store = Store()
    try:
        return store.record_measurement(host, model, **fields)
    finally:
        store.close()


def record_load(document: dict, role: str, loaded, source: str = "load") -> dict:
    """A `hostfit load` (or `bench`) of `role` in the compiled `document`, recorded as a measurement in the default
    store (`hostfit stats`, `hostfit measured export`); never fails the command. Returns the measurement."""
    import resource

    spec = document["roles"].get(role) or {}
    figures = loaded.figures
    main_pick = spec.get("model") == loaded.model_id
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: this process's peak
    measurement = {
        "runtime": loaded.backend,
        # where llama.cpp put it, from its buffers; else the compiled placement of the role's own pick
        "placement": figures.get("placement") or (spec.get("placement") if main_pick else None),
        "context": figures.get("context") or spec.get("context"),
        "kv_cache_type": figures.get("kv_cache_type") or spec.get("kv_cache_type"),
        "load_s": loaded.load_seconds, "ttft_s": loaded.first_token_seconds,
        "decode_tps": figures.get("decode_tps") if source == "bench" else None,  # a load's few tokens are noise
        # the process's peak: the model's own only when no model of the chain was tried before it
        "peak_rss_mib": round(peak_kib / 1024, 1) if loaded.backend == "llamacpp" and not loaded.attempts else None,
        "gpu_mib": figures.get("gpu_mib"), "source": source}
    record_measurement(document["host"]["name"], loaded.model_id, **measurement)
    return {"host": document["host"]["name"], "model": loaded.model_id, **measurement}


def measurements(host: str | None = None, model: str | None = None) -> list[dict]:
    """Store.measurements of the default store; [] when there is none yet. StoreError when unreadable."""
    store = Store()
    if not store.path.exists():
        return []
    try:
        return store.measurements(host=host, model=model)
    finally:
        store.close()


def repair(path: str | os.PathLike | None = None) -> dict:
    """Rebuild an unusable store: keep the rows that can still be read, set the broken file aside.

    Returns {"path", "kept": {table: rows}, "moved_to": the old file's new name or None}."""
    path = Path(path) if path is not None else usage_db()
    salvaged: dict[str, list] = {}
    if path.exists():
        try:
            old = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                version = old.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:  # rebuilt at this older schema, its newer data would be lost
                    raise NewerSchema(f"schema version {version} is newer than this hostfit's {SCHEMA_VERSION}")
                for table in ("calls", "calls_daily", "measurements"):
                    try:
                        columns = [row[1] for row in old.execute(f"PRAGMA table_info({table})")]
                        salvaged[table] = (columns, old.execute(f"SELECT * FROM {table}").fetchall())
                    except sqlite3.Error:
                        continue
            finally:
                old.close()
        except NewerSchema:
            raise
        except sqlite3.Error:
            pass
    moved = None
    if path.exists():
        moved = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, moved)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store(path)
    kept = {}
    db = store.open()
    # raw calls first: the trigger counts them into calls_daily; a salvaged daily row then replaces that
    # count, as it counted every call of its day and key, the rolled-up ones too (a raw row of a day
    # otherwise rolled up, recorded late, would leave only itself counted)
    for table in ("calls", "measurements", "calls_daily"):
        if table not in salvaged:
            continue
        columns, rows = salvaged[table]
        known = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        usable = [i for i, name in enumerate(columns) if name in known and name != "id"]
        names = ", ".join(columns[i] for i in usable)
        insert = "INSERT OR REPLACE" if table == "calls_daily" else "INSERT"
        db.execute("BEGIN")
        count = 0
        for row in rows:
            try:
                db.execute(f"{insert} INTO {table} ({names}) VALUES ({', '.join('?' * len(usable))})",
                           [row[i] for i in usable])
                count += 1
            except (sqlite3.Error, TypeError, ValueError, OverflowError):
                continue
        db.execute("COMMIT")
        kept[table] = count
    store.close()
    return {"path": str(path), "kept": kept, "moved_to": str(moved) if moved else None}
