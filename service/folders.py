"""Replacing a folder so a reader sees the old one or the new one, never a mix, and a crash loses neither.

Indexes and trained artifacts are folders of files that only make sense together. A new
version is written to `<folder>.tmp-<build>` (unique per build, so two builds never share a
temp folder), fsynced, and swapped in with two renames: `<folder>` -> `<folder>.old-<build>`,
then the temp folder -> `<folder>`. A kill between the two renames leaves no `<folder>`;
`recover` finishes the swap (or undoes it) the next time the folder is opened.

A build holds an flock on its temp folder from `new_build` until `swap_in` (or until the folder is gone, or
its process dies), so `recover` run by another process (`ragft train` beside `ragft serve`) never deletes a
live build; the renames of a swap and a recovery take turns on `<folder>.swap.lock`.

Example:
    >>> # tmp = new_build(folder); write files into tmp; swap_in(tmp, folder)
    >>> # recover(folder, complete=lambda f: (f / "manifest.json").is_file())
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


_BUILDS: dict[str, int] = {}  # temp folder -> the fd holding its flock while this process builds it
_SWAPS: dict[str, threading.Lock] = {}  # folder -> the lock this process's swaps and recoveries of it take
_GUARD = threading.Lock()  # guards both tables


@contextmanager
def swap_lock(folder: Path) -> Iterator[None]:
    """One swap or recovery of `folder` at a time: a lock per folder in this process, and an flock on
    `<folder>.swap.lock` against another process."""
    folder = Path(folder)
    with _GUARD:
        lock = _SWAPS.setdefault(str(folder.absolute()), threading.Lock())
    with lock:
        folder.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder.with_name(f"{folder.name}.swap.lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _release_builds(gone_only: bool, tmp: Path | None = None) -> None:
    """Close the flock of build `tmp`, or of every build whose temp folder no longer exists (a failed build's
    caller removed it)."""
    with _GUARD:
        for path in [str(tmp)] if tmp is not None else list(_BUILDS):
            if path in _BUILDS and (not gone_only or not os.path.isdir(path)):
                os.close(_BUILDS.pop(path))


def is_live_build(path: Path) -> bool:
    """Whether some process (this one included) still builds in the temp folder `path`: its flock is held."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def new_build(folder: Path) -> Path:
    """An empty temp folder beside `folder`, unique to this build, held (flock) until `swap_in`."""
    folder = Path(folder)
    _release_builds(gone_only=True)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    fd = os.open(tmp, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with _GUARD:
        _BUILDS[str(tmp)] = fd
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
    with swap_lock(folder):  # a recovery never runs between the two renames
        if folder.exists():
            os.rename(folder, old)
        os.rename(tmp, folder)
        sync_folder(folder.parent)
        _release_builds(gone_only=False, tmp=tmp)
    shutil.rmtree(old, ignore_errors=True)


def recover(folder: Path, complete: Callable[[Path], bool], what: str = "folder") -> str | None:
    """Finish or undo a swap a crash interrupted, and remove the leftovers of dead builds.

    With no `folder`, the newest complete temp folder is promoted (the build that was being swapped in), else
    the newest complete old one is put back. A temp folder a live build holds is neither promoted nor removed.
    Returns what was done, for the log, or None when there was nothing to do."""
    folder = Path(folder)
    with swap_lock(folder):
        return _recover(folder, complete, what)


def _recover(folder: Path, complete: Callable[[Path], bool], what: str) -> str | None:
    leftovers = sorted(
        (p for p in folder.parent.glob(f"{folder.name}.*-*") if p.is_dir() and p.name.split(".")[-1][:4] in
         ("tmp-", "old-") and not is_live_build(p)), key=lambda p: p.stat().st_mtime, reverse=True,
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
