# The two README commands are `make quickstart` and `make test`; the rest are their parts.
.PHONY: install install-dev quickstart test lint

install:
	scripts/install.sh

install-dev:
	scripts/install.sh --dev

quickstart: install
	scripts/quickstart.sh

test: install-dev
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

lint: install-dev
	.venv/bin/ruff check .
