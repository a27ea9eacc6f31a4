"""The provenance an imported stage records under its manifest's ``extra``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from c2fseg.fileutil import sha256_file


def source_entries(paths: Iterable[str | os.PathLike]) -> list[dict[str, str]]:
    """``[{"path": absolute path, "sha256": hex digest}]`` of every file an import read."""
    return [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in paths]


def import_extra(
    *,
    sources: Iterable[str | os.PathLike],
    source_format: str,
    converted: str,
    pipeline: str,
    **more: Any,
) -> dict[str, Any]:
    """The ``extra`` section: where the stage came from, what was converted, the pipeline it needs."""
    return {"imported": True, "pipeline": pipeline, "source_format": source_format,
            "sources": source_entries(sources), "converted": converted, **more}
