# homedash — the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HOST   ?=
PORT   ?=

.PHONY: run test test-fast bench bench-full demo screenshots clean chromium

# A stamp per extra set, so `make run` after `make test` (or the other way round) only
# installs what is missing; touching pyproject.toml reinstalls.
$(VENV)/.stamp-run: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.stamp-run

run: $(VENV)/.stamp-run
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# Browser tests drive Debian's Chromium; install it when we can (CI runs as root). apt waits up
# to ten minutes for the dpkg lock (an unattended upgrade holding it) instead of failing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the browser tests"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing and cannot be installed here: browser tests will skip"; \
	  fi; }

# Tests keep their own data directory, a fresh temporary one removed afterwards, so they never
# touch the household's ./var. The benchmark harness runs first in its quick mode (proof it
# works, no verdicts; it makes its own temporary data directory), so the suite's own summary
# is the last thing printed.
TEST_ENV = data=$$(mktemp -d -t homedash-test.XXXXXX) && trap 'rm -rf "$$data"' EXIT && \
	HOMEDASH_DATA_DIR=$$data HOMEDASH_ALLOW_LOOPBACK_DEVICES=true

test: $(VENV)/.stamp-test chromium
	$(MAKE) --no-print-directory bench
	$(TEST_ENV) $(PY) -m pytest

# Benchmarks (bench/run.py): `make bench` is the quick mode (small sizes, no verdicts, ~1 min;
# `make test` runs it to prove the harness works); `make bench-full` writes docs/benchmarks.md.
bench: $(VENV)/.stamp-test chromium
	$(PY) bench/run.py --quick

bench-full: $(VENV)/.stamp-test chromium
	$(PY) bench/run.py --full

test-fast: $(VENV)/.stamp-test
	$(TEST_ENV) $(PY) -m pytest -m "not browser" -x -q

# A simulated household of about twenty devices on loopback, in its own data directory
# (never the real one): `make demo`, then log in as demo / demo-household.
demo: $(VENV)/.stamp-run
	HOMEDASH_DEMO=true HOMEDASH_DATA_DIR=$(CURDIR)/var/demo HOMEDASH_DISCOVERY=false $(PY) manage.py collectstatic --noinput --verbosity 0
	HOMEDASH_DEMO=true HOMEDASH_DATA_DIR=$(CURDIR)/var/demo HOMEDASH_DISCOVERY=false $(PY) manage.py demo $(if $(PORT),--port $(PORT))

# The README's pictures, from the demo household (needs the test extras and chromium).
screenshots: $(VENV)/.stamp-test chromium
	$(PY) docs/make_screenshots.py

clean:
	rm -rf .pytest_cache .hypothesis
