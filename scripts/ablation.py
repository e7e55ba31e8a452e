#!/usr/bin/env python
"""Retrieval-quality ablation: modes x fusions x title context x chunk size, on labelled BEIR-format sets.

On SciFact: dense / keyword / hybrid (each fusion setting), with and without title context, at two chunk sizes
(the model window of 256 word pieces, and 128). On the extra sets from scripts/make_eval_sets.py (bbc-headlines,
bbc-passages, sample-questions, sample-passages, dict-defs): every mode and fusion at the default chunking. Each
index is built once per chunking configuration (kept under bench-results/ablation/ so reruns are incremental),
query embeddings are computed once, and every row runs through the real Searcher at the level the set's
judgements name (document or passage), as ``semsearch eval`` scores.
Prints one JSON object: the rows plus, per dataset, whether the default (hybrid/adaptive) is within 1% of the
better of dense and keyword.

The fusion settings compared are the handful documented in docs/quality.md; nothing is fitted to the queries.

    python scripts/ablation.py [--quick] [--sets scifact,bbc-headlines,bbc-passages,sample-questions,...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _report import emit

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
WORK = ROOT / "bench-results" / "ablation"
SETS = ROOT / "bench-results" / "eval-sets"

# (mode, fusion, keyword weight or cap); None = the documented default. Variants of the adaptive fusion:
# "adaptive-passage" takes each passage's own keyword score and gates the weight at coverage 0.15-0.4 (the
# session-2 default); "adaptive-ungated" takes the own score with no gate (peakedness only: the session-1
# default).
GRID: list[tuple[str, str | None, float | None]] = [
    ("dense", None, None),
    ("keyword", None, None),
    ("hybrid", "adaptive", None),
    ("hybrid", "adaptive", 0.5),
    ("hybrid", "adaptive", 1.0),
    ("hybrid", "adaptive-passage", None),
    ("hybrid", "adaptive-ungated", None),
    ("hybrid", "zscore", 0.3),
    ("hybrid", "zscore", 0.5),
    ("hybrid", "rrf", None),
]


class CachingEmbedder:
    """Wraps an embedder and remembers query vectors, so each query is embedded once per run."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_queries(self, queries: list[str]) -> Any:
        import numpy as np

        missing = [q for q in dict.fromkeys(queries) if q not in self._cache]
        if missing:
            for q, v in zip(missing, self._inner.embed_queries(missing), strict=True):
                self._cache[q] = v
        return np.stack([self._cache[q] for q in queries])


@contextlib.contextmanager
def variant(name: str | None) -> Iterator[None]:
    """The adaptive fusion as one of the earlier defaults (see GRID) while the block runs."""
    from semsearch.retrieve import fusion

    saved = fusion.own_share, fusion.coverage_gate
    if name in ("adaptive-passage", "adaptive-ungated"):
        fusion.own_share = lambda coverage: 1.0  # type: ignore[assignment]
    if name == "adaptive-passage":
        fusion.coverage_gate = lambda coverage: fusion.ramp(coverage, 0.15, 0.4)  # type: ignore[assignment]
    if name == "adaptive-ungated":
        fusion.coverage_gate = lambda coverage: 1.0  # type: ignore[assignment]
    try:
        yield
    finally:
        fusion.own_share, fusion.coverage_gate = saved


def run(dataset: Path, name: str, chunking_name: str, settings: Any, embedder: Any, rows: list[dict[str, Any]]) -> None:
    from semsearch import Searcher
    from semsearch.eval.beir import evaluation_level, load_beir, rank_documents, rank_passages, score_run
    from semsearch.index.build import apply_articles

    data = load_beir(dataset)
    index_dir = WORK / f"{name}-{chunking_name}"
    started = time.perf_counter()
    apply_articles(data.corpus, index_dir, settings, embedder=embedder)
    index_seconds = time.perf_counter() - started
    qids = [q for q in data.qrels if q in data.queries]
    queries = [data.queries[q] for q in qids]
    level = evaluation_level(data)
    rank = rank_passages if level == "passage" else rank_documents
    for mode, fusion, weight in GRID:
        method = (fusion or "adaptive").split("-")[0]
        started = time.perf_counter()
        with (
            variant(fusion),
            Searcher.open(index_dir, settings, embedder=embedder, fusion=method, fusion_weight=weight) as searcher,
        ):
            ranked = rank(searcher, queries, mode)
            passages = searcher.manifest.passages
        metrics = score_run(data.qrels, dict(zip(qids, ranked, strict=True)))
        rows.append({"dataset": name, "level": level, "chunking": chunking_name, "mode": mode, "fusion": fusion,
                     "weight": weight,
                     "ndcg@10": round(metrics["ndcg@10"], 4), "recall@100": round(metrics["recall@100"], 4),
                     "mrr@10": round(metrics["mrr@10"], 4), "queries": int(metrics["queries"]),
                     "passages": passages, "index_seconds": round(index_seconds, 1),
                     "search_seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)


def verdicts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for dataset, chunking in sorted({(r["dataset"], r["chunking"]) for r in rows}):
        sel = [r for r in rows if r["dataset"] == dataset and r["chunking"] == chunking]
        best_part = max(r["ndcg@10"] for r in sel if r["mode"] in ("dense", "keyword"))
        default = next(r for r in sel if r["fusion"] == "adaptive" and r["weight"] is None)
        out[f"{dataset}/{chunking}"] = {
            "best_single_ndcg@10": best_part,
            "default_ndcg@10": default["ndcg@10"],
            "ratio": round(default["ndcg@10"] / best_part, 4),
            "within_1pct": default["ndcg@10"] >= 0.99 * best_part,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="default chunking only")
    parser.add_argument(
        "--sets", default="scifact,bbc-headlines,bbc-passages,sample-questions,sample-passages,dict-defs"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "ablation.json")
    args = parser.parse_args()
    from semsearch import ChunkSettings, Settings
    from semsearch.models.embedding import load_embedder

    WORK.mkdir(parents=True, exist_ok=True)
    chunkings = {
        "title-256": ChunkSettings(),
        "notitle-256": ChunkSettings(title_context=False),
        "title-128": ChunkSettings(max_tokens=128),
        "notitle-128": ChunkSettings(title_context=False, max_tokens=128),
    }
    if args.quick:
        chunkings = {"title-256": chunkings["title-256"]}
    embedder = CachingEmbedder(load_embedder(Settings()))
    rows: list[dict[str, Any]] = []
    for name in args.sets.split(","):
        directory = SHARED / name if name == "scifact" else SETS / name
        if not directory.exists():
            print(f"{name}: {directory} not found, skipped (scripts/make_eval_sets.py builds the extra sets)",
                  file=sys.stderr)  # fmt: skip
            continue
        for chunking_name, chunking in chunkings.items() if name == "scifact" else [("title-256", ChunkSettings())]:
            run(directory, name, chunking_name, Settings(chunking=chunking), embedder, rows)
    report = {"rows": rows, "default_vs_best_single": verdicts(rows)}
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
