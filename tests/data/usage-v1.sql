-- A usage store as schema version 1 wrote it (compiler/usage.py MIGRATIONS[1]): calls without
-- provider or cost, no daily roll-ups, no measurements. test_usage.py opens it with the current code.
CREATE TABLE calls (id INTEGER PRIMARY KEY, ts REAL NOT NULL, role TEXT, model TEXT, ok INTEGER NOT NULL,
                    error TEXT, latency_ms REAL, tokens_in INTEGER, tokens_out INTEGER);
CREATE INDEX calls_ts ON calls (ts);
INSERT INTO calls (ts, role, model, ok, error, latency_ms, tokens_in, tokens_out) VALUES
  (1795000000.0, 'chat', 'phi-3-mini', 1, NULL, 120.0, 30, 60),
  (1795000001.0, 'chat', 'phi-3-mini', 0, 'TimeoutError', 3000.0, 30, NULL),
  (1795000002.0, 'code', 'qwen2.5-coder-7b-q5', 1, NULL, 800.0, 200, 400);
PRAGMA user_version = 1;
