# Sourced by start_app.sh: run a server and restart it when it dies, with backoff.
# Usage: supervise LOG COMMAND [ARG ...]
#   The command's output goes to the terminal and to LOG; a line starting "Ready:" means it is ready.
#   - The very first start that ends before "Ready:" stops the supervisor (a setup error to fix).
#   - Once it was ready, it is restarted whenever it exits non-zero, even if a restart never gets
#     ready (a full disk may be freed meanwhile); exit 0 ends the supervisor.
#   - The delay before a restart doubles from GLMTTS_RESTART_BASE_S (2) up to GLMTTS_RESTART_CAP_S
#     (60) exactly, and is back at the base after a run that stayed up GLMTTS_HEALTHY_S (60) past ready.
#   GLMTTS_SUPERVISOR_TIME_SCALE (1) multiplies every wait and uptime (the tests run it fast).
#   Nothing is written but LOG (best effort): it works on a full disk.

supervise() {
  local log=$1; shift
  local base=${GLMTTS_RESTART_BASE_S:-2} cap=${GLMTTS_RESTART_CAP_S:-60} healthy=${GLMTTS_HEALTHY_S:-60}
  local scale=${GLMTTS_SUPERVISOR_TIME_SCALE:-1}
  local delay=$base ever_ready="" statuses status run
  while true; do
    # The reader's exit code says how the run went: 0 never ready, 1 ready, 2 ready and up a healthy while.
    "$@" 2>&1 | tee -a "$log" | {
      ready_at=""
      while IFS= read -r line; do
        printf '%s\n' "$line"
        [[ -z "$ready_at" && "$line" == Ready:* ]] && ready_at=$(date +%s.%N)
      done
      [ -z "$ready_at" ] && exit 0
      awk -v since="$ready_at" -v now="$(date +%s.%N)" -v scale="$scale" -v healthy="$healthy" \
        'BEGIN { exit ((now - since) / scale >= healthy ? 2 : 1) }'
    }
    statuses=("${PIPESTATUS[@]}")
    status=${statuses[0]} run=${statuses[2]}
    if [ "$run" -eq 0 ] && [ -z "$ever_ready" ]; then
      echo "start_app: the server failed to start (exit $status); see the messages above and $log" >&2
      exit "${status/#0/1}"
    fi
    [ "$status" -eq 0 ] && exit 0
    if [ "$run" -eq 0 ]; then
      echo "start_app: server did not get ready (exit $status); restarting in ${delay}s" >&2
    else
      ever_ready=1
      [ "$run" -eq 2 ] && delay=$base  # it was healthy a while: a new failure, not a crash loop
      echo "start_app: server died (exit $status) after being ready; restarting in ${delay}s" >&2
    fi
    sleep "$(awk -v delay="$delay" -v scale="$scale" 'BEGIN { print delay * scale }')"
    delay=$(( delay * 2 < cap ? delay * 2 : cap ))
  done
}
