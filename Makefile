# Two entry points matter: `make run` and `make test`. Both build the
# virtual environment they need; nothing has to be installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.msync-installed
CERTS := certs/server.pem certs/server.key certs/ca.pem

.PHONY: run test check bench clean browser-deps

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), \
	    "msync needs Python 3.11 or newer, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable in "compat" mode puts the checkout on sys.path, so twistd finds
# twisted/plugins/msync_plugin.py here.
$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet \
	    --config-settings editable_mode=compat -e '.[dev]'
	touch $(STAMP)

$(CERTS): | $(STAMP)
	$(BIN)/python certs/make_dev_certs.py certs

run: $(STAMP) $(CERTS)
	mkdir -p var/msync
	$(BIN)/twistd -n msync --data-dir var/msync

# The console's browser tests drive Debian's Chromium through Playwright
# (the `test` extra); Playwright's own browser download is never used.
# Installing Chromium needs root; as anyone else this says what to run.
# Silent when everything is there already.
CHROMIUM := /usr/bin/chromium

browser-deps: $(STAMP)
	@$(BIN)/python -c 'import playwright' 2>/dev/null || \
	    $(BIN)/python -m pip install --quiet playwright
	@if [ ! -x $(CHROMIUM) ]; then \
	    if [ "$$(id -u)" != 0 ]; then \
	        echo "make: $(CHROMIUM) is missing; as root run:" \
	            "apt-get update && apt-get install -y chromium" >&2; \
	        exit 1; \
	    fi; \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq chromium >/dev/null; \
	fi

test: $(STAMP) $(CERTS) browser-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

check: $(STAMP)
	$(BIN)/ruff check msync tests twisted bench certs
	$(BIN)/ruff format --check msync tests twisted bench certs
	$(BIN)/mypy

# The side-by-side benchmarks start their own Mosquitto (Debian's
# package); installing it needs root, as anyone else this says what to
# run.  BENCH_ARGS passes options through, e.g. BENCH_ARGS=--quick.
MOSQUITTO := /usr/sbin/mosquitto

.PHONY: bench-deps
bench-deps:
	@if [ ! -x $(MOSQUITTO) ]; then \
	    if [ "$$(id -u)" != 0 ]; then \
	        echo "make: $(MOSQUITTO) is missing; as root run:" \
	            "apt-get update && apt-get install -y mosquitto" >&2; \
	        exit 1; \
	    fi; \
	    echo "installing Debian's mosquitto for the benchmarks"; \
	    apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq mosquitto >/dev/null; \
	fi

bench: $(STAMP) $(CERTS) bench-deps
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
