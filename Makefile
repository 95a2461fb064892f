# Two commands on a fresh machine: `make train` and `make test` (each installs first if needed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RAW    := data/MNIST/raw
SHARED_RAW := ../shared/data/MNIST/raw
MNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: install data browser train test lint format clean

install: $(STAMP) data

# torch and torchvision are installed as a pinned pair first: other pairs fail to import.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Offline machines: copy the official files from ../shared/data when data/ lacks them.
# Elsewhere the first run downloads them through torchvision.
data:
	@for f in $(MNIST_FILES); do \
	  if [ ! -f $(RAW)/$$f ] && [ -f $(SHARED_RAW)/$$f ]; then \
	    mkdir -p $(RAW) && cp $(SHARED_RAW)/$$f $(RAW)/ && chmod u+w $(RAW)/$$f && echo "copied $$f to $(RAW)/"; \
	  fi; \
	done

# Headless Chromium + ChromeDriver for the draw-a-digit page test (Debian/Ubuntu packages).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "chromium and chromedriver present"; \
	else \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null && \
	  echo "installed $$(chromium --version)"; \
	fi

train: install
	$(BIN)/python -m mnist_lab.train $(ARGS)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: install
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

format:
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache
