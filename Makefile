# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps test fuzz demo bench clean

install: $(STAMP)

# Reinstall only when the package's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'libauc>=2.0'
	touch $(STAMP)

# Debian packages for the browser test (Chromium and its driver); needs root, skipped otherwise.
system-deps:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "not root: install the Debian packages chromium and chromium-driver yourself for the browser test"; fi

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The whole fuzz corpus (make test runs a sample of it): counts per format and every failure are printed.
fuzz: install
	CHEXCFT_FUZZ=full $(BIN)/python -m pytest -s -q tests/test_fuzz.py

demo: install
	$(BIN)/chexcft demo

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
