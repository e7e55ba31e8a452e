from __future__ import annotations

import math

import pytest

from semsearch import ChunkSettings, Settings
from semsearch.errors import SourceError
from semsearch.eval.beir import evaluate_beir, load_beir, score_run

from ..conftest import FIXTURES

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


PASSAGE_ARTICLES = {
    "a1": (
        "Harbour news",
        [
            "The ferry timetable changes in spring for every island route.",
            "Lighthouse keepers repaint the tower red before the winter storms.",
            "Fishermen report record mackerel catches along the northern coast.",
        ],
    ),
    "a2": (
        "Town council",
        [
            "The council approves the library budget after a long debate.",
            "Volunteers plant oak saplings in the park on Saturday morning.",
            "Two bus routes merge next month to save money.",
        ],
    ),
}
PASSAGE_QUERIES = {"q1": "repaint lighthouse tower", "q2": "oak saplings volunteers", "q3": "mackerel catches"}


def _write_passage_set(root, qrels: dict[str, str]):  # type: ignore[no-untyped-def]
    import json

    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": aid, "title": title, "text": "\n\n".join(paragraphs)}) + "\n"
            for aid, (title, paragraphs) in PASSAGE_ARTICLES.items()
        )
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in PASSAGE_QUERIES.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items())
    )
    return root


def test_judgements_that_name_passages_are_evaluated_at_passage_level(tmp_path, fake_embedder) -> None:
    from semsearch.eval.beir import evaluation_level

    right = _write_passage_set(tmp_path / "right", {"q1": "a1#1", "q2": "a2#1", "q3": "a1#2"})
    assert evaluation_level(load_beir(right)) == "passage"
    assert evaluation_level(load_beir(MINI)) == "document"
    settings = Settings(precision="fp32", chunking=ChunkSettings(max_tokens=24))  # one passage per paragraph
    report = evaluate_beir(right, settings, embedder=fake_embedder)
    assert report.level == "passage" and report.passages == 6 and report.queries == 3
    assert report.ndcg_at_10 == pytest.approx(1.0)
    # The right article but the wrong passage does not count as found at rank 1: the run ranks passages.
    wrong = _write_passage_set(tmp_path / "wrong", {"q1": "a1#0", "q2": "a2#1", "q3": "a1#2"})
    worse = evaluate_beir(wrong, settings, embedder=fake_embedder)
    assert worse.ndcg_at_10 < 0.95 and worse.mrr_at_10 < 0.9


def test_judgements_mixing_documents_and_passages_are_rejected(tmp_path, fake_embedder) -> None:
    mixed = _write_passage_set(tmp_path / "mixed", {"q1": "a1#1", "q2": "a2"})
    with pytest.raises(SourceError, match="mix documents and passages"):
        evaluate_beir(mixed, Settings(precision="fp32"), embedder=fake_embedder)
    assert fake_embedder.documents_embedded == 0  # refused before any indexing
