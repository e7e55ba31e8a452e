#!/usr/bin/env python
"""Scale benchmark: the index machinery at 100k-1M passages, with a fast deterministic clustered embedder.

    python scripts/bench_scale.py --passages 100000 [--out FILE] [--workdir DIR] [--queries 200]
                                  [--skip-server] [--real-model-point] [--single-upserts 100] [--keep]

Prints one JSON report (scripts/_report.py). Only the public library API is used (``Article``, ``Index``,
``Searcher``, ``Settings``, ``build_index``, ``SearchFilters``, ``semsearch.serve.gunicorn.serve``), so the script keeps
working when the storage underneath is redesigned. Timings are medians/p99 over many repetitions, except the one
full build, the merge and the reload, which are single runs (marked ``"runs": 1``).

Corpus. Articles in the product's shape (title + about 4 paragraphs of 1-4 sentences, published date, source,
tags, url), recombined from the real sentences of ``../shared/datasets/bbc-news`` (else ``examples/articles``),
deterministic from ``--seed``: article ``i`` is generated from its own RNG, so any article can be regenerated
(queries, upserts) without keeping the corpus in memory. Each article has a topic (a source article): half of its
sentences come from that article, 30% from its category, 20% from anywhere, so BM25 statistics are natural.
Titles are pairs of real headlines, unique per article. The number of articles for ``--passages`` comes from a
pilot build of 400 articles (passages per article after the library's chunking); the real passage count is read
back from the index (``corpus.passages``). The corpus is streamed to a JSONL file in batches.

ClusteredEmbedder. Implements the library's Embedder protocol (384-d float32 unit vectors, deterministic from the
source corpus and ``--seed``). 256 fixed random centres; every source article is assigned one; a word's vector is
``unit(0.5 * centre[topic(w)] + random(w))``, where topic(w) is the centre of the source article in which w is most
frequent; a text's vector is ``unit(unit(sum of idf(w) * word(w)) + 0.1 * noise[hash(text)])``. Passages drawn
from one source article's sentences therefore cluster around its centre (random passage pairs: cosine ~0.10 median,
~0.29 p99 at topic weight 0.5), and a query made of one sentence or a few words of a passage has that passage in its
exact top 10 about 3 times out of 4. Vectorised (scipy sparse x dense), ~50-80 us per passage. ``count_tokens``:
words + 2. The topic weight (3.0) makes the vectors about as hard for an IVF index as real ones, a little harder:
measured on 19,627 passages, leave-one-out recall@10 against nprobe (nlist 280) reaches 0.95 at 10 lists for
all-MiniLM-L6-v2 embeddings of bbc-news and SciFact passages, at 28 for this embedder with weight 3.0, and only at
~120 with weight 0.5, whose vectors are nearly isotropic (an ANN index then has to scan most of its lists).

Report fields (seconds unless named ``_ms``; bytes unless named otherwise):
- ``machine``, ``settings``, ``embedder``, ``corpus``: what was measured and on what.
- ``build``: ``build_index`` on the generated JSONL file (what an operator runs for a full build: ``semsearch
  index corpus.jsonl``). ``seconds_excluding_embedding`` = the library's ``IndexReport.seconds`` minus the time
  spent inside the embedder (``embedder_seconds``, timed by the embedder itself: ``embed_documents`` and
  ``count_tokens``); ``library_embed_seconds`` is the library's own figure. ``disk``: ``index_dir`` and
  ``current_version`` (allocated bytes, like ``du``, and apparent bytes). ``peak_rss``: this process's peak.
- ``search``: in-process ``Searcher.search`` latency, k=10, highlights on (the default), per mode (dense, keyword,
  hybrid), modes interleaved query by query, after a warm-up of ``--queries``/2 other queries. Queries are a
  sentence (half) or 3-6 consecutive words (half) of a random article's paragraph; the warm-up, measured, filtered
  and after-update sets are distinct (so query-dependent caches favour no phase). ``p50_ms``/``p99_ms`` are wall
  time; ``cpu_p50_ms``/``cpu_p99_ms`` the searching thread's CPU time, much less sensitive to other load on a
  shared machine (``load_average`` is recorded). ``search.filtered``: with a source + 180-day date-range filter
  around the query's article; ``short_results`` counts searches that returned fewer than k although at least k
  articles (hence passages) match the filter (asserted zero for dense and hybrid: exit status 1 otherwise; keyword
  also needs k matching passages that contain a query term, so there it is informational).
  ``this_process_memory``: this process after the searches (``index_files_rss`` as for the server below).
- ``recall``: dense recall@10 against exact search. Exact = brute force in numpy over vectors recomputed with the
  same deterministic embedder from every stored passage (read through ``Searcher.article``), after the same
  near-duplicate removal the searcher applies (cosine >= 0.97 within the best max(2k, k+20)); ``raw`` is against
  the plain exact top 10. ``vectors_reproduced`` = the share of returned hits whose ``dense_score`` equals the
  recomputed cosine (checks that the reference is the stored vectors).
- ``server``: a 2-worker gunicorn (``semsearch.serve.gunicorn.serve`` with this embedder, 4 threads per worker) over the
  index, run as a child of this script (``--serve-child``). Per process (master, workers): ``rss``, ``pss``,
  ``uss`` (private), from ``/proc/<pid>/smaps_rollup``, and ``index_files_rss`` (resident pages of files under
  the index directory, from ``/proc/<pid>/smaps``) after warming every worker, then again after a new version is
  published (one upserted article) and every worker has switched to it. ``second_worker_adds`` = the larger
  worker USS / the current version's bytes on disk.
- ``upsert_1``: ``--single-upserts`` calls of ``Index.upsert`` with one new article each: per call seconds,
  seconds excluding the embedder, ``wchar`` and ``write_bytes`` from ``/proc/self/io`` and growth of the index
  directory (median, p99, max); ``write_fraction_of_index`` = median write_bytes / the current version's bytes.
- ``search_after_upserts``: search latency again after all the updates (fresh searcher), and the p50 ratios
  (wall and CPU) to ``search``.
- ``upsert_100``: one ``Index.upsert`` call with 100 new articles (one run). ``delete_1``: ``Index.delete`` of one
  article, ``--deletes`` times (median).
- ``disk_after_updates``: all kept versions vs the current one (``kept_vs_one``).
- ``merge``: ``Index.optimize()`` / ``merge()`` / ``compact()`` when the library has one (timed, then search
  latency again); null with a note otherwise.
- ``real_model_point`` (``--real-model-point``): a ~2,000-passage build with the real default model
  (HF_HUB_OFFLINE=1, the model loaded by the library), its build seconds and search p50 per mode.
- ``checks``: each target of the issue next to the measured value (the targets are for 1M passages).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import http.client
import importlib.metadata
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _report import emit

ROOT = Path(__file__).resolve().parent.parent
BBC = ROOT.parent / "shared" / "datasets" / "bbc-news"
EXAMPLES = ROOT / "examples" / "articles"
MODES = ("dense", "keyword", "hybrid")
K = 10
DEDUPE_COSINE = 0.97  # the searcher's near-duplicate threshold (README: near-duplicate passages are suppressed)
WARMUP_QUERIES = 20

# ------------------------------------------------------------------------------------------------------------
# Source sentences


@dataclasses.dataclass
class SourceText:
    """Real sentences to recombine, grouped by source article and category."""

    path: Path
    headlines: list[str]
    documents: list[str]  # headline + body, for the embedder's document frequencies
    sentences: list[str]
    doc_sentences: list[list[int]]  # sentence indices of each source article
    doc_category: list[int]
    categories: list[str]
    category_sentences: list[list[int]]


_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"']))\s+(?=[\"'A-Z0-9])")


def load_source(path: Path) -> SourceText:
    from semsearch import Settings, load_articles

    loaded = load_articles([path], exclude=Settings().exclude)
    headlines: list[str] = []
    documents: list[str] = []
    sentences: list[str] = []
    doc_sentences: list[list[int]] = []
    doc_category: list[int] = []
    categories: list[str] = []
    for article in sorted(loaded.articles, key=lambda a: a.id):
        mine = []
        for paragraph in article.text.split("\n\n"):
            for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                if 20 <= len(sentence) <= 600:
                    mine.append(len(sentences))
                    sentences.append(sentence)
        if not mine or not article.title.strip():
            continue
        category = article.id.split("/")[0] if "/" in article.id else (article.tags[0] if article.tags else "news")
        if category not in categories:
            categories.append(category)
        headlines.append(" ".join(article.title.split()))  # repeats are dropped below (titles must be unique)
        documents.append(article.title + "\n" + article.text)
        doc_sentences.append(mine)
        doc_category.append(categories.index(category))
    headlines = list(dict.fromkeys(headlines))
    category_sentences: list[list[int]] = [[] for _ in categories]
    for doc, cat in enumerate(doc_category):
        category_sentences[cat].extend(doc_sentences[doc])
    return SourceText(
        path, headlines, documents, sentences, doc_sentences, doc_category, categories, category_sentences
    )


def default_source() -> Path:
    return BBC if BBC.is_dir() else EXAMPLES


# ------------------------------------------------------------------------------------------------------------
# Corpus generator

SOURCES = (
    "Northern Wire",
    "Capital Times",
    "Harbour Herald",
    "Metro Daily",
    "Valley Post",
    "Coastal Courier",
    "Tech Ledger",
    "Sports Desk",
)
SOURCE_WEIGHTS = (30, 20, 15, 10, 10, 7, 5, 3)
TAG_POOL = (
    "analysis", "breaking", "interview", "opinion", "europe", "asia", "americas", "africa", "markets", "policy",
    "science", "health", "culture", "climate",
)  # fmt: skip
FIRST_DAY = dt.date(2018, 1, 1)
DAYS = 7 * 365
FILTER_HALF_WINDOW_DAYS = 90


@dataclasses.dataclass(frozen=True)
class ArticleMeta:
    source: int
    day: int


class CorpusGenerator:
    """Article ``i`` is a pure function of (source text, seed, i)."""

    def __init__(self, source: SourceText, seed: int) -> None:
        self.src = source
        self.seed = seed

    def _rng(self, i: int) -> random.Random:
        return random.Random(f"{self.seed}:{i}")

    @staticmethod
    def article_id(i: int) -> str:
        return f"bench-{i:08d}"

    @staticmethod
    def _meta(rng: random.Random) -> ArticleMeta:
        return ArticleMeta(rng.choices(range(len(SOURCES)), SOURCE_WEIGHTS)[0], rng.randrange(DAYS))

    def meta(self, i: int) -> ArticleMeta:
        """Article i's source and date without generating its text (the first draws of :meth:`_draw`)."""
        return self._meta(self._rng(i))

    def _title(self, i: int) -> str:
        # Two different real headlines, a different pair for every i < H(H-1) (then a suffix): articles with
        # equal titles would count as one article in hybrid fusion.
        h = len(self.src.headlines)
        pairs = h * max(h - 1, 1)
        a, b = i % h, (i % h + 1 + (i // h) % max(h - 1, 1)) % h
        title = f"{self.src.headlines[a]}: {self.src.headlines[b]}"
        return title if i < pairs else f"{title} ({i // pairs})"

    def _draw(self, i: int) -> tuple[ArticleMeta, int, list[list[str]]]:
        """(metadata, topic source article, paragraphs as lists of sentences) of article i."""
        rng = self._rng(i)
        meta = self._meta(rng)
        topic = rng.randrange(len(self.src.doc_sentences))
        own = self.src.doc_sentences[topic]
        category = self.src.category_sentences[self.src.doc_category[topic]]
        paragraphs = []
        for _ in range(rng.choice((2, 3, 3, 4, 4, 4, 5, 5, 6))):
            sentences = []
            for _ in range(rng.randint(1, 4)):
                roll = rng.random()
                pool = own if roll < 0.5 else category if roll < 0.8 else None
                index = rng.choice(pool) if pool is not None else rng.randrange(len(self.src.sentences))
                sentences.append(self.src.sentences[index])
            paragraphs.append(sentences)
        return meta, topic, paragraphs

    def article(self, i: int) -> Any:
        from semsearch import Article

        meta, topic, paragraphs = self._draw(i)
        rng = self._rng(-1 - i)
        category = self.src.categories[self.src.doc_category[topic]]
        tags = (category, *rng.sample(TAG_POOL, rng.randint(0, 2)))
        return Article(
            id=self.article_id(i),
            title=self._title(i),
            text="\n\n".join(" ".join(p) for p in paragraphs),
            url=f"https://news.example.com/{category}/{i}",
            published=(FIRST_DAY + dt.timedelta(days=meta.day)).isoformat(),
            source=SOURCES[meta.source],
            tags=tags,
        )

    def iter_articles(self, start: int, stop: int) -> Iterator[Any]:
        for i in range(start, stop):
            yield self.article(i)

    def write_jsonl(self, path: Path, n_articles: int, batch: int = 2000) -> dict[str, Any]:
        """Stream ``n_articles`` articles to a JSONL file, ``batch`` at a time."""
        started = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for lo in range(0, n_articles, batch):
                lines = []
                for a in self.iter_articles(lo, min(lo + batch, n_articles)):
                    record = {"id": a.id, "title": a.title, "text": a.text, "url": a.url,
                              "published": a.published, "source": a.source, "tags": list(a.tags)}  # fmt: skip
                    lines.append(json.dumps(record, ensure_ascii=False))
                fh.write("\n".join(lines) + "\n")
        return {"seconds": round(time.perf_counter() - started, 2), "bytes": path.stat().st_size}

    def query(self, i: int, rng: random.Random) -> str:
        """A sentence (half the time) or 3-6 consecutive words of one of article i's paragraphs."""
        paragraphs = self._draw(i)[2]
        sentence = rng.choice(rng.choice(paragraphs))
        if rng.random() < 0.5:
            return sentence
        words = sentence.split()
        n = min(len(words), rng.randint(3, 6))
        lo = rng.randrange(len(words) - n + 1)
        return " ".join(words[lo : lo + n])


# ------------------------------------------------------------------------------------------------------------
# Embedder

_WORD = re.compile(r"\w\w+")


class ClusteredEmbedder:
    """Deterministic clustered 384-d vectors (see the module docstring). Implements semsearch's Embedder."""

    def __init__(
        self,
        documents: Sequence[str],
        *,
        seed: int = 0,
        centres: int = 256,
        dim: int = 384,
        topic_weight: float = 3.0,
        noise: float = 0.1,
        unknown: int = 4096,
    ) -> None:
        """``documents``: the source corpus, which fixes the vocabulary, IDF and each word's topic."""
        rng = np.random.default_rng(seed)
        doc_group = rng.integers(0, centres, size=max(len(documents), 1))
        df: dict[str, int] = {}
        home: dict[str, tuple[int, int]] = {}  # word -> (count in its home document, home document)
        for d, doc in enumerate(documents):
            counts: dict[str, int] = {}
            for word in _WORD.findall(doc.lower()):
                counts[word] = counts.get(word, 0) + 1
            for word, c in counts.items():
                df[word] = df.get(word, 0) + 1
                if c > home.get(word, (0, 0))[0]:
                    home[word] = (c, d)
        words = sorted(df)
        self._vocab = {w: n for n, w in enumerate(words)}
        self._unknown = unknown
        rows = len(words) + unknown
        counts_arr = np.zeros(rows, dtype=np.float64)
        counts_arr[: len(words)] = [df[w] for w in words]
        self._idf = np.log(1.0 + len(documents) / (counts_arr + 0.5)).astype(np.float32)
        group = np.empty(rows, dtype=np.int64)
        group[: len(words)] = doc_group[[home[w][1] for w in words]]
        group[len(words) :] = rng.integers(0, centres, size=unknown)
        self._centres = _unit(rng.standard_normal((centres, dim), dtype=np.float32))
        own = _unit(rng.standard_normal((rows, dim), dtype=np.float32))
        self._words = _unit(topic_weight * self._centres[group] + own)
        self._noise = _unit(rng.standard_normal((4096, dim), dtype=np.float32))
        self._noise_weight = noise
        self._topic_weight = topic_weight
        self._dim = dim
        self._model_id = f"bench/clustered-{dim}d-{centres}c-seed{seed}"
        self.precision = "fp32"
        self.seconds = 0.0
        """Time spent in embed_documents and count_tokens (what build time excludes)."""
        self.documents_embedded = 0
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return 256

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        started = time.perf_counter()
        out = [len(t.split()) + 2 for t in texts]
        self._spent(started, 0)
        return out

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        started = time.perf_counter()
        out = np.concatenate(
            [self._encode(texts[lo : lo + 4096]) for lo in range(0, len(texts), 4096)]
            or [np.zeros((0, self._dim), dtype=np.float32)]
        )
        self._spent(started, len(texts))
        return out

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def _spent(self, started: float, documents: int) -> None:
        with self._lock:
            self.seconds += time.perf_counter() - started
            self.documents_embedded += documents

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        n = len(texts)
        if n == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        vocab, base = self._vocab, len(self._vocab)
        ids: list[int] = []
        indptr = [0]
        for text in texts:
            words = _WORD.findall(text.lower())
            row = [vocab.get(w, -1) for w in words]
            if -1 in row:
                row = [
                    r if r >= 0 else base + zlib.crc32(w.encode()) % self._unknown
                    for r, w in zip(row, words, strict=True)
                ]
            ids.extend(row)
            indptr.append(len(ids))
        idx = np.asarray(ids, dtype=np.int64)
        ptr = np.asarray(indptr, dtype=np.int64)
        bag = np.asarray(
            csr_matrix((self._idf[idx], idx, ptr), shape=(n, len(self._idf))) @ self._words, dtype=np.float32
        )
        bag = _unit(bag)
        noise = self._noise[np.array([zlib.crc32(t.encode()) for t in texts], dtype=np.int64) % len(self._noise)]
        return _unit(bag + self._noise_weight * noise)

    def describe(self) -> dict[str, Any]:
        return {
            "class": "ClusteredEmbedder (scripts/bench_scale.py)",
            "model_id": self.model_id,
            "dim": self.dim,
            "centres": len(self._centres),
            "vocabulary": len(self._vocab),
            "formula": "unit(unit(sum idf(w) * word(w)) + noise * noise[hash(text)]); "
            "word(w) = unit(topic_weight * centre[topic(w)] + random(w)); topic(w) = the centre of the source "
            "article where w is most frequent",
            "topic_weight": self._topic_weight,
            "noise": self._noise_weight,
        }


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------------
# Measurement helpers


def percentiles(ms: Sequence[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(np.mean(ms)), 3),
        "max_ms": round(float(np.max(ms)), 3),
    }


def summary(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    return {
        "runs": len(values),
        "median": round(float(np.median(values)), digits),
        "p99": round(float(np.percentile(values, 99)), digits),
        "max": round(float(np.max(values)), digits),
    }


def disk_usage(path: Path | None) -> dict[str, int] | None:
    """Allocated bytes (as ``du``) and apparent bytes of every file under ``path``."""
    if path is None or not path.exists():
        return None
    allocated = apparent = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(root, name))
                allocated += st.st_blocks * 512
                apparent += st.st_size
                files += 1
    return {"bytes": allocated, "apparent_bytes": apparent, "files": files}


def proc_io() -> dict[str, int]:
    lines = Path("/proc/self/io").read_text().splitlines()
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


def current_version_usage(index_dir: Path, embedder: Any) -> dict[str, int] | None:
    """Disk usage of the published version: its own directory plus every segment it names (``version.path`` and
    ``version.segments[i].path``; a library whose version is one directory has no segments). None when there is
    no index."""
    from semsearch import Searcher

    with contextlib.suppress(Exception), Searcher.open(index_dir, embedder=embedder) as searcher:
        version = searcher.version
        paths = [Path(version.path)] + [Path(s.path) for s in getattr(version, "segments", [])]
        usages = [disk_usage(p) or {} for p in paths]
        return {key: sum(u.get(key, 0) for u in usages) for key in ("bytes", "apparent_bytes")}
    return None


VECTOR_FILES = {"vectors.npy", "ann.faiss", "vectors.faiss"}
"""Files holding vectors (for ``vector_files_rss``), in either index format."""


def memory_of(pid: int, index_dir: Path | None = None) -> dict[str, int]:
    """rss, pss, uss (private) and swap from smaps_rollup; ``index_files_rss``: resident pages of files mapped
    from under ``index_dir``."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            fields[parts[0][:-1]] = int(parts[1]) * 1024
    out = {
        "rss": fields.get("Rss", 0),
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
        "swap": fields.get("Swap", 0),
    }
    if index_dir is not None:
        root = str(index_dir.resolve())
        total = vectors = 0
        current = is_vector = False
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split(maxsplit=5)
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                current = len(head) == 6 and head[5].startswith(root)
                is_vector = current and head[5].rsplit("/", 1)[-1] in VECTOR_FILES
            elif current and head and head[0] == "Rss:":
                total += int(head[1]) * 1024
                vectors += int(head[1]) * 1024 if is_vector else 0
        out["index_files_rss"] = total
        out["vector_files_rss"] = vectors
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with contextlib.suppress(OSError):
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "model name" in ln), None)
        info["cpu_flags_bf16"] = " amx_bf16" in cpu or " avx512_bf16" in cpu
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["memory_bytes"] = int(mem[1]) * 1024
    versions = {}
    for package in ("semsearch", "numpy", "faiss-cpu", "bm25s", "scipy", "flask", "gunicorn", "torch"):
        with contextlib.suppress(Exception):
            versions[package] = importlib.metadata.version(package)
    info["versions"] = versions
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    return info


def settings_record(settings: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(settings), default=str))


# ------------------------------------------------------------------------------------------------------------
# Phases


def calibrate(gen: CorpusGenerator, embedder: ClusteredEmbedder, settings: Any, workdir: Path) -> float:
    """Passages per article after the library's chunking, from a pilot build of 400 articles."""
    from semsearch import build_index

    pilot = workdir / "pilot"
    shutil.rmtree(pilot, ignore_errors=True)
    gen.write_jsonl(pilot / "pilot.jsonl", 400)
    report = build_index([pilot / "pilot.jsonl"], pilot / "index", settings, embedder=embedder)
    shutil.rmtree(pilot, ignore_errors=True)
    return report.passages / report.articles


def phase_build(jsonl: Path, index_dir: Path, settings: Any, embedder: ClusteredEmbedder) -> dict[str, Any]:
    """Full build through ``build_index`` on the JSONL file; embedding time reported and excluded."""
    from semsearch import build_index

    embedded_before = embedder.seconds
    started = time.perf_counter()
    report = build_index([jsonl], index_dir, settings, embedder=embedder)
    wall = time.perf_counter() - started
    embed = embedder.seconds - embedded_before
    return {
        "method": "build_index([corpus.jsonl]) (= semsearch index corpus.jsonl), one run",
        "runs": 1,
        "articles": report.articles,
        "passages": report.passages,
        "seconds_total": round(wall, 2),
        "library_seconds": round(report.seconds, 2),
        "embedder_seconds": round(embed, 2),
        "library_embed_seconds": round(report.embed_seconds, 2),
        "seconds_excluding_embedding": round(wall - embed, 2),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "version_id": report.version_id,
    }


def make_queries(gen: CorpusGenerator, n_articles: int, n: int, seed: int) -> list[tuple[int, str]]:
    """(article number, query text) pairs from random articles of the corpus."""
    rng = random.Random(f"queries:{seed}")
    out = []
    for _ in range(n):
        i = rng.randrange(n_articles)
        out.append((i, gen.query(i, rng)))
    return out


def time_modes(
    searcher: Any, queries: Sequence[str], filters: Sequence[Any] | None = None
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[int]]]:
    """Per mode: wall ms, CPU ms of this thread, and result count of each query; modes interleaved query by
    query. (The machine is shared: CPU time is far less sensitive to other load than wall time.)"""
    times: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    counts: dict[str, list[int]] = {m: [] for m in MODES}
    gc.collect()
    for j, q in enumerate(queries):
        f = filters[j] if filters is not None else None
        for m in MODES:
            started, started_cpu = time.perf_counter(), time.thread_time()
            hits = searcher.search(q, k=K, mode=m, filters=f)
            times[m].append((time.perf_counter() - started) * 1000)
            cpu[m].append((time.thread_time() - started_cpu) * 1000)
            counts[m].append(len(hits))
    return times, cpu, counts


def latency(wall: list[float], cpu: list[float]) -> dict[str, Any]:
    out = percentiles(wall)
    out["cpu_p50_ms"] = round(float(np.percentile(cpu, 50)), 3)
    out["cpu_p99_ms"] = round(float(np.percentile(cpu, 99)), 3)
    return out


def phase_search(
    searcher: Any, sets: dict[str, list[tuple[int, str]]], metas: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, Any]:
    """In-process latency per mode after a warm-up, on ``sets["measured"]``; with ``metas``, also filtered (source +
    date window around the query's article) on ``sets["filtered"]``. Each set is distinct (query-dependent caches,
    such as stems for highlights, must not favour a later phase)."""
    from semsearch import SearchFilters

    time_modes(searcher, [q for _, q in sets["warmup"]])
    times, cpu, _ = time_modes(searcher, [q for _, q in sets["measured"]])
    out: dict[str, Any] = {
        "k": K,
        "queries": len(sets["measured"]),
        "warmup_queries": len(sets["warmup"]),
        "highlights": True,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    out.update({m: latency(times[m], cpu[m]) for m in MODES})
    if metas is None:
        return out
    sources, days = metas
    filters, matching = [], []
    queries = sets["filtered"]
    for i, _ in queries:
        lo, hi = max(0, days[i] - FILTER_HALF_WINDOW_DAYS), days[i] + FILTER_HALF_WINDOW_DAYS
        filters.append(
            SearchFilters(
                source=(SOURCES[sources[i]],),
                published_after=(FIRST_DAY + dt.timedelta(days=int(lo))).isoformat(),
                published_before=(FIRST_DAY + dt.timedelta(days=int(hi))).isoformat(),
            )
        )
        matching.append(int(np.count_nonzero((sources == sources[i]) & (days >= lo) & (days <= hi))))
    ftimes, fcpu, fcounts = time_modes(searcher, [q for _, q in queries], filters)
    eligible = [j for j, m in enumerate(matching) if m >= K]
    filtered: dict[str, Any] = {
        "filter": f"source + published within +-{FILTER_HALF_WINDOW_DAYS} days of the query's article",
        "matching_articles_median": int(np.median(matching)),
        "queries_with_at_least_k_matching_articles": len(eligible),
    }
    for m in MODES:
        filtered[m] = {**latency(ftimes[m], fcpu[m]), "short_results": sum(1 for j in eligible if fcounts[m][j] < K)}
    filtered["assert_k_results_dense_hybrid"] = (
        "ok" if filtered["dense"]["short_results"] == 0 and filtered["hybrid"]["short_results"] == 0 else "FAILED"
    )
    out["filtered"] = filtered
    return out


def exact_vectors(
    searcher: Any, gen: CorpusGenerator, n_articles: int, embedder: ClusteredEmbedder
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted passage ids, vectors) of every stored passage: passages read through ``Searcher.article``, embedded
    text rebuilt as the library does (title + newline + whitespace-normalised passage), embedded again."""
    ids: list[int] = []
    chunks: list[np.ndarray] = []
    batch_ids: list[int] = []
    texts: list[str] = []
    for i in range(n_articles):
        stored = searcher.article(gen.article_id(i))
        for p in stored.passages:
            batch_ids.append(p.id)
            texts.append(f"{stored.article.title}\n{' '.join(p.text.split())}")
        if len(texts) >= 8192 or i == n_articles - 1:
            chunks.append(embedder.embed_queries(texts))  # embed_queries: not counted as document embedding
            ids.extend(batch_ids)
            batch_ids, texts = [], []
    id_array = np.asarray(ids, dtype=np.int64)
    vectors = np.concatenate(chunks)
    order = np.argsort(id_array, kind="stable")
    return id_array[order], np.ascontiguousarray(vectors[order])


def _dedupe(order: np.ndarray, vectors: np.ndarray, k: int) -> list[int]:
    window = order[: max(2 * k, k + 20)]
    v = vectors[window]
    duplicate = (v @ v.T) >= DEDUPE_COSINE
    kept: list[int] = []
    for j in range(len(window)):
        if kept and duplicate[j, kept].any():
            continue
        kept.append(j)
        if len(kept) == k:
            break
    return [int(window[j]) for j in kept]


def phase_recall(
    searcher: Any, gen: CorpusGenerator, n_articles: int, embedder: ClusteredEmbedder, queries: Sequence[str]
) -> dict[str, Any]:
    """Dense recall@10 of ``Searcher.search`` against exact brute force over the recomputed vectors."""
    started = time.perf_counter()
    ids, vectors = exact_vectors(searcher, gen, n_articles, embedder)
    recompute = time.perf_counter() - started
    qv = embedder.embed_queries(list(queries))
    recalls, raw, reproduced, checked = [], [], 0, 0
    for q, v in zip(queries, qv, strict=True):
        scores = vectors @ v
        window = max(2 * K, K + 20)
        top = np.argpartition(-scores, window)[:window]
        top = top[np.argsort(-scores[top], kind="stable")]
        exact = {int(ids[r]) for r in _dedupe(top, vectors, K)}
        exact_raw = {int(ids[r]) for r in top[:K]}
        hits = searcher.search(q, k=K, mode="dense", highlights=False)
        got = {h.passage_id for h in hits}
        recalls.append(len(got & exact) / K)
        raw.append(len(got & exact_raw) / K)
        for h in hits:
            row = int(np.searchsorted(ids, h.passage_id))
            checked += 1
            if row < len(ids) and ids[row] == h.passage_id and abs(float(scores[row]) - float(h.dense_score)) < 1e-4:
                reproduced += 1
    return {
        "k": K,
        "queries": len(queries),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "recall_at_10_min": round(float(np.min(recalls)), 2),
        "recall_at_10_raw": round(float(np.mean(raw)), 4),
        "exact": "numpy brute force over vectors recomputed from the stored passages (Searcher.article)",
        "passages_recomputed": len(ids),
        "recompute_seconds": round(recompute, 1),
        "vectors_reproduced": round(reproduced / max(checked, 1), 4),
    }


def _upsert_once(index: Any, articles: list[Any], embedder: ClusteredEmbedder, index_dir: Path) -> dict[str, Any]:
    du_before = disk_usage(index_dir)
    io_before = proc_io()
    embed_before = embedder.seconds
    started = time.perf_counter()
    report = index.upsert(articles)
    seconds = time.perf_counter() - started
    io_after = proc_io()
    du_after = disk_usage(index_dir)
    return {
        "seconds": seconds,
        "seconds_excluding_embedding": seconds - (embedder.seconds - embed_before),
        "wchar": io_after["wchar"] - io_before["wchar"],
        "write_bytes": io_after["write_bytes"] - io_before["write_bytes"],
        "dir_growth": (du_after or {}).get("bytes", 0) - (du_before or {}).get("bytes", 0),
        "passages_embedded": report.passages_embedded,
        "version_id": report.version_id,
        "merges": len(getattr(report, "merges", ())),
        "merge_seconds": sum(m.seconds for m in getattr(report, "merges", ())),
    }


def _io_summary(runs: list[dict[str, Any]], index_bytes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("seconds", "seconds_excluding_embedding"):
        out[key] = summary([r[key] for r in runs])
    if runs and "merges" in runs[0]:
        # Tiered merges run inside the update call that fills a tier (after publishing it).
        out["merges"] = sum(r["merges"] for r in runs)
        out["seconds_excluding_merges"] = summary([r["seconds"] - r["merge_seconds"] for r in runs])
    for key in ("wchar", "write_bytes", "dir_growth"):
        values = [r[key] for r in runs]
        out[key] = {"median": int(np.median(values)), "p99": int(np.percentile(values, 99)), "max": int(max(values))}
    out["write_fraction_of_index"] = round(out["write_bytes"]["median"] / max(index_bytes, 1), 4)
    out["index_bytes_reference"] = index_bytes
    return out


def phase_upserts(
    index_dir: Path, settings: Any, gen: CorpusGenerator, embedder: ClusteredEmbedder, next_id: int, args: Any
) -> tuple[dict[str, Any], int]:
    """Single-article upserts (each a new article), one 100-article upsert, single-article deletes."""
    from semsearch import Index

    index = Index(index_dir, settings, embedder=embedder)
    index_bytes = (current_version_usage(index_dir, embedder) or {}).get("bytes", 0)
    out: dict[str, Any] = {}
    singles = []
    for _ in range(args.single_upserts):
        singles.append(_upsert_once(index, [gen.article(next_id)], embedder, index_dir))
        next_id += 1
    out["upsert_1"] = _io_summary(singles, index_bytes) if singles else None
    out["upsert_1_seconds_each"] = [round(r["seconds"], 3) for r in singles]
    batch = [gen.article(i) for i in range(next_id, next_id + 100)]
    next_id += 100
    out["upsert_100"] = _io_summary([_upsert_once(index, batch, embedder, index_dir)], index_bytes)
    deletes = []
    for j in range(args.deletes):
        victim = gen.article_id(j * 7 + 3)  # articles of the original corpus
        du_before, io_before = disk_usage(index_dir), proc_io()
        started = time.perf_counter()
        report = index.delete([victim])
        seconds = time.perf_counter() - started
        io_after, du_after = proc_io(), disk_usage(index_dir)
        if report.removed != 1:
            raise RuntimeError(f"delete of {victim} removed {report.removed} articles")
        deletes.append(
            {
                "seconds": seconds,
                "seconds_excluding_embedding": seconds,
                "wchar": io_after["wchar"] - io_before["wchar"],
                "write_bytes": io_after["write_bytes"] - io_before["write_bytes"],
                "dir_growth": (du_after or {}).get("bytes", 0) - (du_before or {}).get("bytes", 0),
            }
        )
    out["delete_1"] = _io_summary(deletes, index_bytes) if deletes else None
    return out, next_id


def phase_merge(index_dir: Path, settings: Any, embedder: ClusteredEmbedder) -> dict[str, Any] | None:
    """Time the library's merge/optimize call if it has one; None otherwise."""
    from semsearch import Index

    index = Index(index_dir, settings, embedder=embedder)
    for name in ("optimize", "merge", "compact"):
        method = getattr(index, name, None)
        if callable(method):
            io_before = proc_io()
            started = time.perf_counter()
            method()
            seconds = time.perf_counter() - started
            io_after = proc_io()
            return {
                "call": f"Index.{name}()",
                "runs": 1,
                "seconds": round(seconds, 3),
                "write_bytes": io_after["write_bytes"] - io_before["write_bytes"],
                "disk_after": disk_usage(index_dir),
            }
    return None


# -- server ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    """One request on a fresh connection to 127.0.0.1."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        try:
            return response.status, json.loads(body)
        except ValueError:
            return response.status, {}
    finally:
        conn.close()


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(x) for x in (task / "children").read_text().split())
    return sorted(set(out))


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.3) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if predicate():
                return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def warm_workers(
    port: int, workers: list[int], queries: Sequence[str], min_requests: int = 300, timeout: float = 300.0
) -> int:
    """Send searches (every mode) from 4 threads on fresh connections: at least ``min_requests``, and until every
    worker has used CPU time (so both have served searches)."""
    before = {w: cpu_ticks(w) for w in workers}
    sent = 0
    deadline = time.monotonic() + timeout
    while True:
        lo = (sent // len(MODES)) % len(queries)
        paths = [
            "/search?" + urllib.parse.urlencode({"q": q, "k": K, "mode": m})
            for q in queries[lo : lo + 10]
            for m in MODES
        ]
        threads = [threading.Thread(target=http_get, args=(port, p)) for p in paths]
        for j in range(0, len(threads), 4):
            for t in threads[j : j + 4]:
                t.start()
            for t in threads[j : j + 4]:
                t.join()
        sent += len(paths)
        served = all(cpu_ticks(w) - before[w] >= 3 for w in workers)
        if (served and sent >= min_requests) or time.monotonic() > deadline:
            return sent


def phase_server(
    args: Any,
    index_dir: Path,
    settings: Any,
    gen: CorpusGenerator,
    embedder: ClusteredEmbedder,
    queries: Sequence[str],
    next_id: int,
    workdir: Path,
) -> tuple[dict[str, Any], int]:
    """Memory of a 2-worker server before and after a reload to a newly published version."""
    from semsearch import Index

    port = free_port()
    log_path = workdir / "server.log"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus")}
    shutil.rmtree(workdir / "prometheus", ignore_errors=True)
    (workdir / "prometheus").mkdir(parents=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-child", "--index-dir", str(index_dir),
           "--port", str(port), "--source", str(gen.src.path), "--seed", str(args.seed)]  # fmt: skip
    out: dict[str, Any] = {"workers": 2, "threads": 4, "log": str(log_path)}
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=ROOT)
        try:
            started = time.monotonic()
            wait_until(lambda: http_get(port, "/readyz", 5)[0] == 200, args.server_timeout, "/readyz")
            out["ready_seconds"] = round(time.monotonic() - started, 1)
            workers = wait_for_workers(server.pid, 2)
            out["warm_requests"] = warm_workers(port, workers, queries)
            index_bytes = (current_version_usage(index_dir, embedder) or {}).get("bytes", 0)
            out["index_version_bytes"] = index_bytes
            out["before_reload"] = server_memory(server.pid, workers, index_dir, index_bytes)

            article = gen.article(next_id)
            next_id += 1
            report = Index(index_dir, settings, embedder=embedder).upsert([article])
            published = time.monotonic()
            new = report.version_id

            def switched() -> bool:
                # Each fresh connection may reach either worker; require 8 answers in a row from the new version.
                return all(http_get(port, "/stats", 10)[1].get("index_version") == new for _ in range(8))

            wait_until(switched, args.server_timeout, "every worker to serve the new version", interval=0.5)
            out["reload_seconds"] = round(time.monotonic() - published, 2)
            out["reload_runs"] = 1
            out["warm_requests_after"] = warm_workers(port, workers, list(reversed(queries)))
            index_bytes = (current_version_usage(index_dir, embedder) or {}).get("bytes", 0)
            out["after_reload"] = server_memory(server.pid, workers, index_dir, index_bytes)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)
    return out, next_id


def wait_for_workers(pid: int, n: int, timeout: float = 120.0) -> list[int]:
    found: list[int] = []

    def ready() -> bool:
        nonlocal found
        found = children_of(pid)
        return len(found) >= n

    wait_until(ready, timeout, f"{n} server workers")
    return found[:n]


def server_memory(master: int, workers: list[int], index_dir: Path, index_bytes: int) -> dict[str, Any]:
    per = {"master": memory_of(master, index_dir)}
    for j, w in enumerate(workers, start=1):
        per[f"worker_{j}"] = memory_of(w, index_dir)
    worker_uss = [per[f"worker_{j}"]["uss"] for j in range(1, len(workers) + 1)]
    per["second_worker_adds_bytes"] = max(worker_uss)
    per["second_worker_adds"] = round(max(worker_uss) / max(index_bytes, 1), 4)
    per["total_pss"] = sum(v["pss"] for k, v in per.items() if isinstance(v, dict))
    return per


def serve_child(args: Any) -> int:
    """``--serve-child``: run the 2-worker server with the clustered embedder (blocks until SIGTERM)."""
    from semsearch import Settings
    from semsearch.serve.gunicorn import serve

    source = load_source(args.source)
    embedder = ClusteredEmbedder(source.documents, seed=args.seed)
    serve(Settings(index_dir=args.index_dir), port=args.port, workers=2, threads=4, embedder=embedder)
    return 0


# -- real model ------------------------------------------------------------------------------------------------


def phase_real_model(args: Any, gen: CorpusGenerator, ratio: float, workdir: Path) -> dict[str, Any]:
    """A ~2,000-passage build with the default model (loaded by the library, offline) and search p50 per mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from semsearch import Searcher, Settings, build_index

    n_articles = max(1, round(args.real_model_passages / ratio))
    base = workdir / "real-model"
    shutil.rmtree(base, ignore_errors=True)
    gen.write_jsonl(base / "corpus.jsonl", n_articles)
    settings = Settings(index_dir=base / "index")
    started = time.perf_counter()
    report = build_index([base / "corpus.jsonl"], base / "index", settings)
    build_seconds = time.perf_counter() - started
    queries = [q for _, q in make_queries(gen, n_articles, min(args.queries, 100) + WARMUP_QUERIES, args.seed + 1)]
    with Searcher.open(base / "index", settings) as searcher:
        time_modes(searcher, queries[:WARMUP_QUERIES])
        times, cpu, _ = time_modes(searcher, queries[WARMUP_QUERIES:])
        backend = getattr(getattr(searcher.embedder, "info", None), "query_backend", None)
        model = searcher.manifest.model_id
    out = {
        "model": model,
        "query_backend": backend,
        "articles": report.articles,
        "passages": report.passages,
        "build_seconds_with_model": round(build_seconds, 2),
        "library_embed_seconds": round(report.embed_seconds, 2),
        "build_runs": 1,
        **{m: latency(times[m], cpu[m]) for m in MODES},
        "note": "cpu_p*_ms: this thread only; ONNX query embedding runs on it, the torch path would not",
    }
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------------------
# Targets


def checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue (for 1M passages) next to what this run measured."""

    def get(*path: str) -> Any:
        node: Any = report
        for key in path:
            if not isinstance(node, dict) or node.get(key) is None:
                return None
            node = node[key]
        return node

    def row(target: str, value: Any, limit: float, higher_is_better: bool = False, cpu: Any = None) -> dict[str, Any]:
        met = None if value is None else (value >= limit if higher_is_better else value <= limit)
        out = {"target": target, "measured": value, "met_at_this_size": met}
        if cpu is not None:
            out["measured_cpu_time"] = cpu
        return out

    server_after = get("server", "after_reload", "second_worker_adds")
    server_before = get("server", "before_reload", "second_worker_adds")
    worst_server = None if server_after is None else max(server_after, server_before or 0)
    ratio = get("search_after_merge", "p50_ratio_after_upserts_to_merged") or get(
        "search_after_upserts", "p50_ratio_to_before"
    )
    worst_ratio = max(ratio.values()) if ratio else None
    cpu_ratio = get("search_after_merge", "cpu_p50_ratio_after_upserts_to_merged") or get(
        "search_after_upserts", "cpu_p50_ratio_to_before"
    )
    vectors_rss = max(
        (get("server", phase, worker, "vector_files_rss") or 0)
        for phase in ("before_reload", "after_reload")
        for worker in ("worker_1", "worker_2")
    ) or get("search", "this_process_memory", "vector_files_rss")
    vectors_gb = None if vectors_rss is None else round(vectors_rss / 1e9, 3)
    return [
        row(
            "upsert of 1 article <= 1 s (model excluded)", get("upsert_1", "seconds_excluding_embedding", "median"), 1.0
        ),
        row("upsert of 1 article writes <= 1% of the index", get("upsert_1", "write_fraction_of_index"), 0.01),
        row(
            "search p50 after 100 upserts <= 1.5x merged (worst mode)",
            worst_ratio,
            1.5,
            cpu=max(cpu_ratio.values()) if cpu_ratio else None,
        ),
        row("dense recall@10 >= 0.95", get("recall", "recall_at_10"), 0.95, higher_is_better=True),
        row(
            "in-process dense p50 <= 5 ms",
            get("search", "dense", "p50_ms"),
            5.0,
            cpu=get("search", "dense", "cpu_p50_ms"),
        ),
        row(
            "in-process hybrid p50 <= 15 ms",
            get("search", "hybrid", "p50_ms"),
            15.0,
            cpu=get("search", "hybrid", "cpu_p50_ms"),
        ),
        row("resident vector memory <= 0.6 GB (a worker's resident pages of vector files, GB)", vectors_gb, 0.6),
        row("kept versions <= 1.2x one version", get("disk_after_updates", "kept_vs_one"), 1.2),
        row("second worker adds <= 15% of the index (worst of before/after reload)", worst_server, 0.15),
    ]


# ------------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from semsearch import Searcher, Settings

    workdir: Path = args.workdir or ROOT / "bench-results" / f"scale-{args.passages}"
    workdir.mkdir(parents=True, exist_ok=True)
    index_dir = workdir / "index"
    shutil.rmtree(index_dir, ignore_errors=True)
    report: dict[str, Any] = {
        "benchmark": "bench_scale",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    report["machine"] = machine_info()
    settings = Settings(index_dir=index_dir)
    report["settings"] = settings_record(settings)

    source_path = args.source or default_source()
    source = load_source(source_path)
    gen = CorpusGenerator(source, args.seed)
    embedder = ClusteredEmbedder(source.documents, seed=args.seed)
    report["embedder"] = embedder.describe()
    log(f"source {source_path}: {len(source.documents)} articles, {len(source.sentences)} sentences")

    ratio = calibrate(gen, embedder, settings, workdir)
    n_articles = max(1, round(args.passages / ratio))
    jsonl = workdir / "corpus.jsonl"
    generated = gen.write_jsonl(jsonl, n_articles)
    corpus: dict[str, Any] = {
        "source": str(source_path),
        "source_articles": len(source.documents),
        "distinct_headlines": len(source.headlines),
        "source_sentences": len(source.sentences),
        "seed": args.seed,
        "passages_requested": args.passages,
        "pilot_passages_per_article": round(ratio, 3),
        "articles": n_articles,
        "jsonl_bytes": generated["bytes"],
        "generate_seconds": generated["seconds"],
    }
    report["corpus"] = corpus
    log(f"generated {n_articles} articles in {generated['seconds']} s; building")

    build = phase_build(jsonl, index_dir, settings, embedder)
    corpus["passages"] = build["passages"]
    corpus["passages_per_article"] = round(build["passages"] / max(build["articles"], 1), 3)
    build["disk"] = {"index_dir": disk_usage(index_dir), "current_version": current_version_usage(index_dir, embedder)}
    report["build"] = build
    if not args.keep:
        jsonl.unlink()
    log(f"built {build['passages']} passages in {build['seconds_total']} s")

    metas_list = [gen.meta(i) for i in range(n_articles)]
    metas = (np.array([m.source for m in metas_list]), np.array([m.day for m in metas_list]))
    sets = {
        "warmup": make_queries(gen, n_articles, max(WARMUP_QUERIES, args.queries // 2), args.seed + 1),
        "measured": make_queries(gen, n_articles, args.queries, args.seed + 2),
        "filtered": make_queries(gen, n_articles, args.queries, args.seed + 3),
    }
    measured = sets["measured"]
    with Searcher.open(index_dir, settings, embedder=embedder) as searcher:
        report["search"] = phase_search(searcher, sets, metas)
        report["search"]["this_process_memory"] = memory_of(os.getpid(), index_dir)
        log(f"search: { {m: report['search'][m]['p50_ms'] for m in MODES} }")
        report["recall"] = phase_recall(searcher, gen, n_articles, embedder, [q for _, q in measured])
        log(f"recall@10 {report['recall']['recall_at_10']}")

    next_id = n_articles
    if args.skip_server:
        report["server"] = None
    else:
        log("server phase")
        report["server"], next_id = phase_server(
            args, index_dir, settings, gen, embedder, [q for _, q in measured], next_id, workdir
        )

    log(f"{args.single_upserts} single-article upserts, one of 100, {args.deletes} deletes")
    updates, next_id = phase_upserts(index_dir, settings, gen, embedder, next_id, args)
    report.update(updates)

    log("search after updates")
    with Searcher.open(index_dir, settings, embedder=embedder) as searcher:
        sets_after = {**sets, "measured": make_queries(gen, n_articles, args.queries, args.seed + 4)}
        after = phase_search(searcher, sets_after, None)
        after["segments"] = len(getattr(searcher.version, "segments", []))
    before = report["search"]
    after["p50_ratio_to_before"] = {m: round(after[m]["p50_ms"] / before[m]["p50_ms"], 3) for m in MODES}
    after["cpu_p50_ratio_to_before"] = {m: round(after[m]["cpu_p50_ms"] / before[m]["cpu_p50_ms"], 3) for m in MODES}
    after["note"] = f"after {args.single_upserts} single-article upserts, the 100-article upsert and the deletes"
    report["search_after_upserts"] = after

    kept, one = disk_usage(index_dir), current_version_usage(index_dir, embedder)
    from semsearch import Index

    report["disk_after_updates"] = {
        "index_dir": kept,
        "current_version": one,
        "versions_kept": len(Index(index_dir).versions()),
        "kept_vs_one": round(kept["bytes"] / one["bytes"], 3) if kept and one else None,
    }

    merge = phase_merge(index_dir, settings, embedder)
    report["merge"] = merge
    if merge is None:
        report["merge_note"] = (
            "the library has no merge/optimize call (Index.optimize/merge/compact): every upsert and delete "
            "already writes a complete, fully merged version"
        )
    else:
        with Searcher.open(index_dir, settings, embedder=embedder) as searcher:
            sets_merged = {**sets, "measured": make_queries(gen, n_articles, args.queries, args.seed + 5)}
            merged = report["search_after_merge"] = phase_search(searcher, sets_merged, None)
        updated = report["search_after_upserts"]
        merged["p50_ratio_after_upserts_to_merged"] = {
            m: round(updated[m]["p50_ms"] / merged[m]["p50_ms"], 3) for m in MODES
        }
        merged["cpu_p50_ratio_after_upserts_to_merged"] = {
            m: round(updated[m]["cpu_p50_ms"] / merged[m]["cpu_p50_ms"], 3) for m in MODES
        }

    if args.real_model_point:
        log("real model point")
        report["real_model_point"] = phase_real_model(args, gen, ratio, workdir)

    report["checks"] = checks(report)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if not args.keep:
        shutil.rmtree(index_dir, ignore_errors=True)
    return report


def log(message: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="default: bench-results/scale-<passages>")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", type=Path, default=None, help="default: ../shared/datasets/bbc-news if present")
    parser.add_argument("--single-upserts", type=int, default=100)
    parser.add_argument("--deletes", type=int, default=5)
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--server-timeout", type=float, default=600.0, help="bound on each server wait")
    parser.add_argument("--real-model-point", action="store_true")
    parser.add_argument("--real-model-passages", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the generated corpus and index")
    parser.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        return serve_child(args)
    if args.real_model_point:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = run(args)
    emit(report, args.out)
    failed = report["search"].get("filtered", {}).get("assert_k_results_dense_hybrid") == "FAILED"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
