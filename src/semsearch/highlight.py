"""Highlights: the sentence(s) of a passage that match the query best, with character offsets.

Sentences are scored by the IDF-weighted query terms they contain (the keyword index's analysis: lower case,
stopwords removed, stemmed), so a highlight points at the sentence that carries the rare, specific words of the
question. Offsets are relative to the passage text: ``hit.text[h.start:h.end] == h.text``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .chunking import split_sentences
from .keyword import term_positions


@dataclass(frozen=True)
class Highlight:
    start: int
    end: int
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text, "score": round(self.score, 4)}


def highlight(text: str, term_weights: Mapping[str, float], max_sentences: int = 1) -> tuple[Highlight, ...]:
    """The best ``max_sentences`` sentences of ``text`` (in text order); the first sentence when none shares a
    query term (the passage matched by meaning, not by words)."""
    spans = split_sentences(text)
    if not spans:
        return ()
    totals = [0.0] * len(spans)
    if term_weights:
        starts = [s for s, _ in spans]
        seen: set[tuple[int, str]] = set()  # each query term counts once per sentence
        for pos, term in term_positions(text, term_weights):
            weight = term_weights[term]
            i = bisect.bisect_right(starts, pos) - 1
            if i >= 0 and pos < spans[i][1] and (i, term) not in seen:
                seen.add((i, term))
                totals[i] += weight
    scored = [(total, i) for i, total in enumerate(totals)]
    best = sorted(scored, key=lambda x: (-x[0], x[1]))[:max_sentences]
    if best[0][0] <= 0:
        best = [(0.0, 0)]
    best = [b for b in best if b[0] > 0 or b[1] == 0]
    return tuple(
        Highlight(spans[i][0], spans[i][1], text[spans[i][0] : spans[i][1]], score)
        for score, i in sorted(best, key=lambda x: x[1])
    )
