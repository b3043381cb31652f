# Each target installs into a local virtualenv (.venv) first; nothing else is needed on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo lint test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU torch first: pip finds the local CPU wheel; any other resolver would pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	# toto-ts pins old torch/transformers/numpy: install it alone; its real needs are in pyproject.toml.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt toto-ts
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/arfscore demo --out demo

lint: $(STAMP)
	$(BIN)/ruff check .

# Debian's chromium + chromedriver for the HTML report's browser test (tests/test_html_report.py); CI runs as root.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

test: lint browser
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) demo results .pytest_cache
