#!/usr/bin/env bash
# The one script a session with a lent GPU machine runs (device tool, repository root, $OUT set):
#
#   run(command="bash benchmarks/gpu_bench.sh", carry=[".whl"], timeout_s=540)
#
# Needs .whl/ from benchmarks/fetch_gpu_wheels.sh (the machine has no internet; it has python3,
# CUDA torch, numpy, scipy, psutil, tqdm, nvidia-ml-py). Steps, each under its own time limit so
# the whole script stays within ~8 minutes: install the wheels into /tmp/site, nvidia-smi, a
# CUDA-vs-CPU label agreement check on a small case, then `c2fseg bench` on the full phantom with
# production and thin networks (and the real CT if ../shared/data/real/ came along). JSON and
# markdown results go to $OUT; copy them into benchmarks/results/ afterwards.
set -uo pipefail
OUT="${OUT:-/tmp/c2fseg_gpu_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_bench.log"
exec > >(tee -a "$LOG") 2>&1
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

step "install wheels"
if [ -f .whl/site.tar.xz ]; then
  mkdir -p /tmp/site && tar -C /tmp/site -xJf .whl/site.tar.xz
elif ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
else
  echo "no .whl/ here: run benchmarks/fetch_gpu_wheels.sh first and carry .whl"; exit 2
fi
export PYTHONPATH="/tmp/site:$PWD/src"
export nnUNet_raw=/tmp/nnunet nnUNet_preprocessed=/tmp/nnunet nnUNet_results=/tmp/nnunet
python3 -c "import c2fseg.bench.runner, nnunetv2.inference.predict_from_raw_data, cc3d, SimpleITK; print('imports ok')" || exit 3

step "machine"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

step "CUDA vs CPU agreement (small phantom, thin random networks)"
timeout 90 python3 -m c2fseg.bench.check --out "$OUT/cuda_cpu_agreement.json"

CASES=(--case full-phantom)
[ -f ../shared/data/real/ts_example_ct.nii.gz ] && CASES+=(--case real) \
  || echo "real CT not on this machine (it never travels with the repo): full phantom only"
CACHE=/tmp/c2fseg_bench_cache

step "bench: production-size networks, nnU-Net baseline with and without mirroring"
timeout 270 python3 -m c2fseg.cli bench "${CASES[@]}" --models production --baseline all --warm 3 \
  --cache "$CACHE" -o "$OUT/bench-gpu-production.json"

step "bench: thin networks, nnU-Net baseline without mirroring"
timeout 150 python3 -m c2fseg.cli bench "${CASES[@]}" --models thin --baseline nomirror --warm 3 \
  --cache "$CACHE" -o "$OUT/bench-gpu-thin.json"

step "done"
ls -la "$OUT"
