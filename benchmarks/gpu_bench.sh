#!/usr/bin/env bash
# The one script a session with a lent GPU machine runs (device tool, repository root, $OUT set).
# The exact call, and how to prepare .whl/ first, are in benchmarks/README.md ("GPU runs").
#
# Steps, each under its own time limit AND a whole-run budget (BUDGET_S, default 300 s, so the
# call fits timeout_s=330 and a second try fits the session's 15 device minutes):
#   unpack    .whl/site.tar.xz -> $SITE (only what the GPU image lacks; gpu_wheels.py)
#   imports   everything the steps below import, with only the image + the pack + src/
#   machine   nvidia-smi, torch/CUDA/cuDNN versions
#   phantoms  3 full-size phantoms (512x512, ~300 slices) built in parallel, before any timing
#   weights   random-weight production stage folders for predict_final.py
#   check     CUDA vs CPU labels of the same weights (>= 99.5 % equal voxels, fp32 and fp16)
#   predict   predict_final.py on the 3 phantoms: process start to last file written
#   bench     c2fseg bench, production networks, cold + 3 warm, nnUNetPredictor mirroring off/on
# ONLY="bench" (or "check,predict", ...) measures only those in a rerun; setup steps always run.
# Results in $OUT (at most 8 files come back): gpu_bench.log, steps.tsv, check.json,
# bench.json + bench.md, predict_final.json. Every step writes its JSON as it goes, so a step
# killed by its limit still leaves what it finished (and PYTHONUNBUFFERED keeps its output).
#
# C2FSEG_GPU_DRY_RUN=1: the same steps on the CPU with tiny sizes (benchmarks/gpu_dry_run.sh
# runs it so on this machine, with PYTHON=a Python that has only the image's packages).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/c2fseg_gpu_out}"
DRY="${C2FSEG_GPU_DRY_RUN:-0}"
PY="${PYTHON:-python3}"
WHL="${WHL_DIR:-.whl}"
SITE="${SITE_DIR:-/tmp/site}"
WORK="${WORK_DIR:-/tmp/c2fseg_gpu}"
BUDGET="${BUDGET_S:-300}"
SCALE="${LIMIT_SCALE:-1}"  # the dry run multiplies every step limit (a shared 2-core CPU is slow)
T0=$(date +%s)
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/gpu_bench.log") 2>&1
printf 'step\trc\tseconds\tlimit_s\n' > "$OUT/steps.tsv"

ONLY="${ONLY:-check predict bench}"  # a rerun may measure only some: ONLY="bench"

# step NAME LIMIT_S COMMAND...: run under min(LIMIT_S, what is left of BUDGET); log it.
step() {
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  case "$name" in check|predict|bench)
    if [[ " ${ONLY//,/ } " != *" $name "* ]]; then
      echo "=== $name: not run (ONLY=$ONLY)"
      printf '%s	not-run	0	0
' "$name" >> "$OUT/steps.tsv"
      return 0
    fi;;
  esac
  local left=$(( BUDGET - ($(date +%s) - T0) ))
  (( left < limit )) && limit=$left
  if (( limit < 5 )); then
    echo "=== $name: SKIPPED, the run's ${BUDGET} s budget is spent"
    printf '%s\tskipped\t0\t0\n' "$name" >> "$OUT/steps.tsv"
    return 124
  fi
  echo; echo "=== $name (limit ${limit} s; $(( $(date +%s) - T0 )) s into the run; $(date -u +%H:%M:%S) UTC)"
  local t=$(date +%s.%N)
  STEP_LIMIT=$limit timeout -k 5 "$limit" "$@"
  local rc=$?
  local secs
  secs=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  (( rc == 124 || rc == 137 )) && echo "=== $name: KILLED at its ${limit} s limit"
  echo "=== $name: exit $rc after $secs s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$limit" >> "$OUT/steps.tsv"
  return $rc
}

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; SIZE=tiny; COUNT=2
  WEIGHTS_ARGS=(--kind thin --width 4 --patch 16,32,32)
  CHECK_ARGS=(--device cpu --width 4 --patch 32,64,64)
  BENCH_ARGS=(--models thin --width 4 --patch 16,32,32 --warm 1 --baseline nomirror --precision fp32)
  echo "DRY RUN: CPU, tiny networks, tiny phantoms (checks the packing and the steps, not speed)"
else
  DEVICE=cuda; SIZE=full; COUNT=3
  WEIGHTS_ARGS=(--kind production)
  CHECK_ARGS=(--device cuda)
  BENCH_ARGS=(--models production --warm 3 --baseline all)
fi

step unpack 60 "$PY" benchmarks/gpu_wheels.py unpack --archive "$WHL/site.tar.xz" --dest "$SITE" || exit 2
export PYTHONPATH="$SITE:$PWD/src"
export nnUNet_raw="$WORK/nnunet" nnUNet_preprocessed="$WORK/nnunet" nnUNet_results="$WORK/nnunet"

step imports 90 "$PY" -c "
import importlib, sys
mods = ['c2fseg.bench.runner', 'c2fseg.bench.check', 'c2fseg.bench.make_phantoms', 'c2fseg.bench.e2e',
        'c2fseg.bench.weights_folder', 'c2fseg.cli', 'c2fseg.commands.predict', 'c2fseg.infer.batch',
        'c2fseg.data.phantom_case', 'nnunetv2.inference.predict_from_raw_data',
        'nnunetv2.utilities.plans_handling.plans_handler', 'skimage.transform', 'skimage.morphology',
        'skimage.measure', 'SimpleITK', 'cc3d', 'nibabel', 'blosc2', 'acvl_utils', 'batchgenerators',
        'dynamic_network_architectures', 'psutil', 'torch']
for m in mods:
    importlib.import_module(m)
import skimage.transform as t; t.resize  # lazy_loader: fails without skimage's __init__.pyi
print('imports ok:', len(mods), 'modules')
for m in ('c2fseg', 'SimpleITK', 'nnunetv2', 'cc3d', 'skimage', 'numpy', 'torch'):
    mod = sys.modules[m]
    print('loaded from:', m, getattr(mod, '__version__', '?'), mod.__file__)
" || exit 3

command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi
step machine 60 "$PY" -c "
import torch
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())
print('GPU:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none visible to torch')
"

step phantoms 150 "$PY" -m c2fseg.bench.make_phantoms --cache "$WORK/cache" --size "$SIZE" --count "$COUNT" \
  --predict-dir "$WORK/predict_in"
BENCH_CASE=$(ls "$WORK"/cache/phantom_"$SIZE"_*_0000.nii.gz 2>/dev/null | head -1)
FULL_CASE=(--case full-phantom)  # the bench's own phantom, with its label box as the ROI
[ "$DRY" = 1 ] && FULL_CASE=(--case "$BENCH_CASE")

step weights 90 "$PY" -m c2fseg.bench.weights_folder "$WORK/weights" "${WEIGHTS_ARGS[@]}"

step check 90 "$PY" -m c2fseg.bench.check "${CHECK_ARGS[@]}" --out "$OUT/check.json"

# predict_final.py as a user runs it, timed from just before its process starts; its own limit
# leaves the summary 15 s, so a killed run still reports the files it wrote.
predict() {
  local start end rc
  rm -rf "$WORK/predict_out"
  start=$(date +%s.%N)
  timeout -k 5 $(( STEP_LIMIT > 20 ? STEP_LIMIT - 15 : 5 )) "$PY" predict_final.py -i "$WORK/predict_in" \
    -o "$WORK/predict_out" --weights "$WORK/weights" --device "$DEVICE" --no-progress
  rc=$?
  end=$(date +%s.%N)
  "$PY" -m c2fseg.bench.e2e --start "$start" --end "$end" --rc "$rc" --output "$WORK/predict_out" \
    --out "$OUT/predict_final.json"
  return $rc
}
export -f predict
export PY WORK DEVICE OUT
step predict 120 bash -c predict

step bench 240 "$PY" -m c2fseg.cli bench "${FULL_CASE[@]}" "${BENCH_ARGS[@]}" --device "$DEVICE" \
  --cache "$WORK/cache" -o "$OUT/bench.json"

echo; echo "=== done in $(( $(date +%s) - T0 )) s of the ${BUDGET} s budget"
cat "$OUT/steps.tsv"
n=$(find "$OUT" -type f | wc -l)
ls -la "$OUT"
(( n > 8 )) && echo "WARNING: $n files in \$OUT; the device tool brings back at most 8"
awk -F'\t' 'NR > 1 && $2 != "0" && $2 != "not-run" {bad = 1} END {exit bad}' "$OUT/steps.tsv"
