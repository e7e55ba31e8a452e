"""The manifest of an index version: what it holds and how it was built (``manifest.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IndexCorruptError
from .layout import MANIFEST

FORMAT_VERSION = 1
"""The on-disk format this semsearch reads and writes."""


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
    passages: int
    built_at: str
    build_seconds: float
    parent_version: str | None = None
    keyword: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexManifest:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexCorruptError(
                f"index format version {version!r} is not supported (this semsearch reads {FORMAT_VERSION}); "
                "rebuild the index with 'semsearch index --full'"
            )
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError as exc:
            raise IndexCorruptError(f"manifest is incomplete: {exc}") from exc


def read_manifest(version_path: Path) -> IndexManifest:
    try:
        data = json.loads((version_path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexCorruptError(f"{version_path} has no {MANIFEST}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{version_path / MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise IndexCorruptError(f"{version_path / MANIFEST} is not a JSON object")
    return IndexManifest.from_dict(data)
