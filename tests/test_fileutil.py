"""Atomic writes: a failed write (disk full, no permission) is one clear WriteError, no temp file."""

from __future__ import annotations

import errno
import os
import pickle

import pytest

from c2fseg import fileutil
from c2fseg.fileutil import WriteError, is_disk_full, write_json_atomic, write_text_atomic


def fail_fsync(monkeypatch, code: int) -> None:
    """The data is in the temporary file when the disk refuses it (as on a full disk)."""

    def fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fileutil.os, "fsync", fsync)


def test_full_disk_is_a_write_error_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "metrics.json"
    path.parent.mkdir()
    path.write_text("old\n")
    fail_fsync(monkeypatch, errno.ENOSPC)
    with pytest.raises(WriteError) as info:
        write_json_atomic(path, {"a": 1})
    exc = info.value
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC and is_disk_full(exc)
    assert exc.path == path and exc.filename == str(path)
    message = str(exc)
    assert message.startswith(f"cannot write {path}: no space left on the disk holding {path.parent}")
    assert "\n" not in message and "Free some space" in message
    assert path.read_text() == "old\n"  # the earlier file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temp file


def test_other_write_errors_say_what_to_check(tmp_path, monkeypatch):
    fail_fsync(monkeypatch, errno.EACCES)
    with pytest.raises(WriteError) as info:
        write_text_atomic(tmp_path / "r.txt", "x")
    assert not is_disk_full(info.value)
    assert str(info.value) == (f"cannot write {tmp_path / 'r.txt'}: Permission denied; check that "
                               f"{tmp_path} exists and is writable.")
    assert list(tmp_path.iterdir()) == []


def test_write_error_survives_pickling_and_is_not_wrapped_twice(tmp_path):
    exc = WriteError.from_os_error(tmp_path / "a.json", OSError(errno.EDQUOT, "Disk quota exceeded"))
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is WriteError and str(again) == str(exc) and again.errno == errno.EDQUOT
    assert "disk quota is used up" in str(exc)
    assert WriteError.from_os_error(tmp_path / "b.json", exc) is exc


def test_interrupt_still_removes_the_temporary_file(tmp_path, monkeypatch):
    def fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileutil.os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(tmp_path / "r.txt", "x")
    assert list(tmp_path.iterdir()) == []
