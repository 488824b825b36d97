# Sourced by webui.sh and run-tests.sh: create .venv and install the project (and extras) when missing or stale.
# torch and torchvision come from the package registry: the CUDA build, which also runs on CPU-only machines and
# uses an NVIDIA GPU where there is one.
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$PWD/.venv}"
EXTRAS="${EXTRAS:-}"
STAMP="$VENV/.installed${EXTRAS:+-$EXTRAS}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "Installing requirements (first run downloads torch, about 5 GB; this takes a few minutes)"
  "$VENV/bin/python" -m pip install --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install torch torchvision
  "$VENV/bin/python" -m pip install -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$STAMP"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1
