"""Typed exceptions. Every message names the file or input at fault and the fix.

The code that raises them does not know which node called it: the node layer (``nodes/base.py``,
and the guider for errors raised while sampling) names the node once, with :meth:`InstructError.at_node`.
"""

from __future__ import annotations

from typing import Optional


class InstructError(Exception):
    """Base class for every error this pack raises on purpose."""

    def __init__(self, message: str, node: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.node: Optional[str] = None
        if node is not None:
            self.at_node(node)

    def at_node(self, node: str) -> "InstructError":
        """Prefix the message with the node it is reported for; the first (innermost) name stays."""
        if self.node is None:
            self.node = node
            self.args = (f"{node}: {self.message}",)
        return self


class InstructModelError(InstructError, ValueError):
    """A model file or folder cannot be used as an instruct (8-channel) model."""


class InstructInputError(InstructError, ValueError):
    """A node input is wrong (wiring, sizes, batches); the message says which input and the fix."""
