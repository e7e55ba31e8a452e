from __future__ import annotations

import math

import pytest

from semsearch import Settings
from semsearch.errors import SourceError
from semsearch.evaluation import evaluate_beir, load_beir, score_run

from .conftest import FIXTURES

MINI = FIXTURES / "beir-mini"


def test_score_run_perfect_and_second_place() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": [("d1", 0.9), ("d2", 0.1)], "q2": [("d1", 0.9), ("d2", 0.5)]}
    metrics = score_run(qrels, run)
    # q1: relevant at rank 1 -> nDCG 1, RR 1. q2: relevant at rank 2 -> nDCG 1/log2(3), RR 1/2.
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert metrics["mrr@10"] == pytest.approx(0.75)
    assert metrics["recall@100"] == pytest.approx(1.0)
    assert metrics["queries"] == 2


def test_score_run_counts_queries_without_results_as_zero() -> None:
    metrics = score_run({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": [("d1", 1.0)]})
    assert metrics["ndcg@10"] == pytest.approx(0.5)


def test_mrr_is_cut_at_ten() -> None:
    run = {"q": [(f"x{i}", 1 - i / 100) for i in range(10)] + [("rel", 0.0)]}
    assert score_run({"q": {"rel": 1}}, run)["mrr@10"] == 0.0


def test_load_beir_reads_corpus_queries_and_qrels() -> None:
    data = load_beir(MINI)
    assert [a.id for a in data.corpus.articles] == ["d1", "d2", "d3", "d4"]
    assert data.queries["q1"] == "why do coral reefs bleach"
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}


def test_load_beir_rejects_a_non_beir_directory(tmp_path) -> None:
    with pytest.raises(SourceError, match=r"corpus\.jsonl"):
        load_beir(tmp_path)


def test_evaluate_beir_end_to_end_with_the_fake_embedder(tmp_path, fake_embedder) -> None:
    report = evaluate_beir(MINI, Settings(precision="fp32"), index_dir=tmp_path / "ix", embedder=fake_embedder)
    assert report.queries == 3 and report.passages == 4
    assert report.ndcg_at_10 == pytest.approx(1.0)  # every query shares its words with exactly its document
    # A second run reuses the index: nothing is embedded again.
    before = fake_embedder.documents_embedded
    evaluate_beir(MINI, Settings(precision="fp32"), index_dir=tmp_path / "ix", embedder=fake_embedder)
    assert fake_embedder.documents_embedded == before
