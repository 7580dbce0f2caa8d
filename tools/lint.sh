#!/usr/bin/env bash
# The lint command: ruff's checks (rules in pyproject.toml) and its formatter, on the whole tree.
#   bash tools/lint.sh          check, as CI does
#   bash tools/lint.sh --fix    fix what ruff can and format the files
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
# shellcheck source=tools/env.sh
source tools/env.sh
activate_env requirements-test.txt >/dev/null || { echo "lint: could not prepare the Python environment" >&2; exit 1; }
if [ "${1:-}" = "--fix" ]; then
  ruff check --fix . && ruff format .
else
  ruff check . && ruff format --check .
fi
