# The two set-up commands of the README.
.PHONY: demo test bench-smoke lint

demo:
	scripts/bootstrap.sh
	.venv/bin/locaria-batch demo

test:
	scripts/bootstrap.sh --test
	.venv/bin/ruff check src tests bench
	.venv/bin/pytest

bench-smoke:
	scripts/bootstrap.sh --test
	.venv/bin/python bench/dispatch.py --jobs 40

lint:
	.venv/bin/ruff check src tests bench
