"""Related articles ("more like this"): the articles whose stored passages are closest to one article's, found
without embedding anything.

An article is represented by the normalised mean of its passage vectors (its centroid). The centroid is searched
against every passage; the articles those passages belong to are then ranked by the cosine between their centroid
and this one. A copy of the article (a syndicated or re-posted version, perhaps with a line added or its paragraphs
cut differently) is not a related story and is left out, as is the article itself. Copies are found on the text,
not the vectors, since passage boundaries move when a paragraph is added: an article is a copy when at least
``COPY_CONTAINMENT`` of the shorter text's word 5-grams occur in the other (shingling, as web search engines find
near-duplicate pages). Only candidates whose centroid is at least ``COPY_CANDIDATE_COSINE`` similar are compared;
a follow-up story that quotes a paragraph of the original is not a copy.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import NotFoundError
from ..index.reader import IndexVersion, PassageRecord
from .filters import SearchFilters
from .results import ArticleHit, SearchHit
from .validation import validate_k

COPY_CONTAINMENT = 0.8
"""An article is a copy of another when this share of the shorter one's word 5-grams occur in the other."""
COPY_CANDIDATE_COSINE = 0.8
"""Only articles at least this close (centroid cosine) can be copies; their texts are then compared."""
CANDIDATE_PASSAGES = 200
"""Passages nearest the centroid that name the candidate articles (at least; 20 per requested article)."""


def related_articles(
    version: IndexVersion, article_id: str, k: int = 10, *, per_article: int = 1, filters: SearchFilters | None = None
) -> list[ArticleHit]:
    """The ``k`` articles closest to ``article_id``, best first, each with its ``per_article`` passages closest to
    the article. ``filters`` restrict the related articles (not the article itself)."""
    validate_k(k, 100)
    validate_k(per_article, 10, "per_article")
    own = version.article_passage_ids([article_id])
    if not len(own):
        raise NotFoundError(f"no article with id {article_id!r}")
    centroid = _centroid(version.vectors_for(own))  # from the stored passage vectors: nothing is embedded
    allowed = None
    if filters is not None and not filters.empty:
        where, params = filters.sql()
        allowed = version.filter_passage_ids(where, params)
    depth = min(max(CANDIDATE_PASSAGES, 20 * k), max(version.manifest.passages, 1))
    scores, ids = version.search_vectors(centroid[None, :], depth, allowed)
    found = ids[0] >= 0
    ranked = [(int(p), float(s)) for p, s in zip(ids[0][found], scores[0][found], strict=True)]
    records = version.passages([p for p, _ in ranked])
    by_article: dict[str, list[tuple[int, float]]] = {}
    for passage_id, score in ranked:
        other = records[passage_id].article_id
        if other != article_id:
            by_article.setdefault(other, []).append((passage_id, score))
    if not by_article:
        return []
    # Each candidate's centroid from all of its live passages, not only those that came up.
    candidate_ids = list(by_article)
    passage_ids = version.article_passage_ids(candidate_ids)
    owners = version.passages(passage_ids.tolist())
    vectors = version.vectors_for(passage_ids)
    members: dict[str, list[int]] = {}
    for row, passage_id in enumerate(passage_ids.tolist()):
        members.setdefault(owners[passage_id].article_id, []).append(row)
    similarity = {a: float(_centroid(vectors[rows]) @ centroid) for a, rows in members.items()}
    close = [a for a in members if similarity[a] >= COPY_CANDIDATE_COSINE]
    copies = set()
    if close:
        own_shingles = _shingles(_text(version, article_id))
        copies = {a for a in close if _is_copy(own_shingles, _shingles(_text(version, a)))}
    order = sorted((a for a in candidate_ids if a in members and a not in copies), key=lambda a: -similarity[a])
    out = []
    for rank, other in enumerate(order[:k], start=1):
        hits = tuple(
            _hit(i, records[p], score) for i, (p, score) in enumerate(by_article[other][:per_article], start=1)
        )
        first = hits[0]
        out.append(ArticleHit(rank, round(similarity[other], 6), other, first.title, first.url, first.published,
                              first.source, hits))  # fmt: skip
    return out


def _text(version: IndexVersion, article_id: str) -> str:
    stored = version.article(article_id)
    return stored.article.text if stored is not None else ""


def _shingles(text: str, n: int = 5) -> set[int]:
    words = re.findall(r"\w+", text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(max(1, len(words) - n + 1))}


def _is_copy(a: set[int], b: set[int]) -> bool:
    shorter = min(len(a), len(b))
    return shorter > 0 and len(a & b) >= COPY_CONTAINMENT * shorter


def _centroid(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.astype(np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean


def _hit(rank: int, rec: PassageRecord, score: float) -> SearchHit:
    return SearchHit(
        rank=rank, score=score, passage_id=rec.id, article_id=rec.article_id, title=rec.title, url=rec.url,
        paragraph=rec.paragraph, last_paragraph=rec.last_paragraph, start=rec.start, end=rec.end, text=rec.text,
        published=rec.published, source=rec.source, tags=rec.tags, dense_score=score, keyword_score=None,
        highlights=(),
    )  # fmt: skip
