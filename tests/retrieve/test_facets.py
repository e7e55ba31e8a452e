"""Facets: article counts by source, tag and month over the query's candidates (documented depth), each article
once, honouring filters; over the library and HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semsearch import Searcher, SearchFilters, Settings, build_index
from semsearch.errors import InvalidRequestError
from semsearch.serve.app import create_app

from ..conftest import FakeEmbedder
from ..serve.test_api import conforms

RECORDS = [
    ("a1", "bbc", ["politics"], "2026-05-03", "The council vote on the harbour budget was delayed again."),
    ("a2", "bbc", ["sport", "local"], "2026-05-20", "The harbour rowing club won the regatta on Saturday."),
    ("a3", "bbc", ["sport"], "2026-06-01", "Ticket prices for the cup final rose sharply this year."),
    ("a4", "ap", ["politics"], "2026-06-11", "Ministers debated the new harbour tax in parliament."),
    ("a5", "ap", ["sport"], "2026-06-28", "The marathon route will pass the harbour for the first time."),
    ("a6", None, [], None, "A quiet week at the museum, with no new exhibitions planned."),
]  # fmt: skip


@pytest.fixture
def faceted(tmp_path: Path, fake_embedder: FakeEmbedder) -> Settings:
    lines = []
    for i, source, tags, published, text in RECORDS:
        record = {"id": i, "title": f"Story {i}", "text": text, "tags": tags}
        record.update({k: v for k, v in (("source", source), ("published", published)) if v})
        lines.append(json.dumps(record))
    (tmp_path / "news.jsonl").write_text("\n".join(lines), encoding="utf-8")
    settings = Settings(index_dir=tmp_path / "index")
    build_index([tmp_path / "news.jsonl"], settings.index_dir, settings, embedder=fake_embedder)
    return settings


def test_counts_over_every_candidate_article(faceted: Settings, fake_embedder: FakeEmbedder) -> None:
    with Searcher.open(faceted.index_dir, faceted, embedder=fake_embedder) as searcher:
        # Hybrid at depth 100: the dense retriever returns every passage of this small index.
        facets = searcher.facets("harbour news", ["source", "tag", "published_month"])
        assert facets.articles == 6
        assert facets.counts["source"] == (("bbc", 3), ("ap", 2))
        assert facets.counts["tag"] == (("sport", 3), ("politics", 2), ("local", 1))
        assert facets.counts["published_month"] == (("2026-06", 3), ("2026-05", 2))
        # Keyword candidates are the articles that share a word with the query: the four harbour stories.
        keyword = searcher.facets("harbour", ["source", "tag"], mode="keyword")
        assert keyword.articles == 4
        assert keyword.counts["source"] == (("ap", 2), ("bbc", 2))  # ties: by value
        assert keyword.counts["tag"] == (("politics", 2), ("sport", 2), ("local", 1))
        # Filters apply before counting.
        only_ap = searcher.facets("harbour news", ["tag"], filters=SearchFilters(source=("ap",)))
        assert only_ap.articles == 2 and only_ap.counts["tag"] == (("politics", 1), ("sport", 1))
        with pytest.raises(InvalidRequestError, match="unknown facet"):
            searcher.facets("harbour", ["author"])


def test_facets_over_http(faceted: Settings, fake_embedder: FakeEmbedder) -> None:
    app = create_app(faceted, embedder=fake_embedder)
    client = app.test_client()
    try:
        post = conforms("/search", "post", client.post("/search", json={"query": "harbour news", "k": 2,
                                                                          "facets": ["source", "tag"]}))  # fmt: skip
        assert post["facets"]["articles"] == 6
        assert post["facets"]["counts"]["source"] == [{"value": "bbc", "count": 3}, {"value": "ap", "count": 2}]
        assert set(post["facets"]["counts"]) == {"source", "tag"} and len(post["hits"]) == 2
        get = client.get("/search", query_string=[("q", "harbour news"), ("facet", "published_month")])
        assert conforms("/search", "get", get)["facets"]["counts"]["published_month"][0] == {"value": "2026-06",
                                                                                              "count": 3}  # fmt: skip
        assert "facets" not in client.post("/search", json={"query": "harbour"}).get_json()
        bad = client.post("/search", json={"query": "harbour", "facets": ["author"]})
        assert bad.status_code == 400 and "facets[0] must be one of source, tag, published_month" in bad.get_json()[
            "error"]["message"]  # fmt: skip
    finally:
        app.extensions["semsearch"].close()
