"""The model files' error type."""

from __future__ import annotations

from ..errors import InputError


class ModelFilesError(InputError):
    """A model file is missing or could not be fetched; the message says which, where it goes and the fix."""
