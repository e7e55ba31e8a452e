#!/usr/bin/env python
"""In-process search latency by mode on one index (default: the bbc-news index built by bench_http.py).

Interleaves the modes query by query (so machine noise hits all alike) and prints a JSON report: p50/p95 per mode
and the ratio of hybrid p50 to dense p50.

    python scripts/bench_search.py [--index-dir DIR] [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", type=Path, default=ROOT / "bench-results" / "bbc-index")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    from semsearch import Searcher

    with Searcher.open(args.index_dir) as searcher:
        titles = [r[0] for r in searcher.version._query("SELECT title FROM articles ORDER BY id")]
        queries = [f"what happened with {t.lower()}" for t in titles][: args.queries]
        modes = ["dense", "keyword", "hybrid"]
        times: dict[str, list[float]] = {m: [] for m in modes}
        for q in queries[:10]:
            for m in modes:
                searcher.search(q, k=10, mode=m)
        for q in queries:
            for m in modes:
                started = time.perf_counter()
                searcher.search(q, k=10, mode=m)
                times[m].append((time.perf_counter() - started) * 1000)
        passages = searcher.manifest.passages
    report = {
        "index_dir": str(args.index_dir),
        "passages": passages,
        "queries": len(queries),
        **{f"{m}_p50_ms": round(float(np.median(t)), 2) for m, t in times.items()},
        **{f"{m}_p95_ms": round(float(np.percentile(t, 95)), 2) for m, t in times.items()},
    }
    report["hybrid_vs_dense_p50"] = round(report["hybrid_p50_ms"] / report["dense_p50_ms"], 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
