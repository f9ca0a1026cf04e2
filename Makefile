# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= cluster.example.toml

.PHONY: run test install bench clean

# Re-install only when the project's metadata changed: quiet when there is nothing to do.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@echo "installing raftlog and its dev tools into $(VENV) (log: $(VENV)/install.log)"
	@$(PY) -m pip install --disable-pip-version-check --upgrade pip > $(VENV)/install.log 2>&1 \
	  && $(PY) -m pip install --disable-pip-version-check -e '.[dev]' >> $(VENV)/install.log 2>&1 \
	  || { tail -30 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@$(PY) node.py --config $(CONFIG)

test: $(STAMP)
	@$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	@$(PY) benchmarks/storage_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
