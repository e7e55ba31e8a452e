"""Recency decay: two equally relevant stories that differ in date are reordered by the half-life exactly as
documented (``score * 0.5 ** (age / half_life)``), in every mode; undated articles get the median factor."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from semsearch import Recency, Searcher, Settings, build_index
from semsearch.errors import InvalidRequestError
from semsearch.serve.app import create_app

from ..conftest import FakeEmbedder
from ..serve.test_api import conforms

AS_OF = "2026-06-30"
# Twin stories: the same words for the query, told on different days (a follow-up adds nothing the query asks).
STORIES = [
    ("flood-old", "2026-06-10", "Floods close the valley road", "Floods closed the valley road after heavy rain, "
     "and engineers inspected the old stone bridge over the river."),
    ("flood-new", "2026-06-29", "Floods close the valley road again", "Floods closed the valley road after heavy "
     "rain on Monday, and engineers inspected the old stone bridge over the river."),
    ("flood-undated", None, "Valley road floods", "Floods closed the valley road near the old stone bridge."),
    ("market", "2026-06-28", "Farmers market returns", "The farmers market returns to the square with bread, "
     "cheese and early strawberries."),
]  # fmt: skip
QUERY = "floods closed the valley road, engineers inspected the stone bridge"


@pytest.fixture
def dated_index(tmp_path: Path, fake_embedder: FakeEmbedder) -> Settings:
    records = [{"id": i, "title": t, "text": x, **({"published": d} if d else {})} for i, d, t, x in STORIES]
    (tmp_path / "news.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    settings = Settings(index_dir=tmp_path / "index")
    build_index([tmp_path / "news.jsonl"], settings.index_dir, settings, embedder=fake_embedder)
    return settings


def _age_factor(published: str, half_life: float) -> float:
    from datetime import date

    age = (date.fromisoformat(AS_OF) - date.fromisoformat(published)).days
    return 0.5 ** (max(age, 0) / half_life)


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_the_half_life_reorders_equally_relevant_stories_as_documented(
    dated_index: Settings, fake_embedder: FakeEmbedder, mode: str
) -> None:
    with Searcher.open(dated_index.index_dir, dated_index, embedder=fake_embedder) as searcher:
        plain = {h.article_id: h.score for h in searcher.search(QUERY, k=4, mode=mode)}
        for half_life in (1.0, 7.0, 3650.0):
            decayed = searcher.search(QUERY, k=4, mode=mode, recency=Recency(half_life, as_of=AS_OF))
            got = {h.article_id: h.score for h in decayed}
            # The undated story gets the median factor of the dated candidates (every matching story here).
            dated = {a: _age_factor(d, half_life) for a, d, _, _ in STORIES if d and a in plain}
            factors = {**dated, "flood-undated": statistics.median(dated.values())}
            for article, score in plain.items():
                f = factors[article]
                expected = score * f if score >= 0 else score / f
                assert got[article] == pytest.approx(expected, rel=1e-6, abs=1e-12), (article, half_life)
            assert [h.article_id for h in decayed] == sorted(got, key=lambda a: -got[a])
        # A week's half-life: the story of the day before as_of beats the one of three weeks before.
        week = [h.article_id for h in searcher.search(QUERY, k=4, mode=mode, recency=Recency(7, as_of=AS_OF))]
        assert week.index("flood-new") < week.index("flood-old")


def test_undated_articles_get_the_median_factor_of_the_dated_ones() -> None:
    recency = Recency(10, as_of="2026-01-31")
    factors = recency.factors(["2026-01-31", "2026-01-21", None, "2026-01-11", "2026-02-15T00:00:00Z"])
    # Dated: 1 (as_of's day), 0.5 (a half-life before), 0.25 (two), 1 (after as_of); the median of those is 0.75.
    assert factors.tolist() == pytest.approx([1.0, 0.5, 0.75, 0.25, 1.0])
    # No dated article at all: everyone keeps their score.
    assert Recency(10).factors([None, None]).tolist() == [1.0, 1.0]


def test_bad_recency_settings_are_refused() -> None:
    for half_life in (0, -1, float("inf"), True):
        with pytest.raises(InvalidRequestError, match="half_life_days"):
            Recency(half_life)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="as_of must be an ISO date"):
        Recency(7, as_of="last tuesday")


def test_recency_over_http_in_post_and_get(dated_index: Settings, fake_embedder: FakeEmbedder) -> None:
    app = create_app(dated_index, embedder=fake_embedder)
    client = app.test_client()
    try:
        body = {"query": QUERY, "k": 4, "recency": {"half_life_days": 7, "as_of": AS_OF}}
        post = conforms("/search", "post", client.post("/search", json=body))
        get = conforms("/search", "get", client.get("/search", query_string={
            "q": QUERY, "k": 4, "recency_half_life_days": 7, "recency_as_of": AS_OF}))  # fmt: skip
        assert [h["article_id"] for h in post["hits"]] == [h["article_id"] for h in get["hits"]]
        order = [h["article_id"] for h in post["hits"]]
        assert order.index("flood-new") < order.index("flood-old")
        off = [h["article_id"] for h in client.post("/search", json={"query": QUERY, "k": 4}).get_json()["hits"]]
        assert off != order  # off by default
        as_of_alone = client.get("/search", query_string={"q": QUERY, "k": 4, "recency_as_of": AS_OF})
        assert [h["article_id"] for h in conforms("/search", "get", as_of_alone)["hits"]] == [
            h["article_id"] for h in client.get("/search", query_string={"q": QUERY, "k": 4}).get_json()["hits"]
        ]  # no half-life, no decay
        bad = client.post("/search", json={**body, "recency": {"half_life_days": 0}})
        assert (
            bad.status_code == 400
            and "recency.half_life_days must be greater than 0" in bad.get_json()["error"]["message"]
        )
    finally:
        app.extensions["semsearch"].close()


def test_recency_from_the_cli(dated_index: Settings, use_fake_embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from semsearch.cli import main

    monkeypatch.setenv("SEMSEARCH_INDEX_DIR", str(dated_index.index_dir))
    runner = CliRunner()
    result = runner.invoke(main, ["search", QUERY, "-k", "4", "--half-life", "7", "--as-of", AS_OF, "--json"])
    assert result.exit_code == 0, result.output
    order = [h["article_id"] for h in json.loads(result.output)["hits"]]
    assert order.index("flood-new") < order.index("flood-old")
    bad = runner.invoke(main, ["search", QUERY, "--half-life", "0"])
    assert bad.exit_code == 2 and "half_life_days must be greater than 0" in bad.output
    alone = runner.invoke(main, ["search", QUERY, "--as-of", AS_OF])
    assert alone.exit_code == 2 and "--as-of needs --half-life" in alone.output


def test_recency_from_the_client(dated_index: Settings, fake_embedder: FakeEmbedder) -> None:
    import threading
    from wsgiref.simple_server import make_server

    from semsearch.client import SearchClient

    from .test_related import _Quiet

    app = create_app(dated_index, embedder=fake_embedder)
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = SearchClient(f"http://127.0.0.1:{server.server_port}")
        hits = client.search(QUERY, k=4, recency={"half_life_days": 7, "as_of": AS_OF})
        order = [h.article_id for h in hits]
        assert order.index("flood-new") < order.index("flood-old")
    finally:
        server.shutdown()
        server.server_close()
        app.extensions["semsearch"].close()
