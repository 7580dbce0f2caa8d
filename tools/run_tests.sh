#!/usr/bin/env bash
# The test command: prepare the environment (with the test requirements), then run pytest.
#   bash tools/run_tests.sh [pytest args]
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 1
# shellcheck source=tools/env.sh
source tools/env.sh
activate_env requirements-test.txt || { echo "run_tests: could not prepare the Python environment" >&2; exit 1; }
export ORT_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
# Test files run in parallel, one worker per core up to four, each file whole on one worker (its apps start once).
# The workers fill the cores, so each process (the apps they start included) keeps to one BLAS and OpenMP thread:
# threads waiting for a busy core burn it (measured: 28 % less CPU in the voice-match tests, 5 % in the suite).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
exec python -m pytest tests -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder "$@"
