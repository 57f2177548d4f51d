"""Typed exceptions. Every message names the file or input at fault and the fix."""

from __future__ import annotations


class InstructError(Exception):
    """Base class for every error this pack raises on purpose."""


class InstructModelError(InstructError, ValueError):
    """A model file or folder cannot be used as an instruct (8-channel) model."""


class InstructInputError(InstructError, ValueError):
    """A node input is wrong (wiring, sizes, batches); the message says which input and the fix."""
