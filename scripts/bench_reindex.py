#!/usr/bin/env python
"""Reindex benchmark: full rebuild of bbc-news vs an incremental reindex after editing 1% of the articles.

Both runs are library calls that load the model themselves (as a fresh operator run would), in one process, on
a private copy of the corpus. Also times the same incremental run as a ``semsearch reindex`` subprocess (Python,
torch and model start-up included). Prints a JSON report.

    python scripts/bench_reindex.py [CORPUS] [--edit-fraction 0.01] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "bbc-news"


def edit_articles(corpus: Path, fraction: float, seed: int) -> int:
    """Rewrite one paragraph (the second) in a random ``fraction`` of the articles."""
    files = sorted(corpus.rglob("*.txt"))
    files = [f for f in files if not f.name.upper().startswith("README")]
    chosen = random.Random(seed).sample(files, max(1, round(len(files) * fraction)))
    for path in chosen:
        text = path.read_text(encoding="utf-8", errors="replace")
        paragraphs = text.split("\n\n")
        target = 2 if len(paragraphs) > 2 else len(paragraphs) - 1
        paragraphs[target] = paragraphs[target].rstrip() + " (This paragraph was corrected by the editors.)"
        path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return len(chosen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--edit-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.corpus.exists():
        print(f"error: corpus not found: {args.corpus}", file=sys.stderr)
        return 2

    from semsearch import Settings, build_index, reindex

    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-reindex-") as tmp:
        corpus = Path(tmp) / "corpus"
        shutil.copytree(args.corpus, corpus)
        index_dir = Path(tmp) / "index"

        started = time.perf_counter()
        full = build_index([corpus], index_dir, settings)
        full_seconds = time.perf_counter() - started

        edited = edit_articles(corpus, args.edit_fraction, args.seed)
        started = time.perf_counter()
        incremental = reindex([corpus], index_dir, settings)
        incremental_seconds = time.perf_counter() - started

        edit_articles(corpus, args.edit_fraction, args.seed + 1)
        started = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "semsearch.cli", "reindex", str(corpus), "--index-dir", str(index_dir), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        cli_seconds = time.perf_counter() - started
        cli_report = json.loads(cli.stdout)

    report = {
        "corpus": str(args.corpus),
        "articles": full.articles,
        "passages": full.passages,
        "edited_articles": edited,
        "full_rebuild_seconds": round(full_seconds, 2),
        "incremental_seconds": round(incremental_seconds, 2),
        "incremental_vs_full": round(incremental_seconds / full_seconds, 4),
        "incremental_updated": incremental.updated,
        "incremental_passages_embedded": incremental.passages_embedded,
        "incremental_passages_reused": incremental.passages_reused,
        "incremental_embed_seconds": round(incremental.embed_seconds, 2),
        "cli_incremental_seconds_including_startup": round(cli_seconds, 2),
        "cli_incremental_vs_full": round(cli_seconds / full_seconds, 4),
        "cli_passages_embedded": cli_report["passages_embedded"],
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
