"""Which file names c2fseg reads and writes, and how a case id is derived from a file name."""

from __future__ import annotations

from pathlib import Path

#: File extensions read as images (longest first so ``.nii.gz`` wins over ``.gz``).
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Extensions of files that sit beside images but are never images (ignored by discovery).
NON_IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".json", ".txt", ".csv", ".tsv", ".md", ".log", ".png", ".jpg", ".jpeg", ".gif", ".svg",
     ".pdf", ".html", ".xml", ".yaml", ".yml", ".pkl", ".raw", ".zraw", ".py", ".sh"}
)

#: Detached-header formats: the header names a separate data file.
DETACHED_HEADER_EXTENSIONS: tuple[str, ...] = (".nhdr", ".mhd")

SUPPORTED_HELP = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM series folder"


def image_extension(path: str | Path) -> str | None:
    """The supported image extension of ``path`` (lower case), or None if it has none."""
    name = Path(path).name.lower()
    for ext in IMAGE_EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    return None


def full_suffix(path: str | Path) -> str:
    """The extension used to describe a file in messages: ``.nii.gz``, ``.tar.gz``, ``.txt``..."""
    p = Path(path)
    suffixes = p.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in {".gz", ".bz2", ".xz", ".zip"}:
        return "".join(suffixes[-2:]).lower()
    return p.suffix.lower()


def strip_image_extension(path: str | Path) -> str:
    """File name without its supported image extension (the name itself if it has none)."""
    name = Path(path).name
    ext = image_extension(name)
    return name[: -len(ext)] if ext else name
