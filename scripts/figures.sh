#!/usr/bin/env bash
# Copy the figures that README.md and docs/ show from the folders the commands wrote (never edit them by hand):
#   bash scripts/figures.sh headline STUDY        # STUDY: arco study arco-vs-supervised --out STUDY --seeds 0 1 2 3 4
#   bash scripts/figures.sh examples DEMO STUDY   # DEMO: arco demo --out DEMO;
#                                                 # STUDY: arco study arco-vs-supervised --fast --seeds 0 1 --out STUDY
set -euo pipefail
cd "$(dirname "$0")/.."
figs=docs/figures
case "${1:-}" in
  headline)
    study=${2:?give the arco-vs-supervised study folder}
    cp "$study/dice_per_arm.png" "$figs/arco-vs-supervised-dice.png"
    cp "$study/curves.png" "$figs/arco-vs-supervised-curves.png"
    ;;
  examples)
    demo=${2:?give the demo folder} study=${3:?give the study folder}
    mkdir -p "$figs/examples"
    . .venv/bin/activate
    arco curves "$demo/arco" --out "$figs/examples/run-curves.png"
    cp "$demo/qualitative.png" "$figs/examples/demo-qualitative.png"
    cp "$(ls "$demo"/evaluation/arco/overlay_median_*.png | head -1)" "$figs/examples/overlay.png"
    cp "$study/dice_per_arm.png" "$figs/examples/study-dice-per-arm.png"
    cp "$study/curves.png" "$figs/examples/study-curves.png"
    cp "$(ls "$study"/qualitative*.png | head -1)" "$figs/examples/study-qualitative.png"
    ;;
  *)
    echo "usage: bash scripts/figures.sh headline STUDY | examples DEMO STUDY" >&2
    exit 2
    ;;
esac
echo "copied into $figs"
