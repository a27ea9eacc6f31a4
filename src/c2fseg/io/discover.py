"""Find the CT cases in an input folder for batch prediction, and vet the output folder.

Rules (deterministic, sorted by case id):

- Image files with a supported extension are cases; the case id is the name without the
  extension. If any image in the folder ends in ``_0000`` the folder uses nnU-Net channel
  names: ``x_0000`` is case ``x`` and ``x_0001``, ``x_0002``... are extra channels, which is an
  error for case ``x`` (c2fseg takes one CT channel). Without any ``_0000`` name, names such as
  ``case_0001.nii.gz`` are taken as they are.
- A subfolder holding DICOM files is a case whose id is the folder name (one series per folder;
  only the folder's own files, not deeper levels).
- Several inputs mapping to one case id (``a.nii.gz`` + ``a_0000.nii.gz``, ``a.nii.gz`` +
  ``a.mha``) make that case an error; c2fseg never silently picks one.
- Hidden files, non-image files (.json, .txt, .csv, .png...) and folders without DICOM are
  ignored; image formats c2fseg cannot read (.img, .npy, .nii.bz2...) become error cases.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from c2fseg.io.errors import FolderError
from c2fseg.io.formats import (
    NON_IMAGE_EXTENSIONS,
    SUPPORTED_HELP,
    full_suffix,
    image_extension,
    strip_image_extension,
)
from c2fseg.io.integrity import unsupported_message

_CHANNEL = re.compile(r"(.+)_(\d{4})")
#: Files that are images c2fseg cannot read (reported, not ignored).
_UNREADABLE_IMAGE_SUFFIXES = frozenset(
    {".img", ".hdr", ".npy", ".npz", ".mgz", ".mgh", ".mnc", ".gipl", ".vtk", ".h5", ".hdf5",
     ".tif", ".tiff", ".dcm", ".nia"}
)
_DICOM_PROBE_FILES = 8


@dataclass(frozen=True)
class CaseInput:
    """One case to predict: a CT file or DICOM series folder, or why it cannot be used."""

    case_id: str
    path: Path  # the image file or DICOM folder (the first one, for an error case)
    kind: str  # "file" or "dicom"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Entry:
    path: Path
    kind: str
    channel: int | None


def find_cases(input_dir: str | os.PathLike) -> list[CaseInput]:
    """List the cases in ``input_dir`` (see module docs); error cases carry ``error``."""
    folder = Path(input_dir).expanduser()
    _check_input_dir(folder)
    entries, problems = _scan(folder)
    cases = [_make_case(cid, group) for cid, group in _group(entries).items()]
    cases += problems
    if not cases:
        raise FolderError(
            f"{folder}: no CT images found. Put the CTs there as {SUPPORTED_HELP} "
            "(one DICOM series per subfolder)."
        )
    return sorted(cases, key=lambda c: (c.case_id, str(c.path)))


def _check_input_dir(folder: Path) -> None:
    if not folder.exists():
        raise FolderError(f"{folder}: the input folder does not exist; check the path.")
    if not folder.is_dir():
        raise FolderError(
            f"{folder}: is a file, not a folder; pass the folder that holds the CT images."
        )


def _scan(folder: Path) -> tuple[list[_Entry], list[CaseInput]]:
    """Image files and DICOM folders in ``folder``, plus error cases for unreadable images."""
    entries: list[_Entry] = []
    problems: list[CaseInput] = []
    loose_dicom: list[Path] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if _is_dicom_folder(p):
                entries.append(_Entry(p, "dicom", None))
        elif image_extension(p):
            entries.append(_Entry(p, "file", None))
        elif _is_unreadable_image(p):
            problems.append(CaseInput(p.name.split(".")[0], p, "file", unsupported_message(p)))
        elif not p.suffix and _is_dicom_file(p):
            loose_dicom.append(p)
    if loose_dicom:
        problems.append(CaseInput(folder.name, folder, "dicom", (
            f"{folder}: holds {len(loose_dicom)} DICOM files directly. Put each DICOM series in "
            "its own subfolder of the input folder (the subfolder name becomes the case id).")))
    return _assign_channels(entries), problems


def _assign_channels(entries: list[_Entry]) -> list[_Entry]:
    """Mark nnU-Net channel suffixes when the folder uses them (any file ending in _0000)."""
    stems = [strip_image_extension(e.path) for e in entries if e.kind == "file"]
    if not any(s.endswith("_0000") for s in stems):
        return entries
    out = []
    for e in entries:
        m = _CHANNEL.fullmatch(strip_image_extension(e.path)) if e.kind == "file" else None
        out.append(_Entry(e.path, e.kind, int(m.group(2)) if m else None))
    return out


def _case_id(entry: _Entry) -> str:
    if entry.kind == "dicom":
        return entry.path.name
    stem = strip_image_extension(entry.path)
    return stem[:-5] if entry.channel is not None else stem


def _group(entries: list[_Entry]) -> dict[str, list[_Entry]]:
    groups: dict[str, list[_Entry]] = {}
    for e in entries:
        groups.setdefault(_case_id(e), []).append(e)
    return groups


def _make_case(case_id: str, group: list[_Entry]) -> CaseInput:
    first = group[0]
    names = ", ".join(e.path.name for e in group)
    extra = [e for e in group if e.channel not in (None, 0)]
    if extra:
        error = (
            f"case {case_id}: found channel file(s) {', '.join(e.path.name for e in extra)}; "
            "c2fseg takes one CT channel (name it <case>_0000 or <case>). Remove the other "
            "channel files from the input folder (or, if these are separate cases, rename "
            "them so that no name ends in _NNNN)."
        )
    elif len(group) > 1:
        error = (
            f"case {case_id}: several inputs map to this case id ({names}); c2fseg does not "
            "pick one. Remove or rename all but one of them."
        )
    else:
        error = None
    return CaseInput(case_id, first.path, first.kind, error)


def _is_unreadable_image(path: Path) -> bool:
    name = path.name.lower()
    suffix = full_suffix(path)
    if suffix in NON_IMAGE_EXTENSIONS:
        return False
    return path.suffix.lower() in _UNREADABLE_IMAGE_SUFFIXES or any(
        f"{ext}." in name for ext in (".nii", ".nrrd", ".mha", ".mhd")
    )


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _is_dicom_folder(folder: Path) -> bool:
    """Whether ``folder``'s own files include DICOM (probes a few files, by name or preamble)."""
    probed = 0
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() == ".dcm" or _is_dicom_file(p):
            return True
        probed += 1
        if probed >= _DICOM_PROBE_FILES:
            return False
    return False


def check_output_dir(
    input_dir: str | os.PathLike, output_dir: str | os.PathLike, create: bool = True
) -> Path:
    """Refuse an output folder equal to or inside the input folder; make sure it is writable.

    Returns the resolved output folder (created when ``create``). An input folder inside the
    output folder is fine.
    """
    inp = Path(input_dir).expanduser().resolve()
    out = Path(output_dir).expanduser().resolve()
    if out == inp or inp in out.parents:
        where = "is the input folder" if out == inp else f"is inside the input folder {inp}"
        raise FolderError(
            f"output folder {out} {where}. c2fseg never writes into its input folder (outputs "
            f"would be mistaken for inputs); choose another folder, e.g. {inp.parent / (inp.name + '_seg')}."
        )
    if out.exists() and not out.is_dir():
        raise FolderError(f"output folder {out} exists and is a file; choose a folder path.")
    if not out.exists():
        if not create:
            return out
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FolderError(
                f"cannot create output folder {out} ({exc.strerror}); choose a writable location."
            ) from exc
    _probe_writable(out)
    return out


def _probe_writable(folder: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".c2fseg-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FolderError(
            f"output folder {folder} is not writable ({exc.strerror or exc}); fix its "
            "permissions or choose another folder."
        ) from exc
