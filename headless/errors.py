"""What can go wrong in a headless run, as types. Each message is the one line the user reads, naming
what is wrong and the fix; the command line maps each type to its exit code (``headless/cli/exit_codes.py``),
nothing below it knows exit codes."""

from __future__ import annotations


class HeadlessError(Exception):
    """A run, batch or model check that could not do what was asked."""


class InputError(HeadlessError):
    """The workflow, an input, an option, a manifest row or a model file is wrong or missing: the fix is the user's."""


class ExecutionError(HeadlessError):
    """ComfyUI failed while executing a valid prompt."""


class RunTimeout(ExecutionError):
    """The run did not finish in the time it was given; it was stopped (in-process) or cancelled (server)."""


class UnreachableError(HeadlessError):
    """A ComfyUI server is not reachable, stopped responding, or is not a ComfyUI server."""


class RunInterrupted(HeadlessError):
    """Ctrl-C or an interrupt stopped the run; nothing was written."""
