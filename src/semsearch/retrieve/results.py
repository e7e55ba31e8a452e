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

    def to_dict(self) -> dict[str, Any]:
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
