"""Highlights: the sentence(s) of a passage that match the query best, with character offsets.

Sentences are scored by the IDF-weighted query terms they contain (the keyword index's analysis: lower case,
stopwords removed, stemmed), so a highlight points at the sentence that carries the rare, specific words of the
question. Offsets are relative to the passage text: ``hit.text[h.start:h.end] == h.text``.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Mapping

from ..index.analysis import analyse_with_offsets
from ..ingest.chunking import split_sentences
from .results import Highlight

CACHE_PASSAGES = 8192
"""Passages whose analysis (sentence spans, and the sentences each term occurs in) is kept per process, about
3.8 KB each (31 MB when full). A hit on a cached passage is highlighted with a few dictionary lookups, 6 µs
instead of about 60 µs for tokenising and stemming it."""


def highlight(text: str, term_weights: Mapping[str, float], max_sentences: int = 1) -> tuple[Highlight, ...]:
    """The best ``max_sentences`` sentences of ``text`` that share a query term (in text order); the first
    sentence when none does (the passage matched by meaning, not by words). A sentence scores the weights of the
    distinct query terms it contains."""
    spans, sentences_of = _analysed(text)
    if not spans:
        return ()
    totals = [0.0] * len(spans)
    for term, weight in term_weights.items():
        mask = sentences_of.get(term, 0)
        while mask:
            low = mask & -mask
            totals[low.bit_length() - 1] += weight
            mask ^= low
    scored = [(total, i) for i, total in enumerate(totals)]
    best = [b for b in sorted(scored, key=lambda x: (-x[0], x[1]))[:max_sentences] if b[0] > 0] or [(0.0, 0)]
    return tuple(
        Highlight(spans[i][0], spans[i][1], text[spans[i][0] : spans[i][1]], score)
        for score, i in sorted(best, key=lambda x: x[1])
    )


_Analysis = tuple[tuple[tuple[int, int], ...], dict[str, int]]
_cache: OrderedDict[str, _Analysis] = OrderedDict()
_cache_lock = threading.Lock()


def _analysed(text: str) -> _Analysis:
    """The sentence spans of ``text`` and, for each of its terms, a bit mask of the sentences it occurs in.
    Cached by text (least recently used dropped first). Only ints, strs and tuples of them: a ``str -> int``
    dict is not tracked by the garbage collector, so the cache adds nothing to a collection's work."""
    with _cache_lock:
        found = _cache.get(text)
        if found is not None:
            _cache.move_to_end(text)
            return found
    spans = tuple(split_sentences(text))
    starts = [s for s, _ in spans]
    sentences_of: dict[str, int] = {}
    for pos, term in analyse_with_offsets(text):
        i = bisect.bisect_right(starts, pos) - 1
        if i >= 0 and pos < spans[i][1]:
            sentences_of[term] = sentences_of.get(term, 0) | (1 << i)
    analysis = (spans, sentences_of)
    with _cache_lock:
        _cache[text] = analysis
        while len(_cache) > CACHE_PASSAGES:
            _cache.popitem(last=False)
    return analysis
