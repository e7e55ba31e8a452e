#!/usr/bin/env bash
# The whole test suite: lint, format check, unit and integration tests. Installs first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
