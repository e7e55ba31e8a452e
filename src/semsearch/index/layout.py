"""The layout of an index directory: paths, the published-version pointer, history, the writer lock.

Layout of an index directory::

    index/
      CURRENT                 the published version id (replaced atomically with os.replace)
      HISTORY                 one line per publish or rollback: time, action, version id
      .lock                   writer lock (flock); readers never take it
      versions/<version-id>/  one complete, immutable version:
          manifest.json       format version, model id, dimension, chunking settings, counts, build time
          vectors.faiss       IndexIDMap2(IndexFlatIP): int64 passage ids, inner product on unit vectors
          meta.sqlite         articles and passages (text, offsets, metadata)
          keyword/            the keyword (BM25) index, when built
      staging/<version-id>/   a version being written; never read; removed by the next writer if left over

A version is built entirely in ``staging/``, fsynced, renamed into ``versions/`` and only then named in
``CURRENT``, so a reader sees either the old complete version or the new complete one, and a crash at any point
leaves the published version untouched.

Reading a version is :mod:`semsearch.index.reader`; writing one is :mod:`semsearch.index.writer`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..errors import IndexCorruptError, IndexLockedError, IndexNotFoundError

_HISTORY_LINES = 1000
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
META_DB = "meta.sqlite"
KEYWORD_DIR = "keyword"


def new_version_id() -> str:
    """Sortable by creation time, unique across concurrent writers."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class IndexLayout:
    """Paths and pointer operations of one index directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / "staging"
        self.current_file = self.root / "CURRENT"
        self.lock_file = self.root / ".lock"
        self.history_file = self.root / "HISTORY"

    def current_version(self) -> str | None:
        try:
            value = self.current_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return value or None

    def version_path(self, version_id: str) -> Path:
        return self.versions_dir / version_id

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
            lines = self.history_file.read_text(encoding="utf-8").splitlines()
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
        atomic_write_text(self.history_file, "\n".join(entries[-_HISTORY_LINES:]) + "\n")

    def previous_version(self) -> str | None:
        """The version published before the current one that still exists on disk (the rollback target)."""
        current = self.current_version()
        history = self.history()
        if current in history:
            history = history[: len(history) - 1 - history[::-1].index(current)]
        for version in reversed(history):
            if version != current and (self.version_path(version) / MANIFEST).is_file():
                return version
        return None

    def prune(self, keep: int) -> list[str]:
        """Keep the current version and the last ``keep`` published ones; delete the rest, including versions
        that were written but never published (a writer killed before the switch). Call with the lock held."""
        current = self.current_version()
        recent: list[str] = []
        for version in reversed(self.history()):
            if version not in recent:
                recent.append(version)
            if len(recent) >= keep:
                break
        wanted = set(recent) | ({current} if current else set())
        doomed = [v for v in self.all_version_dirs() if v not in wanted]
        for version in doomed:
            shutil.rmtree(self.version_path(version), ignore_errors=True)
        return doomed

    def all_version_dirs(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir())

    def clean_staging(self) -> list[str]:
        """Remove versions left half-written by a crashed writer. Call with the lock held."""
        if not self.staging_dir.is_dir():
            return []
        removed = []
        for path in self.staging_dir.iterdir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        return removed

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
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock
