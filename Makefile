# `make run`: set everything up and run the dashboard with its worker, the SMTP sandbox and demo data.
# `make test`: the whole test suite (lint, migrations, SQLite, then PostgreSQL + Redis).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test test-sqlite test-postgres test-e2e lint

$(VENV)/installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_admin
	$(PY) manage.py setup_schedules
	$(PY) manage.py demo
	$(PY) manage.py serve 127.0.0.1:8000 --sandbox

lint: $(VENV)/installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

test-sqlite: $(VENV)/installed
	$(VENV)/bin/pytest

# The browser suite runs its own stack on SQLite: once, in the SQLite pass, is enough.
test-postgres: $(VENV)/installed
	DATABASE_URL=$(POSTGRES_URL) REDIS_URL=$(REDIS_TEST_URL) $(VENV)/bin/pytest --ignore=tests/e2e

test-e2e: $(VENV)/installed
	$(VENV)/bin/pytest tests/e2e

test: lint test-sqlite test-postgres
