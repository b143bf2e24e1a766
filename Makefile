.PHONY: setup run test unit bench lint

setup:
	scripts/install

run:
	scripts/run

test:
	scripts/test

unit:
	.venv/bin/pytest tests/unit

bench: setup
	.venv/bin/python bench/lifecycle.py

lint:
	.venv/bin/ruff check src tests bench examples
