"""The one interface a run goes through, whoever runs it: the in-process session and the server client
are both ``Runner``s, so the command line and the batch never ask which one they hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

#: ``progress(value, total, node_id, label)``; ``label`` is the node's title (or its type).
ProgressFn = Callable[[int, int, Optional[str], str], None]


@dataclass
class RunResult:
    """One finished prompt: the save node's images (PNG bytes) and what ComfyUI reported. Writing the
    images is the caller's job (``headless.runner.outputs``)."""

    prompt_id: str
    images: list[bytes]
    outputs: dict = field(default_factory=dict)  # ComfyUI's ui outputs by node id (history "outputs")
    cached: list[str] = field(default_factory=list)  # nodes ComfyUI's cache answered without running


class Runner(Protocol):
    """Runs API prompts on one ComfyUI."""

    #: How a batch's results name this worker.
    name: str
    #: Whether this process's peak memory is the runs' (in-process), or the runs happen elsewhere (a server).
    runs_here: bool

    def schema(self, class_type: str) -> dict:
        """The ``/object_info`` entry of a node type; {} when this ComfyUI lacks it."""
        ...

    def lacks_types_message(self, missing: list[str]) -> str:
        """What to tell the user when a prompt needs node types this ComfyUI lacks."""
        ...

    def add_image(self, path: Path | str) -> str:
        """Make an input image loadable by this ComfyUI; the name LoadImage takes."""
        ...

    def run(self, prompt: dict, *, progress: Optional[ProgressFn] = None, timeout: Optional[float] = None) -> RunResult:
        """Validate and execute one API prompt; raises the ``headless.errors`` types."""
        ...

    def close(self) -> None: ...
