# HFC nightly pipeline: the two commands of a fresh machine are `make demo NIGHT=YYYY-MM-DD`
# and `make test`. Both install what they need (Debian packages, the virtualenv, the site).
# `make unit` runs the pure tests alone: seconds, no root, no site, no network.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
NIGHT ?= 2024-03-01
STAMP := $(VENV)/.installed
SITE_ENV = set -a; eval "$$($(BIN)/hfc site env)"; set +a

.PHONY: demo test unit venv site site-down airflow-db lint ui up down ops-debs

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@command -v $(PY) >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-dev; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(STAMP)

site: venv
	$(BIN)/hfc site up

site-down: venv
	$(BIN)/hfc site down

# Airflow's metadata database (SQLite under .site/airflow) for `airflow dags test`.
airflow-db: site
	@$(SITE_ENV); test -f "$$AIRFLOW_HOME/.db-migrated" || { $(BIN)/airflow db migrate >/dev/null && touch "$$AIRFLOW_HOME/.db-migrated"; }

# One night of the pipeline on the local site, then what it left behind (`hfc summary`: the
# night's quicklook opened over the archive's HTTP, and the HQI query service's WSDL URL).
demo: airflow-db
	@$(SITE_ENV); export PATH="$(CURDIR)/$(BIN):$$PATH"; \
	  echo "== running hfc_nightly for night $(NIGHT)"; \
	  $(BIN)/airflow dags test hfc_nightly "$(NIGHT)" --conf '{"night": "$(NIGHT)"}' > "$$HFC_SITE_DIR/demo-$(NIGHT).log" 2>&1 \
	    || { tail -n 60 "$$HFC_SITE_DIR/demo-$(NIGHT).log"; echo "demo failed: full log in $$HFC_SITE_DIR/demo-$(NIGHT).log"; exit 1; }; \
	  grep -oE "DagRun Finished: dag_id=[^,]*|state=[a-z]+, run_type" "$$HFC_SITE_DIR/demo-$(NIGHT).log" | tail -n 3 || true; \
	  echo "== summary (full Airflow log: $$HFC_SITE_DIR/demo-$(NIGHT).log)"; \
	  $(BIN)/hfc summary --night "$(NIGHT)"

# Debian tools of the operations tests: the Celery broker (redis-server), the browser of the
# status-page test (chromium, driven by Playwright; no browser is ever downloaded) and the
# validator of docker-compose.yaml (docker-compose 1.29, no engine needed).
ops-debs:
	@missing=""; for b in redis-server chromium docker-compose; do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

# The multihost tests (their own hosts, their own Airflow stack `mh`) mostly wait on the
# cluster, the network drills and Airflow's timeouts: they run beside the others, in a second
# pytest, so that CI stays within its hour. Their log is printed at the end. With PYTEST_ARGS
# (e.g. `make test PYTEST_ARGS=tests/unit`) one pytest runs just those.
MH_LOG = .site/multihost-tests.log
test: airflow-db ops-debs
	@$(SITE_ENV); export PATH="$(CURDIR)/$(BIN):$$PATH"; \
	  $(BIN)/ruff check .; \
	  if [ -n "$(PYTEST_ARGS)" ]; then \
	    rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	    if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc; \
	  fi; \
	  $(BIN)/pytest -m multihost tests/multihost -p no:cacheprovider --durations=25 > "$(MH_LOG)" 2>&1 & mhpid=$$!; \
	  trap 'kill $$mhpid 2>/dev/null; HFC_AIRFLOW_INSTANCE=mh HFC_AIRFLOW_EXECUTOR=CeleryExecutor HFC_AIRFLOW_PORT=8110 \
	    HFC_REDIS_PORT=6410 $(BIN)/hfc airflow down >/dev/null 2>&1; $(BIN)/hfc site down --shape multihost >/dev/null 2>&1; \
	    exit 130' INT TERM; \
	  echo "== multihost tests running beside the others (pid $$mhpid, log $(MH_LOG))"; \
	  rc=0; $(BIN)/pytest -m "not multihost and not compose" --durations=40 || rc=$$?; \
	  mrc=0; wait $$mhpid || mrc=$$?; \
	  echo "== multihost tests (tests/multihost, exit $$mrc):"; cat "$(MH_LOG)"; \
	  $(BIN)/hfc site down --shape multihost >/dev/null || true; \
	  for r in $$rc $$mrc; do if [ $$r -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; done; \
	  if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$mrc

# The pure tests (tests/unit): no root, no site, no network; Airflow gets a temporary
# AIRFLOW_HOME (tests/conftest.py), nothing is written into the checkout.
unit: venv
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

lint: venv
	$(BIN)/ruff check .

# The Airflow UI on the local site: http://127.0.0.1:8080, user admin, password in
# .site/airflow/passwords.json (generated once).
ui: airflow-db
	@$(SITE_ENV); export PATH="$(CURDIR)/$(BIN):$$PATH"; \
	  echo "Airflow UI: http://127.0.0.1:8080  user admin, password: $$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["admin"])' "$$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")"; \
	  exec $(BIN)/airflow standalone

# The real scheduler stack on the local site (api-server on 127.0.0.1:8080, scheduler,
# dag-processor, triggerer; LocalExecutor; metadata in the site's PostgreSQL).
up: site
	$(BIN)/hfc airflow up

down: venv
	$(BIN)/hfc airflow down
