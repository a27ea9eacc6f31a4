#!/usr/bin/env python3
"""Pack, unpack and check the Python packages the GPU benchmark needs on the lent machine.

The GPU machine has no network. Its image already holds torch (CUDA), numpy, scipy, pandas,
scikit-image, ... (``gpu_image_packages.txt``); what the benchmark imports is listed with the
reason in ``gpu_needs.txt``. Only the needed distributions that are NOT on the image are shipped,
so the image's own builds are never shadowed on ``PYTHONPATH``. Standard library only: the
``unpack`` command runs on the GPU machine before anything else is there.

  plan   [--pyver 3.12]                 print what is shipped and what is left to the image, and why
  pack   [--pyver 3.12] [--dest .whl]   download wheels (pip, here), install them into a staging
                                        tree for that Python, prune, write DEST/site.tar.xz and
                                        check what travels stays well under the 64 MiB limit
  unpack --archive A --dest DIR         extract a pack (on the GPU machine; prints its manifest)
  image-sim --donor SITE --dest DIR     for the dry run: a virtual environment holding only the
                                        donor's distributions that the image has (symlinks)

Nothing in a pack is deleted that code could load: tests folders, bytecode caches, console
scripts and C headers/static libraries are dropped; ``*.pyi`` stubs are KEPT (scikit-image's
lazy_loader reads its submodule lists from ``__init__.pyi``). Debug sections of shared objects
are stripped (``strip --strip-debug``, symbols kept) when ``strip`` is there.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEEDS = HERE / "gpu_needs.txt"
IMAGE_LIST = HERE / "gpu_image_packages.txt"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MIB = 2**20
DEVICE_LIMIT_MIB = 64  # the device tool's limit on everything that travels with a call
MAX_TRAVEL_MIB = 48  # what this script allows (pack + working tree): well under the limit
MANIFEST = "C2FSEG_PACK.json"
PRUNE_DIRS = ("tests", "__pycache__")
PRUNE_TOP = ("bin", "include", "lib64", "lib", "share")  # data files of wheels, never imported
MARKER = re.compile(r"""^python_version\s*(<=|>=|==|!=|<|>)\s*["'](\d+(?:\.\d+)*)["']$""")


@dataclass
class Need:
    """One line of gpu_needs.txt."""

    name: str
    version: str | None
    marker: str | None
    why: str

    @property
    def key(self) -> str:
        return normalize(self.name)


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of '-', '_', '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_needs(path: Path = NEEDS) -> list[Need]:
    """Parse gpu_needs.txt (``name[==version][; marker] | why``; '#' comments)."""
    needs = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        spec, _, why = line.partition("|")
        req, _, marker = spec.partition(";")
        name, _, version = req.strip().partition("==")
        if not name or not why.strip():
            raise ValueError(f"{path}:{n}: expected 'name[==version][; marker] | why', got {raw!r}")
        needs.append(Need(name.strip(), version.strip() or None, marker.strip() or None, why.strip()))
    return needs


def read_image_list(path: Path = IMAGE_LIST) -> set[str]:
    """Normalized names of the distributions on the GPU image."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {normalize(s.strip()) for s in lines if s.strip() and not s.lstrip().startswith("#")}


def marker_holds(marker: str | None, pyver: str) -> bool:
    """Evaluate the only marker form gpu_needs.txt uses: ``python_version OP "X.Y"``."""
    if not marker:
        return True
    match = MARKER.match(marker)
    if not match:
        raise ValueError(f"unsupported marker {marker!r}: use python_version <op> \"X.Y\"")
    op, ver = match.groups()
    have = tuple(int(x) for x in pyver.split(".")[:2])
    want = tuple(int(x) for x in ver.split("."))
    return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want,
            "==": have == want, "!=": have != want}[op]


def plan(needs: list[Need], image: set[str], pyver: str) -> tuple[list[Need], list[tuple[Need, str]]]:
    """(to ship, [(left out, reason)]) for Python ``pyver``."""
    ship, skip = [], []
    for need in needs:
        if not marker_holds(need.marker, pyver):
            skip.append((need, f"not needed on Python {pyver} ({need.marker})"))
        elif need.key in image:
            skip.append((need, "on the GPU image (gpu_image_packages.txt): its own build is used"))
        elif need.version is None:
            raise ValueError(f"{need.name} is needed ({need.why}), is not on the GPU image, and has "
                             f"no pinned version in {NEEDS.name}: pin it to ship it")
        else:
            ship.append(need)
    return ship, skip


def print_plan(ship: list[Need], skip: list[tuple[Need, str]], pyver: str) -> None:
    print(f"Python {pyver}: shipping {len(ship)} distributions missing on the GPU image:")
    for need in ship:
        print(f"  ship {need.name + '==' + str(need.version):<38} not on the image; {need.why}")
    print(f"left to the image or not needed ({len(skip)}):")
    for need, reason in skip:
        print(f"  skip {need.name:<38} {reason}")


# ------------------------------------------------------------------------------------ packing


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def target_args(pyver: str) -> list[str]:
    out = ["--only-binary=:all:", "--python-version", pyver, "--implementation", "cp"]
    for platform in PLATFORMS:
        out += ["--platform", platform]
    return out


def fetch(need: Need, pyver: str, cache: Path) -> Path:
    """The wheel(s) of one pinned distribution, in ``cache/<name>-<version>/`` (reused)."""
    folder = cache / f"{need.key}-{need.version}"
    if folder.is_dir() and any(folder.glob("*.whl")):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    spec = f"{need.name}=={need.version}"
    try:
        pip("download", "-q", "--no-deps", *target_args(pyver), "-d", str(folder), spec)
    except subprocess.CalledProcessError:
        # some pure-Python releases (nnunetv2 2.6.0, acvl-utils, ...) exist only as sdists: build
        # a py3-none-any wheel (no compiled code, so it fits any platform)
        print(f"no wheel for {spec} on the registry: building a pure-Python wheel from its sdist")
        pip("wheel", "-q", "--no-deps", "-w", str(folder), spec)
        built = list(folder.glob("*.whl"))
        if not all(w.name.endswith("-py3-none-any.whl") for w in built):
            raise SystemExit(f"{spec}: the wheel built from the sdist is not pure Python "
                             f"({[w.name for w in built]}); it would not run on the GPU machine") from None
    return folder


def prune(site: Path) -> dict:
    """Drop what no import loads (see module docstring); strip debug sections. Returns counts."""
    removed = 0
    for top in PRUNE_TOP:
        if (site / top).is_dir():
            shutil.rmtree(site / top)
            removed += 1
    for path in sorted(site.rglob("*"), reverse=True):
        if path.is_dir() and path.name in PRUNE_DIRS:
            shutil.rmtree(path)
            removed += 1
    stripped = 0
    strip = shutil.which("strip")
    for so in site.rglob("*.so*"):
        if strip and so.is_file() and not so.is_symlink():
            subprocess.run([strip, "--strip-debug", str(so)], check=True)
            stripped += 1
    return {"folders_removed": removed, "shared_objects_debug_stripped": stripped,
            "pyi_kept": len(list(site.rglob("*.pyi")))}


def archive(site: Path, dest: Path) -> Path:
    """``dest`` = site/ as tar.xz (tar + xz here when present, else Python's own)."""
    tmp = dest.with_suffix(".part")
    if shutil.which("tar") and shutil.which("xz"):
        env = {**os.environ, "XZ_OPT": "-9 -T0"}
        subprocess.run(["tar", "-C", str(site), "-cJf", str(tmp), "."], check=True, env=env)
    else:
        with tarfile.open(tmp, "w:xz", preset=9) as tar:
            tar.add(site, arcname=".")
    os.replace(tmp, dest)
    return dest


def travelling_bytes(repo: Path) -> int:
    """Bytes of the working tree that travel with a device call (tracked + untracked, not ignored)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
                             check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    files = [repo / f for f in out.decode().split("\0") if f]
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def pack(pyver: str, dest: Path, cache: Path, max_mib: float = MAX_TRAVEL_MIB,
         repo: Path | None = None) -> dict:
    """Build dest/site.tar.xz (+ dest/site-manifest.json); returns the manifest."""
    ship, skip = plan(read_needs(), read_image_list(), pyver)
    print_plan(ship, skip, pyver)
    with tempfile.TemporaryDirectory(prefix="c2fseg-pack-") as tmp:
        site = Path(tmp) / "site"
        wheels = [w for need in ship for w in sorted(fetch(need, pyver, cache).glob("*.whl"))]
        pip("install", "-q", "--no-index", "--no-deps", "--no-compile", *target_args(pyver),
            "--target", str(site), *map(str, wheels))
        pruned = prune(site)
        unpacked = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
        manifest = {
            "python": pyver, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "shipped": [{**asdict(n), "wheels": [w.name for w in wheels if normalize(w.name.split("-")[0]) == n.key]}
                        for n in ship],
            "left_to_image": [{"name": n.name, "reason": r} for n, r in skip],
            "pruned": pruned, "unpacked_mib": round(unpacked / MIB, 1),
        }
        (site / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("*.whl"):  # loose wheels of an older layout would travel too
            old.unlink()
        out = archive(site, dest / "site.tar.xz")
    size = out.stat().st_size
    tree = travelling_bytes(repo or HERE.parent)
    manifest.update({"archive_mib": round(size / MIB, 1), "working_tree_mib": round(tree / MIB, 1)})
    (dest / "site-manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    total = (size + tree) / MIB
    print(f"{out}: {size / MIB:.1f} MiB packed ({manifest['unpacked_mib']} MiB unpacked); with the "
          f"working tree ({tree / MIB:.1f} MiB) {total:.1f} MiB travel of the device's "
          f"{DEVICE_LIMIT_MIB} MiB (this script allows {max_mib} MiB)")
    if total > max_mib:
        raise SystemExit(f"too large: {total:.1f} MiB would travel (> {max_mib} MiB); ship less")
    return manifest


# ---------------------------------------------------------------------------------- unpacking


def unpack(archive_path: Path, dest: Path) -> dict:
    """Extract a pack into ``dest`` and return its manifest; warn about any shadowed package."""
    if not archive_path.is_file():
        raise SystemExit(f"no {archive_path}: run benchmarks/fetch_gpu_wheels.sh here first and "
                         "carry its folder (.whl) with the device call")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "r:xz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tar.extractall(dest)
    manifest = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    names = ", ".join(f"{s['name']}=={s['version']}" for s in manifest["shipped"])
    print(f"unpacked {archive_path} into {dest} (Python {manifest['python']}): {names}")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python"] != here:
        print(f"WARNING: the pack is for Python {manifest['python']}, this is {here}: "
              "compiled extensions will not load; rebuild with PYVER=" + here)
    shadowed = shadowed_by(manifest, dest)
    for name in shadowed:
        print(f"WARNING: {name} is shipped but this Python already has it: the pack's copy "
              "shadows the image's; drop it from the pack (gpu_image_packages.txt)")
    manifest["shadowed_image_packages"] = shadowed
    return manifest


def shadowed_by(manifest: dict, site: Path) -> list[str]:
    """Shipped distributions this interpreter also finds outside ``site`` (and PYTHONPATH)."""
    from importlib.metadata import distributions

    skip = {str(site.resolve())} | {str(Path(p).resolve()) for p in
                                    os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    paths = [p for p in sys.path if p and str(Path(p).resolve()) not in skip]
    present = {normalize(d.metadata["Name"]) for d in distributions(path=paths) if d.metadata["Name"]}
    return sorted(s["name"] for s in manifest["shipped"] if normalize(s["name"]) in present)


# ----------------------------------------------------------------------------- dry-run image


def top_level_entries(dist) -> set[str]:
    """First path components a distribution installed into site-packages (RECORD)."""
    tops = set()
    for f in dist.files or []:
        first = Path(str(f)).parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            tops.add(first)
    return tops


def image_sim(donor: Path, dest: Path, python: str, image: set[str]) -> dict:
    """A venv at ``dest`` whose site-packages links the donor's distributions on the image list."""
    from importlib.metadata import distributions

    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run([python, "-m", "venv", "--without-pip", str(dest)], check=True)
    site = next((dest / "lib").glob("python3*/site-packages"))
    pyver = site.parent.name.removeprefix("python")
    linked, left = [], []
    for dist in distributions(path=[str(donor)]):
        name = dist.metadata["Name"]
        if not name:
            continue
        if normalize(name) not in image:
            left.append(name)
            continue
        for top in top_level_entries(dist):
            src, dst = donor / top, site / top
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
        linked.append(name)
    print(f"image simulation {dest}: {len(linked)} donor distributions that the GPU image has; "
          f"left out (not on the image, so they must come from the pack or not be needed): "
          f"{', '.join(sorted(left, key=str.lower))}")
    added = add_missing_image_needs(site, {normalize(n) for n in linked}, image, pyver)
    return {"python": str(dest / "bin" / "python"), "linked": sorted(linked), "left_out": sorted(left),
            "added_from_registry": added}


def add_missing_image_needs(site: Path, have: set[str], image: set[str], pyver: str) -> list[str]:
    """Needed packages the image has but the donor lacks: installed into the stand-in (pip)."""
    missing = [n for n in read_needs() if n.key in image and n.key not in have
               and marker_holds(n.marker, pyver)]
    if missing:
        names = [n.name for n in missing]
        print("on the image but not in the donor, so installed into the stand-in from the "
              f"registry (newest release; the image's version may differ): {', '.join(names)}")
        pip("install", "-q", "--no-deps", "--no-compile", "--target", str(site), *names)
    return [n.name for n in missing]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--pyver", default="3.12")
    p = sub.add_parser("pack")
    p.add_argument("--pyver", default="3.12")
    p.add_argument("--dest", type=Path, default=Path(".whl"))
    p.add_argument("--cache", type=Path, default=None,
                   help="wheel cache (default ~/.cache/c2fseg-gpu-wheels/cpXY)")
    p.add_argument("--max-mib", type=float, default=MAX_TRAVEL_MIB)
    p = sub.add_parser("unpack")
    p.add_argument("--archive", type=Path, default=Path(".whl/site.tar.xz"))
    p.add_argument("--dest", type=Path, default=Path("/tmp/site"))
    p = sub.add_parser("image-sim")
    p.add_argument("--donor", type=Path, required=True, help="a site-packages holding the image's packages")
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--python", default=sys.executable, help="interpreter the venv is made from")
    args = parser.parse_args(argv)
    if args.cmd == "plan":
        print_plan(*plan(read_needs(), read_image_list(), args.pyver), args.pyver)
    elif args.cmd == "pack":
        cache = args.cache or Path.home() / ".cache" / "c2fseg-gpu-wheels" / f"cp{args.pyver.replace('.', '')}"
        pack(args.pyver, args.dest, cache, args.max_mib)
    elif args.cmd == "unpack":
        unpack(args.archive, args.dest)
    else:
        image_sim(args.donor, args.dest, args.python, read_image_list())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
