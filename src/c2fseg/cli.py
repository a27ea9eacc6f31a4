"""Command-line interface: ``c2fseg <command> ...``.

Each subcommand lives in ``c2fseg.commands.<name>`` as ``add_parser(subparsers)`` plus
``run(args) -> int``; the module imports only argparse at load time and calls one API function
in ``run``, so ``c2fseg --help`` stays fast (no torch import).

Exit codes (:mod:`c2fseg.exitcodes`): 0 success, 1 unexpected error, 2 usage or setup error
(bad arguments or input folder, or a result file that cannot be written, e.g. disk full),
3 finished but some cases failed (see the run report), 130 interrupted. Usage errors and
failed writes end with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from c2fseg import __version__
from c2fseg.exitcodes import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    UsageError,
)
from c2fseg.fileutil import WriteError, is_disk_full, write_error_message

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE",
           "UsageError", "build_parser", "command_names", "main"]

#: Subcommands in the order ``--help`` lists them; any other module in c2fseg.commands follows.
ORDER: tuple[str, ...] = (
    "demo",
    "predict",
    "import",
    "phantom",
    "view",
    "split",
    "evaluate",
    "train",
    "pseudolabel",
    "bench",
)

def command_names() -> list[str]:
    """Names of the subcommand modules present in ``c2fseg.commands``, in display order."""
    import pkgutil

    from c2fseg import commands

    found = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="c2fseg",
        description=(
            "Coarse-to-fine abdominal CT segmentation: 13 organs + tumor (FLARE23 labels). "
            "A coarse model finds the abdomen, organ and tumor models segment inside it."
        ),
        epilog="Exit codes: 0 ok, 1 error, 2 usage error (also: a result file cannot be written, "
               "e.g. disk full), 3 some cases failed, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"c2fseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_names():
        module = importlib.import_module(f"c2fseg.commands.{name}")
        module.add_parser(sub)
    return parser


def _safe_streams() -> None:
    """Never crash on printing a non-ASCII character (mm², ·, →) to an ASCII-only terminal."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and "utf" not in (stream.encoding or "").lower():
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``c2fseg`` console script."""
    _safe_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"c2fseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if not (isinstance(exc, WriteError) or is_disk_full(exc)):
            raise
        message = str(exc) if isinstance(exc, WriteError) else write_error_message(exc.filename, exc)
        print(f"c2fseg {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("c2fseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
