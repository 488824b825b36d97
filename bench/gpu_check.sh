#!/usr/bin/env bash
# GPU check for issue 14 (speed and memory), item 5. Run on a machine with one NVIDIA GPU, from the repository root:
#
#     bash bench/gpu_check.sh            # WORK=/tmp/webui-gpu-check PYTHON=.venv/bin/python by default
#
# 1. writes the deterministic full-size random-weight SD1.5 and SDXL checkpoints (bench/fullsize.py, fp16, ~2 + 6.5
#    GiB, no download; kept in $WORK for the next run);
# 2. it/s, fp16, engine vs bare diffusers on the same weights (bench/vs_diffusers.py): SD1.5 512x512 and SDXL
#    1024x1024, 20 Euler steps, CFG 7 -- target ratio >= 1.0;
# 3. seconds per step and peak VRAM per mode (bench/throughput.py): default (fp16, sdp) / medvram / lowvram, the
#    other attention modes, ToMe 0.5, fp32 -- targets: medvram <= 50 %, lowvram <= 25 % of the default's peak VRAM.
# Every table is printed and appended to bench/RESULTS.md with the machine and the date. Stops at the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=${WORK:-/tmp/webui-gpu-check}
STEPS=${STEPS:-20}
export HF_HUB_OFFLINE=1
CK="$WORK/models/Stable-diffusion"
mkdir -p "$CK"

"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: this check needs a GPU")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

"$PY" bench/fullsize.py SD1 "$CK/full-sd1.safetensors"
"$PY" bench/fullsize.py SDXL "$CK/full-sdxl.safetensors"

"$PY" bench/vs_diffusers.py --ckpt "$CK/full-sd1.safetensors" --size 512 --steps "$STEPS" --runs 3
"$PY" bench/vs_diffusers.py --ckpt "$CK/full-sdxl.safetensors" --size 1024 --steps "$STEPS" --runs 2

"$PY" bench/throughput.py --ckpt "$CK/full-sd1.safetensors" --work "$WORK" --size 512 --steps 10 \
    --modes fp16,medvram,lowvram,sdp-no-mem,sub-quad,v1,doggettx,invokeai,none,xformers,tome,fp32
"$PY" bench/throughput.py --ckpt "$CK/full-sdxl.safetensors" --work "$WORK" --size 1024 --steps 6 \
    --modes fp16,medvram,lowvram,sub-quad,tome

echo "done: see bench/RESULTS.md (medvram/lowvram peak VRAM against the fp16 row's)"
