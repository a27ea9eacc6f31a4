"""Which files in an output folder c2fseg wrote, so a rerun skips or redoes only its own outputs.

Users point ``predict``/``pseudolabel`` at folders that may already hold label maps that are not
ours (``labelsTs`` with the ground truth, another tool's results). Such a file has the input's
header and labels 0-14, so looking at it cannot tell it apart from a finished output. Instead every
output ``OUT/<name>`` gets a record ``OUT/.c2fseg_outputs/<name>.json`` with the file's size,
mtime_ns and SHA-256, the input's identity (path, size, mtime_ns) and which command wrote it. One
small file per output (not one shared JSON) so parts of a ``pseudolabel`` run writing into the same
folder from several machines never lose each other's records.

Rules (:meth:`OutputRecords.decide`):

* no file at the output path: run the case;
* a file that is not recorded, or changed since it was recorded (size differs, or mtime differs and
  the hash too): a foreign file, NEVER overwritten, not even with ``overwrite``: the case fails with
  :class:`ForeignOutputError` naming the file and the fix;
* a recorded, unchanged file written by the same command from the same, unchanged input and still
  a valid label map for it: skipped (kept), unless ``overwrite``;
* any other recorded file (input changed, other command, damaged): redone.

:meth:`OutputRecords.write` writes to a temporary file, checks that it is complete, records its
hash as pending, renames it into place and records it as done, so an interrupted run never leaves
an output it cannot recognise as its own. A write that fails (disk full, no permission) raises
:class:`~c2fseg.fileutil.WriteError` naming the file, and leaves no temporary file and no new
output behind. The completeness check matters on a full disk: ITK's NIfTI writer then prints an
error on stderr but returns normally, leaving a file shorter than its header says.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from c2fseg import __version__
from c2fseg.fileutil import WriteError, sha256_file, write_json_atomic

RECORD_DIR = ".c2fseg_outputs"
RECORD_FORMAT = 1


class ForeignOutputError(Exception):
    """A file at an output path was not written by c2fseg (or changed since): it is never replaced."""


@dataclass
class Decision:
    """What to do with one case: ``new`` (no output yet), ``redo`` (replace our own) or ``skip``."""

    action: str
    record: dict | None = None  # the kept output's record, for "skip"


def file_state(path: Path) -> dict:
    """Size and mtime of a file (what a cheap "unchanged?" check compares)."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def input_identity(path: str | os.PathLike) -> dict:
    """Absolute path, size and mtime_ns of an input (for a DICOM folder: total size, newest mtime)."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    size, mtime = st.st_size, st.st_mtime_ns
    if path.is_dir():
        files = [p.stat() for p in path.rglob("*") if p.is_file()]
        size = sum(f.st_size for f in files)
        mtime = max([mtime, *(f.st_mtime_ns for f in files)])
    return {"path": str(path), "size": int(size), "mtime_ns": int(mtime)}


def foreign_message(out_path: Path, recorded: bool) -> str:
    """The error for a file c2fseg must not touch: which file, why, and how to go on."""
    why = "was changed after c2fseg wrote it" if recorded else "was not written by c2fseg"
    return (
        f"{out_path} already exists and {why} (it may be a ground-truth label or another tool's "
        "result); c2fseg never overwrites such a file, not even with --overwrite. Move that file "
        "out of the output folder, or choose another output folder."
    )


class OutputRecords:
    """The records of one output folder for one producer (``predict``, ``pseudolabel:coarse``...)."""

    def __init__(self, out_dir: str | os.PathLike, producer: str) -> None:
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / RECORD_DIR
        self.producer = producer

    def record_path(self, out_path: Path) -> Path:
        return self.folder / f"{Path(out_path).name}.json"

    def read(self, out_path: Path) -> dict | None:
        """The record of ``out_path``, or None when there is none or it is unreadable."""
        import json

        try:
            record = json.loads(self.record_path(out_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None

    def owned(self, out_path: Path, record: dict | None) -> bool:
        """Whether the file now at ``out_path`` is the one c2fseg wrote (or was putting there)."""
        if record is None or not out_path.is_file():
            return False
        if record.get("state") == "pending":  # interrupted between rename and commit
            return same_content(out_path, record) or self.owned(out_path, record.get("previous"))
        return unchanged(out_path, record)

    def decide(self, out_path: Path, input_path: str | os.PathLike, *, overwrite: bool = False,
               valid=None) -> Decision:
        """Skip, run or redo a case; raises :class:`ForeignOutputError` for a file not ours.

        ``valid(out_path, input_path) -> bool`` is the last check before skipping (default: a full
        read of the label map with the input's header, :func:`output_matches_input`).
        """
        out_path = Path(out_path)
        if not out_path.exists() and not out_path.is_symlink():
            return Decision("new")
        record = self.read(out_path)
        if not self.owned(out_path, record):
            raise ForeignOutputError(foreign_message(out_path, record is not None))
        if overwrite or record.get("state") != "done" or record.get("producer") != self.producer:
            return Decision("redo")
        try:
            same_input = record.get("input") == input_identity(input_path)
        except OSError:
            same_input = False
        if same_input and (valid or output_matches_input)(out_path, input_path):
            return Decision("skip", record)
        return Decision("redo")

    def write(self, out_path: Path, input_path: str | os.PathLike, write_fn: Callable[[Path], object],
              info: dict | None = None) -> dict:
        """Write ``out_path`` with ``write_fn(path)`` and record it; returns the record.

        A file at ``out_path`` that is not ours raises :class:`ForeignOutputError`. The file is
        written to a temporary name in the record folder, checked to be complete, hashed and
        recorded as pending, renamed onto ``out_path`` and then recorded as done, so an
        interruption at any point leaves either the old file or a file the pending record
        identifies as ours, never an unrecorded one. A failed write (an ``OSError``: disk full,
        no permission) raises :class:`~c2fseg.fileutil.WriteError` and leaves no temporary file;
        when only the final record cannot be written, the new output is removed again, so a
        failed case never leaves an output. ``info`` is stored with the record.
        """
        out_path = Path(out_path)
        previous = self.read(out_path)
        if (out_path.exists() or out_path.is_symlink()) and not self.owned(out_path, previous):
            raise ForeignOutputError(foreign_message(out_path, previous is not None))  # appeared meanwhile
        if previous is not None and previous.get("state") == "pending":
            previous = previous.get("previous")
        source = input_identity(input_path)
        tmp = self.folder / f"writing-{out_path.name}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_fn(tmp)
            check_complete(tmp, out_path)
            content = {"size": tmp.stat().st_size, "sha256": sha256_file(tmp)}
            self._write(out_path, {"state": "pending", **content, "input": source, "previous": previous})
            os.replace(tmp, out_path)
        except OSError as exc:
            raise WriteError.from_os_error(out_path, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
        try:
            return self._write(out_path, {"state": "done", **content, "mtime_ns": out_path.stat().st_mtime_ns,
                                          "input": source, "info": info or {}})
        except OSError as exc:
            self.discard(out_path)
            raise WriteError.from_os_error(self.record_path(out_path), exc) from exc

    def discard(self, out_path: Path) -> None:
        """Remove an output this run has just written, and its record (the case failed)."""
        Path(out_path).unlink(missing_ok=True)
        self.record_path(out_path).unlink(missing_ok=True)

    def _write(self, out_path: Path, fields: dict) -> dict:
        record = {"format": RECORD_FORMAT, "output": Path(out_path).name, "producer": self.producer,
                  "c2fseg_version": __version__, "written_utc": _utc_now(), **fields}
        write_json_atomic(self.record_path(out_path), record)
        return record


def _utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check_complete(path: Path, out_path: Path) -> None:
    """Raise WriteError when the NIfTI file ``path`` (to become ``out_path``) is cut short.

    Cheap: the header's data size is compared with the file size (``.nii``) or with the length
    stored in the gzip trailer (``.nii.gz``; a stream cut short ends without its trailer).
    Other formats are not checked.
    """
    from c2fseg.io.integrity import nifti_data_extent, read_head

    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        needed = nifti_data_extent(read_head(path, 544))
        size = path.stat().st_size
        if needed is None or not name.endswith(".gz"):
            complete = needed is not None and size >= needed
        else:
            with open(path, "rb") as fh:
                fh.seek(max(size - 4, 0))
                stored = int.from_bytes(fh.read(4), "little")
            complete = size >= 18 and stored == needed % 2**32
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
        complete = False
    if not complete:
        raise WriteError(
            out_path,
            f"cannot write {out_path}: the file came out incomplete (shorter than its header "
            f"says), most likely because the disk holding {out_path.parent} is full. Free some "
            "space there or choose another output folder, then run the same command again.",
        )


def same_content(path: Path, record: dict) -> bool:
    """Same size and SHA-256 as recorded (the slow, certain check)."""
    return path.stat().st_size == record.get("size") and sha256_file(path) == record.get("sha256")


def unchanged(path: Path, record: dict) -> bool:
    """Same size and (same mtime, or else same SHA-256) as recorded."""
    if record.get("state") != "done":
        return False
    state = file_state(path)
    if state["size"] != record.get("size"):
        return False
    return state["mtime_ns"] == record.get("mtime_ns") or same_content(path, record)


def output_matches_input(out_path: Path, input_path: str | os.PathLike) -> bool:
    """Whether ``out_path`` is a complete label map (0-14) with exactly the input's header."""
    from c2fseg.io import ImageReadError, is_valid_output, read_geometry

    try:
        geometry = read_geometry(input_path)
    except (ImageReadError, RuntimeError, OSError, ValueError):
        return False
    return is_valid_output(out_path, geometry)
