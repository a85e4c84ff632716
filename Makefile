# Two entry points matter: `make run` and `make test`. Both build the
# virtual environment they need; nothing has to be installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.msync-installed
CERTS := certs/server.pem certs/server.key certs/ca.pem

.PHONY: run test check bench clean

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

test: $(STAMP) $(CERTS)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

check: $(STAMP)
	$(BIN)/ruff check msync tests twisted bench certs
	$(BIN)/ruff format --check msync tests twisted bench certs
	$(BIN)/mypy

bench: $(STAMP) $(CERTS)
	$(BIN)/python bench/store_bench.py

clean:
	rm -rf $(VENV) var build *.egg-info
