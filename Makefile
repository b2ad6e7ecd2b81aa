# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The studio's browser tests drive Debian's Chromium (Playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench install clean browser postgres

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch first and pinned: it is the CPU build on this machine; an unpinned torch pulls CUDA wheels.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pixelchat.demo --out out

$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium \
	  || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

browser: $(CHROMIUM)

# The database tests also run on a throwaway PostgreSQL cluster made from Debian's server binaries.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql \
	  || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql)

test: $(STAMP) $(CHROMIUM) postgres
	PIXELCHAT_REQUIRE_BROWSER=1 PIXELCHAT_REQUIRE_POSTGRES=1 PIXELCHAT_REQUIRE_RAY=1 $(BIN)/python -m pytest

bench: $(STAMP)
	cd benchmarks && ../$(BIN)/python bench_generate.py && ../$(BIN)/python bench_train.py
	$(BIN)/pixelchat evaluate --prompts benchmarks/prompts/scenes-eval.jsonl --n-per-prompt 8
	cd benchmarks && ../$(BIN)/python bench_spec.py --n 2000 && ../$(BIN)/python bench_reader.py --n 2000
	cd benchmarks && ../$(BIN)/python bench_upsampler.py && ../$(BIN)/python bench_runtime.py --table && ../$(BIN)/python bench_end_to_end.py
	cd benchmarks && ../$(BIN)/python bench_file.py && ../$(BIN)/python bench_int8.py && ../$(BIN)/python bench_server.py --seconds 10 --burst 500
	cd benchmarks && ../$(BIN)/python bench_describe.py --n 1000 && ../$(BIN)/python bench_edit.py --cases 160 --seed 0
	cd benchmarks && ../$(BIN)/python bench_nearest.py && ../$(BIN)/python bench_chat.py --dialogues 60 --seed 0
	cd benchmarks && ../$(BIN)/python bench_server.py --seconds 10 --burst 500
	cd benchmarks && ../$(BIN)/python bench_moderation.py && ../$(BIN)/python bench_watermark.py --n 100 --clean 300
	cd benchmarks && ../$(BIN)/python bench_database.py && ../$(BIN)/python bench_ddp.py && ../$(BIN)/python bench_diffusers.py

clean:
	rm -rf out .pytest_cache test-artifacts
