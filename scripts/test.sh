#!/usr/bin/env bash
# The whole test suite: lint, format check, unit and integration tests. Installs first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Debian's Chromium for the browser test of the search page (needs root for apt; skipped with a reason otherwise).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
