"""Paging through a search: an opaque cursor that pins the index version, the retrieval depth and what was already
returned, so that a new version published between two pages changes nothing and no hit comes twice or is skipped.

Page ``n + 1`` is the next ``k`` results of the same search on the same version at the same depth, leaving out the
passages (or articles) the earlier pages returned. The cursor is URL-safe base64 of compressed JSON; it is not
secret. A cursor this server did not issue is not found (404); one used with another query, mode, filters or
grouping is a conflict (409); one whose version is no longer kept has expired (410).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from ..errors import CursorMismatchError, CursorNotFoundError
from .results import ArticleHit, SearchHit

MAX_PAGED_RESULTS = 100
"""Results one search can page through, all pages together."""


@dataclass(frozen=True)
class Cursor:
    version: str
    depth: int
    seen: tuple[int | str, ...]
    """Passage ids (group_by passage) or article ids (group_by article) already returned."""
    fingerprint: str

    def encode(self) -> str:
        payload = json.dumps({"v": self.version, "d": self.depth, "s": list(self.seen), "f": self.fingerprint})
        return base64.urlsafe_b64encode(zlib.compress(payload.encode("utf-8"))).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str, fingerprint: str) -> Cursor:
        try:
            raw = zlib.decompress(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            data = json.loads(raw)
            cursor = cls(str(data["v"]), int(data["d"]), tuple(data["s"]), str(data["f"]))
        except (binascii.Error, zlib.error, ValueError, KeyError, TypeError) as exc:
            raise CursorNotFoundError("cursor is not one this server issued") from exc
        if cursor.fingerprint != fingerprint:
            raise CursorMismatchError("cursor belongs to another search (query, mode, filters and grouping must stay)")
        return cursor


def fingerprint(**request: Any) -> str:
    """What must not change between the pages of one search."""
    canonical = json.dumps(request, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


@dataclass(frozen=True)
class SearchPage:
    """One page: ``hits`` (group_by passage) or ``articles`` (group_by article), ranked from the first page on,
    and the cursor of the next page (None: this is the last)."""

    hits: tuple[SearchHit, ...]
    articles: tuple[ArticleHit, ...]
    next_cursor: str | None
    version: str
