#!/usr/bin/env bash
# Installs what lesion needs into this checkout, idempotently:
#   .venv/  with the pinned torch wheel (tch links against its libtorch) and numpy.
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
