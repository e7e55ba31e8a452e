"""Shared fixtures. Unit tests use FakeEmbedder (deterministic, instant); tests marked ``integration`` use the
real bundled model."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from semsearch import ChunkSettings, Settings, build_index
from semsearch.config import DEFAULT_MODEL
from semsearch.index.build import IndexReport

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = ROOT / "examples" / "articles"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"

_WORD = re.compile(r"\w+")


class FakeEmbedder:
    """Hashed bag of words, L2-normalised: texts sharing words are close. Deterministic across runs."""

    def __init__(self, dim: int = 256, max_tokens: int = 128, model_id: str = "test/fake-bag-of-words") -> None:
        self._dim = dim
        self._max_tokens = max_tokens
        self._model_id = model_id
        self.documents_embedded = 0
        self.fail_after: int | None = None
        self.precision = "fp32"

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # Two special tokens, like a BERT tokenizer; one token per word or punctuation mark.
        return [len(re.findall(r"\w+|[^\w\s]", t)) + 2 for t in texts]

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self._dim, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            v[h % self._dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = np.linalg.norm(v)
        return v / norm if norm else v

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if self.fail_after is not None and self.documents_embedded + len(texts) > self.fail_after:
            raise RuntimeError("embedding failed (test)")
        self.documents_embedded += len(texts)
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self._dim), np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self._dim), np.float32)


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def use_fake_embedder(monkeypatch: pytest.MonkeyPatch, fake_embedder: FakeEmbedder) -> FakeEmbedder:
    """Make every model load in the library (CLI, API) return the fake embedder."""
    import semsearch.index.build
    import semsearch.models.embedding
    import semsearch.retrieve.searcher

    def load(settings: Settings) -> FakeEmbedder:
        # The fake stands in for the default model too (what the CLI asks for when no index exists yet).
        if settings.model not in (None, fake_embedder.model_id, DEFAULT_MODEL):
            from semsearch.errors import ModelLoadError

            raise ModelLoadError(f"cannot load embedding model {settings.model!r} (test)")
        return fake_embedder

    for module in (semsearch.models.embedding, semsearch.index.build, semsearch.retrieve.searcher):
        monkeypatch.setattr(module, "load_embedder", load)
    return fake_embedder


def fixture_settings(index_dir: Path) -> Settings:
    """The settings of the fixture index (also used by tests/index/crash_child.py, so its runs are incremental)."""
    # min_chars=20: every paragraph of the small fixture corpus is its own passage.
    return Settings(index_dir=index_dir, precision="fp32", chunking=ChunkSettings(min_chars=20))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return fixture_settings(tmp_path / "index")


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A small corpus in the seed format, written fresh for each test (tests may edit it)."""
    root = tmp_path / "articles"
    root.mkdir()
    for name, title, paragraphs in _ARTICLES:
        (root / name).write_text(
            title + "\n\n" + "\n\n".join(paragraphs) + "\n\nUpdated: Monday at 9:00 a.m.\n"
            "Copyright 2026 Example Media Inc. All rights reserved.\n",
            encoding="utf-8",
        )
    return root


@pytest.fixture
def built_index(corpus_dir: Path, settings: Settings, fake_embedder: FakeEmbedder) -> Iterator[IndexReport]:
    yield build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)


_ARTICLES = [
    (
        "bridge.txt",
        "New bridge opens in Harlow Bay",
        [
            "The long-awaited river crossing in Harlow Bay opened to traffic on Saturday after four years of work.",
            "The bridge was designed by architect Saoirse Delaney, whose firm won an international competition "
            "in 2021 with a single-pylon cable-stayed design.",
            "Local shops said footfall rose sharply in the first week, and the council expects commuting times to "
            "fall by a quarter once the approach roads are finished.",
        ],
    ),
    (
        "bank.txt",
        "Central bank cuts interest rates",
        [
            "The central bank of Norland cut its benchmark interest rate by a quarter point to 3.25 percent.",
            "Two members of the committee voted to hold rates, citing wage growth and sticky services inflation.",
            "Mortgage lenders are expected to pass the cut on to borrowers within weeks, analysts said.",
        ],
    ),
    (
        "reef.txt",
        "Reef restoration reaches milestone",
        [
            "Divers placed 4,812 tonnes of limestone boulders to stabilise rubble on the damaged reef.",
            "The project, led by marine biologist Amara Okonkwo-Radavić, has replanted more than 30,000 coral "
            "fragments grown in nurseries offshore.",
            "Survival rates of the transplanted corals have exceeded 80 percent after two summers.",
        ],
    ),
]
