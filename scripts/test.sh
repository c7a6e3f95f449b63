#!/usr/bin/env bash
# Install everything, lint, then run the test suite (slow/GPU tests are opt-in: pytest -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests benchmarks
exec python -m pytest -q -n 2 -m "not slow and not gpu" "$@"
