"""Find the cases in a folder and name them: the one place that knows c2fseg's file naming.

:func:`find_cases` lists a folder in one of three layouts (deterministic, sorted by case id):

``"inputs"`` (predict, pseudolabel; the default)
    Image files with a supported extension are cases; the case id is the name without the
    extension. If any image in the folder ends in ``_0000`` the folder uses nnU-Net channel
    names: ``x_0000`` is case ``x`` and ``x_0001``, ``x_0002``... are extra channels, which is an
    error for case ``x`` (c2fseg takes one CT channel). Without any ``_0000`` name, names such as
    ``case_0001.nii.gz`` are taken as they are. A subfolder holding DICOM files is a case whose
    id is the folder name (one series per folder; only the folder's own files, not deeper
    levels). Image formats c2fseg cannot read (.img, .npy, .nii.bz2...) and DICOM files lying
    directly in the folder become error cases. A folder without any case is an error.
``"images"`` (nnU-Net ``imagesTr`` of a training set: split, stage datasets, training)
    Every image file is named ``<case>_NNNN.<ext>``; channel ``_0000`` is the CT of ``<case>``,
    other channels are ignored (c2fseg trains on CT only), a name without a channel suffix is an
    error case. DICOM folders are not looked at.
``"labels"`` (``labelsTr``, pseudo-label and prediction folders: evaluate, stage datasets)
    Every image file ``<case>.<ext>`` is case ``<case>``; nothing else is looked at.

In every layout hidden files and non-image files (.json, .txt, .csv, .png...) are ignored, and
several inputs mapping to one case id (``a.nii.gz`` + ``a_0000.nii.gz``, ``a.nii.gz`` +
``a.mha``) make that case an error: c2fseg never silently picks one. Such a case lists every
input in ``candidates``, preferred first (by extension: .nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd),
for callers that report the collision their own way.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from c2fseg.io.errors import FolderError
from c2fseg.io.formats import (
    IMAGE_EXTENSIONS,
    NON_IMAGE_EXTENSIONS,
    SUPPORTED_HELP,
    full_suffix,
    image_extension,
    strip_image_extension,
)
from c2fseg.io.integrity import unsupported_message

#: The nnU-Net channel suffix of a CT image file: ``<case>_0000.<ext>``.
CT_CHANNEL_SUFFIX = "_0000"
LAYOUTS = ("inputs", "images", "labels")
#: ``CaseInput.problem`` values.
COLLISION, EXTRA_CHANNEL, BAD_NAME, UNSUPPORTED, LOOSE_DICOM = (
    "collision", "extra_channel", "bad_name", "unsupported", "loose_dicom")

_CHANNEL = re.compile(r"(.+)_(\d{4})")
#: Files that are images c2fseg cannot read (reported, not ignored).
_UNREADABLE_IMAGE_SUFFIXES = frozenset(
    {".img", ".hdr", ".npy", ".npz", ".mgz", ".mgh", ".mnc", ".gipl", ".vtk", ".h5", ".hdf5",
     ".tif", ".tiff", ".dcm", ".nia"}
)
_DICOM_PROBE_FILES = 8


@dataclass(frozen=True)
class CaseInput:
    """One case found in a folder: an image file or DICOM series folder, or why it is unusable."""

    case_id: str
    path: Path  # the image file or DICOM folder (the preferred candidate, for a collision)
    kind: str  # "file" or "dicom"
    error: str | None = None
    problem: str | None = None  # which problem ``error`` describes: COLLISION, BAD_NAME, ...
    candidates: tuple[Path, ...] = ()  # every input mapping to this case id, preferred first

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class _Entry:
    path: Path
    kind: str
    channel: int | None


def channel_file_name(case_id: str, ext: str = ".nii.gz") -> str:
    """The nnU-Net file name of a case's CT: ``<case>_0000<ext>``."""
    return f"{case_id}{CT_CHANNEL_SUFFIX}{ext}"


def case_id_of(path: str | os.PathLike, layout: str = "labels") -> str:
    """The case id one file name gives: its name without the image extension and, for the
    ``"images"`` layout, without the ``_0000`` channel suffix."""
    _check_layout(layout)
    stem = strip_image_extension(Path(path))
    if layout == "images" and stem.endswith(CT_CHANNEL_SUFFIX):
        return stem[: -len(CT_CHANNEL_SUFFIX)]
    return stem


def find_cases(input_dir: str | os.PathLike, layout: str = "inputs") -> list[CaseInput]:
    """List the cases in ``input_dir`` for ``layout`` (see module docs); error cases carry
    ``error`` and ``problem``. Raises :class:`FolderError` for a missing folder, a file, or (in
    the ``"inputs"`` layout) a folder without any case."""
    _check_layout(layout)
    folder = Path(input_dir).expanduser()
    _check_input_dir(folder)
    entries, problems = _scan(folder, layout)
    cases = [_make_case(cid, group) for cid, group in _group(entries).items()] + problems
    if not cases and layout == "inputs":
        raise FolderError(
            f"{folder}: no CT images found. Put the CTs there as {SUPPORTED_HELP} "
            "(one DICOM series per subfolder)."
        )
    return sorted(cases, key=lambda c: (c.case_id, str(c.path)))


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown folder layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def _check_input_dir(folder: Path) -> None:
    if not folder.exists():
        raise FolderError(f"{folder}: the input folder does not exist; check the path.")
    if not folder.is_dir():
        raise FolderError(
            f"{folder}: is a file, not a folder; pass the folder that holds the CT images."
        )


def _scan(folder: Path, layout: str) -> tuple[list[_Entry], list[CaseInput]]:
    """The inputs of ``folder`` (channels marked) plus cases that are errors by themselves."""
    if layout == "inputs":
        return _scan_inputs(folder)
    files = [p for p in sorted(folder.iterdir())
             if not p.name.startswith(".") and image_extension(p) and p.is_file()]
    if layout == "labels":
        return [_Entry(p, "file", None) for p in files], []
    return _training_images(files)


def _training_images(files: list[Path]) -> tuple[list[_Entry], list[CaseInput]]:
    """Channel-0 files of an imagesTr folder, plus error cases for names without a channel."""
    entries, problems = [], []
    for p in files:
        m = _CHANNEL.fullmatch(strip_image_extension(p))
        if m is None:
            problems.append(CaseInput(
                strip_image_extension(p), p, "file",
                f"{p}: image names must end in {CT_CHANNEL_SUFFIX}.<ext> (nnU-Net channel 0)",
                BAD_NAME, (p,)))
        elif int(m.group(2)) == 0:
            entries.append(_Entry(p, "file", 0))
    return entries, problems


def _scan_inputs(folder: Path) -> tuple[list[_Entry], list[CaseInput]]:
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
            problems.append(CaseInput(p.name.split(".")[0], p, "file", unsupported_message(p),
                                      UNSUPPORTED, (p,)))
        elif not p.suffix and _is_dicom_file(p):
            loose_dicom.append(p)
    if loose_dicom:
        problems.append(CaseInput(folder.name, folder, "dicom", (
            f"{folder}: holds {len(loose_dicom)} DICOM files directly. Put each DICOM series in "
            "its own subfolder of the input folder (the subfolder name becomes the case id)."),
            LOOSE_DICOM, tuple(loose_dicom)))
    return _assign_channels(entries), problems


def _assign_channels(entries: list[_Entry]) -> list[_Entry]:
    """Mark nnU-Net channel suffixes when the folder uses them (any file ending in _0000)."""
    stems = [strip_image_extension(e.path) for e in entries if e.kind == "file"]
    if not any(s.endswith(CT_CHANNEL_SUFFIX) for s in stems):
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


def _preference(entry: _Entry) -> tuple[int, str]:
    """Sort key: files by extension (IMAGE_EXTENSIONS order), DICOM folders last, then name."""
    ext = image_extension(entry.path) if entry.kind == "file" else None
    return (IMAGE_EXTENSIONS.index(ext) if ext else len(IMAGE_EXTENSIONS), entry.path.name)


def _make_case(case_id: str, group: list[_Entry]) -> CaseInput:
    group = sorted(group, key=_preference)
    first = group[0]
    candidates = tuple(e.path for e in group)
    names = ", ".join(e.path.name for e in group)
    extra = [e for e in group if e.channel not in (None, 0)]
    error, problem = None, None
    if extra:
        problem = EXTRA_CHANNEL
        error = (
            f"case {case_id}: found channel file(s) {', '.join(e.path.name for e in extra)}; "
            "c2fseg takes one CT channel (name it <case>_0000 or <case>). Remove the other "
            "channel files from the input folder (or, if these are separate cases, rename "
            "them so that no name ends in _NNNN)."
        )
    elif len(group) > 1:
        problem = COLLISION
        error = (
            f"case {case_id}: several inputs map to this case id ({names}); c2fseg does not "
            "pick one. Remove or rename all but one of them."
        )
    return CaseInput(case_id, first.path, first.kind, error, problem, candidates)


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
