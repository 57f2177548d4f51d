"""Write the shipped workflows (UI format + thumbnail, and the API-format twin) from one description.

    python scripts/make_workflows.py          # needs ComfyUI (COMFYUI_PATH or ~/ComfyUI) for the node schemas

The graphs are described once (``catalog``); the UI file and the API file are both written
from that description and the live node schemas (``graph``), the thumbnail by
``thumbnails``. The tests convert every UI file back to API format independently and
require it to equal its twin.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from headless.runner.comfyui import InProcessComfy, find_comfyui

from .catalog import GRAPHS
from .graph import to_api, to_ui
from .thumbnails import thumbnail

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"


def main() -> None:
    root, how = find_comfyui()
    if root is None:
        sys.exit(f"make_workflows needs ComfyUI: {how}")
    comfy = InProcessComfy(root, Path(tempfile.mkdtemp(prefix="wf-")))
    object_info = comfy.all_object_info()
    pack_nodes = set(comfy.pack_node_ids)  # the pack's node list, as ComfyUI registered it (nodes/__init__.py)
    (WORKFLOWS_DIR / "api").mkdir(parents=True, exist_ok=True)
    for make in GRAPHS:
        graph = make()
        (WORKFLOWS_DIR / f"{graph.name}.json").write_text(json.dumps(to_ui(graph, object_info, pack_nodes), indent=1) + "\n")
        (WORKFLOWS_DIR / "api" / f"{graph.name}.json").write_text(json.dumps(to_api(graph, object_info), indent=1) + "\n")
        thumbnail(graph, WORKFLOWS_DIR / f"{graph.name}.jpg", pack_nodes)
        print(f"wrote {graph.name}")


if __name__ == "__main__":
    main()
