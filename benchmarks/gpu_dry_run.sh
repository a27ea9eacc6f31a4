#!/usr/bin/env bash
# Dry run of the prepared GPU call on THIS machine (no GPU): proves the packing and unpacking and
# every step of benchmarks/gpu_bench.sh before device time is spent on them.
#
#   bash benchmarks/gpu_dry_run.sh            # ~10 min the first time (xz), ~3-5 min after
#
# 1. pack the wheels with the same script, for this machine's Python (the donor's version);
#    the pack is reused from PACK_DIR while gpu_needs.txt, gpu_image_packages.txt and
#    gpu_wheels.py are older than it;
# 2. build a stand-in for the GPU image: a fresh virtual environment holding only those of the
#    donor environment's packages that the image has (gpu_image_packages.txt), linked;
# 3. run gpu_bench.sh with C2FSEG_GPU_DRY_RUN=1 (CPU, tiny sizes) under `env -i`, with that
#    Python, so only the image stand-in + the unpacked pack + src/ are importable;
# 4. check what came out (benchmarks/gpu_dry_check.py).
# DONOR_PYTHON: an environment with the image's packages (default: the project venv).
set -euo pipefail
cd "$(dirname "$0")/.."
DONOR_PY="${DONOR_PYTHON:-/work/main/.venv/bin/python}"
PYVER=$("$DONOR_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
DONOR_SITE=$("$DONOR_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PACK_DIR="${PACK_DIR:-$HOME/.cache/c2fseg-gpu-wheels/dry-pack-cp${PYVER/./}}"
DRY="${DRY_DIR:-$(mktemp -d /tmp/c2fseg-gpu-dry.XXXXXX)}"
mkdir -p "$DRY"
echo "dry run in $DRY (Python $PYVER, donor $DONOR_SITE)"

stale=1
if [ -f "$PACK_DIR/site.tar.xz" ]; then
  stale=0
  for f in benchmarks/gpu_needs.txt benchmarks/gpu_image_packages.txt benchmarks/gpu_wheels.py; do
    [ "$f" -nt "$PACK_DIR/site.tar.xz" ] && stale=1
  done
fi
if [ "$stale" = 1 ]; then
  PYVER="$PYVER" DEST="$PACK_DIR" bash benchmarks/fetch_gpu_wheels.sh
else
  echo "reusing the pack $PACK_DIR/site.tar.xz (newer than its inputs)"
fi

"$DONOR_PY" benchmarks/gpu_wheels.py image-sim --donor "$DONOR_SITE" --dest "$DRY/image" \
  --python "$DONOR_PY"

set +e
env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" LANG=C.UTF-8 PYTHONNOUSERSITE=1 \
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OUT="$DRY/out" C2FSEG_GPU_DRY_RUN=1 \
  PYTHON="$DRY/image/bin/python" WHL_DIR="$PACK_DIR" SITE_DIR="$DRY/site" WORK_DIR="$DRY/work" \
  BUDGET_S="${BUDGET_S:-2400}" LIMIT_SCALE="${LIMIT_SCALE:-5}" bash benchmarks/gpu_bench.sh
rc=$?
set -e
echo "gpu_bench.sh (dry) exit $rc"
"$DRY/image/bin/python" benchmarks/gpu_dry_check.py "$DRY" && echo "DRY RUN OK ($DRY)"
