"""Output records: only files c2fseg wrote are skipped or replaced; foreign files never are."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from c2fseg.fileutil import WriteError
from c2fseg.infer import outputs
from c2fseg.infer.outputs import RECORD_DIR, ForeignOutputError, OutputRecords
from c2fseg.io import make_geometry, write_labels, write_volume


@pytest.fixture
def setup(tmp_path):
    """An input CT, an output folder and a function writing a valid label map for it."""
    geom = make_geometry((6, 7, 8), (2.0, 1.0, 1.0), (1.0, 2.0, 3.0))
    inp = tmp_path / "in" / "a_0000.nii.gz"
    inp.parent.mkdir()
    write_volume(np.zeros((6, 7, 8), np.float32), geom, inp)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[2:4, 2:4, 2:4] = 3

    def write(path):
        return write_labels(labels, geom, path)

    return inp, out_dir / "a.nii.gz", write


def test_new_then_recorded_output_is_skipped(setup):
    inp, out, write = setup
    records = OutputRecords(out.parent, "predict")
    assert records.decide(out, inp).action == "new"
    record = records.write(out, inp, write, info={"x": 1})
    assert record["state"] == "done" and record["info"] == {"x": 1}
    assert (out.parent / RECORD_DIR / "a.nii.gz.json").is_file()
    decision = records.decide(out, inp)
    assert decision.action == "skip" and decision.record["sha256"] == record["sha256"]
    assert records.decide(out, inp, overwrite=True).action == "redo"
    assert not list((out.parent / RECORD_DIR).glob("writing-*"))  # no temp file left behind


def test_file_not_written_by_c2fseg_is_foreign_even_with_overwrite(setup):
    inp, out, write = setup
    write(out)  # e.g. a ground-truth label: valid header and values, but not ours
    before = out.read_bytes()
    records = OutputRecords(out.parent, "predict")
    for overwrite in (False, True):
        with pytest.raises(ForeignOutputError, match="a.nii.gz.*not written by c2fseg.*Move"):
            records.decide(out, inp, overwrite=overwrite)
    with pytest.raises(ForeignOutputError):
        records.write(out, inp, write)
    assert out.read_bytes() == before


def test_modified_recorded_output_is_foreign(setup):
    inp, out, write = setup
    records = OutputRecords(out.parent, "predict")
    records.write(out, inp, write)
    out.write_bytes(out.read_bytes() + b"x")  # changed by someone else
    with pytest.raises(ForeignOutputError, match="changed after c2fseg wrote it"):
        records.decide(out, inp, overwrite=True)


def test_same_content_with_new_mtime_is_still_ours(setup):
    inp, out, write = setup
    records = OutputRecords(out.parent, "predict")
    records.write(out, inp, write)
    st = out.stat()
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # e.g. copied without -p
    assert records.decide(out, inp).action == "skip"


def test_changed_input_or_other_producer_means_redo(setup):
    inp, out, write = setup
    OutputRecords(out.parent, "pseudolabel:coarse").write(out, inp, write)
    assert OutputRecords(out.parent, "predict").decide(out, inp).action == "redo"
    records = OutputRecords(out.parent, "predict")
    records.write(out, inp, write)
    st = inp.stat()
    os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert records.decide(out, inp).action == "redo"


def test_invalid_recorded_output_is_redone(setup):
    inp, out, write = setup
    records = OutputRecords(out.parent, "predict")
    records.write(out, inp, write)
    assert records.decide(out, inp, valid=lambda o, i: False).action == "redo"


def fail_on_done(monkeypatch, records: OutputRecords, exc: BaseException) -> None:
    """Make writing the final ("done") record raise ``exc``; the pending record still works."""
    real = records._write

    def fail(path, fields):
        if fields["state"] == "done":
            raise exc
        return real(path, fields)

    monkeypatch.setattr(records, "_write", fail)


def test_interrupted_write_leaves_a_file_the_next_run_owns(setup, monkeypatch):
    inp, out, write = setup
    records = OutputRecords(out.parent, "predict")
    fail_on_done(monkeypatch, records, KeyboardInterrupt())  # killed between rename and record
    with pytest.raises(KeyboardInterrupt):
        records.write(out, inp, write)
    assert out.is_file()
    monkeypatch.undo()
    assert OutputRecords(out.parent, "predict").decide(out, inp).action == "redo"


def test_interrupted_write_does_not_adopt_a_foreign_file(setup, monkeypatch):
    inp, out, write = setup
    records = OutputRecords(out.parent, "predict")
    fail_on_done(monkeypatch, records, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        records.write(out, inp, write)
    out.write_bytes(b"the user's own file")  # put there after the crash
    with pytest.raises(ForeignOutputError):
        OutputRecords(out.parent, "predict").decide(out, inp, overwrite=True)


def test_failed_write_keeps_previous_output_and_record(setup):
    inp, out, write = setup
    records = OutputRecords(out.parent, "predict")
    first = records.write(out, inp, write)

    def failing(path):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        records.write(out, inp, failing)
    assert records.read(out)["sha256"] == first["sha256"]
    assert records.decide(out, inp).action == "skip"


def test_input_identity_of_a_dicom_folder_tracks_its_files(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"abc")
    first = outputs.input_identity(folder)
    (folder / "2.dcm").write_bytes(b"defg")
    second = outputs.input_identity(folder)
    assert first["size"] == 3 and second["size"] == 7
    assert second["path"] == str(folder.resolve())


def leftovers(out_dir) -> list[str]:
    return sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii"])
def test_output_cut_short_is_refused_and_removed(setup, name):
    """On a full disk ITK's NIfTI writer returns normally, leaving a file shorter than its header."""
    inp, out, write = setup
    out = out.with_name(name)
    records = OutputRecords(out.parent, "predict")

    def short_write(path):
        write(path.with_name("whole-" + name))
        data = path.with_name("whole-" + name).read_bytes()
        path.with_name("whole-" + name).unlink()
        path.write_bytes(data[: len(data) - 3])

    with pytest.raises(WriteError, match=f"cannot write {out}: the file came out incomplete"):
        records.write(out, inp, short_write)
    assert leftovers(out.parent) == []
    assert records.write(out, inp, write)["state"] == "done"  # a whole file passes the same check


def test_full_disk_at_the_final_record_leaves_no_output(setup, monkeypatch):
    inp, out, write = setup
    records = OutputRecords(out.parent, "predict")
    fail_on_done(monkeypatch, records, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(WriteError, match="a.nii.gz.json: no space left"):
        records.write(out, inp, write)
    assert leftovers(out.parent) == []
    monkeypatch.undo()
    assert records.decide(out, inp).action == "new"


def test_full_disk_while_writing_the_output_names_it(setup):
    inp, out, _ = setup
    records = OutputRecords(out.parent, "predict")

    def full(path):
        path.write_bytes(b"\x1f\x8b")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(WriteError) as info:
        records.write(out, inp, full)
    assert str(info.value).startswith(f"cannot write {out}: no space left on the disk holding {out.parent}")
    assert leftovers(out.parent) == []
