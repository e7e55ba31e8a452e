"""The layout of an index directory: paths, the published-version pointer, history, the writer lock.

Layout of an index directory (format 2, see ``docs/storage.md``)::

    index/
      CURRENT                   the published version id (replaced atomically with os.replace)
      HISTORY                   one line per publish or rollback: time, action, version id
      .lock                     writer lock (flock); readers never take it
      segments/<segment-id>/    one immutable segment, shared by every version naming it
                                (:mod:`semsearch.index.segment`)
      versions/<version-id>/    one immutable version:
          manifest.json         format version, model id, dimension, chunking settings, counts, its segments
          deleted.npy           passage ids deleted from those segments (int64, ascending)
      staging/                  segments and versions being written; never read; removed by the next writer
                                if left over (a merge in progress holds ``<name>.lock`` and is left alone)

A version or segment is written entirely in ``staging/``, fsynced, renamed into place and only then named
(a segment by a version, a version by ``CURRENT``), so a reader sees either the old complete version or the new
complete one, and a crash at any point leaves the published version untouched.

Reading a version is :mod:`semsearch.index.reader`; writing one is :mod:`semsearch.index.writer`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..errors import IndexCorruptError, IndexLockedError, IndexNotFoundError, IndexWriteError

log = logging.getLogger(__name__)

_HISTORY_LINES = 1000
_VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
MANIFEST = "manifest.json"
DELETED = "deleted.npy"


def new_version_id() -> str:
    """Sortable by creation time, unique across concurrent writers."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path, *, recursive: bool = True) -> None:
    """fsync every file under ``path`` (when ``recursive``) and the directories holding them."""
    if recursive:
        for item in path.rglob("*"):
            if item.is_file():
                fd = os.open(item, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            elif item.is_dir():
                fsync_dir(item)
    fsync_dir(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave a stray file beside the pointer
        raise
    fsync_dir(path.parent)


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or quota, as the OS, SQLite or faiss report it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error) and getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if isinstance(current, (RuntimeError, OSError)) and (
            "No space left on device" in str(current) or "Disk quota exceeded" in str(current)
        ):
            return True  # faiss's writer reports errno only in its message
        if isinstance(current, OSError) and current.errno is None and _SHORT_WRITE.search(str(current)):
            return True  # numpy's tofile reports a short write ("N requested and M written") without errno
        current = current.__cause__ or current.__context__
    return False


class IndexLayout:
    """Paths and pointer operations of one index directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.segments_dir = self.root / "segments"
        self.staging_dir = self.root / "staging"
        self.current_file = self.root / "CURRENT"
        self.lock_file = self.root / ".lock"
        self.history_file = self.root / "HISTORY"

    def current_version(self) -> str | None:
        """The published version id; None when nothing was ever published. :class:`IndexCorruptError` when
        ``CURRENT`` exists but does not hold a version id (it is replaced atomically, so that is damage)."""
        try:
            raw = self.current_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IndexCorruptError(f"cannot read {self.current_file}: {exc}") from exc
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            value = None
        if not value or not _VERSION_ID.fullmatch(value):
            history = self.history()
            hint = f"; the last version published was {history[-1]}" if history else ""
            raise IndexCorruptError(
                f"{self.current_file} is damaged ({len(raw)} bytes, no version id): write the id of a version in "
                f"{self.versions_dir} into it{hint}"
            )
        return value

    def version_path(self, version_id: str) -> Path:
        return self.versions_dir / version_id

    def segment_path(self, segment_id: str) -> Path:
        return self.segments_dir / segment_id

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / MANIFEST).is_file())

    def current_path(self) -> Path:
        version = self.current_version()
        if version is None:
            raise IndexNotFoundError(
                f"no index at {self.root} (build one with 'semsearch index SOURCE --index-dir {self.root}')"
            )
        path = self.version_path(version)
        if not (path / MANIFEST).is_file():
            raise IndexCorruptError(f"{self.current_file} names version {version!r}, which is missing")
        return path

    def history(self) -> list[str]:
        """Published version ids, oldest first (a version appears again when rolled back to)."""
        try:
            lines = self.history_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [line.split()[-1] for line in lines if line.strip()]

    def publish(self, version_id: str, action: str = "publish") -> None:
        """Make ``version_id`` current: one atomic rename of the pointer file, then record it in the history.

        A crash between the two leaves a current version missing from the history; :meth:`prune` never removes
        the current version, so nothing is lost.
        """
        atomic_write_text(self.current_file, version_id + "\n")
        entries = self.history_file.read_text(encoding="utf-8").splitlines() if self.history_file.exists() else []
        entries.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {action} {version_id}")
        try:
            atomic_write_text(self.history_file, "\n".join(entries[-_HISTORY_LINES:]) + "\n")
        except OSError as exc:
            # The version is published already; failing now would report a publish that happened as failed.
            log.warning("published %s but could not record it in %s: %s", version_id, self.history_file, exc)

    def content_of(self, version_id: str) -> str:
        """The version whose content ``version_id`` holds: itself, or for a version a merge published (same
        passages, fewer segments), the version it was merged from."""
        try:
            data = json.loads((self.version_path(version_id) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return version_id
        extra = data.get("extra") if isinstance(data, dict) else None
        content = extra.get("content_version") if isinstance(extra, dict) else None
        return content if isinstance(content, str) else version_id

    def previous_version(self) -> str | None:
        """The version published before the current one that still exists on disk (the rollback target). A
        version that only differs from the current one by a merge is the same content and is skipped."""
        current = self.current_version()
        history = self.history()
        if current in history:
            history = history[: len(history) - 1 - history[::-1].index(current)]
        same = self.content_of(current) if current else None
        for version in reversed(history):
            exists = (self.version_path(version) / MANIFEST).is_file()
            if version != current and exists and self.content_of(version) != same:
                return version
        return None

    def prune(self, keep: int) -> list[str]:
        """Keep the current version and the last ``keep`` published contents (a merge republishes a content: its
        latest version is kept); delete the other versions, including those written but never published (a
        writer killed before the switch), then the segments no kept version names. Call with the lock held."""
        current = self.current_version()
        contents: list[str] = []
        wanted: set[str] = {current} if current else set()
        for version in reversed(self.history()):
            content = self.content_of(version)
            if content in contents:
                continue
            if len(contents) >= keep:
                break
            contents.append(content)
            wanted.add(version)
        doomed = [v for v in self.all_version_dirs() if v not in wanted]
        for version in doomed:
            shutil.rmtree(self.version_path(version), ignore_errors=True)
        self.prune_segments()
        return doomed

    def referenced_segments(self) -> set[str]:
        """Segments named by any version on disk."""
        named: set[str] = set()
        # A merge running outside the lock pins the segments it reads (``staging/<name>.pins``).
        if self.staging_dir.is_dir():
            for pins in self.staging_dir.glob("*.pins"):
                with contextlib.suppress(OSError):
                    named.update(pins.read_text(encoding="utf-8").split())
        for version in self.all_version_dirs():
            try:
                data = json.loads((self.version_path(version) / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a version without a readable manifest names nothing (and is never published)
            named.update(data.get("segments", []) if isinstance(data, dict) else [])
        return named

    def prune_segments(self) -> list[str]:
        """Delete the segments no version names. Call with the lock held (a segment is renamed into
        ``segments/`` under the lock, just before the version naming it)."""
        if not self.segments_dir.is_dir():
            return []
        named = self.referenced_segments()
        doomed = [p.name for p in self.segments_dir.iterdir() if p.name not in named]
        for name in doomed:
            shutil.rmtree(self.segment_path(name), ignore_errors=True)
        return doomed

    def segment_bytes(self) -> dict[str, int]:
        """Bytes on disk of each segment."""
        if not self.segments_dir.is_dir():
            return {}
        return {p.name: _tree_bytes(p) for p in self.segments_dir.iterdir() if p.is_dir()}

    def all_version_dirs(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir())

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """Turn a full disk met by a writer into :class:`IndexWriteError` naming the index directory; the caller
        has removed what it half wrote (the published version is never written in place)."""
        try:
            yield
        except IndexWriteError:
            raise
        except Exception as exc:
            if not out_of_space(exc):
                raise
            try:
                current = self.current_version()
            except IndexCorruptError:
                current = None
            kept = f"; the published version {current} is unchanged" if current else ""
            raise IndexWriteError(
                f"cannot write index {self.root}: no space left on device while {what}{kept}; free space and run again"
            ) from exc

    def discard_unpublished(self, version_id: str) -> None:
        """Remove a version that was written but not published, and the segments only it named. Call with the
        writer lock held."""
        try:
            if self.current_version() == version_id:
                return  # published after all (the failure came later)
        except IndexCorruptError:
            return  # cannot tell: leave it to the next writer's prune
        shutil.rmtree(self.version_path(version_id), ignore_errors=True)
        with contextlib.suppress(OSError):
            self.prune_segments()

    def clean_staging(self) -> list[str]:
        """Remove what a crashed writer or merge left half-written. Entries are grouped by their name's stem (a
        claim's directory, ``.lock``, ``.pins`` and temporary files share it); a group whose ``<stem>.lock`` is
        held by a running merge is left alone. Call with the writer lock held."""
        if not self.staging_dir.is_dir():
            return []
        groups: dict[str, list[Path]] = {}
        for path in self.staging_dir.iterdir():
            groups.setdefault(path.name.lstrip(".").split(".")[0], []).append(path)
        removed = []
        for stem, paths in sorted(groups.items()):
            lock = self.staging_dir / f"{stem}.lock"
            fd = None
            if lock.exists():
                fd = os.open(lock, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue  # a merge is working in it
            try:
                for path in sorted(paths, key=lambda p: p == lock):  # the lock last, while we hold it
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
            finally:
                if fd is not None:
                    os.close(fd)
            removed.append(stem)
        return removed

    def unpin(self, name: str) -> None:
        """Drop the pins of the claim ``name`` (its merge has published: what it read may now be pruned)."""
        (self.staging_dir / f"{name}.pins").unlink(missing_ok=True)

    @contextlib.contextmanager
    def staging_claim(self, name: str, pins: Iterable[str] = ()) -> Iterator[Path]:
        """A staging directory for work done outside the writer lock (a merge): its ``.lock`` is held until the
        block ends, so :meth:`clean_staging` leaves it alone, and the segments in ``pins`` are not pruned
        meanwhile; the directory is removed at the end if still there."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        path = self.staging_dir / name
        lock = self.staging_dir / f"{name}.lock"
        pins_file = self.staging_dir / f"{name}.pins"
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break  # not unlinked by a cleaner between our open and flock
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            atomic_write_text(pins_file, "\n".join(pins) + "\n")
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            pins_file.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
            os.close(fd)

    @contextlib.contextmanager
    def writer_lock(self, wait: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Exclusive lock for writers. ``wait=False`` fails at once with :class:`IndexLockedError`."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if not wait or (deadline is not None and time.monotonic() >= deadline):
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                        raise IndexLockedError(
                            f"index {self.root} is being written by {holder}; try again when it finishes"
                        ) from None
                    time.sleep(0.1)
            with contextlib.suppress(OSError):  # who holds the lock is for messages only (and needs a block)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
