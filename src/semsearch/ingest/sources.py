"""Finding and reading source files safely: the files under each source, their bytes, and their text.

A source directory is a trust boundary: walking it never reads a file whose real path lies outside it (a symlinked
file or directory, or a link whose target climbs out with ``..``), never follows a symlinked directory (so a link
loop cannot hang the walk), and never opens anything but a regular file (a FIFO would block the run). A file the user
names directly is read as given: they chose it. Everything that is not read is reported as a :class:`SkippedSource`
saying why, and the rest of the run goes on.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SourceError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".csv"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | RECORD_SUFFIXES

MAX_ARTICLE_FILE_BYTES = 64 * 1024 * 1024
"""The largest .txt/.md/.html file read (one article each), so that a stray huge file is skipped before it is held
in memory. HTML pages can carry megabytes of scripts and inline images around little text, hence the margin over
:data:`semsearch.ingest.articles.MAX_ARTICLE_CHARS`. Record files (.jsonl/.csv) hold many articles and have no limit."""

_BINARY_SAMPLE = 8192
_BINARY_CONTROL_SHARE = 0.1
"""Share of control characters (other than whitespace) in the first bytes above which a file is taken as binary:
text has next to none, while binary data without NUL bytes still has one in eight."""
_CONTROL = re.compile(r"[\x01-\x08\x0e-\x1f\x7f-\x9f]")
_DECODED_NON_ASCII = re.compile(r"[^\x00-\x7f\ufffd]")


@dataclass(frozen=True)
class SkippedSource:
    """A file or record that was not indexed, and why."""

    location: str
    reason: str
    kept: bool = False
    """The source exists but could not be read this time (an I/O or permission error): a reindex keeps the
    articles the index already holds from it instead of deleting them."""

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "reason": self.reason, "kept": self.kept}


@dataclass(frozen=True)
class SourceFile:
    """A file to read: where it was found, the id its article gets, and the real path that is opened."""

    path: Path
    """The path as found (the link, for a symlink): named in messages; its suffix picks the format."""
    rel_id: str
    """The path relative to its source directory (or the file name, for a file named directly)."""
    real_path: Path
    """What is opened: for a walked file, its resolved path, checked to be inside the source directory."""
    walked: bool
    """Found by walking a directory (then it must still be a regular file, not a symlink, when it is opened)."""


def iter_source_files(
    sources: Iterable[str | Path], exclude: Iterable[str], skipped: list[SkippedSource]
) -> Iterator[SourceFile]:
    """The files to read under ``sources`` (files or directory trees), in a stable order.

    Hidden entries, unsupported suffixes and names matching ``exclude`` are passed over silently; symlinks that are
    not followed are added to ``skipped``. Raises :class:`SourceError` when a named source does not exist.
    """
    patterns = tuple(exclude)
    source_list = [Path(s) for s in sources]
    for src in source_list:
        if not src.exists():
            raise SourceError(f"source not found: {src}")
    for src in source_list:
        if src.is_dir():
            yield from _walk(src, patterns, skipped)
        else:
            yield SourceFile(src, src.name, src, walked=False)


def _walk(root: Path, exclude: tuple[str, ...], skipped: list[SkippedSource]) -> Iterator[SourceFile]:
    # The root itself may be a symlink: the user named it, so its target is the boundary.
    real_root = Path(os.path.realpath(root))
    # Depth-first, each directory listed (sorted) before any of its files is read, without recursion: a tree
    # deeper than Python's recursion limit is walked like any other.
    stack: list[Iterator[os.DirEntry[str]]] = [_list_dir(root, skipped)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            stack.append(_list_dir(path, skipped))
            continue
        if any(fnmatch.fnmatch(entry.name, pat) for pat in exclude):
            continue
        real = _symlink_target(path, real_root, skipped) if entry.is_symlink() else path
        if real is None:
            continue
        if path.suffix.lower() in SUPPORTED_SUFFIXES:
            yield SourceFile(path, path.relative_to(root).as_posix(), real, walked=True)


def _list_dir(directory: Path, skipped: list[SkippedSource]) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            listed = sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(SkippedSource(str(directory), f"cannot list directory: {exc.strerror or exc}", kept=True))
        return iter(())
    return iter(listed)


def _symlink_target(link: Path, real_root: Path, skipped: list[SkippedSource]) -> Path | None:
    """The real path of a symlinked file inside the source root, or None (and why, in ``skipped``)."""
    try:
        shown = os.readlink(link)
        real = Path(os.path.realpath(link, strict=True))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "symlink loop: the link resolves to itself"
        elif exc.errno == errno.ENOENT:
            reason = f"broken symlink (-> {shown}): its target does not exist"
        else:
            reason = f"cannot resolve symlink: {exc.strerror or exc}"
        skipped.append(SkippedSource(str(link), reason))
        return None
    if not real.is_relative_to(real_root):
        skipped.append(SkippedSource(str(link), f"symlink leaves the source root (-> {real})"))
        return None
    if real.is_dir():
        if Path(os.path.realpath(link.parent)).is_relative_to(real):
            reason = f"symlink loop: the link points to a directory that contains it (-> {shown})"
        else:
            rel = real.relative_to(real_root).as_posix() or "."
            reason = f"symlinked directory not followed: its target is inside the source root (-> {rel})"
        skipped.append(SkippedSource(str(link), reason))
        return None
    return real


def read_source_bytes(file: SourceFile, skipped: list[SkippedSource], max_bytes: int | None) -> bytes | None:
    """The file's bytes, or None (and why, in ``skipped``) when it vanished, is not a regular file, is empty,
    is larger than ``max_bytes`` or cannot be read."""
    where = str(file.path)
    # O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOFOLLOW: a walked file replaced by a symlink
    # after the walk checked it is not followed.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if file.walked:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(file.real_path, flags)
    except FileNotFoundError:
        skipped.append(SkippedSource(where, "file vanished before it was read"))
        return None
    except OSError as exc:
        if file.walked and exc.errno == errno.ELOOP:
            skipped.append(SkippedSource(where, "file was replaced by a symlink during the run"))
        else:
            skipped.append(SkippedSource(where, f"cannot read file: {exc.strerror or exc}", kept=True))
        return None
    handle = None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            reason = f"not a regular file ({_kind(info.st_mode)})"
        elif info.st_size == 0:
            reason = "empty file"
        elif max_bytes is not None and info.st_size > max_bytes:
            reason = f"file too large ({info.st_size:,} bytes; the limit for one article is {max_bytes:,})"
        else:
            handle = os.fdopen(fd, "rb")
            return handle.read()
    except OSError as exc:
        skipped.append(SkippedSource(where, f"cannot read file: {exc.strerror or exc}", kept=True))
        return None
    finally:
        if handle is None:
            os.close(fd)
        else:
            handle.close()
    skipped.append(SkippedSource(where, reason))
    return None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def decode_source(raw: bytes, where: str, skipped: list[SkippedSource], warnings: list[str]) -> str | None:
    """The text of a file, or None (and why, in ``skipped``) when it is binary."""
    sample = raw[:_BINARY_SAMPLE]
    if b"\x00" in sample:
        skipped.append(SkippedSource(where, "binary file (contains NUL bytes)"))
        return None
    text = decode_bytes(raw, where, warnings)
    head = text[:_BINARY_SAMPLE]
    if len(_CONTROL.findall(head)) > _BINARY_CONTROL_SHARE * len(head):
        skipped.append(SkippedSource(where, "binary file (mostly control characters)"))
        return None
    return text


def decode_bytes(raw: bytes, where: str, warnings: list[str]) -> str:
    """UTF-8 (BOM tolerated); else cp1252, else latin-1, with a warning naming the file.

    A file that is UTF-8 but for a few bad bytes (a truncated character) keeps its UTF-8 text, the bad bytes
    replaced by U+FFFD: decoding all of it as cp1252 would garble every correct non-ASCII character instead.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        first_bad = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    replaced = raw.decode("utf-8-sig", errors="replace")
    if _DECODED_NON_ASCII.search(replaced):
        bad = replaced.count("\ufffd")
        msg = f"{where}: not valid UTF-8 ({first_bad}); {bad} invalid byte sequence(s) replaced with U+FFFD"
        log.warning(msg)
        warnings.append(msg)
        return replaced
    for encoding in ("cp1252", "latin-1"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        msg = f"{where}: not valid UTF-8 ({first_bad}), decoded as {encoding}"
        log.warning(msg)
        warnings.append(msg)
        return text
    raise AssertionError("latin-1 decodes any byte string")  # pragma: no cover
