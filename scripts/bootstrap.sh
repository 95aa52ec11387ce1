#!/usr/bin/env bash
# Prepare this machine for Locaria Batch: system packages (installed through apt when run as
# root on Debian, otherwise named), the virtual environment and the package itself.
#   scripts/bootstrap.sh          what `make demo` needs (PostgreSQL + PostGIS, Python env)
#   scripts/bootstrap.sh --test   plus what the tests, benchmarks and docs use (GDAL tools, Podman, serverless,
#                                 Graphviz, the peers of bench/dispatch_peers.py)
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
[[ "${1:-}" == "--test" ]] && with_test=1

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

pg_bindir() {
  local initdb
  initdb=$(command -v initdb 2>/dev/null || ls -1 /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)
  [[ -n "$initdb" ]] && dirname "$(readlink -f "$initdb")"
}

packages=()
bindir=$(pg_bindir || true)
if [[ -z "$bindir" ]]; then
  packages+=(postgresql-15 postgresql-15-postgis-3)
  major=15
else
  major=$("$bindir/postgres" --version | awk '{print $NF}' | cut -d. -f1)
  [[ -f /usr/share/postgresql/$major/extension/postgis.control ]] || packages+=("postgresql-$major-postgis-3")
fi
if [[ $with_test == 1 ]]; then
  command -v ogr2ogr >/dev/null || packages+=(gdal-bin)
  command -v podman >/dev/null || packages+=(podman)
  command -v runc >/dev/null || packages+=(runc)
  command -v debootstrap >/dev/null || packages+=(debootstrap)
  command -v npm >/dev/null || packages+=(npm)
  command -v dot >/dev/null || packages+=(graphviz)   # the diagrams under docs/ (make docs)
  command -v chromium >/dev/null || packages+=(chromium)  # the console's browser tests (Playwright)
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)

if ((${#packages[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}" >/dev/null
  else
    echo "Missing system packages: ${packages[*]}" >&2
    echo "Install them (Debian/Ubuntu: sudo apt-get install ${packages[*]}) and run this again." >&2
    exit 1
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv"
  python3 -m venv .venv
fi
extras=""
[[ $with_test == 1 ]] && extras="[test,bench]"  # bench: the peers of bench/dispatch_peers.py
stamp=".venv/.installed$extras"
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  say "installing locaria-batch$extras into .venv"
  # pip warns about every index location it cannot use; only real errors are worth showing
  quiet() { grep -vE "is ignored: it is neither|BuildBackendWarning" >&2 || true; }
  .venv/bin/python -m pip install -q --upgrade pip 2> >(quiet)
  .venv/bin/python -m pip install -q -e ".$extras" 2> >(quiet)
  touch "$stamp"
fi

if [[ $with_test == 1 && -f scripts/test-setup.sh ]]; then
  scripts/test-setup.sh
fi
