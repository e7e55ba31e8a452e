"""Keyword postings of one immutable segment: writing, reading and merging them (scoring is
:mod:`semsearch.index.bm25`).

Why our own postings rather than one bm25s index per segment: bm25s stores per-document score contributions that
bake in its own document count and average length, so the scores of two bm25s indexes cannot be combined into the
scores of one index over all live passages. Here a segment stores only what does not depend on the rest of the
version (term frequencies and document lengths); the statistics of the whole version are applied at query time.

Segment layout (plain ``.npy`` files, no pickle, all opened with ``mmap_mode="r"`` so the server workers share
the pages):

* ``vocab.npy`` (uint8): the terms' UTF-8 bytes, concatenated in byte order; ``vocab_offsets.npy`` (int64,
  terms + 1) delimits them; ``vocab_keys.npy`` (``S16``): each term's first 16 bytes, so looking up all query terms
  is one ``np.searchsorted`` (and a byte comparison only for a term of 16 bytes or more), with no Python dict of the
  vocabulary (a dict of a million terms would cost each worker ~100 MB and a second at every reload);
* ``indptr.npy`` (int64, terms + 1), ``rows.npy`` (int32), ``tf.npy`` (uint8, or uint16/uint32 when a term occurs
  more often in one passage): the postings in term-major order (CSC), rows ascending within a term;
* ``doc_len.npy`` (int32): the number of analysed terms of each row;
* ``postings.json``: counts (docs, terms, postings, total length) and the analysis it was built with.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import _TOKEN, STEMMER, stemmer, stopwords

POSTINGS_FORMAT = 1
_BLOB = "vocab.npy"
_OFFSETS = "vocab_offsets.npy"
_KEYS = "vocab_keys.npy"
_KEY_BYTES = 16
_INDPTR = "indptr.npy"
_ROWS = "rows.npy"
_TF = "tf.npy"
_DOC_LEN = "doc_len.npy"
_INFO = "postings.json"


# --------------------------------------------------------------------------------------------------- writing


def _analyse_batch(texts: Sequence[str]) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """(sorted UTF-8 terms, term id of every token in text order, tokens per text): the terms of
    :func:`semsearch.index.analysis.analyse`, but each distinct word is stemmed once for the whole batch (as bm25s
    does), which makes indexing several times faster than analysing text by text."""
    stop = stopwords()
    findall = _TOKEN.findall
    word_ids: dict[str, int] = {}
    flat: list[int] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [word_ids.setdefault(w, len(word_ids)) for w in findall(text.lower()) if w not in stop]
        flat.extend(ids)
        lengths[i] = len(ids)
    stems = stemmer().stemWords(list(word_ids)) if word_ids else []
    terms = sorted({s.encode("utf-8") for s in stems})
    term_id = {t: i for i, t in enumerate(terms)}
    word_to_term = np.fromiter((term_id[s.encode("utf-8")] for s in stems), dtype=np.int64, count=len(stems))
    tokens = word_to_term[np.asarray(flat, dtype=np.int64)] if flat else np.zeros(0, dtype=np.int64)
    return terms, tokens, lengths


def _tf_dtype(max_tf: int) -> type[np.unsignedinteger[Any]]:
    """The smallest unsigned type holding every term frequency (uint8 in practice: a passage rarely repeats a term
    255 times), which keeps the postings at 5 bytes each."""
    if max_tf <= np.iinfo(np.uint8).max:
        return np.uint8
    if max_tf <= np.iinfo(np.uint16).max:
        return np.uint16
    return np.uint32


def _keys(terms: list[bytes]) -> np.ndarray:
    """Each term's first 16 bytes (numpy pads with NULs). Terms hold no NUL byte, so the keys sort as the terms
    do, and a key shorter than 16 bytes is its term: one key per term, except among terms of 16 bytes or more that
    share their first 16 (rare: "internationalis..."), which :meth:`SegmentPostings.lookup_many` compares whole."""
    return np.array([t[:_KEY_BYTES] for t in terms], dtype=f"S{_KEY_BYTES}")


def _write_segment(
    out_dir: Path, terms: list[bytes], indptr: np.ndarray, rows: np.ndarray, tf: np.ndarray, doc_len: np.ndarray
) -> dict[str, Any]:
    """Write the files of one segment from its sorted terms and CSC postings; returns the info record."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blob = np.frombuffer(b"".join(terms), dtype=np.uint8)
    offsets = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in terms], out=offsets[1:])
    tf = tf.astype(_tf_dtype(int(tf.max(initial=0))), copy=False)
    arrays = {
        _BLOB: blob,
        _OFFSETS: offsets,
        _KEYS: _keys(terms),
        _INDPTR: np.asarray(indptr, dtype=np.int64),
        _ROWS: np.asarray(rows, dtype=np.int32),
        _TF: tf,
        _DOC_LEN: np.asarray(doc_len, dtype=np.int32),
    }
    for name, array in arrays.items():
        np.save(out_dir / name, array, allow_pickle=False)
    info: dict[str, Any] = {
        "format": POSTINGS_FORMAT,
        "docs": len(doc_len),
        "terms": len(terms),
        "postings": len(rows),
        "total_len": int(np.asarray(doc_len, dtype=np.int64).sum()),
        "tf_dtype": tf.dtype.name,
        "analysis": {"lower": True, "token_pattern": _TOKEN.pattern, "stopwords": "bm25s-en", "stemmer": STEMMER},
    }
    (out_dir / _INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _csc(term_ids: np.ndarray, doc_ids: np.ndarray, n_terms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, rows, tf) from one (term, doc) pair per token or per posting with a count: one sort of packed
    64-bit keys orders them term-major with rows ascending, and runs of equal keys are the term frequencies."""
    key = (term_ids.astype(np.int64) << 32) | doc_ids.astype(np.int64)
    key.sort()
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1]))) if key.size else np.zeros(0, dtype=np.int64)
    tf = np.diff(np.append(starts, key.size))
    unique = key[starts]
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(unique >> 32, minlength=n_terms), out=indptr[1:])
    return indptr, (unique & 0xFFFFFFFF).astype(np.int32), tf


def write_postings(texts: Sequence[str], out_dir: Path) -> dict[str, Any]:
    """Analyse ``texts`` (row i = ``texts[i]``) and write one segment's postings into ``out_dir``; returns the
    info record. The caller makes the directory durable and publishes it atomically (nothing is fsynced here)."""
    terms, tokens, lengths = _analyse_batch(texts)
    docs = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    indptr, rows, tf = _csc(tokens, docs, len(terms))
    return _write_segment(out_dir, terms, indptr, rows, tf, lengths)


# --------------------------------------------------------------------------------------------------- reading


def _load(path: Path) -> np.ndarray:
    # np.asarray drops the memmap subclass (its slices cost more) but keeps the shared mapping.
    return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))


class SegmentPostings:
    """The postings of one segment, memory-mapped (read-only, safe to share between threads). Row numbers are the
    segment's own (0 .. ``n_docs`` - 1)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.info: dict[str, Any] = json.loads((self.directory / _INFO).read_text(encoding="utf-8"))
        if self.info.get("format") != POSTINGS_FORMAT:
            raise ValueError(f"{directory}: postings format {self.info.get('format')!r}, expected {POSTINGS_FORMAT}")
        self._blob = _load(self.directory / _BLOB)
        self._offsets = _load(self.directory / _OFFSETS)
        self._keys = _load(self.directory / _KEYS)
        self.indptr = _load(self.directory / _INDPTR)
        self.rows = _load(self.directory / _ROWS)
        self.tf = _load(self.directory / _TF)
        self.doc_len = _load(self.directory / _DOC_LEN)
        if len(self.doc_len) != self.info["docs"] or len(self.indptr) != self.info["terms"] + 1:
            raise ValueError(f"{directory}: postings files disagree with {_INFO}")

    @property
    def n_docs(self) -> int:
        return len(self.doc_len)

    @property
    def n_terms(self) -> int:
        return len(self.indptr) - 1

    @property
    def total_len(self) -> int:
        """Sum of the rows' lengths (recorded at write time, so opening a version reads no lengths)."""
        return int(self.info["total_len"])

    def term(self, tid: int) -> bytes:
        """The UTF-8 bytes of term ``tid``."""
        return self._blob[self._offsets[tid] : self._offsets[tid + 1]].tobytes()

    def terms(self) -> list[bytes]:
        """All terms in id order (sorted by bytes): for merging, not for queries."""
        data = self._blob.tobytes()
        offsets = self._offsets.tolist()
        return [data[a:b] for a, b in itertools.pairwise(offsets)]

    def lookup_many(self, terms: Sequence[str]) -> list[int | None]:
        """The term id of each term (None where the segment lacks it): one vectorised binary search over the
        16-byte keys; only a term of 16 bytes or more is then compared whole, within the range sharing its key."""
        if not terms or not self.n_terms:
            return [None] * len(terms)
        encoded = [t.encode("utf-8") for t in terms]
        keys = np.array([e[:_KEY_BYTES] for e in encoded], dtype=f"S{_KEY_BYTES}")
        lo = np.searchsorted(self._keys, keys, side="left")
        hit = self._keys[np.minimum(lo, self.n_terms - 1)] == keys
        found: list[int | None] = [i if h else None for i, h in zip(lo.tolist(), hit.tolist(), strict=True)]
        for i, term in enumerate(encoded):
            if len(term) >= _KEY_BYTES and found[i] is not None:
                a = int(lo[i])
                b = end = int(np.searchsorted(self._keys, keys[i : i + 1], side="right")[0])
                while a < b:  # binary search by bytes among the terms sharing this key
                    mid = (a + b) // 2
                    if self.term(mid) < term:
                        a = mid + 1
                    else:
                        b = mid
                found[i] = a if a < end and self.term(a) == term else None
        return found

    def lookup(self, term: str) -> int | None:
        """The id of ``term`` in this segment, or None."""
        return self.lookup_many([term])[0]

    def postings(self, tid: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows ascending, term frequencies) of term ``tid``: views of the mapped files, nothing copied."""
        a, b = int(self.indptr[tid]), int(self.indptr[tid + 1])
        return self.rows[a:b], self.tf[a:b]


# --------------------------------------------------------------------------------------------------- merging


def merge_postings(parts: Sequence[tuple[SegmentPostings, np.ndarray]], out_dir: Path) -> dict[str, Any]:
    """Write one segment holding the given rows of each part (``keep``: integer rows, or a boolean mask), parts
    concatenated and each part's rows in the given order, without re-analysing text: the vocabularies are
    united, term ids and rows renumbered, dropped rows' postings removed (and terms left without postings)."""
    vocabularies = [segment.terms() for segment, _ in parts]
    union = sorted(set().union(*vocabularies))
    new_id = {t: i for i, t in enumerate(union)}
    term_parts: list[np.ndarray] = []
    row_parts: list[np.ndarray] = []
    tf_parts: list[np.ndarray] = []
    len_parts: list[np.ndarray] = []
    offset = 0
    for (segment, keep), vocabulary in zip(parts, vocabularies, strict=True):
        keep_rows = np.asarray(keep)
        keep_rows = np.flatnonzero(keep_rows) if keep_rows.dtype == bool else keep_rows.astype(np.int64)
        remap = np.full(segment.n_docs, -1, dtype=np.int64)
        remap[keep_rows] = offset + np.arange(len(keep_rows))
        term_map = np.fromiter((new_id[t] for t in vocabulary), dtype=np.int64, count=len(vocabulary))
        postings_terms = np.repeat(term_map, np.diff(segment.indptr))
        rows = remap[segment.rows]
        kept = rows >= 0
        term_parts.append(postings_terms[kept])
        row_parts.append(rows[kept])
        tf_parts.append(np.asarray(segment.tf)[kept].astype(np.int64))
        len_parts.append(segment.doc_len[keep_rows])
        offset += len(keep_rows)
    term_ids = np.concatenate(term_parts) if term_parts else np.zeros(0, dtype=np.int64)
    row_ids = np.concatenate(row_parts) if row_parts else np.zeros(0, dtype=np.int64)
    tfs = np.concatenate(tf_parts) if tf_parts else np.zeros(0, dtype=np.int64)
    doc_len = np.concatenate(len_parts) if len_parts else np.zeros(0, dtype=np.int32)
    # Terms left without postings (only in dropped rows) leave the vocabulary, as a fresh build would not have them.
    present = np.bincount(term_ids, minlength=len(union)) > 0
    renumber = np.cumsum(present) - 1
    terms = [t for t, p in zip(union, present.tolist(), strict=True) if p]
    key = (renumber[term_ids] << 32) | row_ids
    order = np.argsort(key, kind="stable")
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum(np.bincount(renumber[term_ids], minlength=len(terms)), out=indptr[1:])
    return _write_segment(out_dir, terms, indptr, row_ids[order], tfs[order], doc_len)
