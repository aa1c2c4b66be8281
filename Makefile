# Isthmus: the two commands are `make demo` and `make test`. Both run `make setup` first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench bench-citadel bench-pilot bench-mixer protos clean

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/bin/isthmus up

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench:
	@ISTHMUS_BENCH=1 scripts/setup.sh
	$(PY) -m bench $(if $(QUICK),--quick,)

bench-citadel: setup
	$(PY) -m bench --only bench_citadel $(if $(QUICK),--quick,)

bench-pilot: setup
	$(PY) -m bench --only bench_pilot $(if $(QUICK),--quick,)

bench-mixer: setup
	$(PY) -m bench --only bench_mixer $(if $(QUICK),--quick,)

protos: setup
	scripts/gen-protos.sh

clean:
	rm -rf $(VENV) .pytest_cache
