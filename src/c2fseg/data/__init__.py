"""Data: FLARE23-style synthetic CT phantoms, label groups and stage datasets.

Phantom names are loaded lazily so ``import c2fseg.data.<module>`` stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "generate_dataset": "c2fseg.data.phantom",
    "PhantomError": "c2fseg.data.phantom",
    "generate_case": "c2fseg.data.phantom_case",
    "PhantomCase": "c2fseg.data.phantom_case",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'c2fseg.data' has no attribute {name!r}")
