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

# Performance benchmark (issue 7): every scenario, ours against a naive baseline; under 10 minutes on 2 CPUs.
# Writes docs/PERFORMANCE.md. `make bench BENCH_ARGS="--skip b baseline"` leaves parts out; "--full" = 10,000
# appointments across 50 doctors.
bench: install
	$(BIN)/python -m bench.perf $(BENCH_ARGS)

# Hint → Google latency on its own (a quick check of the companion plugin's instant updates).
.PHONY: hint-latency
hint-latency: install
	$(BIN)/python bench/hint_latency.py

.PHONY: soak
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Translatable strings: extract them into sidecar/translations/messages.pot (for translators).
.PHONY: messages
messages: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -o sidecar/translations/messages.pot .
