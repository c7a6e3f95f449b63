#!/usr/bin/env bash
# Install everything, lint, build the user guide (strict: a broken link, anchor or API reference fails), then run
# the test suite (slow/GPU tests are opt-in: pytest -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests benchmarks
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
echo "docs: mkdocs build --strict passed"
exec python -m pytest -q -n 2 -m "not slow and not gpu" "$@"
