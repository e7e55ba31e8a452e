"""Paging: walking every page of a search while a new version is published gives each hit exactly once, all from
the version the first page used; cursors are tied to their search and expire cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from semsearch import Article, Index, Settings, build_index
from semsearch.serve.app import create_app

from ..conftest import FakeEmbedder
from ..serve.test_api import conforms

TOPICS = ["harbour", "railway", "library", "museum", "stadium", "hospital", "school", "market", "airport", "river"]
QUERY = "the new harbour railway library museum opened to visitors"


def _articles(n: int = 10) -> list[Article]:
    out = []
    for i, topic in enumerate(TOPICS[:n]):
        paragraphs = [
            f"The new {topic} opened to visitors on day {i} after years of building work in the old town.",
            f"Officials said the {topic} would welcome thousands of visitors every week, with free entry at first.",
            f"Critics of the {topic} project pointed to the cost, which rose by a third during construction.",
        ]
        out.append(Article(id=f"{topic}.txt", title=f"The {topic} opens", text="\n\n".join(paragraphs)))
    return out


@pytest.fixture
def paged(tmp_path: Path, fake_embedder: FakeEmbedder):  # type: ignore[no-untyped-def]
    settings = Settings(index_dir=tmp_path / "index", reload_check_seconds=0, keep_versions=2)
    root = tmp_path / "corpus"
    root.mkdir()
    for article in _articles():
        (root / article.id).write_text(article.title + "\n\n" + article.text, encoding="utf-8")
    build_index([root], settings.index_dir, settings, embedder=fake_embedder)
    app = create_app(settings, embedder=fake_embedder)
    yield settings, app.test_client()
    app.extensions["semsearch"].close()


def _wait_for_new_version(client: FlaskClient, old: str) -> None:
    """The service loads a new version off the request path; wait until it answers with it."""
    deadline = time.monotonic() + 10
    while client.get("/search", query_string={"q": QUERY}).get_json()["version"] == old:
        assert time.monotonic() < deadline, "the service never switched to the new version"
        time.sleep(0.05)


def _walk(client: FlaskClient, body: dict, on_first_page=None) -> list[dict]:  # type: ignore[type-arg]
    pages = []
    cursor = None
    while True:
        response = client.post("/search", json={**body, **({"cursor": cursor} if cursor else {})})
        pages.append(conforms("/search", "post", response))
        if len(pages) == 1 and on_first_page is not None:
            on_first_page()
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages


@pytest.mark.parametrize("group_by", ["passage", "article"])
def test_every_page_while_a_version_is_published_gives_each_hit_once(paged, fake_embedder, group_by: str) -> None:  # type: ignore[no-untyped-def]
    settings, client = paged
    key = "passage_id" if group_by == "passage" else "article_id"
    items = "hits" if group_by == "passage" else "articles"
    body = {"query": QUERY, "k": 4, "group_by": group_by, "per_article": 2}
    # The whole ranking in one request, before anything changes.
    before = client.post("/search", json={**body, "k": 100}).get_json()
    expected = [item[key] for item in before[items]]
    assert len(expected) > 8  # several pages' worth

    def publish() -> None:
        Index(settings.index_dir, settings, embedder=fake_embedder).upsert(
            [Article(id="breaking.txt", title="Harbour railway library museum", text=QUERY + ".\n\n" + QUERY)]
        )
        _wait_for_new_version(client, before["version"])

    pages = _walk(client, body, on_first_page=publish)
    got = [item[key] for page in pages for item in page[items]]
    assert got == expected  # each hit once, none skipped, in order
    assert {page["version"] for page in pages} == {before["version"]}
    ranks = [item["rank"] for page in pages for item in page[items]]
    assert ranks == list(range(1, len(got) + 1))
    # A new search sees the new version, where the new article comes first.
    fresh = client.post("/search", json=body).get_json()
    assert fresh["version"] != before["version"]
    first = fresh[items][0]
    assert first["article_id"] == "breaking.txt"


def test_a_cursor_belongs_to_its_search_and_expires_with_its_version(paged, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    settings, client = paged
    first = client.post("/search", json={"query": QUERY, "k": 3}).get_json()
    cursor = first["next_cursor"]
    other = client.post("/search", json={"query": "something else", "k": 3, "cursor": cursor})
    assert other.status_code == 409 and "cursor belongs to another search" in other.get_json()["error"]["message"]
    mode = client.post("/search", json={"query": QUERY, "k": 3, "mode": "dense", "cursor": cursor})
    assert mode.status_code == 409
    assert conforms("/search", "post", mode)["error"]["code"] == "cursor_mismatch"
    garbage = client.post("/search", json={"query": QUERY, "k": 3, "cursor": "not-a-cursor"})
    assert (
        garbage.status_code == 404 and "cursor is not one this server issued" in garbage.get_json()["error"]["message"]
    )
    # GET takes the same cursor.
    get = client.get("/search", query_string={"q": QUERY, "k": 3, "cursor": cursor})
    assert conforms("/search", "get", get)["hits"][0]["rank"] == 4
    # Two more versions: with keep_versions=2 the cursor's version is pruned.
    index = Index(settings.index_dir, settings, embedder=fake_embedder)
    for i in range(2):
        index.upsert([Article(id=f"extra-{i}.txt", title=f"Extra {i}", text=f"Another story number {i}.")])
    _wait_for_new_version(client, first["version"])
    gone = client.post("/search", json={"query": QUERY, "k": 3, "cursor": cursor})
    assert gone.status_code == 410
    assert conforms("/search", "post", gone)["error"]["code"] == "cursor_expired"


def test_the_client_walks_the_pages(paged) -> None:  # type: ignore[no-untyped-def]
    import threading
    from wsgiref.simple_server import make_server

    from semsearch.client import SearchClient

    from .test_related import _Quiet

    _, client = paged
    expected = [h["passage_id"] for h in client.post("/search", json={"query": QUERY, "k": 100}).get_json()["hits"]]
    app = client.application
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = SearchClient(f"http://127.0.0.1:{server.server_port}")
        got, cursor = [], None
        while True:
            page = remote.search_page(QUERY, k=5, cursor=cursor)
            got += [h.passage_id for h in page.hits]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert got == expected
    finally:
        server.shutdown()
        server.server_close()


WORDS = [*TOPICS, "bridge", "council", "tram", "ferry", "garden", "theatre", "tower", "canal", "park", "square"]


@pytest.mark.parametrize("group_by", ["passage", "article"])
def test_pages_of_a_corpus_deeper_than_the_depth_follow_the_first_page_s_ranking(
    tmp_path: Path, fake_embedder: FakeEmbedder, group_by: str
) -> None:
    """150 passages, more than the first page's retrieval depth (100): every page must rank at that depth, and
    leave out what earlier pages returned rather than count an offset."""
    from semsearch import Searcher

    articles = []
    for i in range(150):
        words = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(1 + i % 5))
        articles.append(Article(id=f"a{i:03}.txt", title=f"Story {i}", text=f"The {words} plan number {i} passed."))
    settings = Settings(index_dir=tmp_path / "index")
    Index(settings.index_dir, settings, embedder=fake_embedder).upsert(articles)
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        assert searcher.manifest.passages == 150
        ranked = searcher._at(None)  # the whole ranking at the first page's depth, in one call
        if group_by == "passage":
            expected = [h.passage_id for h in ranked.search(QUERY, 100, depth=100)]
        else:
            expected = [a.article_id for a in ranked.search_articles(QUERY, 100, per_article=2, depth=100)]
        got, cursor = [], None
        while True:
            page = searcher.search_page(QUERY, 4, cursor=cursor, group_by=group_by, per_article=2)
            got += [h.passage_id for h in page.hits] if group_by == "passage" else [a.article_id for a in page.articles]
            cursor = page.next_cursor
            if cursor is None:
                break
    assert len(expected) == 100  # the most one search pages through
    assert got == expected
