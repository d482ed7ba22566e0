#!/usr/bin/env bash
# Device check: H100 training kernels at boost and at sustained clocks (issue 15).
#
# Why: netsim's H100 compute (Vidur's isolated inference kernels, netsim/data/kernels/vidur-h100.csv)
# runs 16-34% faster than every published H100 training run that is mostly dense compute, while
# the backward GEMMs cost twice the forward as assumed (docs: "Training-step replay").  This run
# measures the GEMMs, grouped GEMMs and attention the training cases use, first as a short
# benchmark does, then after a sustained load (`netsim profile --soak-s`), and records the
# clocks, power and throttle reasons; back on the development machine compare the two tables with
# each other and with vidur-h100.csv (`netsim validate-kernels TABLE --published`, and the
# training cases with `accelerator.compute.kernels` pointing at the soaked table).  The ratio of
# the SM-bound kernels' sustained to boost times, and the SM clock nvidia-smi reports under the
# soak, replace the assumed training clock of the h100-sxm profile (`accelerator.compute.clock_mhz`,
# 1830 MHz against the tables' 1980, *approx.*: netsim/calibration/profiles.py, "SM clock").
#
# One call on a lent GPU (about 7-9 minutes of device time; the device tool's `run`):
#   command: bash benchmarks/device_h100_kernels.sh
#   carry:   [".whl"]            (the wheels below; torch, numpy, pandas, ... are on the machine)
#   timeout_s: 600
# The machine's python3 has torch (CUDA) but not all of netsim's dependencies; before the call,
# here, in the repository root (pip works here, not there):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic pydantic-core annotated-types typing-inspection simpy
# (check `python3 -m pip show` there for anything else the import of netsim asks for).
#
# Environment: OUT (output folder; the device tool sets it), SOAK_S (default 90), DEVICE (default
# cuda; cpu runs the same steps on this machine's CPU as a smoke test), QUICK=1 (the quick grid).
set -euo pipefail
OUT=${OUT:-runs/device-h100}
SOAK_S=${SOAK_S:-90}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
grid=()
[ "${QUICK:-0}" = 1 ] && grid=(--quick)
kernels=gemm,grouped_gemm,attention
dtypes=bfloat16
[ "$DEVICE" = cuda ] && dtypes=bfloat16,float8

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv 2>/dev/null || true
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} > "$OUT/environment.txt" 2>&1

# 1. as a short benchmark sees the device (the conditions of Vidur's profiles)
$PY -m netsim profile --device "$DEVICE" "${grid[@]}" --kernels "$kernels" --dtype "$dtypes" \
  --out "$OUT/kernels-boost.csv" --force
# 2. after a sustained load, at the clocks a training step runs at
$PY -m netsim profile --device "$DEVICE" "${grid[@]}" --kernels "$kernels" --dtype "$dtypes" \
  --soak-s "$SOAK_S" --out "$OUT/kernels-sustained.csv" --force
# 3. the memory-bound kernels around the GEMMs, in BF16, once (bandwidth, not the SM clock, sets
#    them): the activations fused as the profiler can and eager as a bare TransformerConfig runs
#    them, the experts' probability weighting (training.activation_fusion: false; no table has
#    them on H100 yet), the norms (fused, and eager in fp32 as IBM fms's and Hugging Face's Llama
#    run them: training.eager_modules), the eager rotary embedding and the residual add
$PY -m netsim profile --device "$DEVICE" "${grid[@]}" --dtype bfloat16 \
  --kernels swiglu,swiglu_eager,gelu,gelu_eager,prob_weight,rmsnorm,rmsnorm_eager,rope_eager,layernorm,residual \
  --out "$OUT/elementwise-boost.csv" --force
nvidia-smi -q -d CLOCK,POWER,PERFORMANCE > "$OUT/nvidia-smi.txt" 2>&1 || true
echo "wrote $OUT: environment.txt kernels-boost.csv kernels-sustained.csv elementwise-boost.csv nvidia-smi.txt"
