"""Write the shipped workflows (UI + thumbnail, and the API twin) from one description (developer tool).

    python scripts/make_workflows.py          # needs ComfyUI (COMFYUI_PATH or ~/ComfyUI) for the node schemas

The authoring code lives in ``authoring/`` (left out of the registry package); this file only makes it importable.
"""

import pack_paths

pack_paths.install(dev=True)

from authoring.make_workflows import main  # noqa: E402  (importable only once the bootstrap ran)

if __name__ == "__main__":
    main()
