# Source this to build or run lesion by hand: it points tch at the project's own torch.
# (scripts/setup.sh creates .venv; the README's commands do all of this for you.)
_lesion_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export LIBTORCH_USE_PYTORCH=1
export PATH="$_lesion_root/.venv/bin:$PATH"
_torch_lib="$(ls -d "$_lesion_root"/.venv/lib/python3*/site-packages/torch/lib 2>/dev/null | head -n1)"
export LD_LIBRARY_PATH="$_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LESION_PYTHON="$_lesion_root/.venv/bin/python"
unset _torch_lib
