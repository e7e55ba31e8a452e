"""The optional rerank stage: the best ``rerank_depth`` fused candidates are reordered by a cross-encoder's score,
the rest follow in fused order, and the score shows in explanations, over HTTP, in the CLI and in evaluation.

Plumbing only: a deterministic pair scorer, and a real sentence-transformers ``CrossEncoder`` built here from
random weights (no cross-encoder is bundled, so its ranking means nothing; its scores are recomputed with the
library directly)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch import Searcher, Settings
from semsearch.cli import main
from semsearch.errors import ModelLoadError
from semsearch.models.reranker import CrossEncoderReranker
from semsearch.serve.app import create_app

from ..conftest import FIXTURES, FakeEmbedder
from ..serve.test_api import conforms

QUERY = "divers placed limestone boulders on the reef"


class LengthScorer:
    """Scores a pair by the passage's length, shortest first: an order that has nothing to do with the fused one,
    with scores far below the fused ones (so the tail must be shifted to stay below the head)."""

    name = "test/length"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        self.calls.append((query, list(passages)))
        return np.array([-float(len(p)) for p in passages])


def _input(hit) -> str:  # type: ignore[no-untyped-def]
    """What the rerank model reads for a hit: title and passage, as the passage is embedded."""
    return f"{hit.title}\n{hit.text}"


@pytest.fixture
def plain(built_index, settings: Settings, fake_embedder: FakeEmbedder):  # type: ignore[no-untyped-def]
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        yield s


@pytest.fixture
def reranked(built_index, settings: Settings, fake_embedder: FakeEmbedder):  # type: ignore[no-untyped-def]
    with Searcher.open(settings.index_dir, settings.with_(rerank_depth=4), embedder=fake_embedder,
                       reranker=LengthScorer()) as s:  # fmt: skip
        yield s


def test_the_best_candidates_are_reordered_by_the_rerank_score_and_the_rest_follow(plain, reranked) -> None:  # type: ignore[no-untyped-def]
    before = plain.search(QUERY, k=8, highlights=False)
    after = reranked.search(QUERY, k=8, highlights=False, explain=True)
    head, tail = before[:4], before[4:]
    expected_head = sorted(head, key=lambda h: len(_input(h)))
    assert [h.passage_id for h in after[:4]] == [h.passage_id for h in expected_head]
    assert [h.passage_id for h in after[4:]] == [h.passage_id for h in tail]  # fused order kept below the depth
    (query, read), *_ = reranked.reranker.calls
    assert query == QUERY and sorted(read) == sorted(_input(h) for h in head)  # only the depth was read
    for hit in after[:4]:
        assert hit.score == hit.explanation.rerank_score == -len(_input(hit))
    assert all(h.explanation.rerank_score is None for h in after[4:])
    scores = [h.score for h in after]
    assert scores == sorted(scores, reverse=True) and scores[3] > scores[4]  # the tail stays below the head
    gaps = np.diff([h.score for h in tail])
    assert np.allclose(np.diff(scores[4:]), gaps)  # the tail's own differences are kept
    assert [h.rank for h in after] == list(range(1, 9))


def test_articles_context_and_pages_use_the_reranked_order(plain, reranked) -> None:  # type: ignore[no-untyped-def]
    head = plain.search(QUERY, k=4, highlights=False)
    best = min(head, key=lambda h: len(_input(h)))
    question = "central bank interest rates"
    order = list(dict.fromkeys(h.article_id for h in reranked.search(question, k=8, highlights=False)))
    articles = [a.article_id for a in reranked.search_articles(question, k=3, per_article=1)]
    assert articles == order[:3]
    assert articles != [a.article_id for a in plain.search_articles(question, k=3, per_article=1)]  # it did change
    assert reranked.context(QUERY, max_tokens=400).citations[0].article_id == best.article_id
    walked, cursor = [], None
    while True:
        page = reranked.search_page(QUERY, 3, cursor=cursor)
        walked += [h.passage_id for h in page.hits]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert walked[0] == best.passage_id and len(walked) == len(set(walked))


def _save_cross_encoder(out: Path, labels: int = 1) -> Path:
    """A two-layer BERT cross-encoder with random weights and the bundled MiniLM's tokenizer, saved as a model
    directory any sentence-transformers CrossEncoder loads."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from semsearch.models.embedding import resolve_model

    _, path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(20261202)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=labels)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


def test_a_real_cross_encoder_reranks_through_the_library_and_http(
    built_index, settings: Settings, fake_embedder: FakeEmbedder, tiny_cross_encoder: Path
) -> None:
    from sentence_transformers import CrossEncoder

    configured = settings.with_(rerank_model=str(tiny_cross_encoder), rerank_depth=5)
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        head = searcher.search(QUERY, k=5, highlights=False)
    model = CrossEncoder(str(tiny_cross_encoder), local_files_only=True)
    expected = model.predict([(QUERY, _input(h)) for h in head], activation_fn=lambda x: x)
    with Searcher.open(settings.index_dir, configured, embedder=fake_embedder) as searcher:
        assert isinstance(searcher.reranker, CrossEncoderReranker)
        hits = searcher.search(QUERY, k=5, highlights=False, explain=True)
    by_id = {h.passage_id: float(s) for h, s in zip(head, expected, strict=True)}
    assert [h.passage_id for h in hits] == sorted(by_id, key=lambda p: -by_id[p])
    for hit in hits:
        assert hit.explanation.rerank_score == pytest.approx(by_id[hit.passage_id], abs=1e-5)

    app = create_app(configured, embedder=fake_embedder)
    client = app.test_client()
    body = conforms("/search", "post", client.post("/search", json={"query": QUERY, "k": 5, "explain": True}))
    assert [h["passage_id"] for h in body["hits"]] == [h.passage_id for h in hits]
    assert all(h["explanation"]["rerank_score"] is not None for h in body["hits"])
    stats = conforms("/stats", "get", client.get("/stats"))
    assert stats["rerank_model"] == str(tiny_cross_encoder) and stats["rerank_depth"] == 5
    app.extensions["semsearch"].close()


def test_a_model_that_is_not_a_single_score_cross_encoder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="2 output labels"):
        CrossEncoderReranker(str(_save_cross_encoder(tmp_path / "two-labels", labels=2)))
    with pytest.raises(ModelLoadError, match=r"cannot load rerank model .*downloads are off"):
        CrossEncoderReranker(str(tmp_path / "missing"))


@pytest.fixture
def runner(use_fake_embedder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SEMSEARCH_INDEX_DIR", str(tmp_path / "index"))
    return CliRunner()


def test_the_cli_searches_and_evaluates_with_a_rerank_model(runner: CliRunner, corpus_dir: Path,
                                                           tiny_cross_encoder: Path) -> None:  # fmt: skip
    assert runner.invoke(main, ["index", str(corpus_dir)]).exit_code == 0
    result = runner.invoke(main, ["search", QUERY, "-k", "3", "--rerank-model", str(tiny_cross_encoder),
                                  "--rerank-depth", "3", "--explain", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)["hits"]
    assert len(hits) == 3 and all(h["explanation"]["rerank_score"] is not None for h in hits)
    report = runner.invoke(main, ["eval", str(FIXTURES / "beir-mini"), "--rerank-model", str(tiny_cross_encoder),
                                  "--json"])  # fmt: skip
    assert report.exit_code == 0, report.output
    data = json.loads(report.output)
    assert data["rerank_model"] == str(tiny_cross_encoder) and data["rerank_depth"] == 30
    bad = runner.invoke(main, ["search", QUERY, "--rerank-model", str(corpus_dir / "no-such-model")])
    assert bad.exit_code != 0 and bad.output.count("\n") == 1 and "cannot load rerank model" in bad.output
