#!/usr/bin/env bash
# Prepare (here, with internet) the Python packages benchmarks/gpu_bench.sh needs on the lent GPU
# machine, which has python3 + CUDA torch, numpy, scipy, psutil, tqdm, nvidia-ml-py (and torch's
# own dependencies) but no network. The result goes to .whl/ (git-ignored) and travels with the
# device call as a carried path:  run(command="bash benchmarks/gpu_bench.sh", carry=[".whl"]).
#
#   bash benchmarks/fetch_gpu_wheels.sh                      # .whl/site.tar.xz for cp312
#   PACK=0 PYVER=3.11 DEST=/tmp/w bash benchmarks/fetch_gpu_wheels.sh   # plain wheels (local check)
#
# The list is the import closure of c2fseg's inference + bench modules and of nnU-Net's
# nnUNetPredictor with nnunetv2==2.6.0, minus what the GPU machine already has; checked by
# installing into an empty --target and importing with only torch/numpy/scipy/psutil/tqdm beside it.
#
# The wheels together are ~110 MB (SimpleITK alone 52 MB), more than a device call may carry
# (64 MiB). So by default (PACK=1) they are installed into a staging tree for the target Python
# (pip only unpacks, no code runs), pruned of tests, caches and sample data, and packed with xz
# into .whl/site.tar.xz; gpu_bench.sh unpacks it to /tmp/site. The wheels stay in a temp folder.
set -euo pipefail
PYVER="${PYVER:-3.12}"
DEST="${DEST:-.whl}"
PACK="${PACK:-1}"
PACKAGES=(
  # c2fseg's own needs
  SimpleITK==2.5.3 connected-components-3d==4.1.1
  # nnU-Net v2 and what importing its predictor pulls in
  nnunetv2==2.6.0 dynamic-network-architectures==0.3.1 batchgenerators==0.25.5 acvl-utils==0.2.6
  blosc2==3.12.2 ndindex==1.10.1 msgpack==1.1.2 numexpr==2.14.1 platformdirs==4.5.0 py-cpuinfo==9.0.0
  scikit-image==0.25.2 imageio==2.37.2 lazy-loader==0.4 tifffile==2025.10.16 pillow==12.0.0 packaging==25.0
  scikit-learn==1.7.2 joblib==1.5.2 threadpoolctl==3.6.0
  pandas==2.3.3 python-dateutil==2.9.0.post0 six==1.17.0 pytz==2025.2 tzdata==2025.2
  nibabel==5.3.2
  requests==2.32.5 urllib3==2.5.0 charset-normalizer==3.4.4 certifi==2025.10.5 idna==3.11
)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
WHEELS="$DEST"
[ "$PACK" = 1 ] && WHEELS="$WORK/wheels"
mkdir -p "$DEST" "$WHEELS"
for pkg in "${PACKAGES[@]}"; do
  if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
      "${PLATFORMS[@]}" -d "$WHEELS" "$pkg" 2>/dev/null; then
    # Some pure-Python releases (nnunetv2 2.6.0, acvl-utils, ...) exist only as sdists:
    # build a py3-none-any wheel from the sdist (no compiled code, so it fits any platform).
    echo "no wheel for $pkg on PyPI: building a pure-Python wheel from its sdist"
    python3 -m pip wheel -q --no-deps -w "$WHEELS" "$pkg"
  fi
done
ls -1 "$WHEELS"
du -sh "$WHEELS"
[ "$PACK" = 1 ] || exit 0

SITE="$WORK/site"
python3 -m pip install -q --no-index --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp "${PLATFORMS[@]}" --target "$SITE" "$WHEELS"/*.whl
find "$SITE" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
rm -rf "$SITE/skimage/data" "$SITE/sklearn/datasets/data" "$SITE/sklearn/datasets/images" \
  "$SITE/sklearn/datasets/descr" "$SITE/bin"
find "$SITE" -name '*.pyi' -delete
XZ_OPT="-9 -T0" tar -C "$SITE" -cJf "$WORK/site.tar.xz" .
mv "$WORK/site.tar.xz" "$DEST/site.tar.xz"
size=$(stat -c %s "$DEST/site.tar.xz")
echo "$DEST/site.tar.xz: $((size / 1048576)) MiB (a device call carries at most 64 MiB)"
[ "$size" -lt $((63 * 1048576)) ] || { echo "too large to carry in one device call"; exit 1; }
