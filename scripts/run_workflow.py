"""Run a workflow headless (in-process or on a ComfyUI server), a batch of edits, or check its model files.

    python scripts/run_workflow.py WORKFLOW --image photo.jpg --instruction "make it winter" --output out.png

The command line lives in ``headless/cli``; this file only makes the package importable.
"""

import sys

import pack_paths

pack_paths.install()

from headless.cli import main  # noqa: E402  (importable only once the bootstrap ran)

if __name__ == "__main__":
    sys.exit(main())
