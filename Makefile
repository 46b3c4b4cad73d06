# Two entry points, each doing its own set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The test databases. Unreachable servers make their tests skip (fail under CI=true).
INTEGRITY_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
INTEGRITY_TEST_MARIADB_URL ?= mysql+pymysql://root@127.0.0.1:3306/test
export INTEGRITY_TEST_POSTGRES_URL INTEGRITY_TEST_MARIADB_URL

.PHONY: demo test install clean

$(BIN)/integrity: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("integrity needs Python 3.11 or newer" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/integrity

demo: install
	$(BIN)/integrity demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) reports/demo
