"""argparse ``type=`` validators with messages that say what is wrong and what is expected."""

from __future__ import annotations

import argparse
from pathlib import Path


def existing_dir(value: str) -> Path:
    """A folder that exists."""
    p = Path(value).expanduser()
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not an existing folder")
    return p


def existing_path(value: str) -> Path:
    """A file or folder that exists."""
    p = Path(value).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{value!r} does not exist")
    return p


def _int_at_least(value: str, low: int) -> int:
    """An integer >= ``low``; the message names the value and the bound."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < low:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= {low}")
    return n


def positive_int(value: str) -> int:
    """An integer >= 1."""
    return _int_at_least(value, 1)


def non_negative_int(value: str) -> int:
    """An integer >= 0."""
    return _int_at_least(value, 0)


def non_negative_float(value: str) -> float:
    """A finite float >= 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number >= 0")
    return x


def fraction(value: str) -> float:
    """A float in (0, 1]."""
    x = non_negative_float(value)
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be in (0, 1]")
    return x


def _positive_triple(value: str, convert, expected: str, kind: str) -> tuple:
    """Three positive numbers 'z,y,x' (commas or 'x' between them) converted by ``convert``."""
    parts = value.replace("x", ",").split(",")
    try:
        nums = tuple(convert(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected {expected}") from None
    if len(nums) != 3 or not all(n > 0 for n in nums):
        raise argparse.ArgumentTypeError(f"{value!r}: expected three positive {kind} 'z,y,x'")
    return nums


def spacing_zyx(value: str) -> tuple[float, float, float]:
    """Three positive floats 'z,y,x' in mm."""
    return _positive_triple(value, float, "'z,y,x' in mm, e.g. 2.5,1.5,1.5", "numbers")


def int_triple(value: str) -> tuple[int, int, int]:
    """Three positive integers 'z,y,x' (for example a patch size)."""
    return _positive_triple(value, int, "three integers 'z,y,x'", "integers")
