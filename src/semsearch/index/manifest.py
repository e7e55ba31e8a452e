"""The manifest of an index version: what it holds and how it was built (``manifest.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IndexCorruptError
from .integrity import is_sealed
from .layout import MANIFEST

FORMAT_VERSION = 2
"""The on-disk format this semsearch reads and writes: 2 is segments plus deletions (``docs/storage.md``)."""
UPGRADABLE_FORMATS = (1,)
"""Older formats ``semsearch upgrade`` converts (reusing every stored vector)."""


class IndexFormatError(IndexCorruptError):
    """The version is in another on-disk format than this semsearch reads."""


@dataclass(frozen=True)
class IndexManifest:
    """What a version holds and how it was built. ``format_version`` guards against reading a foreign layout."""

    format_version: int
    version_id: str
    model_id: str
    dim: int
    precision: str
    chunking: dict[str, Any]
    articles: int
    """Live articles."""
    passages: int
    """Live passages (rows of the segments less the deleted ones)."""
    built_at: str
    build_seconds: float
    segments: tuple[str, ...] = ()
    """The segment ids this version reads, oldest first."""
    deleted: int = 0
    """Passage ids listed in ``deleted.npy``."""
    next_passage_id: int = 0
    """Above every passage id this index has handed out: the next update numbers its passages from here."""
    parent_version: str | None = None
    keyword: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["segments"] = list(self.segments)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path | None = None) -> IndexManifest:
        version = data.get("format_version")
        if version in UPGRADABLE_FORMATS:
            root = where.parent.parent if where is not None else Path("INDEX_DIR")
            raise IndexFormatError(
                f"index {root} is in format {version}, written by an older semsearch; this one reads format "
                f"{FORMAT_VERSION}. Convert it in place, keeping every vector: 'semsearch upgrade --index-dir {root}'"
            )
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"index format version {version!r} is not supported (this semsearch reads {FORMAT_VERSION}); "
                "rebuild the index with 'semsearch index --full'"
            )
        try:
            values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            values["segments"] = tuple(values.get("segments", ()))
            return cls(**values)
        except TypeError as exc:
            raise IndexCorruptError(f"manifest is incomplete: {exc}") from exc


def read_manifest_data(version_path: Path) -> dict[str, Any]:
    """The raw JSON of a version's manifest (any format), its checksum verified when it has one (see
    :mod:`semsearch.index.integrity`; ``files`` then lists the version's other files)."""
    try:
        data = json.loads((version_path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexCorruptError(f"{version_path} has no {MANIFEST}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{version_path / MANIFEST} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise IndexCorruptError(f"cannot read {version_path / MANIFEST}: {exc}") from exc
    if not isinstance(data, dict):
        raise IndexCorruptError(f"{version_path / MANIFEST} is not a JSON object")
    is_sealed(data, version_path / MANIFEST)  # before the format check: a damaged digit is damage, not a format
    return data


def read_manifest(version_path: Path) -> IndexManifest:
    return IndexManifest.from_dict(read_manifest_data(version_path), version_path)
