#!/usr/bin/env bash
# Installs what lesion needs into this checkout, idempotently:
#   .venv/  with the pinned torch wheel (tch links against its libtorch) and numpy,
#           plus timm and its imports, pinned and installed without dependencies (tests only).
# Safe to rerun; does nothing when all is in place. Needs python3 with venv and pip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="2.11.0"
VENV="$ROOT/.venv"

if ! command -v python3 >/dev/null 2>&1; then
  echo "error: python3 is required (lesion uses the libtorch inside the torch==$TORCH_VERSION wheel)." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  python3 -m venv "$VENV" || { echo "error: 'python3 -m venv' failed; install the python3-venv package." >&2; exit 1; }
fi
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "error: pip is missing in $VENV; install python3-pip / python3-venv." >&2
  exit 1
fi
have="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ "$have" != "$TORCH_VERSION" ]; then
  echo "setup: installing torch==$TORCH_VERSION into $VENV (a few GB, once)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" "numpy>=1.26"
fi
# timm and what importing it needs, for the Inception-v4 equality test
# (crates/lesion-models/tests/inception_v4_timm.rs runs tools/fixtures/make_inception_v4.py).
# --no-deps: pip must never replace the pinned torch (tch links against its libtorch).
TIMM_VERSION="1.0.31"
TIMM_PINS=("timm==$TIMM_VERSION" "torchvision==0.26.0" "huggingface_hub==2.4.0" "safetensors==0.8.0" "pyyaml==6.0.3" "pillow==13.0.0")
# huggingface_hub may print an optional-import notice on stdout: keep only the last line.
have_timm="$("$VENV/bin/python" -c 'import timm; print(timm.__version__)' 2>/dev/null | tail -n1 || true)"
if [ "$have_timm" != "$TIMM_VERSION" ]; then
  echo "setup: installing ${TIMM_PINS[*]} into $VENV (--no-deps, torch untouched)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${TIMM_PINS[@]}"
fi
