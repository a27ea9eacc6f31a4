"""File-level checks done before ITK sees a file: ITK silently reads some damaged files.

ITK fills a truncated ``.nii`` with zeros and reads a ``.nii.gz`` whose last blocks are missing
without complaint, so the gzip stream is verified to its end (CRC and length) and the NIfTI
header's data size is compared with the bytes actually present.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from c2fseg.io.errors import ImageReadError
from c2fseg.io.formats import SUPPORTED_HELP, full_suffix, image_extension

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 22
_RE_EXPORT = "Copy or export the file again (check the transfer finished and the disk was not full)."


def check_file(path: Path) -> None:
    """Raise ImageReadError if ``path`` is missing, empty, of an unsupported type or damaged."""
    if not path.exists():
        raise ImageReadError(
            f"{path}: no such file or folder. Check the path (or whether the file was moved "
            "or deleted while the run was going on)."
        )
    if path.is_dir():
        return
    size = path.stat().st_size
    if size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes). {_RE_EXPORT}")
    ext = image_extension(path)
    if ext is None:
        raise ImageReadError(unsupported_message(path))
    with open(path, "rb") as fh:
        head = fh.read(2)
    available = verify_gzip(path) if head == _GZIP_MAGIC else size
    if ext in (".nii", ".nii.gz"):
        check_nifti_size(path, read_head(path, 544), available)


def unsupported_message(path: Path) -> str:
    """Why ``path`` is not read, and what to pass instead."""
    suffix = full_suffix(path) or "(no extension)"
    if suffix == ".dcm":
        return (f"{path}: a single DICOM file. Pass the folder that holds the whole DICOM "
                "series (one series per folder).")
    return (f"{path}: unsupported file type {suffix}. c2fseg reads {SUPPORTED_HELP}; convert "
            "the image to one of these (for example .nii.gz) and try again.")


def read_head(path: Path, n: int) -> bytes:
    """The first ``n`` (decompressed) bytes of a file."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == _GZIP_MAGIC
    opener = gzip.open if gz else open
    with opener(path, "rb") as fh:
        return fh.read(n)


def verify_gzip(path: Path) -> int:
    """Decompress the whole gzip stream (checking its CRC and length); return its size."""
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                total += len(chunk)
    except EOFError as exc:
        raise ImageReadError(
            f"{path}: the gzip stream is truncated (the file ends before its end marker). "
            f"{_RE_EXPORT}"
        ) from exc
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise ImageReadError(
            f"{path}: the gzip data is corrupt ({exc}). {_RE_EXPORT}"
        ) from exc
    return total


def nifti_data_extent(header: bytes) -> int | None:
    """Bytes a single-file NIfTI-1/2 needs (offset + voxel data), or None if not NIfTI."""
    if len(header) < 348:
        return None
    for order in "<>":
        sizeof_hdr = struct.unpack(order + "i", header[:4])[0]
        if sizeof_hdr == 348:
            dims = np.frombuffer(header[40:56], dtype=order + "i2").astype(np.int64)
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            dims = np.frombuffer(header[16:80], dtype=order + "i8").astype(np.int64)
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            offset = int(struct.unpack(order + "q", header[168:176])[0])
            break
    else:
        return None
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    nvox = int(np.prod(np.maximum(dims[1 : ndim + 1], 1)))
    return max(offset, len(header) if sizeof_hdr == 540 else 348) + nvox * bitpix // 8


def check_nifti_size(path: Path, header: bytes, available: int) -> None:
    """Raise if a NIfTI is not a NIfTI or holds fewer data bytes than its header promises."""
    needed = nifti_data_extent(header)
    if needed is None:
        raise ImageReadError(
            f"{path}: not a NIfTI file (no valid NIfTI header at the start). Check that this "
            "is an image and not, for example, a text or HTML file saved with an image name."
        )
    if available < needed:
        raise ImageReadError(
            f"{path}: the file is truncated: its header describes {needed} bytes of image "
            f"data but only {available} are present. {_RE_EXPORT}"
        )
