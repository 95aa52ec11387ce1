# The two set-up commands of the README.
.PHONY: demo test bench-smoke lint

demo:
	scripts/bootstrap.sh
	.venv/bin/locaria-batch demo

test:
	scripts/bootstrap.sh --test
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy
	.venv/bin/pytest

bench-smoke:
	scripts/bootstrap.sh --test
	.venv/bin/python bench/dispatch.py --jobs 40
	.venv/bin/python bench/dispatch_peers.py --smoke
	.venv/bin/python bench/load.py --size small
	.venv/bin/python bench/export.py --size small
	.venv/bin/python bench/s3_transfer.py --size small

lint:
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy
