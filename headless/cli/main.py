"""The entry point: parse, run the subcommand, and turn its typed error into one ``error:`` line and the
exit code the README promises (never a traceback, except with --verbose for a bug)."""

from __future__ import annotations

import sys
import traceback
from typing import Callable, Optional

from ..errors import HeadlessError
from . import batch_command, models_command, run_command
from .exit_codes import EXIT_EXECUTION, EXIT_INTERRUPTED, exit_code
from .parser import parse

COMMANDS: dict[str, Callable] = {"run": run_command.run, "batch": batch_command.run, "models": models_command.run}


def main(argv: Optional[list[str]] = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else list(argv))
    try:
        return COMMANDS[opts.command](opts)
    except HeadlessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug, not the user's input: one line, the traceback only with --verbose
        if opts.verbose:
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --verbose for the traceback)", file=sys.stderr)
        return EXIT_EXECUTION
