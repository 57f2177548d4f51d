"""Shared fixtures, and the tiers.

* The suite runs in tiers by cost (README, Tests): a test's markers say what it costs (``slow``: full-size
  models; ``subprocess``: a command line or ComfyUI server in another process; ``ray``; ``browser``; ``gpu``).
  ``python -m pytest`` runs the tests with none of them (the quick tier); ``-m "not gpu"`` runs everything.
  A test that asks for the ``full`` fixture is ``slow`` without saying so, one that asks for ``ray_cluster`` is
  ``ray``, for ``comfyui_server`` ``subprocess`` (``TIER_OF_FIXTURE``); a file can mark all its tests with ``pytestmark``.

* ``pure(name)`` imports a ComfyUI-free module of the pack (``samplers.dual_cfg`` …) without
  putting the pack root on sys.path (its nodes/, models/, tests/ would shadow ComfyUI's).
* ``comfy`` is one in-process ComfyUI with this pack loaded exactly as ComfyUI loads custom nodes;
  tests that use it are marked ``comfyui`` and skip with a one-line reason when there is no ComfyUI.
* ``tiny`` holds the paths of the generated random-weight model files.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest

import pack_paths

pack_paths.install(dev=True)

import instruct_harness  # noqa: E402  (testing/ is on the path once the bootstrap ran)
from instruct_tiny_models import cache_dir  # noqa: E402

PACK_ALIAS = "comfyui_instruct_pure"
COMFY_ROOT, COMFY_HOW = instruct_harness.find_comfyui()
_counts = {"ran": 0, "skipped": 0}


def pure(name: str):
    """Import ``<pack>.<name>`` for modules that do not need ComfyUI."""
    if PACK_ALIAS not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_ALIAS,
            instruct_harness.PACK_DIR / "__init__.py",
            submodule_search_locations=[str(instruct_harness.PACK_DIR)],
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_ALIAS] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{PACK_ALIAS}.{name}")


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    if COMFY_ROOT is None:
        pytest.skip(f"ComfyUI-backed test: {COMFY_HOW}")
    harness = instruct_harness.ComfyHarness(COMFY_ROOT, tmp_path_factory.mktemp("comfy"), cache_dir())
    assert harness.pack_loaded, "ComfyUI failed to load the pack (see the log above)"
    _freeze_start_up_objects()
    return harness


def _freeze_start_up_objects() -> None:
    """Move what start-up left alive (ComfyUI's modules, node classes, torch's: about 0.5 M objects) out of
    the collector's sight. They live to the end anyway, and every full collection walked them: 0.25 s per
    ``gc.collect()``, about 80 s of the suite's run (the trims below collect often). Done once, right after
    start-up, before any model exists: a model frozen here could never be collected."""
    import gc

    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def tiny(comfy):
    import instruct_tiny_models

    return instruct_tiny_models.build_all(comfy.models_dir)


@pytest.fixture(scope="session")
def full(comfy):
    """Full-size SD1.5 (random): the IP-Adapter-Instruct files (0.43 GB, written once) and a ``FullSD15`` that
    builds the UNets and ControlNet in memory, one model at a time (``full.load("plain" | "instruct")``)."""
    import instruct_tiny_models

    return instruct_tiny_models.build_full(comfy.models_dir, comfy.pack("models.ipadapter_instruct"), comfy.pack("models.instruct_loader"))


@pytest.fixture(scope="session")
def narrow(comfy):
    """SD1.5's topology at a tenth of the width (``NarrowSD15``) and its IP-Adapter-Instruct files: what the
    adapter's tests need of a UNet, in the quick tier (``narrow.load("plain" | "instruct")``)."""
    import instruct_tiny_models

    return instruct_tiny_models.build_narrow(
        comfy.models_dir, comfy.pack("models.ipadapter_instruct"), comfy.pack("models.instruct_loader")
    )


@pytest.fixture(scope="session")
def tiny_diffusers(comfy):
    pytest.importorskip("diffusers", reason="diffusers is needed for the diffusers-layout models")
    import instruct_tiny_models

    return instruct_tiny_models.build_diffusers(comfy.models_dir)


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _hand_back_freed_memory() -> None:
    """Collect and trim the heap (``instruct_tiny_models.trim_heap``), and note the size it left."""
    import instruct_tiny_models

    instruct_tiny_models.trim_heap()
    _trimmed_at[0] = _resident_bytes()


_trimmed_at = [0]
TRIM_AFTER_GROWTH = 256 << 20


@pytest.fixture(autouse=True)
def _return_freed_memory():
    """After a test that left the process 256 MiB larger than the last trim: collect and trim."""
    yield
    if _resident_bytes() > _trimmed_at[0] + TRIM_AFTER_GROWTH:
        _hand_back_freed_memory()


@pytest.fixture(autouse=True, scope="module")
def _release_models_after_each_file():
    """After each test file: the in-memory full-size model (3.4 GB and more) is let go of, the runner's
    per-process session drops its models, and ComfyUI unloads what it still holds, so a file never carries
    what an earlier one loaded. The previous file's module fixtures (its tiny models: 0.7 GB) are only freed
    after its teardown, once pytest drops its last test's fixture values, so the heap is trimmed again here,
    at the start of the next file."""
    _hand_back_freed_memory()
    yield
    import instruct_tiny_models

    for cache in (instruct_tiny_models._FULL, instruct_tiny_models._NARROW):
        if cache is not None:
            cache.release()
    if "headless.runner.session" in sys.modules:  # the runner's per-process session keeps its last graph's models
        sys.modules["headless.runner.session"].release_shared()
    if "comfy.model_management" in sys.modules:
        sys.modules["comfy.model_management"].unload_all_models()
    _hand_back_freed_memory()


@pytest.fixture(autouse=True)
def _memory_log(request):
    """With ``INSTRUCT_TEST_MEMLOG=FILE``: one line per test (resident MiB after it, the process's peak so
    far, seconds), to find the tests that set the suite's peak (README, Tests)."""
    path = os.environ.get("INSTRUCT_TEST_MEMLOG")
    if not path:
        yield
        return
    import resource
    import time

    start = time.perf_counter()
    yield
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(path, "a") as f:
        f.write(f"{_resident_bytes() / 2**20:8.0f} {peak_mib:8.0f} {time.perf_counter() - start:7.1f} {request.node.nodeid}\n")


@pytest.fixture
def log_capture():
    import logging

    handler = instruct_harness.LogCapture()
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


#: Fixtures that decide a test's tier by themselves (what they build or start is the cost).
TIER_OF_FIXTURE = {"full": "slow", "ray_cluster": "ray", "comfyui_server": "subprocess"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "comfy" in fixtures:
            item.add_marker(pytest.mark.comfyui)
        for fixture, tier in TIER_OF_FIXTURE.items():
            if fixture in fixtures:
                item.add_marker(getattr(pytest.mark, tier))


def pytest_runtest_logreport(report):
    if "comfyui" not in report.keywords:
        return
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _counts["skipped" if report.skipped else "ran"] += 1


def pytest_terminal_summary(terminalreporter):
    where = f"ComfyUI at {COMFY_ROOT} ({COMFY_HOW})" if COMFY_ROOT else COMFY_HOW
    terminalreporter.write_line(f"ComfyUI-backed tests: {_counts['ran']} ran, {_counts['skipped']} skipped — {where}")
