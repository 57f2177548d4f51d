"""Reading weight files for the pack's loaders: safetensors, and pickles (.bin/.ckpt/.pt) weights-only.

A pickle that needs code to unpickle is refused with a message naming the file and why. torch's
own message is not passed on: it advises re-running with ``weights_only=False``, which would run
whatever code the file carries.
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import comfy.utils

from .errors import InstructModelError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|Unsupported global: ([\w.]+)")


def _torch_advice(exc: BaseException) -> bool:
    """torch's weights-only failures carry the ``weights_only=False`` advice."""
    return isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc) or "Weights only load failed" in str(exc)


def read_weights(path: str, what: str = "weight file") -> Any:
    """``comfy.utils.load_torch_file(path, safe_load=True)`` with the pack's error messages."""
    try:
        return comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as exc:
        if not _torch_advice(exc):
            raise InstructModelError(
                f"Cannot read '{path}': {type(exc).__name__}: {exc}. The file is truncated, corrupt or not a {what}: "
                "download it again, or convert it to .safetensors."
            ) from exc
        found = _GLOBAL.search(str(exc))
        if found or "Unsupported operand" in str(exc):
            needs = f" (it needs {found.group(1) or found.group(2)})" if found else ""
            message = (
                f"Refused to load '{path}': it is a pickle whose loading would run code{needs}, and the pack loads "
                "pickled files weights-only so that a model file can never execute code. Use a .safetensors version "
                "of this model, or convert it with a tool you trust."
            )
        else:
            message = (
                f"Cannot read '{path}': it is not a readable pickled {what} (truncated or corrupt; pickles are read "
                "weights-only): download it again, or use a .safetensors version."
            )
        raise InstructModelError(message) from None  # not chained: torch's text advises running the file's code
