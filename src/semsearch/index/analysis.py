"""Text analysis for keyword search and highlights: lower case, English stopwords removed, Snowball-stemmed terms.

It reproduces exactly what bm25s does to the indexed passages (a test checks they agree), without its per-call
overhead, so queries and highlights can afford it.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

STEMMER = "english"
_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern
_local = threading.local()


def stemmer() -> Any:
    """One Snowball stemmer per thread (PyStemmer objects must not be shared between threads)."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        import Stemmer

        # No PyStemmer cache: its entries are garbage-collected lists (up to 10,000 per thread), which made each
        # full collection in a server worker scan ~70,000 of them, stalling all requests by 50-100 ms. Highlights
        # use _stems' cache (a plain str -> str dict, which the collector does not track).
        stemmer = _local.stemmer = Stemmer.Stemmer(STEMMER, 0)
    return stemmer


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def analyse(text: str) -> list[str]:
    """Lower-cased, stopword-free, stemmed terms of ``text``: exactly bm25s's analysis of the indexed passages
    (a test checks they agree), without its per-call overhead (a progress bar object per call), so queries and
    highlights can afford it."""
    stop = stopwords()
    words = [w for w in _TOKEN.findall(text.lower()) if w not in stop]
    return stemmer().stemWords(words) if words else []


_STEM_CACHE_MAX = 100_000


def _stems(words: set[str]) -> dict[str, str]:
    """The stem of each word, through a per-thread cache (a corpus repeats a vocabulary of a few ten thousand
    words; the cache is emptied if arbitrary input grows it past ``_STEM_CACHE_MAX``)."""
    cache: dict[str, str] | None = getattr(_local, "stems", None)
    if cache is None or len(cache) > _STEM_CACHE_MAX:
        cache = _local.stems = {}
    missing = [w for w in words if w not in cache]
    if missing:
        cache.update(zip(missing, stemmer().stemWords(missing), strict=True))
    return cache


def analyse_with_offsets(text: str) -> list[tuple[int, str]]:
    """The terms of ``text`` (as :func:`analyse`) with the character offset of the word each came from. Stems come
    from the per-thread cache (one dict lookup per word instead of a stemmer call), for analysing many passages."""
    lower = text.lower()  # lower-cased before tokenising, as the index was built (see analyse)
    stop = stopwords()
    words = [(m.start(), w) for m in _TOKEN.finditer(lower) if (w := m.group()) not in stop]
    if len(lower) != len(text) and words:
        # A character lower-cased to several ("İ" -> "i̇"): map offsets in ``lower`` back to ``text``.
        origin = [i for i, char in enumerate(text) for _ in char.lower()]
        words = [(origin[min(pos, len(origin) - 1)], w) for pos, w in words]
    stems = _stems({w for _, w in words})
    return [(pos, stems[w]) for pos, w in words]
