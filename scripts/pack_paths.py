"""The one bootstrap of the tools beside the pack: makes ``headless`` (and, for development, ``authoring``
and the ``testing/`` helpers) importable.

The packages sit at the pack root, but the pack root is never put on ``sys.path``: its ``nodes/`` would
shadow ComfyUI's ``nodes.py`` (and ``models/`` any other top-level ``models``). Each package is
registered under its own name from its folder instead, so ``import headless.cli`` works and nothing
else of the pack becomes importable by a bare name.

Who calls it: ``scripts/*.py`` (Python puts this folder first on their path), the benchmarks, the
test suite's ``conftest.py``, subprocesses through :func:`python_path`, and Ray actors, which are
:class:`Bootstrapped` instances started with :func:`ray_runtime_env`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACK_DIR = HERE.parent
#: Packages at the pack root registered by name: the shipped one, and the developer-only ones.
PACKAGES = ("headless",)
DEV_PACKAGES = ("authoring",)
#: Developer-only folders of plain modules (the tests' and the benchmarks' shared helpers).
DEV_ROOTS = ("testing",)


def _register(name: str) -> None:
    if name in sys.modules:
        return
    folder = PACK_DIR / name
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise ImportError(f"{folder} is not a package (no __init__.py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def install(dev: bool = False) -> None:
    """Register ``headless``; with ``dev`` also ``authoring`` and the ``testing/`` folder. Idempotent."""
    for name in PACKAGES + (DEV_PACKAGES if dev else ()):
        _register(name)
    if dev:
        for root in DEV_ROOTS:
            if str(PACK_DIR / root) not in sys.path:
                sys.path.append(str(PACK_DIR / root))


def python_path() -> str:
    """``PYTHONPATH`` for a child Python process that imports this module (then calls :func:`install`)."""
    return os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)


def ray_runtime_env(env_vars: dict[str, str]) -> dict[str, Any]:
    """A Ray ``runtime_env`` whose workers find this module (and so :class:`Bootstrapped`)."""
    return {"env_vars": {**env_vars, "PYTHONPATH": python_path()}}


class Bootstrapped:
    """The class Ray ships for an actor: importable wherever this folder is on the path, it installs the
    packages first and only then builds the real worker, ``factory`` ("package.module:Class"), whose
    methods :meth:`call` runs. (Ray loads an actor's class before any of its code runs, so a class of
    ``headless`` itself could not be found in a fresh worker.)"""

    def __init__(self, factory: str, *args: Any, **kwargs: Any) -> None:
        install()
        module, _, name = factory.partition(":")
        self.target = getattr(importlib.import_module(module), name)(*args, **kwargs)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.target, method)(*args, **kwargs)
