# Two set-up commands on a fresh machine: `make demo` and `make test`. Each bootstraps .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.segstudy-installed
SPEC ?= search_spaces/demo.yaml
PORT ?= 5000

.PHONY: demo test install wheel mlflow-ui mlflow-server clean

install: $(STAMP)

# torch is pinned first so pip takes the local CPU wheel instead of gigabytes of CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Train (3 seeds per cell); the run ends with its summary, findings and HTML report (in the study folder).
demo: $(STAMP)
	$(BIN)/segstudy run $(SPEC)

# Two workers: most of the suite's time is single-threaded (process start-up, imports, waits), so
# the second core is otherwise idle. Each worker has its own Ray head (tests/conftest.py).
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

# segstudy as a wheel (dist/), to install into your own project's venv (README: "Your own network, ...").
wheel: $(STAMP)
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w dist .
	rm -rf build

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(PORT)

# A real tracking server (loopback) for studies on a cluster: --tracking-uri http://127.0.0.1:$(PORT)
mlflow-server: $(STAMP)
	$(BIN)/segstudy tracking serve --port $(PORT) --backend-store-uri sqlite:///$(CURDIR)/mlflow-server.db --artifacts $(CURDIR)/mlartifacts-server

clean:
	rm -rf demo_out ray_results mlartifacts mlflow.db mlflow.db.lock mlflow-server.db mlartifacts-server
