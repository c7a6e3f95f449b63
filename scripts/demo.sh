#!/usr/bin/env bash
# Install everything, then train the supervised baseline and ARCO on the built-in phantom and print the evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec arco demo --out runs/demo "$@"
