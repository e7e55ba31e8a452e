"""Retrieval evaluation on BEIR-format datasets.

Two levels, chosen by what the judgements name:

- *document* (BEIR's own): the judgements name corpus documents, and a document scores by its best passage;
- *passage*: the judgements name passages as ``<document id>#<ordinal>`` (the passage's position in its document
  as the index chunks it). The corpus documents are indexed as the articles they are, and the run ranks
  passages, as ``Searcher.search`` returns them. This is the retrieval-for-RAG case, where finding the article is
  not enough.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import SourceError
from ..index.build import apply_articles
from ..ingest.articles import LoadReport, SkippedSource, record_to_article
from ..models.embedding import Embedder
from ..models.reranker import PairScorer

RankedDocs = list[tuple[str, float]]


@dataclass(frozen=True)
class BeirDataset:
    corpus: LoadReport
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass(frozen=True)
class EvalReport:
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries: int
    passages: int
    index_seconds: float
    search_seconds: float
    mode: str
    level: str = "document"
    rerank_model: str | None = None
    rerank_depth: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ndcg@10": round(self.ndcg_at_10, 4),
            "recall@100": round(self.recall_at_100, 4),
            "mrr@10": round(self.mrr_at_10, 4),
            "queries": self.queries,
            "passages": self.passages,
            "index_seconds": round(self.index_seconds, 2),
            "search_seconds": round(self.search_seconds, 2),
            "mode": self.mode,
            "level": self.level,
            "rerank_model": self.rerank_model,
            "rerank_depth": self.rerank_depth,
        }


def load_beir(directory: str | Path, split: str = "test") -> BeirDataset:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""
    root = Path(directory)
    paths = {name: root / name for name in ("corpus.jsonl", "queries.jsonl")}
    paths["qrels"] = root / "qrels" / f"{split}.tsv"
    for path in paths.values():
        if not path.is_file():
            raise SourceError(f"not a BEIR dataset: {path} is missing")
    corpus = LoadReport()
    with open(paths["corpus.jsonl"], encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{paths['corpus.jsonl']}:{lineno}"
            try:
                record = json.loads(line)
                corpus.articles.append(record_to_article(record, f"line-{lineno}", where, corpus.warnings))
            except (json.JSONDecodeError, ValueError) as exc:
                corpus.skipped.append(SkippedSource(where, str(exc)))
    queries: dict[str, str] = {}
    with open(paths["queries.jsonl"], encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                queries[str(record["_id"])] = record["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(paths["qrels"], encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header and header[0] != "query-id":
            fh.seek(0)
            reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return BeirDataset(corpus, queries, qrels)


def evaluation_level(data: BeirDataset) -> str:
    """``passage`` when the judgements name passages (``<corpus id>#<ordinal>``, not themselves corpus ids),
    ``document`` when they name documents. Raises :class:`SourceError` for a mix."""
    corpus_ids = {a.id for a in data.corpus.articles}
    judged = {doc for docs in data.qrels.values() for doc in docs}
    passages = {
        doc for doc in judged
        if doc not in corpus_ids and "#" in doc and doc.rsplit("#", 1)[1].isdigit() and doc.rsplit("#", 1)[0] in corpus_ids
    }  # fmt: skip
    if not passages:
        return "document"
    if passages != judged - corpus_ids or judged & corpus_ids:
        raise SourceError("the judgements mix documents and passages (<document id>#<ordinal>)")
    return "passage"


def score_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, RankedDocs]) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 with trec_eval's implementation (pytrec_eval), averaged over all
    judged queries (a judged query with no results scores 0)."""
    import pytrec_eval

    judged = {q: dict(d) for q, d in qrels.items() if any(v > 0 for v in d.values())}
    full_run = {q: {doc: float(s) for doc, s in run.get(q, [])[:100]} for q in judged}
    top10 = {q: {doc: float(s) for doc, s in run.get(q, [])[:10]} for q in judged}
    main = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"}).evaluate(
        {q: r for q, r in full_run.items() if r}
    )
    mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate({q: r for q, r in top10.items() if r})
    n = max(len(judged), 1)
    return {
        "ndcg@10": sum(m["ndcg_cut_10"] for m in main.values()) / n,
        "recall@100": sum(m["recall_100"] for m in main.values()) / n,
        "mrr@10": sum(m["recip_rank"] for m in mrr.values()) / n,
        "queries": len(judged),
    }


def evaluate_beir(
    directory: str | Path,
    settings: Settings,
    *,
    index_dir: str | Path | None = None,
    embedder: Embedder | None = None,
    mode: str = "hybrid",
    fusion: str = "adaptive",
    fusion_weight: float | None = None,
    reranker: PairScorer | None = None,
) -> EvalReport:
    """Index a BEIR dataset with the normal pipeline (incrementally, if ``index_dir`` already holds it) and score
    the test queries at the level the judgements name (:func:`evaluation_level`)."""
    from ..retrieve.searcher import Searcher

    data = load_beir(directory)
    level = evaluation_level(data)  # before indexing: judgements it cannot score fail at once
    with tempfile.TemporaryDirectory(prefix="semsearch-eval-") as tmp:
        target = Path(index_dir) if index_dir is not None else Path(tmp) / "index"
        started = time.perf_counter()
        apply_articles(data.corpus, target, settings, embedder=embedder)
        index_seconds = time.perf_counter() - started
        with Searcher.open(target, settings, embedder=embedder, fusion=fusion, fusion_weight=fusion_weight,
                           reranker=reranker) as searcher:  # fmt: skip
            qids = [q for q in data.qrels if q in data.queries]
            rank = rank_passages if level == "passage" else rank_documents
            started = time.perf_counter()
            ranked = rank(searcher, [data.queries[q] for q in qids], mode)
            search_seconds = time.perf_counter() - started
            passages = searcher.manifest.passages
            rerank_model = searcher.reranker.name if searcher.reranker is not None else None
    metrics = score_run(data.qrels, dict(zip(qids, ranked, strict=True)))
    return EvalReport(
        ndcg_at_10=metrics["ndcg@10"],
        recall_at_100=metrics["recall@100"],
        mrr_at_10=metrics["mrr@10"],
        queries=int(metrics["queries"]),
        passages=passages,
        index_seconds=index_seconds,
        search_seconds=search_seconds,
        mode=mode if mode != "hybrid" else f"hybrid/{fusion}",
        level=level,
        rerank_model=rerank_model,
        rerank_depth=settings.rerank_depth if rerank_model else None,
    )


def rank_documents(searcher: Any, queries: Sequence[str], mode: str, depth: int = 100) -> list[RankedDocs]:
    """Top ``depth`` documents per query (each document once, by its best passage)."""
    out: list[RankedDocs] = []
    for query in queries:
        articles = searcher.search_articles(query, k=depth, per_article=1, mode=mode, highlights=False)
        out.append([(a.article_id, a.score) for a in articles])
    return out


def rank_passages(searcher: Any, queries: Sequence[str], mode: str, depth: int = 100) -> list[RankedDocs]:
    """Top ``depth`` passages per query, as ``Searcher.search`` ranks them, named ``<article id>#<ordinal>``."""
    out: list[RankedDocs] = []
    for query in queries:
        version = searcher.version
        hits = searcher.search(query, k=depth, mode=mode, highlights=False, version=version)
        records = version.passages([h.passage_id for h in hits])
        out.append([(f"{h.article_id}#{records[h.passage_id].ordinal}", h.score) for h in hits])
    return out
