# The two set-up commands of the README.
.PHONY: demo test bench-smoke lint docs

demo:
	scripts/bootstrap.sh
	.venv/bin/locaria-batch demo

test: lint
	.venv/bin/pytest

bench-smoke:
	scripts/bootstrap.sh --test
	.venv/bin/python bench/dispatch_peers.py --smoke
	.venv/bin/python bench/load.py --size small
	.venv/bin/python bench/export.py --size small
	.venv/bin/python bench/s3_transfer.py --size small
	.venv/bin/python bench/console.py --size small
	.venv/bin/python bench/chaos.py --size small

lint:  # installs the test tools first, so that it works in a fresh clone too
	scripts/bootstrap.sh --test
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy

# the diagrams of docs/diagrams/*.dot, as the PNGs the README and docs show (Graphviz: scripts/bootstrap.sh --test)
DIAGRAMS := $(patsubst docs/diagrams/%.dot,docs/images/%.png,$(wildcard docs/diagrams/*.dot))

docs: $(DIAGRAMS)

docs/images/%.png: docs/diagrams/%.dot
	@command -v dot >/dev/null || { echo "Graphviz is missing: scripts/bootstrap.sh --test installs it" >&2; exit 1; }
	dot -Tpng -Gdpi=110 $< -o $@
