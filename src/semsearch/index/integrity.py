"""Checksums of an index's immutable files: recorded when a segment or version is sealed, verified when a process
first opens it (see "Integrity" in ``docs/storage.md``).

* ``segment.json`` lists every other file of its segment with its size and xxh3_64 checksum (``files``), and
  ``manifest.json`` does the same for ``deleted.npy``. Both JSON files carry a ``checksum`` of their own content
  (xxh3_64 of the canonical JSON of every other key), so a changed value in them is caught too.
* Opening checks every listed file's size (one ``stat``: always) and checksum (reading the whole file: once per
  file per process). A process remembers the files it verified, by device, inode, size and timestamps, so opening
  the same segment again (a reload sharing it, a writer reopening the version) does not read it again; a server
  that opens the index before forking its workers hands them the record (it is inherited by ``fork``).
* Segments and versions written before checksums existed have neither key: they open without verification
  (their sizes and shapes are still checked by the readers).

xxh3_64 rather than CRC32: 8.0 vs 2.4 GB/s on this project's 2-core machine (in memory); it releases the GIL, so a
background reload verifying a new segment does not stall the request threads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import xxhash

from ..errors import IndexCorruptError

ALGORITHM = "xxh3_64"
FILES = "files"
CHECKSUM = "checksum"
_CHUNK = 8 << 20
#: A file is remembered as verified only when its last change is this much older than the verification: a change
#: within the same tick of the filesystem's coarse clock would leave its timestamps as they were.
_SETTLED_NS = 2_000_000_000

_lock = threading.Lock()
_verified: dict[tuple[int, int], tuple[int, int, int, str]] = {}
"""(device, inode) -> (size, mtime_ns, ctime_ns, checksum) of each file this process has verified."""


def file_checksum(path: Path) -> str:
    """The xxh3_64 of a file's bytes, as 16 hex digits (read in chunks: no mapping enters the resident set)."""
    digest = xxhash.xxh3_64()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def file_records(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"size": bytes, "xxh3_64": checksum}}`` of files under ``directory`` (names relative to it)."""
    return {
        name: {"size": (directory / name).stat().st_size, ALGORITHM: file_checksum(directory / name)}
        for name in sorted(names)
    }


def _json_checksum(data: Mapping[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != CHECKSUM}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return xxhash.xxh3_64_hexdigest(canonical.encode("ascii"))


def seal_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with a ``checksum`` of its other keys (``data`` must hold the ``files`` record)."""
    if FILES not in data:
        raise ValueError(f"a sealed record lists its files under {FILES!r}")
    return {**data, CHECKSUM: _json_checksum(data)}


def is_sealed(data: Mapping[str, Any], where: Path) -> bool:
    """Whether ``data`` (read from ``where``) was sealed; raises :class:`IndexCorruptError` when its checksum does
    not match. False for a record written before checksums existed (neither key): it cannot be verified. One
    damaged key name is not mistaken for such a record: the other key is still there."""
    has_files, has_checksum = FILES in data, CHECKSUM in data
    if not has_files and not has_checksum:
        return False
    if not (has_files and has_checksum):
        missing = CHECKSUM if has_files else FILES
        raise IndexCorruptError(f"{where} is damaged: it has no {missing!r} entry")
    try:
        actual = _json_checksum(data)
    except (TypeError, ValueError) as exc:
        raise IndexCorruptError(f"{where} is damaged: {exc}") from exc
    if actual != data[CHECKSUM]:
        raise IndexCorruptError(f"{where} is damaged: its content does not match its checksum")
    if not isinstance(data[FILES], dict):
        raise IndexCorruptError(f"{where} is damaged: {FILES!r} is not an object")
    return True


def verify_files(directory: Path, records: Mapping[str, Any], recorded_in: Path) -> int:
    """Check the files ``records`` lists (see :func:`file_records`) against the disk: sizes always, checksums
    unless this process verified the unchanged file before. Returns the bytes read. Raises
    :class:`IndexCorruptError` naming the first damaged file."""
    read = 0
    for name, record in records.items():
        path = directory / name
        try:
            size, expected = int(record["size"]), str(record[ALGORITHM])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptError(f"{recorded_in} is damaged: bad entry for {name}") from exc
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IndexCorruptError(f"{path} is missing") from None
        except OSError as exc:
            raise IndexCorruptError(f"cannot read {path}: {exc}") from exc
        if st.st_size != size:
            raise IndexCorruptError(
                f"{path} is damaged: {st.st_size} bytes where {recorded_in.name} recorded {size} (truncated?)"
            )
        key = (st.st_dev, st.st_ino)
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, expected)
        with _lock:
            if _verified.get(key) == stamp:
                continue
        started = time.time_ns()
        try:
            actual = file_checksum(path)
        except OSError as exc:
            raise IndexCorruptError(f"cannot read {path}: {exc}") from exc
        read += size
        if actual != expected:
            raise IndexCorruptError(
                f"{path} is damaged: its {ALGORITHM} checksum is {actual}, {recorded_in.name} recorded {expected}"
            )
        if max(st.st_mtime_ns, st.st_ctime_ns) < started - _SETTLED_NS:
            with _lock:
                _verified[key] = stamp
    return read
