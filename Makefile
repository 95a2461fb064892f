# Two commands on a fresh machine: `make train` and `make test` (each installs what it needs).
# `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB    := $(VENV)/.jupyterlab
RAW    := data/MNIST/raw
SHARED_RAW := ../shared/data/MNIST/raw
MNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
LOCK   := requirements/dev.lock
LAB_LOCK := requirements/notebooks.lock
ARGS   ?=
PYTEST_ARGS ?=
LAB_ARGS ?=

.PHONY: help install lock data browser notebooks train model test test-fast lint format clean
.DEFAULT_GOAL := help

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) data  ## .venv with the versions in requirements/dev.lock + the package; MNIST files

# Exact versions and their hashes from the lock (torch 2.14.1 / torchvision 0.29.1 among them),
# then the package itself without dependencies, built with the lock's setuptools.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# `make lock` rewrites the lock files from pyproject.toml's ranges, keeping every version it can;
# UPGRADE=1 moves everything to the newest allowed versions, PACKAGES="lightning torch" only those.
# notebooks.lock = dev.lock's versions + JupyterLab's. --generate-hashes: the hashes of every file
# PyPI (and any configured index) lists for a pinned version; the local-disk wheels of offline
# machines are PyPI's files, so they match too. pip-tools writes the project's own extra
# (dev = ["mnist_lab[trackers]"]) as `mnist-lab @ file:///its/path` (jazzband/pip-tools#2110):
# LOCK_FIX drops that line, its comments and its "must be hashed" warning.
UPGRADE  ?=
PACKAGES ?=
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock  (Makefile: pip-compile $(1); on Linux x86_64)" \
	$(BIN)/pip-compile --quiet --strip-extras --allow-unsafe --generate-hashes \
	--no-emit-index-url --no-emit-find-links \
	$(if $(UPGRADE),--upgrade) $(foreach p,$(PACKAGES),--upgrade-package $(p)) $(1)
LOCK_FIX = awk '/^mnist-lab @ /{skip=1; next} skip && /^ /{next} {skip=0} \
	!/^. (WARNING: pip install will require|Consider using a hashable URL)/' $(1) > $(1).tmp \
	&& mv $(1).tmp $(1)

lock:  ## refresh requirements/*.lock from pyproject.toml; UPGRADE=1 or PACKAGES="lightning" to move up
	@[ -x $(BIN)/pip-compile ] || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet pip-tools; }
	$(call PIP_COMPILE,--extra dev -o $(LOCK) pyproject.toml)
	$(call LOCK_FIX,$(LOCK))
	$(call PIP_COMPILE,--extra dev --extra notebooks -c $(LOCK) -o $(LAB_LOCK) pyproject.toml)
	$(call LOCK_FIX,$(LAB_LOCK))
	@echo "wrote $(LOCK) and $(LAB_LOCK) (pip-compile's 'may be rejected' note: the line LOCK_FIX removed)"

# Offline machines: copy the official files from ../shared/data when data/ lacks them.
# Elsewhere the first run downloads them through torchvision.
data:  ## copy the official MNIST files from ../shared/data when data/ lacks them
	@for f in $(MNIST_FILES); do \
	  if [ ! -f $(RAW)/$$f ] && [ -f $(SHARED_RAW)/$$f ]; then \
	    mkdir -p $(RAW) && cp $(SHARED_RAW)/$$f $(RAW)/ && chmod u+w $(RAW)/$$f && echo "copied $$f to $(RAW)/"; \
	  fi; \
	done

# Headless Chromium + ChromeDriver for the draw-a-digit page test (Debian/Ubuntu packages).
browser:  ## headless Chromium + ChromeDriver (Debian/Ubuntu packages) for the page test
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "chromium and chromedriver present"; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "the page test needs chromium and chromedriver on PATH: install them with your"; \
	  echo "package manager (no apt-get here), then run make test again"; exit 1; \
	else \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null && \
	  echo "installed $$(chromium --version)"; \
	fi

# JupyterLab is an optional extra (`notebooks` in pyproject.toml): installed on first use, locked.
$(LAB): $(STAMP) $(LAB_LOCK)
	$(BIN)/python -m pip install --quiet -r $(LAB_LOCK)
	$(BIN)/python -m pip check
	touch $@

notebooks: $(LAB) data  ## JupyterLab on notebooks/ (installs it into .venv first); LAB_ARGS="--no-browser"
	$(BIN)/jupyter lab --notebook-dir=notebooks \
	  $$( [ "$$(id -u)" -ne 0 ] || echo --allow-root ) $(LAB_ARGS)  # containers often run as root

train: install  ## train once: make train ARGS="model=resnet optimizer=sgd"
	$(BIN)/python -m mnist_lab.train $(ARGS)

model: install  ## rebuild the model shipped in mnist_lab/serving/model/ (ARGS="--preset fast")
	$(BIN)/python -m mnist_lab.ship $(ARGS)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
PYTEST = rc=0; $(BIN)/python -m pytest $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test: install browser $(LAB)  ## every test: tests/unit + tests/e2e (~12-15 min on 2 cores)
	@$(call PYTEST,)

test-fast: install  ## the edit-and-check loop: the unit tests, tests/unit (~1 min)
	@$(call PYTEST,tests/unit)

lint:  ## ruff (lint + format check), mypy, and the import layers (import-linter)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports

format:  ## ruff format + autofix
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:  ## remove .venv, logs and caches
	rm -rf $(VENV) logs .pytest_cache .ruff_cache
