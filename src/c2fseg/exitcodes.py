"""Exit codes of every ``c2fseg`` command and the error that ends one with a usage message.

Commands import these from here (not from :mod:`c2fseg.cli`), so a command module never
depends on the entry point that loads it. Codes (also in ``docs/design.md``):

* 0 ok;
* 1 unexpected error (a bug, or training crashed: the message or traceback says which);
* 2 usage or setup error: bad arguments, missing or empty input, output inside the input folder,
  missing weights, an unusable device, or a result file that cannot be written (disk full, no
  permission); the one-line message names the file or value and the fix;
* 3 finished, but some cases failed or were missing (the run report or the printed list says
  which and why; a case whose output could not be written because the disk is full is one);
* 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Raised by a command for bad arguments or inputs; reported without a traceback, exit 2."""
