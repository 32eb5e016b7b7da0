"""The index's locks: file locks between processes, a read-write lock between threads.

Between processes (advisory `flock`s on files named by `index.layout`):
- a version's write lock (`version_lock`, `.append.lock` in the version folder), held by a live
  addition while it appends and by `copy_serving_version` while it copies; `index.prune` takes
  it without waiting (`version_lock(..., wait=False)`) before deleting a version, so an addition is
  never cut;
- the build lock (`building`, `.build.lock` in the index folder), held shared by builds from their
  staging folder until CURRENT names the new version; prune takes it exclusively, without waiting
  (`excluding_builds`).

Within a process, `ReadWriteLock` lets many searches run together and an append's in-memory step
run alone.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from index.layout import APPEND_LOCK, BUILD_LOCK


@contextmanager
def flock(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """Holds an advisory flock on path (created if missing) for the block and yields True; with
    wait=False it yields False at once when another process holds a conflicting lock."""
    with open(path, "a") as handle:
        operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(handle, operation if wait else operation | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def version_lock(version_dir: Path, wait: bool = True) -> Iterator[bool]:
    """A version's exclusive write lock: one appending process per version at a time (yields
    False at once, with wait=False, while another holds it). FileNotFoundError when the version
    folder was deleted meanwhile."""
    with flock(Path(version_dir) / APPEND_LOCK, wait=wait) as held:
        yield held


@contextmanager
def building(out_dir: str | Path) -> Iterator[None]:
    """Held (shared, so builds do not wait for each other) by a build from the moment it creates
    its staging folder until CURRENT names the new version: `prune_versions` then neither removes
    the staging folder nor deletes the new version before CURRENT points at it."""
    with flock(Path(out_dir) / BUILD_LOCK, shared=True):
        yield


@contextmanager
def excluding_builds(out_dir: str | Path) -> Iterator[bool]:
    """The build lock taken exclusively without waiting: yields True while it keeps every build
    from starting to assemble a version, False (at once) when a build holds `building` now."""
    with flock(Path(out_dir) / BUILD_LOCK, wait=False) as held:
        yield held


class ReadWriteLock:
    """Many concurrent readers (searches) or one writer (the in-memory part of an append)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self):
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
