"""Keyword (BM25) retrieval with bm25s over the analysis of :mod:`semsearch.index.analysis`. The only module that
imports bm25s. Saved as plain numpy/JSON files (no pickle) in the version's ``keyword/`` directory."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import STEMMER, analyse, stemmer, stopwords

log = logging.getLogger(__name__)

KEYWORD_FORMAT = 2
"""2: adds ``articles.npy`` (which article each row belongs to). Format-1 indexes still load: the store supplies
that array from its metadata database."""
_IDS = "ids.npy"
_ARTICLES = "articles.npy"
_INFO = "keyword.json"


@lru_cache(maxsize=1)
def _bm25s() -> Any:
    import bm25s

    # bm25s sets its own logger to DEBUG when imported, which would print on every index build.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def article_numbers(articles: list[tuple[str, str]]) -> np.ndarray:
    """The ``articles`` array for passages given as (article id, title): one integer per passage, equal for the
    passages of one article and for articles with the same non-empty title. Those are the parts of one document
    in a corpus that was cut into passages before indexing (BEIR-style corpora of Wikipedia passages, say, or
    one record per paragraph), which fusion should treat as the one article they are (:mod:`semsearch.retrieve.fusion`)."""
    numbers: dict[str, int] = {}
    keys = (f"t:{title.strip()}" if title.strip() else f"a:{article_id}" for article_id, title in articles)
    return np.fromiter((numbers.setdefault(k, len(numbers)) for k in keys), dtype=np.int64, count=len(articles))


def build_keyword_index(
    ids: np.ndarray, texts: list[str], out_dir: Path, articles: np.ndarray | None = None
) -> dict[str, Any]:
    """Index ``texts`` (one per passage id) and write the files; returns the manifest record. ``articles``: one
    integer per passage, equal for the passages of one article (:func:`article_numbers`; default: every passage
    its own article)."""
    bm25s = _bm25s()
    out_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "format": KEYWORD_FORMAT,
        "kind": "bm25s",
        "method": "lucene",
        "k1": 1.5,
        "b": 0.75,
        "stopwords": "en",
        "stemmer": STEMMER,
        "docs": len(texts),
    }
    np.save(out_dir / _IDS, np.asarray(ids, dtype=np.int64), allow_pickle=False)
    groups = np.arange(len(ids)) if articles is None else np.asarray(articles)
    if groups.shape != (len(ids),):
        raise ValueError("articles must hold one entry per passage id")
    np.save(out_dir / _ARTICLES, groups.astype(np.int64), allow_pickle=False)
    info["terms"] = 0
    if texts:
        tokens = bm25s.tokenize(texts, stopwords=list(stopwords()), stemmer=stemmer(), show_progress=False)
        info["terms"] = len(tokens.vocab)
    if info["terms"]:  # bm25s cannot index a corpus without a single term (every word a stopword or one letter)
        model = bm25s.BM25(method=info["method"], k1=info["k1"], b=info["b"])
        model.index(tokens, show_progress=False)
        model.save(str(out_dir), show_progress=False)
    (out_dir / _INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


class KeywordIndex:
    """A loaded BM25 index. Read-only and safe to share between threads."""

    def __init__(self, directory: Path, articles_of: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """``articles_of(ids)``: the article numbers of passage ids, asked only of a format-1 index, which does
        not store them (without it, each passage counts as its own article)."""
        bm25s = _bm25s()
        self.info = json.loads((directory / _INFO).read_text(encoding="utf-8"))
        self.ids = np.load(directory / _IDS, allow_pickle=False)
        if (directory / _ARTICLES).is_file():
            articles = np.load(directory / _ARTICLES, allow_pickle=False)
        elif articles_of is not None:
            articles = articles_of(self.ids)
        else:
            articles = np.arange(len(self.ids))
        self.articles = np.asarray(articles, dtype=np.int64)
        """One integer per row (row order = ``self.ids``), equal for the passages of one article (as
        :func:`article_numbers` groups them)."""
        if self.articles.shape != self.ids.shape:
            raise ValueError(f"{directory}: {len(self.articles)} article entries for {len(self.ids)} passages")
        self._sorter = np.argsort(self.ids, kind="stable")  # passage id -> row by binary search
        self._sorted_ids = self.ids[self._sorter]
        self._model = (
            bm25s.BM25.load(str(directory), mmap=False, show_progress=False, verbosity=0)
            if self.info.get("terms", len(self.ids))  # indexes before "terms" was recorded had a model if any ids
            else None
        )

    def __len__(self) -> int:
        return len(self.ids)

    def term_weights(self, query: str) -> dict[str, float]:
        """IDF of each analysed query term present in the index (for highlighting)."""
        return self._idf(analyse(query))

    def _idf(self, terms: list[str]) -> dict[str, float]:
        if self._model is None:
            return {}
        indptr = self._model.scores["indptr"]
        n = float(self._model.scores["num_docs"])
        weights = {}
        for term in terms:
            tid = self._model.vocab_dict.get(term)
            if tid is None or tid + 1 >= len(indptr):
                continue
            df = float(indptr[tid + 1] - indptr[tid])
            weights[term] = float(np.log(1.0 + (n - df + 0.5) / (df + 0.5)))
        return weights

    def coverage(self, query: str, best_score: float) -> float:
        """How much of ``query`` a passage scoring ``best_score`` covers: that score as a share of the query's
        attainable maximum, the sum of its analysed terms' IDF (the BM25 term score tends to the IDF as the term
        frequency grows). A term the index has never seen counts at the highest IDF (a document frequency of 0):
        no passage can match it, which is what makes keyword matching weak on a paraphrase. 0 for a query with
        no analysed terms."""
        if self._model is None or best_score <= 0:
            return 0.0
        terms = analyse(query)
        weights = self._idf(terms)
        n = float(self._model.scores["num_docs"])
        unseen = float(np.log(1.0 + (n + 0.5) / 0.5))
        total = sum(weights.get(t, unseen) for t in terms)
        return float(min(best_score / total, 1.0)) if total > 0 else 0.0

    def _lookup(self, passage_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, found) for each passage id; ``row`` is meaningless where ``found`` is False."""
        pids = np.asarray(passage_ids, dtype=np.int64)
        if not len(self.ids) or not pids.size:
            return np.zeros(pids.shape, dtype=np.int64), np.zeros(pids.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self._sorted_ids, pids), len(self.ids) - 1)
        return self._sorter[pos], self._sorted_ids[pos] == pids

    def articles_for(self, passage_ids: np.ndarray) -> np.ndarray:
        """The article number of each passage id (see :attr:`articles`); an id this index does not hold gets a
        negative number of its own."""
        rows, found = self._lookup(passage_ids)
        if found.all():
            return self.articles[rows]
        return np.where(found, self.articles[rows] if len(self.ids) else 0, -1 - np.arange(len(rows)))

    def rows_for(self, passage_ids: np.ndarray) -> np.ndarray:
        """The rows of the passage ids this index holds (others are left out)."""
        rows, found = self._lookup(passage_ids)
        return rows[found]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage (row order = ``self.ids``); zeros when no query term is indexed."""
        if self._model is None:
            return np.zeros(0, dtype=np.float32)
        terms = [t for t in analyse(query) if t in self._model.vocab_dict]
        if not terms:
            return np.zeros(len(self.ids), dtype=np.float32)
        return np.asarray(self._model.get_scores(terms), dtype=np.float32)

    def top(self, scores: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, passage ids) with a positive score, best first, within ``allowed_ids`` (an exact
        mask, so ``k`` come back whenever ``k`` allowed passages match at all)."""
        if scores.size == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        if allowed_ids is not None:
            mask = np.zeros(len(scores), dtype=bool)
            mask[self.rows_for(allowed_ids)] = True
            scores = np.where(mask, scores, 0.0)
        k = min(k, int(np.count_nonzero(scores > 0)))
        if k == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return scores[top], self.ids[top]

    def scores_for(self, scores: np.ndarray, passage_ids: np.ndarray) -> np.ndarray:
        """The entries of a full score array (from :meth:`scores`) for the given passage ids (0 for an id this index
        does not hold)."""
        if scores.size == 0:
            return np.zeros(len(passage_ids), dtype=np.float32)
        rows, found = self._lookup(passage_ids)
        return np.where(found, scores[rows], np.float32(0.0)).astype(np.float32, copy=False)
