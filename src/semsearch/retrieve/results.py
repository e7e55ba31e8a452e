"""What a search returns: frozen result types with ``to_dict()`` (the wire shapes of the HTTP API and the
client are these dictionaries; :mod:`semsearch.serve.openapi` describes them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Highlight:
    start: int
    end: int
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Explanation:
    """Why a hit scored what it did (``explain=True``).

    ``retrievers``: which retriever's top candidates held the passage (``dense``, ``keyword``: hybrid search scores
    every candidate with both). ``dense_normalised``/``keyword_normalised``: the two terms the fusion combined (z-scores
    over the query's candidates for ``adaptive``/``zscore``, reciprocal ranks for ``rrf``); the hybrid score is
    ``(1 - keyword_weight) * dense_normalised + keyword_weight * keyword_normalised`` (``rrf``: their sum), then decayed
    by ``recency_factor`` when recency is on. ``keyword_coverage``: how much of the query the best keyword match
    covers (it gates the adaptive weight). ``rerank_score``: the rerank model's score, which replaced the fused
    score of the best ``rerank_depth`` candidates (None: rerank off, or the hit was below that depth)."""

    retrievers: tuple[str, ...]
    fusion: str | None = None
    dense_score: float | None = None
    keyword_score: float | None = None
    dense_normalised: float | None = None
    keyword_normalised: float | None = None
    keyword_weight: float | None = None
    keyword_coverage: float | None = None
    recency_factor: float | None = None
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["retrievers"] = list(self.retrievers)
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
        return cls(**{**data, "retrievers": tuple(data["retrievers"])})


@dataclass(frozen=True)
class SearchHit:
    """One matching passage. ``start``/``end`` are character offsets into the article body.

    ``score`` is the ranking score of the mode: the cosine similarity (dense), the BM25 score (keyword), or the
    fused score (hybrid: a weighted sum of the two retrievers' standardised scores; higher is better, comparable
    within one query). ``dense_score`` and ``keyword_score`` give both raw scores where known.
    """

    rank: int
    score: float
    passage_id: int
    article_id: str
    title: str
    url: str | None
    paragraph: int
    last_paragraph: int
    start: int
    end: int
    text: str
    published: str | None = None
    source: str | None = None
    tags: tuple[str, ...] = ()
    dense_score: float | None = None
    keyword_score: float | None = None
    highlights: tuple[Highlight, ...] = ()
    explanation: Explanation | None = None
    """Set when the search was asked to explain (``explain=True``)."""

    def to_dict(self) -> dict[str, Any]:
        data = self._fields()
        if self.explanation is not None:
            data["explanation"] = self.explanation.to_dict()
        return data

    def _fields(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": round(float(self.score), 6),
            "dense_score": None if self.dense_score is None else round(float(self.dense_score), 6),
            "keyword_score": None if self.keyword_score is None else round(float(self.keyword_score), 6),
            "passage_id": self.passage_id,
            "article_id": self.article_id,
            "title": self.title,
            "url": self.url,
            "paragraph": self.paragraph,
            "last_paragraph": self.last_paragraph,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "highlights": [h.to_dict() for h in self.highlights],
            "published": self.published,
            "source": self.source,
            "tags": list(self.tags),
        }


@dataclass(frozen=True)
class ArticleHit:
    """One article with its best passages (``group_by=article``); ``score`` is its best passage's score."""

    rank: int
    score: float
    article_id: str
    title: str
    url: str | None
    published: str | None
    source: str | None
    passages: tuple[SearchHit, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": round(float(self.score), 6),
            "article_id": self.article_id,
            "title": self.title,
            "url": self.url,
            "published": self.published,
            "source": self.source,
            "passages": [p.to_dict() for p in self.passages],
        }


@dataclass(frozen=True)
class Citation:
    number: int
    article_id: str
    title: str
    url: str | None
    paragraph: int
    last_paragraph: int
    start: int
    """Character offsets into the article body of exactly the text quoted in the block."""
    end: int
    passage_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passage_ids": list(self.passage_ids)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Citation:
        return cls(**{**data, "passage_ids": tuple(data["passage_ids"])})


@dataclass(frozen=True)
class Context:
    """A prompt-ready block of numbered passages and the citations that resolve its ``[n]`` markers."""

    query: str
    text: str
    citations: tuple[Citation, ...]
    token_count: int
    max_tokens: int
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "text": self.text,
            "citations": [c.to_dict() for c in self.citations],
            "token_count": self.token_count,
            "max_tokens": self.max_tokens,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Context:
        return cls(
            query=data["query"],
            text=data["text"],
            citations=tuple(Citation.from_dict(c) for c in data["citations"]),
            token_count=data["token_count"],
            max_tokens=data["max_tokens"],
            version=data.get("version"),
        )


FACETS = ("source", "tag", "published_month")


@dataclass(frozen=True)
class Facets:
    """Article counts per value of each requested facet, most frequent first (ties by value), over ``articles`` candidate
    articles of the query (:meth:`~semsearch.retrieve.searcher.Searcher.facets`)."""

    counts: dict[str, tuple[tuple[str, int], ...]]
    articles: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "articles": self.articles,
            "counts": {name: [{"value": v, "count": n} for v, n in values] for name, values in self.counts.items()},
        }
