"""The run sequence every ``Runner`` shares: check the prompt, find its save node, execute, turn ComfyUI's
status into the typed error, read the save node's images. A runner supplies only how it executes and
how it reads an image back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Optional

from ..errors import InputError
from ..prompts.checks import check_prompt, lacking, save_node
from .protocol import ProgressFn, RunResult
from .status import failure


@dataclass
class Finished:
    """What executing a prompt reported: its status messages and the ui outputs by node id."""

    prompt_id: str
    messages: list
    outputs: dict
    cached: list[str] = field(default_factory=list)


class PromptRunner(ABC):
    """The shared half of the in-process session and the server client (see the module doc)."""

    #: Appended to failure messages, so the user knows where it failed (" on the server").
    where = ""

    @abstractmethod
    def schema(self, class_type: str) -> dict: ...

    @abstractmethod
    def lacks_types_message(self, missing: list[str]) -> str: ...

    @abstractmethod
    def _execute(self, api: dict, progress: Optional[ProgressFn], timeout: Optional[float]) -> Finished:
        """Validate and execute ``api``; raise the typed error for a refusal, a timeout or an interrupt."""

    @abstractmethod
    def _read_images(self, images: list[dict]) -> list[bytes]:
        """The bytes of the images a save node reported."""

    def _discard(self, outputs: dict) -> None:
        """Clean up what the run left where it ran (nothing by default)."""

    def check_types(self, api: dict) -> None:
        """Refuse a prompt whose node types this ComfyUI lacks, before anything else is asked of it."""
        missing = [t for t in lacking(api, ()) if not self.schema(t)]
        if missing:
            raise InputError(self.lacks_types_message(missing))

    def run(self, prompt: dict, *, progress: Optional[ProgressFn] = None, timeout: Optional[float] = None) -> RunResult:
        api = check_prompt(prompt)
        self.check_types(api)
        save = save_node(api)
        done = self._execute(api, progress, timeout)
        try:
            problem = failure(done.messages, api, self.where)
            if problem is not None:
                raise problem
            images = self._read_images(done.outputs.get(save, {}).get("images", []))
        finally:
            self._discard(done.outputs)
        if not images:
            raise InputError("the run produced no image")
        return RunResult(prompt_id=done.prompt_id, images=images, outputs=done.outputs, cached=list(done.cached))
