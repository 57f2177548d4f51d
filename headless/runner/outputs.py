"""Writing a run's images, by the caller of a run (the command line, the batch driver): checked before
sampling, written atomically, with ordinary permissions.

``check_output`` refuses a target that cannot be written (a directory, a parent that is a file or
not writable) before any sampling time is spent. ``write_outputs`` writes each image to a temporary
file beside its target and renames it into place, so a failed or interrupted run never leaves a
half-written image, and removes the temporary file on every failure path. The result gets the mode
a plain ``open(..., "w")`` would give: the existing file's mode when it is replaced, else
0666 minus the user's umask (``mkstemp`` alone would leave 0600).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ..errors import InputError


def output_targets(output: Path, count: int) -> list[Path]:
    """One image: ``output``; a batch: ``name_0.png``, ``name_1.png``, …"""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(count)]


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would, briefly, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output(output: Path) -> None:
    """Refuse an output the run could not write, before it runs."""
    output = Path(output)
    if output.is_dir():
        raise InputError(f"--output {output} is a directory; give a file name, e.g. {output / 'edited.png'}")
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{output.name}.", dir=str(parent))
    except OSError as exc:
        raise InputError(f"cannot write --output {output}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)
    if output.exists() and not os.access(output, os.W_OK):
        raise InputError(f"cannot write --output {output}: the file is read-only")


def _write_one(data: bytes, target: Path) -> None:
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:  # disk full, interrupt, target turned into a directory: no leftovers
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_outputs(images: list[bytes], output: Path) -> list[Path]:
    """Write the images (see the module doc); the paths written."""
    output = Path(output)
    targets = output_targets(output, len(images))
    for target in targets:
        check_output(target)
    for data, target in zip(images, targets):
        try:
            _write_one(data, target)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return targets
