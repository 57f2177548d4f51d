"""The base class of every node of the pack: the one place that names the node in its errors and
refuses non-finite float inputs.

The code below the node layer raises typed errors (``models/errors.py``) without knowing which node
called it; the wrapped ``execute`` adds the node's id to the message once (``InstructError.at_node``).

Combo values saved by 0.1.0 (long phrases) are turned into today's tokens here too, before ``execute``
runs (``choices.to_tokens``); a node with such combos accepts them in ``validate_inputs``
(:meth:`InstructNode.accept_choices`).

A NaN reaches a node unchecked: ComfyUI's min/max validation compares with ``<``/``>``, which is
false for NaN, and a linked FLOAT is not validated at all. Sampling with it then gives a black
image and no message. Every node derives from :class:`InstructNode`, whose subclass hook wraps the
node's ``execute`` once with :func:`check_finite_floats`, so a new node is covered without a copy
of the check.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

from comfy_api.latest import io

from ..models.errors import InstructError, InstructInputError
from .choices import check_choices, to_tokens

_CHECKED = "_instruct_finite_checked"


def float_inputs(schema: io.Schema) -> list[io.Float.Input]:
    """The FLOAT inputs of a node's schema (widgets or linked)."""
    return [i for i in schema.inputs if isinstance(i, io.Float.Input)]


def _describe(spec: io.Float.Input) -> str:
    parts = [f"default {spec.default}"] if spec.default is not None else []
    if spec.min is not None and spec.max is not None:
        parts.append(f"range {spec.min} to {spec.max}")
    return f" ({', '.join(parts)})" if parts else ""


def check_finite_floats(specs: list[io.Float.Input], values: dict[str, Any]) -> None:
    """Raise when a FLOAT input holds NaN or ±inf, naming the input and the fix."""
    for spec in specs:
        value = values.get(spec.id)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise InstructInputError(
                f"'{spec.id}' is {value}, not a finite number, so the result would be meaningless (NaN gives "
                f"a black image). Set '{spec.id}' to a number{_describe(spec)}; if it comes from a link, fix the node "
                "that computes it."
            )


def _checked_execute(execute: Callable[..., Any]) -> classmethod:
    @functools.wraps(execute)
    def run(cls, *args, **kwargs):
        schema = cls.SCHEMA or cls.define_schema()  # the class ComfyUI runs is locked: read, never build here
        try:
            check_finite_floats(float_inputs(schema), kwargs)
            return execute(cls, *args, **to_tokens(schema, kwargs))
        except InstructError as err:  # the pack's own errors: name the node once, here
            raise err.at_node(schema.node_id)

    setattr(run, _CHECKED, True)
    return classmethod(run)


class InstructNode(io.ComfyNode):
    """``io.ComfyNode`` whose ``execute`` refuses NaN/inf in any FLOAT input before it runs and names
    the node in the pack's errors."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("execute")
        # ComfyUI clones node classes before running them (the clone copies the wrapped execute).
        if not isinstance(own, classmethod) or getattr(own.__func__, _CHECKED, False):
            return
        if inspect.iscoroutinefunction(own.__func__):
            raise TypeError(f"{cls.__name__}: InstructNode wraps synchronous execute methods only")
        setattr(cls, "execute", _checked_execute(own.__func__))

    @classmethod
    def accept_choices(cls, **values: Any) -> "bool | str":
        """For ``validate_inputs``: the node's combo values, today's tokens or the 0.1.0 phrases they replace."""
        return check_choices(cls.SCHEMA or cls.define_schema(), values)
