#!/usr/bin/env bash
# Start the warm TTS WebUI: prepare the environment, then run app.py under a supervisor
# (tools/supervise.sh) that restarts it with backoff once it was ready.
#   bash start_app.sh [--host H] [--port P] [--device auto|cpu|cuda|cuda:N|mps] [--ckpt DIR] [--dtype fp32|bf16|fp16]
# The same settings come from GLMTTS_HOST, GLMTTS_PORT, GLMTTS_DEVICE, GLMTTS_CKPT, GLMTTS_DTYPE;
# CONDA_ENV names a conda env to use instead of the project .venv.
set -uo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
cd "$root" || exit 1
# shellcheck source=tools/env.sh
source tools/env.sh
# shellcheck source=tools/supervise.sh
source tools/supervise.sh
activate_env || { echo "start_app: could not prepare the Python environment (see above)" >&2; exit 1; }
export ORT_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
# Fewer glibc malloc arenas: request threads otherwise fragment memory and RSS creeps up under load.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"

mkdir -p outputs/logs
log="outputs/logs/app-$(date +%Y%m%d-%H%M%S).log"
echo "start_app: logging to $log"
supervise "$log" python app.py "$@"
