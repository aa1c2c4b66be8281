# Isthmus: the two commands are `make demo` and `make test`. Both run scripts/setup.sh first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Extra flags for `isthmus up`, e.g. a second demo beside one on the default addresses:
#   make demo ARGS="--control-address 127.0.1.9 --address-base 127.0.2.10 --state-dir .isthmus/demo2"
ARGS ?=

.PHONY: setup demo test lint bench bench-citadel bench-pilot bench-mixer protos clean

setup:
	@scripts/setup.sh

# The demo needs only the runtime packages; `make test` adds the dev tools later.
demo:
	@ISTHMUS_EXTRAS= scripts/setup.sh
	$(VENV)/bin/isthmus up $(ARGS)

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
