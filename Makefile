# quantrac - self-installing entry points.  `make demo` / `make test` run
# scripts/bootstrap.sh first (idempotent, quick when nothing changed).
SHELL := /bin/bash
VENV  := .venv

.PHONY: setup demo test test-fast clean distclean

setup:
	bash scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/quantrac demo $(DEMO_ARGS)

# the whole suite (what CI runs); PYTEST_ARGS passes options, e.g. PYTEST_ARGS='tests/store -x'
test: setup
	$(VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# everything but the minutes-long outage, kill and soak tests (marker `slow`; tests/README.md), in two
# worker processes (pytest-xdist; each has its own QuestDB): the tests mostly wait on servers
test-fast: setup
	$(VENV)/bin/python -m pytest -p no:cacheprovider -m "not slow" -n 2 $(PYTEST_ARGS)

# build/test leftovers; keeps .venv and the downloaded QuestDB jar
clean:
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	rm -rf .pytest_cache .hypothesis build dist run

# everything `make setup` created (next `make setup` rebuilds it)
distclean: clean
	rm -rf $(VENV) .cache
