"""The node titles the headless runner addresses: one source for the workflows that carry them
(``authoring/catalog.py``) and the runner that looks for them (``overrides``, ``checks``).

A workflow marks its editable nodes by title (API format: ``_meta.title``), so ``run_workflow.py
--instruction/--prompt/--negative/--image/--reference`` need no node ids, and the image saved is the
one of the node titled ``Save``.
"""

from __future__ import annotations

INSTRUCTION = "Instruction"
PROMPT = "Prompt"
NEGATIVE = "Negative"
IMAGE = "Input image"
REFERENCE = "Reference image"
SAVE = "Save"
