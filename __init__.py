"""ComfyUI-Instruct: instruction-driven image editing for ComfyUI.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint``. Nothing of ComfyUI is
imported at module level, so the package (and its pure-Python modules) can be imported by tests
and tools without a ComfyUI checkout. There is deliberately no ``NODE_CLASS_MAPPINGS`` here:
ComfyUI ignores ``comfy_entrypoint`` when both exist.
"""

__all__ = ["comfy_entrypoint"]


async def comfy_entrypoint():
    """Return the pack's ComfyExtension (imported lazily: needs ComfyUI)."""
    from .nodes import InstructExtension

    return InstructExtension()
