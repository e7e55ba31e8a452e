from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from semsearch import Searcher, Settings, build_index
from semsearch.models.embedding import SentenceTransformerEmbedder

from ..conftest import SAMPLE_CORPUS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache for derived model files (the ONNX query export) of this test session."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def real_embedder(model_cache: Path) -> SentenceTransformerEmbedder:
    """The bundled all-MiniLM-L6-v2, offline, loaded once per test session (default settings: the query path is
    chosen by measurement)."""
    return SentenceTransformerEmbedder.from_settings(Settings(cache_dir=model_cache))


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory, real_embedder: SentenceTransformerEmbedder) -> Path:
    index_dir = tmp_path_factory.mktemp("sample") / "index"
    build_index([SAMPLE_CORPUS], index_dir, Settings(), embedder=real_embedder)
    return index_dir


@pytest.fixture
def sample_searcher(sample_index: Path, real_embedder: SentenceTransformerEmbedder) -> Iterator[Searcher]:
    with Searcher.open(sample_index, Settings(), embedder=real_embedder) as searcher:
        yield searcher
