"""Replacing a folder so a reader sees the old one or the new one, never a mix, and a crash loses neither.

Indexes and trained artifacts are folders of files that only make sense together. A new
version is written to `<folder>.tmp-<build>` (unique per build, so two builds never share a
temp folder), fsynced, and swapped in with two renames: `<folder>` -> `<folder>.old-<build>`,
then the temp folder -> `<folder>`. A kill between the two renames leaves no `<folder>`;
`recover` finishes the swap (or undoes it) the next time the folder is opened.

Example:
    >>> # tmp = new_build(folder); write files into tmp; swap_in(tmp, folder)
    >>> # recover(folder, complete=lambda f: (f / "manifest.json").is_file())
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def sync_folder(folder: Path) -> None:
    """fsync a folder, so the renames in it survive a power cut, not only a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temp file of a name unique to this writer (two processes writing the
    same report never share one), fsynced, renamed over `path`, and the rename fsynced."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def new_build(folder: Path) -> Path:
    """An empty temp folder beside `folder`, unique to this build."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    return tmp


def swap_in(tmp: Path, folder: Path) -> None:
    """fsync everything in `tmp`, then make it `folder` with two renames; the old version is removed last."""
    tmp, folder = Path(tmp), Path(folder)
    for path in tmp.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    sync_folder(tmp)
    old = folder.with_name(f"{folder.name}.old-{tmp.name.rsplit('.tmp-', 1)[-1]}")
    if folder.exists():
        os.rename(folder, old)
    os.rename(tmp, folder)
    sync_folder(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover(folder: Path, complete: Callable[[Path], bool], what: str = "folder") -> str | None:
    """Finish or undo a swap a crash interrupted, and remove the leftovers of dead builds.

    With no `folder`, the newest complete temp folder is promoted (the build that was being swapped in), else
    the newest complete old one is put back. Callers hold the lock that serialises builds of `folder`. Returns
    what was done, for the log, or None when there was nothing to do."""
    folder = Path(folder)
    leftovers = sorted(
        (p for p in folder.parent.glob(f"{folder.name}.*-*") if p.is_dir() and p.name.split(".")[-1][:4] in
         ("tmp-", "old-")), key=lambda p: p.stat().st_mtime, reverse=True,
    )  # fmt: skip
    done = None
    if not folder.exists():
        fresh = [p for p in leftovers if ".tmp-" in p.name and complete(p)]
        old = [p for p in leftovers if ".old-" in p.name and complete(p)]
        if fresh or old:
            chosen = (fresh or old)[0]
            os.rename(chosen, folder)
            sync_folder(folder.parent)
            leftovers.remove(chosen)
            done = f"restored the {what} at {folder.name} from {chosen.name}"
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return done or (f"removed {len(leftovers)} leftover {what} folders" if leftovers else None)
