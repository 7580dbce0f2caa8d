"""The supervisor (tools/supervise.sh, as start_app.sh runs it) on a stand-in server and a fast clock:
restart delays double from 2 s to a cap of exactly 60 s, go back to 2 s after a healthy minute, and a
server that was ready once is restarted even when a restart does not get ready."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCALE = 0.01  # one supervisor second lasts 10 ms: a crash run (a few ms) stays far below a healthy minute (0.6 s)
# The stand-in's run n does PLAN[n]: "crash" prints Ready: and exits 1 at once, "healthy" stays up
# 150 supervisor seconds after Ready: and exits 1, "unready" exits 1 without Ready:, "stop" exits 0.
STAND_IN = r"""
runs=$(( $(cat "$1/runs" 2>/dev/null || echo 0) + 1 )); echo "$runs" > "$1/runs"
plan=($2); step=${plan[$((runs - 1))]}
case $step in
  crash) echo "Ready: run $runs"; exit 1 ;;
  healthy) echo "Ready: run $runs"; sleep "$3"; exit 1 ;;
  unready) echo "cannot start: no space left on the device"; exit 1 ;;
  stop) echo "Ready: run $runs"; exit 0 ;;
  first) echo "import error"; exit 3 ;;
esac
"""


def supervise(tmp_path: Path, plan: list[str]) -> subprocess.CompletedProcess:
    script = tmp_path / "stand_in.sh"
    script.write_text(STAND_IN)
    env = {"PATH": "/usr/bin:/bin", "GLMTTS_SUPERVISOR_TIME_SCALE": str(SCALE)}
    command = f'source {ROOT}/tools/supervise.sh; supervise "$0/app.log" bash "$0/stand_in.sh" "$0" "$1" "$2"'
    return subprocess.run(
        ["bash", "-c", command, str(tmp_path), " ".join(plan), str(150 * SCALE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def delays(stderr: str) -> list[tuple[str, int]]:
    return [(kind, int(s)) for kind, s in re.findall(r"(died|did not get ready).*restarting in (\d+)s", stderr)]


def test_delays_double_to_a_60_s_cap_and_reset_after_a_healthy_minute(tmp_path):
    plan = ["crash"] * 7 + ["healthy", "crash", "unready", "unready", "stop"]
    result = supervise(tmp_path, plan)
    assert result.returncode == 0, result.stderr
    assert delays(result.stderr) == [
        *[("died", s) for s in (2, 4, 8, 16, 32, 60, 60)],
        ("died", 2),  # up a healthy minute: back to the base
        ("died", 4),
        ("did not get ready", 8),  # ready once before: restarted all the same
        ("did not get ready", 16),
    ]
    assert (tmp_path / "runs").read_text().strip() == str(len(plan))
    assert "Ready: run 12" in (tmp_path / "app.log").read_text()


def test_a_first_start_that_never_gets_ready_stops_with_its_status(tmp_path):
    result = supervise(tmp_path, ["first"])
    assert result.returncode == 3
    assert "failed to start (exit 3)" in result.stderr and "import error" in result.stdout
    assert (tmp_path / "runs").read_text().strip() == "1"
