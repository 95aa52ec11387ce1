#!/usr/bin/env bash
# What the tests need beyond apt and pip (run by `scripts/bootstrap.sh --test`; each step is
# skipped when already done): the serverless framework for the `serverless package` check, and the
# registry-free Python base image the job images are built on (the Podman service itself is
# started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x .locaria/npm/node_modules/.bin/serverless ]]; then
  echo "==> installing serverless 3 into .locaria/npm"
  npm install --silent --no-audit --no-fund --prefix .locaria/npm serverless@3
fi
scripts/container-base.sh
