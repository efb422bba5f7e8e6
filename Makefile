# vpskit: `make demo` deploys example/ to a local throwaway VPS; `make test` runs the whole suite.
# Both set up everything they need on a fresh Debian machine (Docker Engine, Compose v2, stand-in images).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install testbed lint check test unit e2e demo demo-down clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

testbed:
	bash tests/testbed/setup.sh

lint: install
	$(BIN)/ruff check .

unit: install
	$(BIN)/pytest tests/unit

# The fast loop: lint and the unit tests (no Docker needed), well under two minutes; its time is printed.
check: install
	@start=$$(date +%s); \
	$(BIN)/ruff check . && $(BIN)/pytest -q tests/unit; status=$$?; \
	echo "make check: lint + unit in $$(( $$(date +%s) - start )) s (aim: under 120 s)"; \
	exit $$status

e2e: install testbed
	$(BIN)/pytest tests/e2e

# Three workers, one test module each at a time: the slow modules (each with its own VPS) mostly wait on
# SSH, Docker and health checks, so they overlap well on two cores; image builds take turns (vpskit builds one
# image at a time per machine) and each image is built once per run.
test: install testbed lint
	@$(BIN)/python tests/testbed/vps.py stale
	@start=$$(date +%s); \
	$(BIN)/pytest -n 3 --dist loadfile --durations=25; status=$$?; \
	bash tests/testbed/leftovers.sh || status=1; \
	echo "make test: suite wall time $$(( $$(date +%s) - start )) s"; \
	exit $$status

clean:
	$(BIN)/python tests/testbed/vps.py cleanup || true
	rm -rf .pytest_cache .ruff_cache

demo: install testbed
	bash tests/testbed/demo.sh

demo-down:
	$(BIN)/python tests/testbed/vps.py stop $${VPSKIT_DEMO_NAME:-vpskit-demo}
	rm -f .testbed/$${VPSKIT_DEMO_NAME:-vpskit-demo}.env
