#!/usr/bin/env python
"""Rerank benchmark: what the optional cross-encoder rerank stage costs, per candidate and end to end.

No cross-encoder is bundled and there is no hub access, so each model is built here with the architecture of a
public cross-encoder (BERT, its hidden size, layers, heads and intermediate size) and random weights, with the
bundled MiniLM's tokenizer (the same uncased word-piece vocabulary the public models use). Latency depends on the
architecture and the input lengths, not on the weights; the rankings these models produce mean nothing.

An index of a few hundred bbc-news articles (every ``--stride``-th file) is built in a temporary directory. The
queries are headlines of other bbc-news articles. The passages a reranker reads are recorded from hybrid search
itself (``title + "\\n" + text`` of the best fused candidates, in fused order), so their lengths are real.

1. Per candidate: for each architecture and rerank depth, the wall time of ``CrossEncoderReranker.score`` on each
   query's best ``depth`` candidates (depths interleaved query by query, median of ``--repeats`` per query), then
   the median over queries, per query and divided by the depth.
2. End to end: hybrid ``Searcher.search(query, k=10)`` without a reranker and with the MiniLM-L6 architecture at
   each depth, the configurations interleaved query by query; p50 per configuration and its ratio to no-rerank
   p50 from the same run.

The machine is noisy (a shared 2-core box): compare ratios from one report, not absolute figures across runs.
The defaults (16 queries, one timed call each after warm-up) take 7 to 8 minutes on 2 cores, most of it in the
MiniLM architectures at depth 100; each extra ``--repeats`` adds about 5.

    python scripts/bench_rerank.py [--queries 16] [--repeats 1] [--out docs/bench/rerank.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _report import emit

# Every model here is a local directory: nothing may reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
BBC = ROOT.parent / "shared" / "datasets" / "bbc-news"
DEPTHS = (10, 30, 100)
E2E_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"
# BertConfig fields of the public cross-encoders (their config.json); the rest are BertConfig's defaults, which
# match them (vocabulary 30522, 2 token types, GELU).
ARCHITECTURES: dict[str, dict[str, int]] = {
    "cross-encoder/ms-marco-MiniLM-L6-v2": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
    "cross-encoder/ms-marco-MiniLM-L12-v2": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
    "cross-encoder/ms-marco-TinyBERT-L2-v2": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 512,
    },
}


class RecordingScorer:
    """A pair scorer that keeps the passages it is given and scores them all alike, so the fused order stands:
    with it, hybrid search hands over exactly the texts a real reranker would read."""

    name = "bench/recorder"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        self.calls.append(list(passages))
        return np.zeros(len(passages))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def save_cross_encoder(out: Path, arch: dict[str, int], tokenizer_path: str) -> int:
    """A BERT cross-encoder of the given shape with random weights and one output label; returns its parameter
    count."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    torch.manual_seed(20261202)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, num_labels=1, **arch)
    model = BertForSequenceClassification(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def pick_files(corpus: Path, stride: int, n_queries: int) -> tuple[list[Path], list[Path]]:
    """Every ``stride``-th article to index, and ``n_queries`` others spread over the corpus (so over all five
    sections) whose headlines are the queries."""
    files = sorted(p for p in corpus.rglob("*.txt") if not p.name.upper().startswith("README"))
    indexed = files[::stride]
    others = files[stride // 2 :: stride]
    step = max(len(others) // max(n_queries, 1), 1)
    return indexed, others[::step][:n_queries]


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def measure_scoring(reranker: Any, queries: list[str], candidates: list[list[str]], repeats: int) -> dict[str, Any]:
    """Per depth: median over queries of (median over repeats of one ``score`` call); and the cores kept busy."""
    reranker.score(queries[0], candidates[0][:30])  # first calls allocate and pick kernels: not measured
    reranker.score(queries[-1], candidates[-1][:100])
    times: dict[int, list[list[float]]] = {d: [[] for _ in queries] for d in DEPTHS}
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        for i, (query, passages) in enumerate(zip(queries, candidates, strict=True)):
            for depth in DEPTHS:
                started = time.perf_counter()
                reranker.score(query, passages[:depth])
                times[depth][i].append(time.perf_counter() - started)
    # Cores kept busy while scoring (process CPU time over wall time): shows whether the model thread's team
    # really uses every core.
    cores_busy = (time.process_time() - cpu_started) / (time.perf_counter() - wall_started)
    by_depth = {}
    for depth in DEPTHS:
        per_query = [median_ms(t) for t in times[depth]]
        per_candidate = [ms / len(p[:depth]) for ms, p in zip(per_query, candidates, strict=True)]
        by_depth[str(depth)] = {
            "p50_ms_per_query": round(statistics.median(per_query), 2),
            "p50_ms_per_candidate": round(statistics.median(per_candidate), 3),
            "min_ms_per_query": round(min(per_query), 2),
            "max_ms_per_query": round(max(per_query), 2),
        }
    return {"cores_busy": round(cores_busy, 2), "by_depth": by_depth}


def measure_end_to_end(searchers: dict[str, Any], queries: list[str], repeats: int) -> dict[str, Any]:
    """Hybrid ``search(q, k=10)`` per configuration, interleaved query by query; p50 over all calls."""
    for searcher in searchers.values():  # warm-up, not measured
        for query in queries[:3]:
            searcher.search(query, k=10)
    times: dict[str, list[float]] = {name: [] for name in searchers}
    for _ in range(repeats):
        for query in queries:
            for name, searcher in searchers.items():
                started = time.perf_counter()
                searcher.search(query, k=10)
                times[name].append(time.perf_counter() - started)
    base = median_ms(times["no_rerank"])
    out = {}
    for name, seconds in times.items():
        p50 = median_ms(seconds)
        out[name] = {
            "p50_ms": round(p50, 2),
            "p95_ms": round(float(np.percentile(seconds, 95)) * 1000, 2),
            "ratio_to_no_rerank_p50": round(p50 / base, 2),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=BBC)
    parser.add_argument("--stride", type=int, default=7, help="index every N-th article (7: 318 of 2,225)")
    parser.add_argument("--queries", type=int, default=16, help="20 takes about 9 minutes on 2 cores")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per query and configuration")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(
            f"error: bbc-news dataset not found at {args.corpus} (expected ../shared/datasets/bbc-news)",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()

    import sentence_transformers
    import torch
    import transformers
    from transformers import AutoTokenizer

    from semsearch import Searcher, Settings, build_index, load_articles
    from semsearch.models.embedding import resolve_model
    from semsearch.models.reranker import CrossEncoderReranker

    default_threads = torch.get_num_threads()  # before faiss has changed this thread's setting
    indexed_files, query_files = pick_files(args.corpus, args.stride, args.queries)
    queries = [a.title for a in load_articles(query_files).articles if a.title]
    _, tokenizer_path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")

    with tempfile.TemporaryDirectory(prefix="semsearch-bench-rerank-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus"
        for path in indexed_files:
            # Section folders kept: file names repeat across sections and are part of the article id.
            target = corpus / path.relative_to(args.corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        index_dir = tmp / "index"
        settings = Settings(index_dir=index_dir)
        build_started = time.perf_counter()
        built = build_index([corpus], index_dir, settings)
        build_seconds = time.perf_counter() - build_started

        recorder = RecordingScorer()
        with Searcher.open(index_dir, settings.with_(rerank_depth=max(DEPTHS)), reranker=recorder) as searcher:
            for query in queries:
                searcher.search(query, k=10, highlights=False)
            embedder = searcher.embedder
            info = embedder.info
        candidates = recorder.calls
        if any(len(c) < max(DEPTHS) for c in candidates):
            print(
                f"error: a query had fewer than {max(DEPTHS)} hybrid candidates; index more articles (lower --stride)",
                file=sys.stderr,
            )
            return 2

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        pair_tokens = {
            depth: [
                len(tokenizer(q, p, truncation=True, max_length=512)["input_ids"])
                for q, passages in zip(queries, candidates, strict=True)
                for p in passages[:depth]
            ]
            for depth in DEPTHS
        }

        models: dict[str, Path] = {}
        architectures = []
        per_candidate: dict[str, Any] = {}
        for name, arch in ARCHITECTURES.items():
            models[name] = tmp / "models" / name.replace("/", "--")
            parameters = save_cross_encoder(models[name], arch, tokenizer_path)
            architectures.append(
                {
                    "stands_for": name,
                    "model_type": "bert",
                    **arch,
                    "max_position_embeddings": 512,
                    "parameters": parameters,
                    "weights": "random",
                }
            )
            load_started = time.perf_counter()
            reranker = CrossEncoderReranker(str(models[name]))
            load_seconds = time.perf_counter() - load_started
            try:
                per_candidate[name] = {
                    "load_seconds": round(load_seconds, 2),
                    **measure_scoring(reranker, queries, candidates, args.repeats),
                }
            finally:
                reranker.close()
        for name in ARCHITECTURES:
            for depth in map(str, DEPTHS):
                base = per_candidate[E2E_MODEL]["by_depth"][depth]["p50_ms_per_query"]
                row = per_candidate[name]["by_depth"][depth]
                row["ratio_to_minilm_l6_p50"] = round(row["p50_ms_per_query"] / base, 2)

        # One model instance and one embedder for every configuration, as one server process would hold them.
        reranker = CrossEncoderReranker(str(models[E2E_MODEL]))
        # OpenMP thread counts are per thread, and faiss sets the calling thread's to 1 for small searches (torch
        # shares its OpenMP runtime), so the count that matters is the one on the reranker's own model thread.
        reranker_threads = reranker._worker.call(torch.get_num_threads)
        searchers = {"no_rerank": Searcher.open(index_dir, settings, embedder=embedder)}
        for depth in DEPTHS:
            searchers[f"rerank_depth_{depth}"] = Searcher.open(
                index_dir, settings.with_(rerank_depth=depth), embedder=embedder, reranker=reranker
            )
        try:
            end_to_end = measure_end_to_end(searchers, queries, args.repeats)
        finally:
            for searcher in searchers.values():
                searcher.close()
            reranker.close()

    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": reranker_threads,
        "torch_threads_process_default": default_threads,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "weights": "random: each model has the architecture of the public cross-encoder it stands for, built here "
        "(no cross-encoder is bundled, no hub access); latency depends on architecture and input length only",
        "architectures": architectures,
        "reranker": {
            "class": "CrossEncoderReranker",
            # Why the cost per candidate depends on the depth: up to 32 candidates are one batch padded to the
            # longest; deeper lists are sorted by length into batches that need less padding.
            "batching": "sentence-transformers sorts the pairs by length and pads each batch to its longest pair",
            "device": "cpu",
            "dtype": "fp32",
            "batch_size": 32,
            "max_tokens": 512,
        },
        "corpus": {
            "dataset": "bbc-news",
            "articles_indexed": built.articles,
            "passages": built.passages,
            "build_seconds": round(build_seconds, 1),
            "embedding_precision": info.precision,
            "query_backend": info.query_backend,
        },
        "queries": {
            "count": len(queries),
            "source": "headlines of bbc-news articles not in the index",
            "examples": queries[:3],
            "repeats": args.repeats,
        },
        "pair_tokens": {
            str(d): {"p50": int(np.median(t)), "p90": int(np.percentile(t, 90)), "max": max(t)}
            for d, t in pair_tokens.items()
        },
        "score_latency": per_candidate,
        "end_to_end": {
            "search": "Searcher.search(query, k=10), hybrid, highlights on",
            "model": E2E_MODEL,
            "configs": end_to_end,
        },
        "runtime_seconds": round(time.perf_counter() - started, 1),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
