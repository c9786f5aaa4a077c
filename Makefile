# Two commands a newcomer needs: `make demo` (the main job on the sandbox) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install serve bench

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m sidecar demo

serve: install
	$(BIN)/python -m sidecar serve

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/hint_latency.py

# Chaos soak (issue 6): a few minutes by default; `make soak SOAK_ARGS="--minutes 10 --seed 6"`. Writes docs/RELIABILITY.md.
# Performance benchmark (issue 7, first part): sandbox capacity, initial sync and idle; writes docs/PERFORMANCE.md.
# `make perf PERF_ARGS="--full"` = 10,000 appointments across 50 doctors.
.PHONY: perf
perf: install
	$(BIN)/python -m bench.perf $(PERF_ARGS)

.PHONY: soak
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Translatable strings: extract them into sidecar/translations/messages.pot (for translators).
.PHONY: messages
messages: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -o sidecar/translations/messages.pot .
