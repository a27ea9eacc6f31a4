"""Small file helpers shared by every module: atomic text/JSON writes, hashing, worker counts.

Atomic = write a temporary file in the destination folder, flush it to disk, then ``os.replace``
it onto the final name; on any error the temporary file is removed and an existing file at the
final path is left untouched. A write that fails with an ``OSError`` (disk full, quota, no
permission) raises :class:`WriteError`, whose message names the file and the fix in one line;
the command line turns it into exit code 2 without a traceback.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: errno values that mean "the disk (or the user's quota) is full".
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class WriteError(OSError):
    """Writing ``path`` failed; ``str()`` is a one-line message naming the file and the fix."""

    def __init__(self, path: str | os.PathLike, message: str, code: int | None = None) -> None:
        super().__init__(code, message, str(path))
        self.path = Path(path)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (worker processes) despite the custom signature
        return type(self), (str(self.path), self.message, self.errno)

    @classmethod
    def from_os_error(cls, path: str | os.PathLike, exc: OSError) -> WriteError:
        """``exc`` (raised while writing ``path``) as a WriteError; a WriteError stays as it is."""
        if isinstance(exc, WriteError):
            return exc
        return cls(path, write_error_message(path, exc), exc.errno)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or the quota is full (ENOSPC, EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def write_error_message(path: str | os.PathLike | None, exc: OSError) -> str:
    """One line: which file could not be written, why, and what to do."""
    where = Path(path) if path else None
    target = f"cannot write {where}" if where else "cannot write a file"
    if is_disk_full(exc):
        folder = f" holding {where.parent}" if where else ""
        return (f"{target}: no space left on the disk{folder} (or the disk quota is used up). "
                "Free some space there or choose another output folder, then run the same "
                "command again.")
    why = exc.strerror or str(exc) or type(exc).__name__
    fix = f"check that {where.parent} exists and is writable" if where else "check the folder"
    return f"{target}: {why}; {fix}."


@contextmanager
def atomic_target(path: str | os.PathLike, suffix: str = ".part") -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write; renamed onto ``path`` after it.

    On any error the temporary file is removed, ``path`` is left as it was, and an ``OSError``
    is raised as :class:`WriteError`. ``suffix`` ends the temporary name (e.g. ``.png``, so a
    writer that picks the format from the name picks the right one).
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WriteError.from_os_error(path, exc) from exc
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path (or raise WriteError)."""
    with atomic_target(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports and results are meant to be shared
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Serialise ``obj`` as JSON (sorted as given, trailing newline) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def read_json_file(path: str | os.PathLike, fix: str) -> Any:
    """A JSON file's content; FileNotFoundError / ValueError naming the file and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; {fix}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); {fix}") from None


def check_document(doc: Any, fmt: str, version: int, what: str, bad) -> None:
    """Raise ``bad(message)`` unless ``doc`` is a dict of ``format`` ``fmt`` and ``version``."""
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise bad(f"not a c2fseg {what} (format must be {fmt!r})")
    if doc.get("version") != version:
        raise bad(f"unsupported version {doc.get('version')!r} (expected {version})")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: containers, taskset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers(limit: int = 4) -> int:
    """Worker processes for per-case parallel work: min(limit, usable CPUs), at least 1."""
    return max(1, min(limit, usable_cpus()))
