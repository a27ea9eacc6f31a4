"""The one error type of the conversion package."""

from __future__ import annotations

from c2fseg.weights import WeightsError


class ConversionError(WeightsError):
    """A model file or folder cannot be imported; the message names the file and the fix.

    A :class:`~c2fseg.weights.WeightsError` (and so a ``ValueError``), so the CLI reports it like
    any other problem with a weights folder.
    """
