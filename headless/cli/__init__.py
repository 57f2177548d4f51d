"""The one command line (``scripts/run_workflow.py``): subcommands run, batch and models; the only place
that knows exit codes."""

from .main import main

__all__ = ["main"]
