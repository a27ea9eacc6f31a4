"""Case discovery in every folder layout, case naming, and output-folder checks."""

from __future__ import annotations

import os
import tempfile

import pytest

from c2fseg.io import FolderError, check_output_dir, find_cases
from c2fseg.io.discover import (
    BAD_NAME,
    COLLISION,
    EXTRA_CHANNEL,
    LOOSE_DICOM,
    UNSUPPORTED,
    case_id_of,
    channel_file_name,
)


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")
    return folder


def _summary(cases):
    return [(c.case_id, c.path.name, c.error is None) for c in cases]


def test_lists_supported_files_sorted_and_strips_channel_suffix(tmp_path):
    folder = _touch(tmp_path, "b_0000.nii.gz", "a_0000.nii.gz", "c_0000.mha", "notes.txt",
                    "dataset.json", "plot.png", "table.csv", ".hidden.nii.gz", "._a.nii.gz")
    assert _summary(find_cases(folder)) == [
        ("a", "a_0000.nii.gz", True), ("b", "b_0000.nii.gz", True), ("c", "c_0000.mha", True)]


def test_every_supported_extension_is_a_case(tmp_path):
    names = ["a.nii", "b.nii.gz", "c.nrrd", "d.nhdr", "e.mha", "f.mhd"]
    cases = find_cases(_touch(tmp_path, *names))
    assert [c.case_id for c in cases] == list("abcdef")


def test_names_without_channel_convention_are_kept(tmp_path):
    """Without any _0000 file, case_0001 is a case name, not channel 1."""
    cases = find_cases(_touch(tmp_path, "FLARE_0001.nii.gz", "FLARE_0002.nii.gz"))
    assert _summary(cases) == [("FLARE_0001", "FLARE_0001.nii.gz", True),
                               ("FLARE_0002", "FLARE_0002.nii.gz", True)]


@pytest.mark.parametrize("names", [("a.nii.gz", "a_0000.nii.gz"), ("a.nii.gz", "a.mha")])
def test_naming_collision_is_an_error_for_that_case(tmp_path, names):
    cases = find_cases(_touch(tmp_path, *names, "b_0000.nii.gz"))
    by_id = {c.case_id: c for c in cases}
    assert set(by_id) == {"a", "b"}
    assert by_id["b"].ok
    assert not by_id["a"].ok
    assert all(n in by_id["a"].error for n in names)


def test_other_channels_are_an_error(tmp_path):
    cases = find_cases(_touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz"))
    by_id = {c.case_id: c for c in cases}
    assert "a_0001.nii.gz" in by_id["a"].error and "one CT channel" in by_id["a"].error
    assert by_id["b"].ok


def test_file_and_dicom_folder_with_same_id_collide(tmp_path):
    _touch(tmp_path / "a", "slice1.dcm")
    cases = find_cases(_touch(tmp_path, "a.nii.gz"))
    assert len(cases) == 1 and "several inputs" in cases[0].error


def test_unreadable_image_formats_are_reported(tmp_path):
    cases = find_cases(_touch(tmp_path, "a.nii.gz", "b.npy", "c.nii.bz2", "README"))
    assert _summary(cases) == [("a", "a.nii.gz", True), ("b", "b.npy", False),
                               ("c", "c.nii.bz2", False)]


def test_empty_missing_and_file_inputs_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "only_notes", "notes.txt")
    for folder, text in [("empty", "no CT images"), ("only_notes", "no CT images"),
                         ("missing", "does not exist")]:
        with pytest.raises(FolderError, match=text):
            find_cases(tmp_path / folder)
    _touch(tmp_path, "x.nii.gz")
    with pytest.raises(FolderError, match="not a folder"):
        find_cases(tmp_path / "x.nii.gz")


@pytest.mark.parametrize("out", [".", "sub", "sub/deeper"])
def test_output_equal_to_or_inside_input_is_refused(tmp_path, out):
    inp = _touch(tmp_path / "in", "a.nii.gz")
    with pytest.raises(FolderError, match="input folder"):
        check_output_dir(inp, inp / out)
    assert not (inp / "sub").exists()


def test_input_inside_output_is_fine_and_output_is_created(tmp_path):
    inp = _touch(tmp_path / "out" / "in", "a.nii.gz")
    assert check_output_dir(inp, tmp_path / "out") == (tmp_path / "out").resolve()
    created = check_output_dir(inp, tmp_path / "new" / "seg")
    assert created.is_dir()
    assert os.listdir(created) == []  # the write probe leaves nothing behind


def test_output_that_is_a_file_is_refused(tmp_path):
    _touch(tmp_path, "out")
    with pytest.raises(FolderError, match="is a file"):
        check_output_dir(tmp_path / "in", tmp_path / "out")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_output_is_refused(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(FolderError, match="not writable"):
            check_output_dir(tmp_path / "in", out)
    finally:
        out.chmod(0o700)


def test_unwritable_output_message(tmp_path, monkeypatch):
    """Same check without relying on permissions (tests may run as root)."""
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(FolderError, match="not writable.*Permission denied"):
        check_output_dir(tmp_path / "in", tmp_path)


# --- one finder, three layouts ---------------------------------------------------------------

def _dicom_folder(folder, n=2):
    """A folder of files with the DICOM preamble (no extension), as scanners write them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"IM{i:04d}").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    return folder


def test_collision_lists_every_candidate_preferred_first(tmp_path):
    _touch(tmp_path, "a.mha", "a.nrrd", "a.nii.gz", "b.nii")
    for layout in ("inputs", "labels"):
        by_id = {c.case_id: c for c in find_cases(tmp_path, layout)}
        a = by_id["a"]
        assert (a.problem, a.path.name) == (COLLISION, "a.nii.gz"), layout
        assert [p.name for p in a.candidates] == ["a.nii.gz", "a.nrrd", "a.mha"]
        assert all(n in a.error for n in ("a.nii.gz", "a.nrrd", "a.mha"))
        assert by_id["b"].ok and by_id["b"].candidates == (tmp_path / "b.nii",)


def test_dicom_folder_is_an_input_case_but_not_a_label_or_training_image(tmp_path):
    _dicom_folder(tmp_path / "patient7")
    _touch(tmp_path, "c.nii.gz", "c_0000.nii.gz")
    (tmp_path / "notes").mkdir()  # a folder without DICOM: ignored
    inputs = find_cases(tmp_path)
    assert [(c.case_id, c.kind, c.problem) for c in inputs] == [
        ("c", "file", COLLISION), ("patient7", "dicom", None)]
    assert inputs[1].path == tmp_path / "patient7"
    labels = find_cases(tmp_path, "labels")
    assert [(c.case_id, c.ok) for c in labels] == [("c", True), ("c_0000", True)]
    images = find_cases(tmp_path, "images")
    assert [(c.case_id, c.problem) for c in images] == [("c", BAD_NAME), ("c", None)]


def test_dicom_folder_colliding_with_a_file_prefers_the_file(tmp_path):
    _dicom_folder(tmp_path / "a")
    _touch(tmp_path, "a.mha")
    (case,) = find_cases(tmp_path)
    assert case.problem == COLLISION and case.path.name == "a.mha" and case.kind == "file"
    assert case.candidates == (tmp_path / "a.mha", tmp_path / "a")


def test_loose_dicom_files_are_one_error_case(tmp_path):
    _dicom_folder(tmp_path / "in", n=3)
    (case,) = find_cases(tmp_path / "in")
    assert (case.case_id, case.problem, len(case.candidates)) == ("in", LOOSE_DICOM, 3)
    assert "holds 3 DICOM files directly" in case.error
    assert find_cases(tmp_path / "in", "labels") == []  # no image files at all: nothing, no error


def test_images_layout_takes_channel_0_and_ignores_other_channels(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "b_0000.mha", "b_0000.nrrd",
           "lonely_0002.nii.gz", "plain.nii.gz", "x.npy", "notes.txt")
    (tmp_path / "d_0000.nii.gz").mkdir()  # a folder with an image name is not a file
    cases = find_cases(tmp_path, "images")
    assert [(c.case_id, c.path.name, c.problem) for c in cases] == [
        ("a", "a_0000.nii.gz", None),
        ("b", "b_0000.nrrd", COLLISION),
        ("plain", "plain.nii.gz", BAD_NAME),
    ]
    assert "must end in _0000" in cases[2].error
    assert [p.name for p in cases[1].candidates] == ["b_0000.nrrd", "b_0000.mha"]


def test_labels_layout_keeps_names_and_ignores_what_is_not_a_label_file(tmp_path):
    _touch(tmp_path, "FLARE_0001.nii.gz", "x_0000.mha", "run.json", "y.npy", ".z.nii.gz")
    (tmp_path / "roi_overlays").mkdir()
    cases = find_cases(tmp_path, "labels")
    assert _summary(cases) == [("FLARE_0001", "FLARE_0001.nii.gz", True),
                               ("x_0000", "x_0000.mha", True)]
    assert find_cases(tmp_path / "roi_overlays", "labels") == []  # empty is not an error here
    with pytest.raises(FolderError, match="does not exist"):
        find_cases(tmp_path / "missing", "labels")
    with pytest.raises(ValueError, match="unknown folder layout 'masks'"):
        find_cases(tmp_path, "masks")


def test_unsupported_and_extra_channel_problems_are_named(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "b.npy")
    by_id = {c.case_id: c for c in find_cases(tmp_path)}
    assert by_id["a"].problem == EXTRA_CHANNEL and by_id["b"].problem == UNSUPPORTED
    assert [p.name for p in by_id["a"].candidates] == ["a_0000.nii.gz", "a_0001.nii.gz"]


def test_case_names():
    assert channel_file_name("case7") == "case7_0000.nii.gz"
    assert channel_file_name("case7", ".mha") == "case7_0000.mha"
    assert case_id_of("dir/case7_0000.nii.gz", "images") == "case7"
    assert case_id_of("dir/case7_0000.nii.gz", "labels") == "case7_0000"
    assert case_id_of("case7.nrrd") == "case7"
