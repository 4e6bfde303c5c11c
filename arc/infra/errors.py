"""The errors a user can cause, and how the entry points report them: one line, no traceback.

A bad flag, a bad data file or a broken checkpoint is not a bug in this program: its traceback says
nothing the message does not, and buries the message under forty lines of frames. So every such
error is an ArcError whose message names what is wrong (the flag and its value, the file and the
field, the checkpoint folder) and what would be right; `cli_main` prints it as one line to stderr
and exits with status 1. Anything else is a bug and keeps its traceback. `--debug` (or ARC_DEBUG=1)
shows the traceback of a known error too.

    ConfigError      a flag (or config field) with a value that cannot work, or a refused --resume
    CheckpointError  a checkpoint that is missing, incomplete, inconsistent or unreadable, or a save
                     that failed (disk full): the message names the folder and what was kept
    DivergenceError  a non-finite loss: training stops before anything non-finite is saved
    arc.data.tasks.DataError  bad task data (defined beside the loaders it guards)

Each is also the built-in error it used to be (ValueError, RuntimeError), so callers that caught
those still do.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable


class ArcError(Exception):
    """An error the user can fix from its message alone: printed without a traceback."""


class ConfigError(ArcError, ValueError):
    """A flag or config field whose value is not allowed; the message names the flag, the value and what is allowed."""


class CheckpointError(ArcError, RuntimeError):
    """A checkpoint that cannot be used, or a save that did not complete; the message names the folder."""


class DivergenceError(ArcError, RuntimeError):
    """Training produced a non-finite loss or weights; nothing non-finite was saved."""


def debug_requested(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("ARC_DEBUG", "") not in ("", "0")


def cli_main(main: Callable[[], object]) -> None:
    """Run an entry point's main(): known errors (ArcError, and OSError such as a permission denied)
    become one line on stderr and exit status 1; Ctrl-C exits 130 with one line. With --debug or
    ARC_DEBUG=1 the traceback is printed as well."""
    try:
        main()
    except KeyboardInterrupt:
        if debug_requested():
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (ArcError, OSError) as error:
        if debug_requested():
            traceback.print_exc()
        message = str(error) if isinstance(error, ArcError) else f"{type(error).__name__}: {error}"
        print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message holds
        sys.exit(1)
