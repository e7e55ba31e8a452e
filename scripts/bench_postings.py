#!/usr/bin/env python
"""Keyword-segment benchmark: semsearch's postings with global BM25 statistics (semsearch.index.postings) vs one
bm25s index, and optionally SQLite FTS5, on synthetic passages recombined from real news sentences.

Passages are 2-6 sentences drawn at random from the articles of a corpus (default ../shared/datasets/bbc-news,
falling back to examples/articles). Prints a JSON report:

* write time and bytes on disk of one segment per size (one article's passages, 1k, 10k, N/segments, N), next to
  bm25s's build time and files for all N;
* GlobalBM25 construction time over 1 and ``--segments`` segments with 5% of the rows deleted;
* query latency p50/p99 over ``--queries`` queries of 2-8 consecutive words of random passages, for ``top(k=100)``
  (1 segment; ``--segments`` segments with deletions; the same with a filter allowing 1% of rows), bm25s
  ``get_scores`` + argpartition on one index, and FTS5 ``bm25()`` (text analysed in Python before indexing);
* whether the scores equal bm25s's (sampled queries), and RSS of a fresh process after opening the segments.

    python scripts/bench_postings.py [--passages 100000] [--segments 20] [--no-bm25s] [--no-fts5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _report import emit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "bbc-news"
FALLBACK_CORPUS = ROOT / "examples" / "articles"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(corpus: Path) -> list[str]:
    """The sentences of every paragraph of every .txt file (titles and one-line paragraphs included)."""
    out = []
    for path in sorted(corpus.rglob("*.txt")):
        for para in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            out += [s.strip() for s in _SENTENCE.split(para.replace("\n", " ")) if len(s.strip()) > 20]
    return out


def passages(pool: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 7, size=n)
    picks = rng.integers(0, len(pool), size=int(counts.sum()))
    out, i = [], 0
    for c in counts.tolist():
        out.append(" ".join(pool[j] for j in picks[i : i + c].tolist()))
        i += c
    return out


def make_queries(texts: list[str], n: int, seed: int) -> list[str]:
    """2-8 consecutive words of random passages."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        words = texts[rng.randrange(len(texts))].split()
        size = rng.randint(2, 8)
        if len(words) >= size:
            start = rng.randrange(len(words) - size + 1)
            out.append(" ".join(words[start : start + size]))
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pct(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def timed(fn: Any, items: list[Any]) -> list[float]:
    times = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t)
    return times


def rss_child(dirs: list[str], deleted_path: str | None) -> None:
    """Run in a fresh process: RSS (anonymous = private to a worker, file = shared mapped pages) before and after
    opening the segments and building GlobalBM25, then after 100 queries."""
    from semsearch.index.analysis import analyse
    from semsearch.index.bm25 import GlobalBM25
    from semsearch.index.postings import SegmentPostings

    def status() -> dict[str, float]:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = round(int(value.split()[0]) / 1024, 1)
        return fields

    before = status()
    segments = [SegmentPostings(Path(d)) for d in dirs]
    deleted = list(np.load(deleted_path, allow_pickle=True)) if deleted_path else [None] * len(segments)
    index = GlobalBM25(list(zip(segments, deleted, strict=True)))
    opened = status()
    for query in json.loads(os.environ["BENCH_QUERIES"])[:100]:
        index.top(analyse(query), 100)
    print(json.dumps({"before_mib": before, "opened_mib": opened, "after_100_queries_mib": status()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--deleted", type=float, default=0.05, help="share of rows deleted in the multi-segment case")
    parser.add_argument("--no-bm25s", action="store_true", help="skip the bm25s baseline (slow to build at 1M)")
    parser.add_argument("--no-fts5", action="store_true")
    parser.add_argument("--tantivy", action="store_true", help="also time tantivy (needs `pip install tantivy`)")
    parser.add_argument("--engines-only", action="store_true", help="only FTS5/tantivy (skip postings and bm25s)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rss-child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--rss-deleted", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_deleted)
        return 0

    from semsearch.index.analysis import analyse, stemmer, stopwords
    from semsearch.index.bm25 import GlobalBM25
    from semsearch.index.postings import SegmentPostings, write_postings

    corpus = args.corpus if args.corpus.exists() else FALLBACK_CORPUS
    pool = sentences(corpus)
    n = args.passages
    texts = passages(pool, n, seed=1)
    queries = make_queries(texts, args.queries, seed=2)
    analysed = [analyse(q) for q in queries]
    report: dict[str, Any] = {
        "corpus": str(corpus),
        "sentences": len(pool),
        "passages": n,
        "segments": args.segments,
        "queries": len(queries),
        "query_terms_mean": round(float(np.mean([len(a) for a in analysed])), 2),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": os.getloadavg()[0],
    }
    tmp = tempfile.TemporaryDirectory(prefix="bench-postings-") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not args.engines_only:
            # ---- writes
            writes = {}
            per = -(-n // args.segments)
            for label, size in (("one_article_10", 10), ("1k", 1000), ("10k", 10_000)):
                if size < n:
                    t = time.perf_counter()
                    info = write_postings(texts[:size], work / f"w{label}")
                    writes[label] = {
                        "seconds": round(time.perf_counter() - t, 3),
                        "bytes": dir_bytes(work / f"w{label}"),
                        "postings": info["postings"],
                    }
            t = time.perf_counter()
            seg_dirs = []
            for i in range(args.segments):
                seg_dirs.append(work / f"seg{i:03d}")
                write_postings(texts[i * per : (i + 1) * per], seg_dirs[-1])
            seconds = time.perf_counter() - t
            writes[f"{args.segments}x{per}"] = {
                "seconds_total": round(seconds, 2),
                "seconds_per_segment": round(seconds / args.segments, 3),
                "bytes": sum(dir_bytes(d) for d in seg_dirs),
            }
            t = time.perf_counter()
            info = write_postings(texts, work / "one")
            writes[f"1x{n}"] = {
                "seconds": round(time.perf_counter() - t, 2),
                "bytes": dir_bytes(work / "one"),
                "terms": info["terms"],
                "postings": info["postings"],
                "tf_dtype": info["tf_dtype"],
            }
            report["write"] = writes
            report["upsert_one_article_share_of_index_bytes"] = round(
                writes["one_article_10"]["bytes"] / writes[f"1x{n}"]["bytes"], 6
            )

            # ---- construction
            one = SegmentPostings(work / "one")
            segs = [SegmentPostings(d) for d in seg_dirs]
            rng = np.random.default_rng(3)
            masks = [rng.random(s.n_docs) < args.deleted for s in segs]
            mask_file = work / "masks.npy"
            np.save(mask_file, np.array(masks, dtype=object), allow_pickle=True)

            def construct(pairs: list[Any]) -> float:
                best = []
                for _ in range(5):
                    t = time.perf_counter()
                    GlobalBM25(pairs)
                    best.append(time.perf_counter() - t)
                return round(float(np.median(best)) * 1000, 2)

            report["construct_ms"] = {
                "1_segment": construct([(one, None)]),
                f"{args.segments}_segments_{args.deleted:.0%}_deleted": construct(list(zip(segs, masks, strict=True))),
            }
            g_one = GlobalBM25([(one, None)])
            g_multi = GlobalBM25(list(zip(segs, masks, strict=True)))
            g_multi_live = GlobalBM25([(s, None) for s in segs])
            allowed = [np.sort(rng.choice(s.n_docs, size=max(1, s.n_docs // 100), replace=False)) for s in segs]

            # ---- latency (analysis excluded; measured separately)
            latency: dict[str, Any] = {"analyse_query": pct(timed(analyse, queries))}
            for label, fn in (
                ("postings_top100_1_segment", lambda q: g_one.top(q, 100)),
                (f"postings_top100_{args.segments}_segments_deleted", lambda q: g_multi.top(q, 100)),
                (f"postings_top100_{args.segments}_segments_filter_1pct", lambda q: g_multi.top(q, 100, allowed)),
                ("postings_scores_1_segment", lambda q: g_one.scores(q)),
            ):
                timed(fn, analysed[:20])  # warm the page cache
                latency[label] = pct(timed(fn, analysed))
            report["latency"] = latency
            matched = [
                sum(int(one.indptr[tid + 1] - one.indptr[tid]) for tid in one.lookup_many(terms) if tid is not None)
                for terms in analysed
            ]
            report["postings_per_query"] = {"mean": round(float(np.mean(matched))), "max": int(np.max(matched))}

            # ---- bm25s baseline
            if not args.no_bm25s:
                import bm25s

                logging.getLogger("bm25s").setLevel(logging.WARNING)
                t = time.perf_counter()
                tokens = bm25s.tokenize(texts, stopwords=list(stopwords()), stemmer=stemmer(), show_progress=False)
                model = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
                model.index(tokens, show_progress=False)
                build = time.perf_counter() - t
                del tokens
                model.save(str(work / "bm25s"), show_progress=False)
                vocab = model.vocab_dict

                def bm25s_top(terms: list[str]) -> np.ndarray:
                    ids = [t for t in terms if t in vocab]
                    if not ids:
                        return np.zeros(0, dtype=np.int64)
                    scores = model.get_scores(ids)
                    top = np.argpartition(-scores, 99)[:100]
                    return top[np.argsort(-scores[top])]

                timed(bm25s_top, analysed[:20])
                report["bm25s"] = {
                    "build_seconds": round(build, 2),
                    "bytes": dir_bytes(work / "bm25s"),
                    "latency_get_scores_argpartition_top100": pct(timed(bm25s_top, analysed)),
                }
                # Exactness at scale: 1 segment and all segments (no deletions) against bm25s, 50 queries.
                worst = {"1_segment": 0.0, f"{args.segments}_segments": 0.0}
                equal = 0
                for terms in analysed[:50]:
                    ids = [t for t in terms if t in vocab]
                    ref = model.get_scores(ids) if ids else np.zeros(n, dtype=np.float32)
                    a = g_one.scores(terms)[0]
                    b = np.concatenate(g_multi_live.scores(terms))
                    worst["1_segment"] = max(worst["1_segment"], float(np.abs(a - ref).max()))
                    worst[f"{args.segments}_segments"] = max(
                        worst[f"{args.segments}_segments"], float(np.abs(b - ref).max())
                    )
                    equal += bool(np.array_equal(a, ref) and np.array_equal(b, ref))
                report["bm25s"]["max_abs_score_difference"] = worst
                report["bm25s"]["queries_bit_identical"] = f"{equal}/50"
                del model

        # ---- SQLite FTS5 (bm25() with its defaults k1=1.2, b=0.75: latency only)
        if not args.no_fts5:
            db = sqlite3.connect(work / "fts.sqlite")
            db.execute("CREATE VIRTUAL TABLE fts USING fts5(body, tokenize='unicode61 remove_diacritics 0')")
            t = time.perf_counter()
            db.executemany(
                "INSERT INTO fts(rowid, body) VALUES (?, ?)", ((i, " ".join(analyse(x))) for i, x in enumerate(texts))
            )
            db.commit()
            db.execute("INSERT INTO fts(fts) VALUES ('optimize')")
            db.commit()
            build = time.perf_counter() - t
            sql = "SELECT rowid, bm25(fts) AS s FROM fts WHERE fts MATCH ? ORDER BY s LIMIT 100"

            def fts(terms: list[str]) -> list[Any]:
                if not terms:
                    return []
                return db.execute(sql, (" OR ".join(f'"{t}"' for t in dict.fromkeys(terms)),)).fetchall()

            timed(fts, analysed[:20])
            report["fts5"] = {
                "build_seconds_incl_analysis": round(build, 2),
                "bytes": (work / "fts.sqlite").stat().st_size,
                "latency_bm25_top100": pct(timed(fts, analysed)),
            }
            db.close()

        # ---- tantivy (pre-analysed text, whitespace tokenizer; its own BM25 statistics: latency only)
        if args.tantivy:
            import tantivy

            builder = tantivy.SchemaBuilder()
            builder.add_text_field("body", stored=False, tokenizer_name="whitespace")
            schema = builder.build()
            (work / "tantivy").mkdir(exist_ok=True)
            index = tantivy.Index(schema, path=str(work / "tantivy"))
            t = time.perf_counter()
            writer = index.writer(heap_size=1_000_000_000, num_threads=1)
            for x in texts:
                writer.add_document(tantivy.Document(body=" ".join(analyse(x))))
            writer.commit()
            writer.wait_merging_threads()
            build = time.perf_counter() - t
            index.reload()
            searcher = index.searcher()

            def tantivy_top(terms: list[str]) -> list[Any]:
                if not terms:
                    return []
                return searcher.search(index.parse_query(" ".join(terms), ["body"]), 100).hits

            timed(tantivy_top, analysed[:20])
            report["tantivy"] = {
                "build_seconds_incl_analysis": round(build, 2),
                "bytes": dir_bytes(work / "tantivy"),
                "segments": len(list((work / "tantivy").glob("*.idx"))),
                "latency_top100": pct(timed(tantivy_top, analysed)),
            }

        # ---- RSS of a fresh process that opens the segments
        if args.engines_only:
            return emit(report, args.out) or 0
        env = dict(os.environ, BENCH_QUERIES=json.dumps(queries))
        rss = {}
        for label, dirs, deleted in (
            ("1_segment", [str(work / "one")], None),
            (f"{args.segments}_segments_deleted", [str(d) for d in seg_dirs], str(mask_file)),
        ):
            cmd = [sys.executable, __file__, "--rss-child", *dirs] + (["--rss-deleted", deleted] if deleted else [])
            rss[label] = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
        report["rss_fresh_process"] = rss
        report["load_avg_at_end"] = os.getloadavg()[0]
    finally:
        if tmp:
            tmp.cleanup()
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
