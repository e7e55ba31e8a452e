#!/usr/bin/env python
"""Indexing benchmark: semsearch's pipeline vs a plain fp32 ``SentenceTransformer.encode`` baseline, in one run.

Indexes a corpus (default ../shared/datasets/bbc-news) with the normal pipeline, then embeds exactly the same
passage texts with plain sentence-transformers (fp32, batch 64, no sorting on our side) and prints a JSON report:
articles, passages, passages/s (end to end and embedding only), peak RSS, the baseline's passages/s, the ratio,
and the cosine between the pipeline's vectors and the fp32 baseline's.

    python scripts/bench_index.py [CORPUS] [--limit N] [--out report.json]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _report import emit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "bbc-news"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="only the first N articles (quick runs)")
    parser.add_argument("--baseline-batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    if not args.corpus.exists():
        print(f"error: corpus not found: {args.corpus}", file=sys.stderr)
        return 2

    import torch
    from sentence_transformers import SentenceTransformer

    from semsearch import Settings
    from semsearch.index.build import apply_articles
    from semsearch.ingest.articles import LoadReport, load_articles
    from semsearch.models.embedding import SentenceTransformerEmbedder, resolve_model
    from semsearch.retrieve.searcher import Searcher

    settings = Settings(progress=False)
    loaded = load_articles([args.corpus], exclude=settings.exclude)
    if args.limit:
        loaded = LoadReport(loaded.articles[: args.limit], loaded.skipped, loaded.warnings)

    with tempfile.TemporaryDirectory(prefix="semsearch-bench-") as tmp:
        started = time.perf_counter()
        embedder = SentenceTransformerEmbedder.from_settings(settings)
        load_seconds = time.perf_counter() - started
        report = apply_articles(loaded, Path(tmp) / "index", settings, embedder=embedder)
        total_seconds = time.perf_counter() - started
        rss_pipeline = peak_rss_mib()
        with Searcher.open(Path(tmp) / "index", settings, embedder=embedder) as searcher:
            version = searcher.version
            ids = np.concatenate(
                [s.ids[~m] if m is not None else s.ids for s, m in zip(version.segments, version.masks, strict=True)]
            )
            vectors = version.vectors_for(ids)
            texts_by_id = {
                r["id"]: r["embed_text"]
                for s in version.segments
                for r in s.query("SELECT id, embed_text FROM passages")
            }
        texts = [texts_by_id[int(i)] for i in ids]

    # Baseline: what a hand-rolled script does. Plain fp32 model, encode() with its defaults.
    _, path = resolve_model(settings.model or "all-MiniLM-L6-v2")
    baseline_model = SentenceTransformer(path, device="cpu", local_files_only=True)
    started = time.perf_counter()
    baseline = baseline_model.encode(
        texts, batch_size=args.baseline_batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    baseline_seconds = time.perf_counter() - started
    cosine = np.sum(vectors * baseline, axis=1)

    pipeline_pps = report.passages / total_seconds
    embed_pps = report.passages_embedded / report.embed_seconds if report.embed_seconds else None
    baseline_pps = len(texts) / baseline_seconds
    result = {
        "corpus": str(args.corpus),
        "articles": report.articles,
        "passages": report.passages,
        "skipped": len(report.skipped),
        "max_tokens_per_passage": max(embedder.count_tokens(texts)) if texts else 0,
        "model_window": embedder.max_tokens,
        "precision": embedder.precision,
        "bf16_min_cosine_at_load": embedder.info.bf16_min_cosine,
        "batch_size": settings.batch_size,
        "pipeline_seconds_total": round(total_seconds, 2),
        "pipeline_model_load_seconds": round(load_seconds, 2),
        "pipeline_embed_seconds": round(report.embed_seconds, 2),
        "pipeline_passages_per_s": round(pipeline_pps, 1),
        "pipeline_embed_passages_per_s": round(embed_pps, 1) if embed_pps else None,
        "peak_rss_mib_pipeline": round(rss_pipeline, 1),
        "baseline": f"SentenceTransformer.encode fp32, batch {args.baseline_batch_size}",
        "baseline_seconds": round(baseline_seconds, 2),
        "baseline_passages_per_s": round(baseline_pps, 1),
        "speedup_end_to_end": round(pipeline_pps / baseline_pps, 2),
        "speedup_embedding_only": round(embed_pps / baseline_pps, 2) if embed_pps else None,
        "cosine_to_fp32_min": round(float(cosine.min()), 5) if len(cosine) else None,
        "cosine_to_fp32_mean": round(float(cosine.mean()), 5) if len(cosine) else None,
        "peak_rss_mib_process": round(peak_rss_mib(), 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
