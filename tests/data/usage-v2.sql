-- A usage store as schema version 2 wrote it (compiler/usage.py MIGRATIONS[1] and [2]), dumped by sqlite3:
-- measurements without ok or kv_cache_type. test_usage.py opens it with the current code.
CREATE TABLE calls (id INTEGER PRIMARY KEY, ts REAL NOT NULL, role TEXT, model TEXT, ok INTEGER NOT NULL, error TEXT, latency_ms REAL, tokens_in INTEGER, tokens_out INTEGER, provider TEXT, cost_usd REAL);
INSERT INTO "calls" VALUES(1,1795000000.0,'chat','phi-3-mini',1,NULL,120.0,30,60,'local',NULL);
CREATE TABLE calls_daily (day TEXT NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, calls INTEGER NOT NULL, ok INTEGER NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, ok_latency_ms REAL NOT NULL, ok_tokens_out INTEGER NOT NULL, cost_usd REAL, PRIMARY KEY (day, role, model, provider));
INSERT INTO "calls_daily" VALUES('2026-11-18','chat','phi-3-mini','local',1,1,30,60,120.0,60,NULL);
CREATE TABLE measurements (id INTEGER PRIMARY KEY, ts REAL NOT NULL, host TEXT NOT NULL, model TEXT NOT NULL, runtime TEXT, placement TEXT, context INTEGER, load_s REAL, ttft_s REAL, decode_tps REAL, peak_rss_mib REAL, gpu_mib REAL, source TEXT);
INSERT INTO "measurements" VALUES(1,1795000100.0,'box','phi-3-mini','llamacpp','cpu',4096,1.5,0.2,9.5,2900.0,NULL,'bench');
INSERT INTO "measurements" VALUES(2,1795000200.0,'box','phi-3-mini','llamacpp',NULL,4096,1.25,0.25,NULL,2800.0,NULL,'load');
CREATE INDEX calls_ts ON calls (ts);
CREATE INDEX calls_latency ON calls (role, model, ok, latency_ms, ts);
CREATE TRIGGER calls_count AFTER INSERT ON calls BEGIN INSERT INTO calls_daily (day, role, model, provider, calls, ok, tokens_in, tokens_out, ok_latency_ms, ok_tokens_out, cost_usd) VALUES (date(NEW.ts, 'unixepoch'), coalesce(NEW.role, ''), coalesce(NEW.model, ''), coalesce(NEW.provider, ''), 1, NEW.ok, coalesce(NEW.tokens_in, 0), coalesce(NEW.tokens_out, 0), CASE WHEN NEW.ok AND NEW.latency_ms IS NOT NULL THEN NEW.latency_ms ELSE 0 END, CASE WHEN NEW.ok AND NEW.latency_ms IS NOT NULL THEN coalesce(NEW.tokens_out, 0) ELSE 0 END, NEW.cost_usd) ON CONFLICT (day, role, model, provider) DO UPDATE SET calls = calls + excluded.calls, ok = ok + excluded.ok, tokens_in = tokens_in + excluded.tokens_in, tokens_out = tokens_out + excluded.tokens_out, ok_latency_ms = ok_latency_ms + excluded.ok_latency_ms, ok_tokens_out = ok_tokens_out + excluded.ok_tokens_out, cost_usd = CASE WHEN excluded.cost_usd IS NULL THEN cost_usd ELSE coalesce(cost_usd, 0) + excluded.cost_usd END; END;
CREATE INDEX measurements_host ON measurements (host, model);
PRAGMA user_version = 2;
