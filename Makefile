# hostfit: `make build` compiles the shipped catalog for this machine, `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
LLAMA_STAMP := $(VENV)/.installed-llama

.PHONY: build build-all validate check test bench bench-fleet apply clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# llama-cpp-python compiles llama.cpp (about 5 minutes here, once: pip caches the wheel)
$(LLAMA_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,llama]'
	touch $(LLAMA_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)

build: $(STAMP)            ## compile this machine (HOST=name picks a declared host)
	$(BIN)/hostfit build

build-all: $(STAMP)        ## compile every declared host into out/
	$(BIN)/hostfit build --all

validate: $(STAMP)
	$(BIN)/hostfit validate

check: $(STAMP)            ## what CI enforces: valid sources and an up-to-date out/
	$(BIN)/hostfit validate
	$(BIN)/hostfit build --all --check

test: $(LLAMA_STAMP)
	$(BIN)/python -m pytest -q

apply: $(STAMP)            ## fetch, lock and install this machine's models (see README, "On the machine")
	$(BIN)/hostfit apply

bench: $(BENCH_STAMP)      ## needs nginx (Debian nginx-light) and aria2c (Debian aria2) for the download benchmark; installs them as root
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || (apt-get update -qq && apt-get install -y -qq nginx-light)
	@command -v aria2c >/dev/null || (apt-get update -qq && apt-get install -y -qq aria2) || echo "aria2 not installed: its rows are skipped"
	$(BIN)/python tests/bench/run.py
	$(BIN)/python tests/bench/fleet_bench.py

bench-fleet: $(STAMP)      ## only the fleet build: 1,000 and 10,000 generated hosts (COUNTS="1000" for fewer)
	$(BIN)/python tests/bench/fleet_bench.py $(COUNTS)

clean:
	rm -rf $(VENV) out/local out/.cache out/*/explain.json
