"""explain=True: each hit says which retrievers held it, its raw and normalised scores, the query's keyword weight
and coverage and its recency factor; and those numbers give back the hit's score by the documented formula."""

from __future__ import annotations

import pytest
from flask import Flask

from semsearch import Recency, Searcher, Settings
from semsearch.serve.app import create_app

from ..conftest import FakeEmbedder
from ..serve.test_api import conforms

QUERY = "divers placed limestone boulders on the reef"


@pytest.fixture
def searcher(built_index, settings: Settings, fake_embedder: FakeEmbedder):  # type: ignore[no-untyped-def]
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as s:
        yield s


def test_hybrid_explanations_add_up_to_the_score(searcher: Searcher) -> None:
    hits = searcher.search(QUERY, k=6, explain=True)
    assert len(hits) == 6
    weights = {h.explanation.keyword_weight for h in hits}  # type: ignore[union-attr]
    assert len(weights) == 1  # one weight per query
    for hit in hits:
        why = hit.explanation
        assert why is not None and why.fusion == "adaptive" and why.recency_factor is None
        assert why.dense_score == pytest.approx(hit.dense_score) and why.keyword_score == pytest.approx(
            hit.keyword_score
        )
        w = why.keyword_weight
        assert hit.score == pytest.approx((1 - w) * why.dense_normalised + w * why.keyword_normalised, abs=1e-9)
        assert 0 <= why.keyword_coverage <= 1
        # The corpus is smaller than the retrieval depth: dense holds every passage, BM25 those sharing a word.
        assert why.retrievers == (("dense", "keyword") if hit.keyword_score > 0 else ("dense",)), hit.text
    assert any(h.explanation.retrievers == ("dense",) for h in hits)  # type: ignore[union-attr]
    assert hits[0].article_id == "reef.txt" and "keyword" in hits[0].explanation.retrievers  # type: ignore[union-attr]


def test_single_modes_and_recency_explain_themselves(searcher: Searcher) -> None:
    for hit in searcher.search(QUERY, k=3, mode="dense", explain=True):
        assert hit.explanation.retrievers == ("dense",) and hit.explanation.dense_score == pytest.approx(hit.score)  # type: ignore[union-attr]
    keyword = searcher.search(QUERY, k=3, mode="keyword", explain=True)
    assert {h.explanation.keyword_coverage for h in keyword} == {keyword[0].explanation.keyword_coverage}  # type: ignore[union-attr]
    for hit in keyword:
        assert hit.explanation.retrievers == ("keyword",) and hit.explanation.keyword_score == pytest.approx(hit.score)  # type: ignore[union-attr]
    # The fixture's articles are undated: every factor is 1 and the scores are those without recency.
    decayed = searcher.search(QUERY, k=3, explain=True, recency=Recency(7, as_of="2026-01-01"))
    assert [h.explanation.recency_factor for h in decayed] == [1.0, 1.0, 1.0]  # type: ignore[union-attr]
    assert searcher.search(QUERY, k=3)[0].explanation is None
    assert "explanation" not in searcher.search(QUERY, k=3)[0].to_dict()


def test_explanations_over_http_conform_to_the_spec(built_index, settings: Settings, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    app: Flask = create_app(settings, embedder=fake_embedder)
    client = app.test_client()
    try:
        post = conforms("/search", "post", client.post("/search", json={"query": QUERY, "k": 3, "explain": True}))
        get = conforms("/search", "get", client.get("/search", query_string={"q": QUERY, "k": 3, "explain": "true"}))
        assert post["hits"] == get["hits"] and all("explanation" in h for h in post["hits"])
        grouped = client.post("/search", json={"query": QUERY, "group_by": "article", "explain": True})
        assert all("explanation" in p for a in conforms("/search", "post", grouped)["articles"] for p in a["passages"])
        batch = conforms(
            "/search/batch", "post", client.post("/search/batch", json={"queries": [QUERY], "explain": True})
        )
        assert "explanation" in batch["results"][0]["hits"][0]
        plain = client.post("/search", json={"query": QUERY, "k": 3}).get_json()
        assert all("explanation" not in h for h in plain["hits"])
    finally:
        app.extensions["semsearch"].close()
