#!/usr/bin/env bash
# Create .venv (if absent) and install arco into it. Installs the CPU build of torch from local disk first when no
# torch is present, so that pip does not pull a multi-GB CUDA build. GPU users: install your own torch first.
# Extras: dev (tests, lint) and docs (the user guide's build); ARCO_EXTRAS=mni,slurm adds more.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# pip, quiet, without the registry mirror's "Location ... is ignored" noise; pip's exit code is kept.
pip_install() {
  local log
  log=$(mktemp)
  if ! python -m pip install -q "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2 || true
    rm -f "$log"
    return 1
  fi
  grep -v "^WARNING: Location" "$log" || true
  rm -f "$log"
}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  pip_install torch==2.13.0
fi
pip_install -e ".[dev,docs${ARCO_EXTRAS:+,$ARCO_EXTRAS}]"
python -c "import arco, torch; print(f'arco {arco.__version__} with torch {torch.__version__}')"
