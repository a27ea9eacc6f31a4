"""Tests of the overlay renderer and ``c2fseg view``."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from c2fseg.data import generate_case
from c2fseg.io.image import write_volume
from c2fseg.viz import (
    LABEL_COLORS,
    choose_slices,
    parse_slices,
    render_overlay,
    render_overlay_arrays,
)


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("viz")
    case = generate_case(4, 2, "small", tumor=True)
    write_volume(case.image, case.geometry, d / "ct.nii.gz")
    write_volume(case.labels, case.geometry, d / "lab.nii.gz")
    return d, case


def colourful(png: np.ndarray) -> np.ndarray:
    """Pixels whose RGB channels differ clearly (grey CT pixels do not)."""
    rgb = png[..., :3]
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.15


def test_render_overlay_png(case_files, tmp_path):
    d, case = case_files
    result = render_overlay(d / "ct.nii.gz", d / "lab.nii.gz", tmp_path / "o.png", dpi=60)
    png = imread(tmp_path / "o.png")
    assert png.shape[1] == 660  # 11 inch figure at 60 dpi
    assert png.shape[0] > 150 and png[..., :3].std() > 0.1
    assert colourful(png).mean() > 0.01
    assert set(result["labels"]) >= {1, 3, 5}
    # the liver colour appears blended on the picture: reddish-orange pixels exist
    r, g, b = (png[..., c] for c in range(3))
    assert np.any((r > g + 0.1) & (g > b) & (r > 0.4))


def test_without_labels_is_grey_and_slices_respected(case_files, tmp_path):
    d, case = case_files
    res = render_overlay(d / "ct.nii.gz", None, tmp_path / "g.png", slices="5,10,20", dpi=50)
    png = imread(tmp_path / "g.png")
    assert res["slices"] == [5, 10, 20]
    assert colourful(png).mean() < 0.001 and png[..., :3].std() > 0.05


def test_aspect_follows_spacing(tmp_path):
    img = np.zeros((20, 40, 40), dtype=np.float32)
    lab = np.zeros(img.shape, dtype=np.uint8)
    lab[5:15, 10:30, 10:30] = 3
    render_overlay_arrays(img, lab, (1.0, 1.0, 1.0), tmp_path / "iso.png", dpi=40)
    render_overlay_arrays(img, lab, (6.0, 1.0, 1.0), tmp_path / "thick.png", dpi=40)
    # thick slices make coronal/sagittal panels taller, hence a taller figure
    assert imread(tmp_path / "thick.png").shape[0] > imread(tmp_path / "iso.png").shape[0]
    png = imread(tmp_path / "iso.png")
    r, g, b = (png[..., c] for c in range(3))
    assert LABEL_COLORS[3][2] > LABEL_COLORS[3][0]  # spleen is drawn blue
    assert np.any(b > r + 0.1)  # ... and its blue shows over the grey image


def test_slice_choice_and_errors(tmp_path):
    lab = np.zeros((10, 20, 30), dtype=np.uint8)
    lab[2:4, 10:12, 20:22] = 1
    assert choose_slices(lab.shape, lab) == (2, 10, 20)
    assert choose_slices(lab.shape, None) == (5, 10, 15)
    assert parse_slices("auto") is None and parse_slices("1,2,3") == (1, 2, 3)
    with pytest.raises(ValueError):
        parse_slices("1,2")
    with pytest.raises(ValueError, match="outside"):
        render_overlay_arrays(np.zeros((10, 20, 30)), lab, (1, 1, 1), tmp_path / "x.png",
                              slices=(10, 0, 0))


def test_view_cli(case_files, tmp_path):
    from c2fseg.cli import main

    d, _ = case_files
    out = tmp_path / "cli.png"
    assert main(["view", str(d / "ct.nii.gz"), "--labels", str(d / "lab.nii.gz"), "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main(["view", str(d / "ct.nii.gz"), "-o", str(out), "--slices", "999,0,0"]) == 2


def test_roi_overlay_draws_the_box_on_the_roi_middle_slice(tmp_path):
    from c2fseg.infer.roi import RoiBox
    from c2fseg.viz import save_roi_overlay

    ct = np.full((20, 30, 40), -1000.0, np.float32)
    labels = np.zeros(ct.shape, np.uint8)
    labels[5:15, 12:18, 10:30] = 3
    roi = RoiBox((4, 10, 8), (16, 20, 32))
    path = save_roi_overlay(ct, labels, roi, tmp_path / "sub" / "case.png")
    assert path == tmp_path / "sub" / "case.png" and list(path.parent.iterdir()) == [path]
    png = imread(path)
    r, g, b = (png[..., c] for c in range(3))
    assert np.any((r > 0.8) & (g > 0.8) & (b < 0.3))  # the yellow ROI box
    assert colourful(png).mean() > 0.01  # the spleen label on coronal slice 15 = 10 + 10 // 2
    plain = imread(save_roi_overlay(ct, np.zeros_like(labels), None, tmp_path / "none.png"))
    pr, pg, pb = (plain[..., c] for c in range(3))
    assert not np.any((pr > 0.8) & (pg > 0.8) & (pb < 0.3))  # no ROI: no box
