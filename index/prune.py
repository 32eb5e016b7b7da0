"""Deleting old index versions, so that an index rebuilt every day does not fill the disk.

Every `index.build.build_index` adds a folder under `OUT/versions/`; this module owns removing
them again (`prune_versions`); the build lock that keeps it away from a build in progress is
`index.locks.building`. The rules:

- at most `keep` version folders remain: the newest by number, and the one named by `CURRENT`
  always counts as kept, even when it is the oldest (CURRENT pointed back by hand);
- a version whose write lock is held right now (`index.locks.version_lock`, taken by
  `IndexStore.add_documents` in any process) is skipped, so a live addition is never cut; a store
  that tries to add to a version after it was deleted fails with FileNotFoundError;
- a version is renamed to a hidden `versions/.deleting-*` name while its lock is held (one atomic
  step: nobody opens half a version), then removed; what a killed prune left is removed next time;
- the hidden `versions/.building-<key>` folders of crashed builds are removed when no build is
  assembling a version (builds hold `OUT/.build.lock` shared while they do) and an hour old.

A Milvus-backed version's collection is dropped with its folder (the folder's owner file names it;
`index.milvus_store.drop_owned_collection`); when Milvus cannot be reached, the renamed folder
stays, and the next prune tries again. A process still serving that version then finds nothing.

Deleting a folder that a reader has memmapped is fine on Linux: a deleted file's data stays until
its last mapping or descriptor is closed. A process still serving an old version (memmapped chunk
files, faiss loaded in memory) keeps answering; the disk space comes back when it lets go.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from contextlib import suppress
from pathlib import Path

from index.layout import (
    CURRENT_FILE,
    DELETING_PREFIX,
    MILVUS_OWNER,
    STAGING_PREFIX,
    VERSIONS_DIR,
    resolve_version_dir,
)
from index.locks import excluding_builds, version_lock
from index.milvus_store import drop_owned_collection

log = logging.getLogger(__name__)

# Crashed builds' staging folders are removed only this long after their last write, besides the
# lock: a build running code from before the lock existed (a service not yet restarted) is spared.
STALE_STAGING_SECONDS = 3600.0

_VERSION_NAME = re.compile(r"v(\d+)")


def _number(name: str) -> int | None:
    match = _VERSION_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def version_names(out_dir: str | Path) -> list[str]:
    """The version folders of an index folder, oldest (lowest number) first; [] when none."""
    versions = Path(out_dir) / VERSIONS_DIR
    if not versions.is_dir():
        return []
    found = sorted(
        (number, path.name)
        for path in versions.iterdir()
        if (number := _number(path.name)) is not None and path.is_dir()
    )
    return [name for _, name in found]


def folder_bytes(path: str | Path) -> int:
    """The total size of the files under path (0 if it vanished meanwhile)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _trash_name(path: Path) -> Path:
    return path.with_name(f"{DELETING_PREFIX}{path.name.lstrip('.')}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _take_version(version_dir: Path) -> Path | None:
    """Renames a version out of the way under its write lock; None if busy or already gone."""
    try:
        with version_lock(version_dir, wait=False) as free:
            if not free:
                log.warning("kept %s: a live addition holds its write lock", version_dir)
                return None
            trash = _trash_name(version_dir)
            os.rename(version_dir, trash)  # a store that opens the lock from now on fails
            return trash
    except FileNotFoundError:  # deleted meanwhile by another prune
        return None


def _last_write(path: Path) -> float:
    times = [path.stat().st_mtime]
    for entry in os.scandir(path):
        times.append(entry.stat(follow_symlinks=False).st_mtime)
    return max(times)


def _take_crashed_builds(versions: Path) -> list[Path]:
    """Renames staging folders left by crashed builds out of the way. Only call it while holding
    the build lock exclusively: then no build is assembling, so every staging folder is abandoned
    (a build that starts later makes a fresh one)."""
    taken = []
    for path in versions.glob(f"{STAGING_PREFIX}*"):
        try:
            if path.is_dir() and time.time() - _last_write(path) > STALE_STAGING_SECONDS:
                trash = _trash_name(path)
                os.rename(path, trash)
                taken.append(trash)
                log.info("removing %s, left by a crashed build", path)
        except FileNotFoundError:
            pass
    return taken


def _remove(path: Path) -> None:
    if (path / MILVUS_OWNER).is_file():  # a Milvus-backed version: its collection goes first
        try:
            drop_owned_collection(path)
        except Exception as e:  # server down, or Milvus Lite's file held by another process
            log.warning(
                "kept %s: could not drop its Milvus collection (%s); the next prune tries again", path, e
            )
            return
    # ignore_errors: another prune may be removing the same leftover at the same time.
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.warning("could not remove all of %s; the next prune tries again", path)


def prune_versions(out_dir: str | Path, keep: int) -> list[str]:
    """Deletes the oldest versions of the index at out_dir so that at most `keep` remain.

    CURRENT's version is never deleted and counts as one of the `keep`. A version being added to
    right now is skipped (so may more than `keep` remain), and so, while another build is
    assembling a version, is every version newer than CURRENT (the build's own may be among them,
    not yet named by CURRENT). Also removes what crashed builds and prunes left (see the module
    docstring). Returns the names of the deleted versions, oldest first. Raises ValueError for
    keep < 1 or a folder that is not an index.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the CURRENT version always stays), got {keep}")
    out_dir = Path(out_dir)
    if not (out_dir / CURRENT_FILE).is_file():
        raise ValueError(f"{out_dir} is not an index folder: it has no {CURRENT_FILE} file")
    versions = out_dir / VERSIONS_DIR
    deleted: list[str] = []
    trash: list[Path] = []
    with excluding_builds(out_dir) as no_build:
        current = resolve_version_dir(out_dir).name  # raises if CURRENT names no version
        others = [name for name in version_names(out_dir) if name != current]
        doomed = others[: max(0, len(others) - (keep - 1))]
        if not no_build:
            current_number = _number(current)
            newer = [name for name in doomed if current_number is None or _number(name) > current_number]
            if newer:
                log.warning("kept %s: a build is running and may be about to serve it", ", ".join(newer))
            doomed = [name for name in doomed if name not in newer]
        for name in doomed:
            if (taken := _take_version(versions / name)) is not None:
                deleted.append(name)
                trash.append(taken)
        if no_build:
            trash += _take_crashed_builds(versions)
    # The slow part runs without the build lock. Besides this call's folders, it removes those
    # of prunes that died midway; renamed folders are touched by nobody but prunes.
    for path in [*trash, *(p for p in versions.glob(f"{DELETING_PREFIX}*") if p not in trash)]:
        _remove(path)
    if deleted:
        log.info("pruned %s from %s (keeping %d versions)", ", ".join(deleted), out_dir, keep)
    return deleted
