# The two commands a new user needs: `make demo` and `make test`.
# Both create .venv when it is missing; nothing outside this folder is touched.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUNTIME := $(VENV)/.installed-runtime

.PHONY: install demo test test-pythons check lint bench validate-examples reference clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-installs when pyproject.toml changes (new dependency, new entry point).
# (The distribution was called `orch` before orch-workflows: a venv made then has both.)
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip uninstall --quiet --yes orch 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP) $(RUNTIME)

# What `make demo` needs: orch and its runtime dependencies, not the dev toolchain.
$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip uninstall --quiet --yes orch 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUNTIME)

install: $(STAMP)

# A team of LLM agents (against a fake model server the demo starts) next to offline ones.
demo: $(RUNTIME)
	$(BIN)/python examples/run_demo.py
	@echo "next: . $(BIN)/activate   (puts orch on your PATH), then orch --help"

# Lint and formatting cover every Python file of the repository (orchestrator/, tests/,
# bench/, examples/, docs/; not tests/fixtures: pyproject.toml leaves it out).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite runs on TEST_WORKERS pytest-xdist workers: most tests wait on real `orch`
# processes, servers and a browser, and 3 workers keep a 2-core machine busier than 2
# (TEST_WORKERS=0 runs it in this process). worksteal: a worker that is done takes
# tests from another's queue. pytest-cov measures each worker and combines their data.
TEST_WORKERS ?= 3
XDIST = -n $(TEST_WORKERS) --dist worksteal
# orchestrator/ is compiled to bytecode first: the suite starts `orch` hundreds of times,
# and where PYTHONDONTWRITEBYTECODE is set (as on CI) each start compiled every module.
test: check
	$(BIN)/python -m compileall -q orchestrator
	$(BIN)/pytest -q $(XDIST) --cov --cov-report=
	$(BIN)/coverage report --format=total | sed "s/^/coverage: /; s/$$/%/"

# The whole suite on every supported Python, each in its own venv (.venvs/pyXY, made
# on first use). PYTHONS names the interpreters (pyenv's python3.X shims work); one not
# found is skipped with a note. CI runs `make test` on one Python only (time budget).
PYTHONS ?= python3.10 python3.11 python3.12 python3.13
PYTEST_ARGS ?= -q -p no:cacheprovider $(XDIST)
test-pythons:
	@failed=""; passed=""; skipped=""; \
	for py in $(PYTHONS); do \
	  if ! $$py -c pass 2>/dev/null; then echo "== $$py: not found, skipped"; skipped="$$skipped $$py"; continue; fi; \
	  env=.venvs/$$($$py -c 'import sys; print("py%d%d" % sys.version_info[:2])'); \
	  [ -x $$env/bin/python ] || $$py -m venv $$env || { failed="$$failed $$py"; continue; }; \
	  $$env/bin/python -m pip install --quiet -e '.[dev]' || { failed="$$failed $$py"; continue; }; \
	  echo "== $$($$env/bin/python --version)"; \
	  if $$env/bin/python -m pytest $(PYTEST_ARGS); then passed="$$passed $$py"; else failed="$$failed $$py"; fi; \
	done; \
	echo "passed on:$${passed:- none}"; \
	if [ -n "$$skipped" ]; then echo "skipped (not found):$$skipped"; fi; \
	if [ -n "$$failed" ]; then echo "failed on:$$failed"; exit 1; fi

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

validate-examples: $(STAMP)
	$(BIN)/orch validate workflows/*.yaml

# The generated files: docs/reference.md from schemas/workflow.schema.json, and
# orchestrator/cli/help.txt (`orch --help` without typer). tests/test_reference.py checks them.
reference: $(STAMP)
	$(BIN)/python docs/make_reference.py

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .venvs .orch .pytest_cache .ruff_cache .mypy_cache .coverage dist build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
