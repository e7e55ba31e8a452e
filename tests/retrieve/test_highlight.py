"""Highlights (semsearch.retrieve.highlight) against a plain reference implementation, and its per-passage cache."""

from __future__ import annotations

import bisect

import pytest

from semsearch.index.analysis import analyse, analyse_with_offsets
from semsearch.ingest.chunking import split_sentences
from semsearch.retrieve import highlight as hl

from ..conftest import SAMPLE_CORPUS


def reference(text: str, weights: dict[str, float], max_sentences: int) -> list[tuple[int, int]]:
    """Score each sentence by the weights of the distinct query terms among its analysed words; best first,
    ties to the earlier sentence; the first sentence when nothing matches; returned in text order."""
    spans = split_sentences(text)
    if not spans:
        return []
    starts = [s for s, _ in spans]
    found: list[set[str]] = [set() for _ in spans]
    for pos, term in analyse_with_offsets(text):
        i = bisect.bisect_right(starts, pos) - 1
        if i >= 0 and pos < spans[i][1]:
            found[i].add(term)
    totals = [sum(weights.get(t, 0.0) for t in terms) for terms in found]
    best = sorted(range(len(spans)), key=lambda i: (-totals[i], i))[:max_sentences]
    best = [i for i in best if totals[i] > 0] or [0]
    return [spans[i] for i in sorted(best)]


def _paragraphs() -> list[str]:
    texts = []
    for path in sorted(SAMPLE_CORPUS.rglob("*.txt")):
        texts += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return texts


@pytest.mark.parametrize("max_sentences", [1, 2])
def test_highlights_equal_the_reference_on_the_sample_corpus(max_sentences: int) -> None:
    paragraphs = _paragraphs()
    assert len(paragraphs) > 50
    queries = [analyse(p) for p in paragraphs[::5]] + [["volcano"], [], ["bank", "rate", "inflat"]]
    checked = 0
    for terms in queries:
        weights = {t: 1.0 + (len(t) % 5) / 3 for t in terms[:8]}
        for text in paragraphs:
            for _ in range(2):  # the second time from the cache
                got = [(h.start, h.end) for h in hl.highlight(text, weights, max_sentences)]
                assert got == reference(text, weights, max_sentences), (text[:60], weights)
                checked += 1
    assert checked > 1000


def test_highlight_offsets_slice_the_text_and_odd_texts_work() -> None:
    for text in ["", "   ", "İstanbul'da VOLCANO erupts. Lava flows! ünïcode café.", "no punctuation at all volcano"]:
        for h in hl.highlight(text, {"volcano": 2.0, "lava": 1.0}, 2):
            assert text[h.start : h.end] == h.text and h.text.strip() == h.text


def test_the_cache_is_bounded_and_keeps_recent_passages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hl, "CACHE_PASSAGES", 3)
    monkeypatch.setattr(hl, "_cache", type(hl._cache)())
    texts = [f"Passage {i} about the harbour. Another sentence {i}." for i in range(5)]
    for text in texts[:3]:
        hl.highlight(text, {"harbour": 1.0})
    hl.highlight(texts[0], {"harbour": 1.0})  # used again: now the most recent
    for text in texts[3:]:
        hl.highlight(text, {"harbour": 1.0})
    assert list(hl._cache) == [texts[0], texts[3], texts[4]]
