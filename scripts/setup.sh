#!/usr/bin/env bash
# Create .venv (if absent) and install arco into it. Installs the CPU build of torch from local disk first when no
# torch is present, so that pip does not pull a multi-GB CUDA build. GPU users: install your own torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  pip install -q torch==2.13.0
fi
pip install -q -e ".[dev${ARCO_EXTRAS:+,$ARCO_EXTRAS}]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import arco, torch; print(f'arco {arco.__version__} with torch {torch.__version__}')"
