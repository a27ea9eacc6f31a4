"""benchmarks/gpu_wheels.py: ship only what the GPU image lacks, keep .pyi stubs, unpack safely."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def gw():
    spec = importlib.util.spec_from_file_location("gpu_wheels", BENCHMARKS / "gpu_wheels.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_wheels"] = module
    spec.loader.exec_module(module)
    return module


def test_plan_ships_nothing_the_image_has(gw):
    image = gw.read_image_list()
    ship, skip = gw.plan(gw.read_needs(), image, "3.12")
    shipped = {n.key for n in ship}
    assert not shipped & image
    for name in ("pandas", "scikit-learn", "scikit-image", "pillow", "requests", "numpy", "torch",
                 "lazy-loader", "tifffile", "imageio"):
        assert name in image and name not in shipped
    for name in ("simpleitk", "connected-components-3d", "nnunetv2", "dynamic-network-architectures",
                 "acvl-utils", "batchgenerators", "blosc2", "nibabel"):
        assert name in shipped
    assert all(n.version for n in ship)  # everything shipped is pinned
    assert {n.key for n, _ in skip} >= {"pandas", "scikit-image"}


def test_python_version_markers(gw):
    needs = [gw.Need("importlib-resources", "6.5.2", 'python_version < "3.12"', "nibabel")]
    assert [n.name for n in gw.plan(needs, set(), "3.11")[0]] == ["importlib-resources"]
    assert gw.plan(needs, set(), "3.12")[0] == []
    assert gw.marker_holds('python_version >= "3.10"', "3.12")
    with pytest.raises(ValueError, match="unsupported marker"):
        gw.marker_holds('sys_platform == "linux"', "3.12")


def test_unpinned_missing_package_is_an_error(gw):
    with pytest.raises(ValueError, match="pin it"):
        gw.plan([gw.Need("foo", None, None, "bar")], set(), "3.12")


def test_needs_file_parses_names_versions_and_reasons(gw, tmp_path):
    path = tmp_path / "needs.txt"
    path.write_text("# comment\n\nFoo_Bar==1.2 | because\nbaz; python_version < \"3.12\" | old\n")
    needs = gw.read_needs(path)
    assert [(n.key, n.version, n.marker, n.why) for n in needs] == [
        ("foo-bar", "1.2", None, "because"), ("baz", None, 'python_version < "3.12"', "old")]
    path.write_text("nothing-why\n")
    with pytest.raises(ValueError, match="expected"):
        gw.read_needs(path)


def test_prune_keeps_pyi_stubs_and_drops_tests(gw, tmp_path):
    site = tmp_path / "site"
    for rel in ("pkg/__init__.py", "pkg/__init__.pyi", "pkg/sub/__init__.pyi", "pkg/tests/test_x.py",
                "pkg/__pycache__/x.pyc", "bin/tool", "lib64/libx.a", "include/x.h"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text("x")
    counts = gw.prune(site)
    assert (site / "pkg/__init__.pyi").is_file() and (site / "pkg/sub/__init__.pyi").is_file()
    assert counts["pyi_kept"] == 2
    for gone in ("pkg/tests", "pkg/__pycache__", "bin", "lib64", "include"):
        assert not (site / gone).exists()


def make_pack(path: Path, manifest: dict, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:xz") as tar:
        for name, text in {**files, "C2FSEG_PACK.json": json.dumps(manifest)}.items():
            data = text.encode()
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_unpack_extracts_and_reports_shadowing(gw, tmp_path, capsys):
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    manifest = {"python": here, "shipped": [{"name": "pytest", "version": "0"},
                                            {"name": "c2fseg-not-installed-anywhere", "version": "1"}]}
    make_pack(tmp_path / "site.tar.xz", manifest, {"mod_a/__init__.py": "", "mod_a/__init__.pyi": ""})
    got = gw.unpack(tmp_path / "site.tar.xz", tmp_path / "site")
    assert (tmp_path / "site/mod_a/__init__.pyi").is_file()
    assert got["shadowed_image_packages"] == ["pytest"]  # this Python has pytest already
    assert "shadows the image's" in capsys.readouterr().out


def test_unpack_without_pack_says_how_to_make_it(gw, tmp_path):
    with pytest.raises(SystemExit, match="fetch_gpu_wheels.sh"):
        gw.unpack(tmp_path / "missing.tar.xz", tmp_path / "site")


def test_image_list_is_the_kinds_list(gw):
    image = gw.read_image_list()
    assert len(image) > 150 and {"torch", "numpy", "nvidia-ml-py", "psutil"} <= image
    assert "simpleitk" not in image and "nnunetv2" not in image
