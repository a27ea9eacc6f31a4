"""Error types of :mod:`c2fseg.io` (kept apart so every io module can import them cheaply)."""

from __future__ import annotations

import re


class ImageReadError(ValueError):
    """An input image cannot be used; the message names the file, the problem and the fix."""


class LabelValueError(ImageReadError):
    """A label map holds values that are not FLARE23 label ids (non-integer or outside 0-14)."""


class FolderError(ValueError):
    """An input or output folder cannot be used; the message names the folder and the fix."""


def itk_reason(exc: Exception) -> str:
    """The useful line of a SimpleITK exception (drops source paths and stale errno text)."""
    text = str(exc)
    for line in text.splitlines():
        if "ERROR:" in line:
            reason = line.split("ERROR:", 1)[1].strip()
            return re.sub(r"^\w+\(0x[0-9a-f]+\):\s*", "", reason)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
