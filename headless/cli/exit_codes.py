"""The command line's exit codes (README, "Exit codes"): the one place a typed error becomes a number."""

from __future__ import annotations

from ..errors import ExecutionError, HeadlessError, InputError, RunInterrupted, UnreachableError

EXIT_OK = 0
EXIT_ROWS_FAILED = 1  # a batch ran to its end, but some rows failed
EXIT_INPUT = 2
EXIT_EXECUTION = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

_CODES: tuple[tuple[type[HeadlessError], int], ...] = (
    (InputError, EXIT_INPUT),
    (UnreachableError, EXIT_UNREACHABLE),
    (RunInterrupted, EXIT_INTERRUPTED),
    (ExecutionError, EXIT_EXECUTION),
)


def exit_code(error: HeadlessError) -> int:
    """The exit code of a typed error (an unknown kind is an execution failure)."""
    return next((code for kind, code in _CODES if isinstance(error, kind)), EXIT_EXECUTION)
