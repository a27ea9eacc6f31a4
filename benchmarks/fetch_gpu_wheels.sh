#!/usr/bin/env bash
# Prepare HERE (with the package registry) the Python packages benchmarks/gpu_bench.sh needs on
# the lent GPU machine, which has no network. Writes .whl/site.tar.xz (git-ignored), which the
# device call carries:  run(command="bash benchmarks/gpu_bench.sh", carry=[".whl"], ...).
#
#   bash benchmarks/fetch_gpu_wheels.sh              # for the GPU machine's Python 3.12
#   PYVER=3.11 DEST=/tmp/w bash benchmarks/fetch_gpu_wheels.sh    # for this machine (dry run)
#
# What is shipped: the distributions in benchmarks/gpu_needs.txt that are NOT on the GPU image
# (benchmarks/gpu_image_packages.txt, from the device tool's KINDS.md); the script prints each
# one with the reason, and what it leaves to the image's own builds. See gpu_wheels.py.
# Run it in the checkout that the device tool sends (the session's own checkout), since .whl
# travels from there. Wheels are cached in ~/.cache/c2fseg-gpu-wheels/; the xz step takes a few
# minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
DEST="${DEST:-.whl}"
PY="${PACK_PYTHON:-python3}"  # any Python with pip; only downloads and unpacks, runs no package code
exec "$PY" benchmarks/gpu_wheels.py pack --pyver "$PYVER" --dest "$DEST" ${WHEEL_CACHE:+--cache "$WHEEL_CACHE"}
