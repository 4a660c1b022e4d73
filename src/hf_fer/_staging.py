"""Write a folder (a prepared dataset, a converted model) next to its destination and move it in when complete.

An error or a kill halfway must never leave a half-written folder where a good one was (or is expected). Work
happens in ``.<name>.hf_fer-partial-<pid>-<id>`` beside the destination; a destination that is replaced waits in
``.<name>.hf_fer-old-<pid>-<id>`` for the instant between two renames. :func:`recover_interrupted` cleans up
after a killed run (its process is gone): it deletes partial folders and puts a set-aside folder back if the new
one never arrived. Standard library only: imported by ``hf-fer convert`` and ``prepare-dataset`` alike.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
from pathlib import Path

__all__ = ["PARTIAL_TAG", "OLD_TAG", "staging_folder", "recover_interrupted", "swap_into_place", "publish_files"]

PARTIAL_TAG, OLD_TAG = "hf_fer-partial", "hf_fer-old"


def staging_folder(output: Path, tag: str = PARTIAL_TAG) -> Path:
    """A fresh (not yet created) folder name beside ``output``, tagged with this process id."""
    return output.parent / f".{output.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt" or pid <= 0:  # os.kill(pid, 0) is not a probe on Windows
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        return True
    return True


def recover_interrupted(output: Path) -> None:
    """Clean up what a killed run writing ``output`` left beside it; runs still in progress are left alone."""
    if not output.parent.is_dir():
        return
    prefix = f".{output.name}."
    with os.scandir(output.parent) as entries:
        leftovers = sorted(Path(e.path) for e in entries if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False))
    for path in leftovers:
        tag, pid, _ = (path.name[len(prefix):].rsplit("-", 2) + ["", ""])[:3]
        if tag not in (PARTIAL_TAG, OLD_TAG) or not pid.isdigit() or _pid_alive(int(pid)):
            continue  # not ours, or a run still in progress
        if tag == OLD_TAG and not output.exists():
            os.rename(path, output)
            print(f"restored {output} from {path.name} (left by an interrupted run)", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def swap_into_place(built: Path, output: Path) -> None:
    """Replace ``output`` by the complete folder ``built``: old aside, new in, old deleted (each step a rename)."""
    aside = None
    if output.exists():
        aside = staging_folder(output, OLD_TAG)
        os.rename(output, aside)
    try:
        os.rename(built, output)
    except BaseException:
        if aside is not None:
            os.rename(aside, output)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


# Weight files a new save_pretrained makes stale (it deletes them itself when writing in place).
_WEIGHT_FILE = re.compile(r"^model(-\d+-of-\d+)?\.safetensors(\.index\.json)?$")


def publish_files(staged: Path, output: Path, last: str = "config.json") -> None:
    """Move the files of ``staged`` into the existing folder ``output`` with ``os.replace``, ``last`` at the end.

    For a destination that holds other files too (a checkpoint folder, a user's README): each file appears whole,
    and ``config.json``, which makes the folder loadable, only once the weights and code it names are there.
    Weight files of an earlier save that the new one does not have are removed before ``last`` moves in.
    """
    files = sorted(p for p in staged.iterdir() if p.is_file())
    names = {p.name for p in files}
    for path in files:
        if path.name != last:
            os.replace(path, output / path.name)
    for stale in output.iterdir():
        if stale.is_file() and _WEIGHT_FILE.match(stale.name) and stale.name not in names:
            stale.unlink()
    if last in names:
        os.replace(staged / last, output / last)
