"""Related articles: the follow-up story first, the article itself and its copies never, nothing embedded; over
the library, HTTP (checked against the spec), the CLI and the client."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from click.testing import CliRunner

from semsearch import Searcher, SearchFilters, Settings, build_index
from semsearch.cli import main
from semsearch.client import SearchClient
from semsearch.errors import NotFoundError
from semsearch.serve.app import create_app

from ..conftest import FakeEmbedder
from ..serve.test_api import conforms

QUAKE = [
    "A magnitude 6.8 earthquake struck the mountain town of Veloria before dawn, collapsing houses and the old "
    "stone church.",
    "Rescue teams searched the rubble of collapsed houses through the night; the regional governor said the "
    "earthquake was the strongest in fifty years.",
    "Hospitals in the valley treated hundreds of injured residents as aftershocks rattled Veloria.",
]
FOLLOW_UP = [
    "A week after the earthquake in Veloria, rescue teams ended their search of the rubble and residents began "
    "clearing collapsed houses.",
    "Aftershocks still rattle the mountain town; the governor promised to rebuild the stone church and the "
    "damaged hospitals in the valley.",
    "Engineers are inspecting every house before families may return.",
]
OTHERS = {
    "cup.txt": ("Greyhaven win the national cup", [
        "Greyhaven won the national cup final 2-1 after extra time in front of a sold-out stadium.",
        "The winning goal came from a corner in the 112th minute, headed in by the captain.",
    ]),
    "budget.txt": ("Council approves library budget", [
        "The city council approved a budget that keeps the central library open in the evenings.",
        "Librarians said late opening hours would help students and shift workers borrow books.",
    ]),
    "flood.txt": ("River flooding closes valley roads", [
        "Heavy rain flooded roads in the valley and closed two bridges for the weekend.",
        "Residents of riverside houses were told to move valuables upstairs.",
    ]),
}  # fmt: skip


def _write(root: Path, name: str, title: str, paragraphs: list[str], extra: str = "") -> None:
    (root / name).write_text(title + "\n\n" + "\n\n".join(paragraphs) + extra, encoding="utf-8")


@pytest.fixture
def related_index(tmp_path: Path, fake_embedder: FakeEmbedder) -> Settings:
    root = tmp_path / "corpus"
    root.mkdir()
    _write(root, "quake.txt", "Earthquake destroys houses in Veloria", QUAKE)
    # The same story syndicated under another name: a copy, not a related article.
    _write(root, "quake-copy.txt", "Earthquake destroys houses in Veloria", QUAKE, "\n\nSyndicated from the wire.")
    _write(root, "quake-followup.txt", "Veloria rebuilds a week after the earthquake", FOLLOW_UP)
    for name, (title, paragraphs) in OTHERS.items():
        _write(root, name, title, paragraphs)
    settings = Settings(index_dir=tmp_path / "index")
    build_index([root], settings.index_dir, settings, embedder=fake_embedder)
    return settings


class CountingEmbedder(FakeEmbedder):
    calls = 0

    def embed_queries(self, texts):  # type: ignore[no-untyped-def]
        CountingEmbedder.calls += 1
        return super().embed_queries(texts)


def test_the_follow_up_ranks_first_and_the_article_and_its_copy_never_appear(related_index: Settings) -> None:
    embedder = CountingEmbedder()
    with Searcher.open(related_index.index_dir, related_index, embedder=embedder) as searcher:
        related = searcher.related("quake.txt", k=10, per_article=2)
    assert CountingEmbedder.calls == 0  # stored vectors only
    ids = [a.article_id for a in related]
    assert ids[0] == "quake-followup.txt"
    assert "quake.txt" not in ids and "quake-copy.txt" not in ids
    assert sorted(ids) == sorted(["quake-followup.txt", *OTHERS])  # every other article, each once
    assert [a.rank for a in related] == list(range(1, len(related) + 1))
    assert all(a.score > b.score for a, b in itertools.pairwise(related))
    follow_up = related[0]
    assert follow_up.title == "Veloria rebuilds a week after the earthquake"
    assert 1 <= len(follow_up.passages) <= 2 and all(p.article_id == "quake-followup.txt" for p in follow_up.passages)


def test_k_and_filters_restrict_the_related_articles(related_index: Settings, fake_embedder: FakeEmbedder) -> None:
    with Searcher.open(related_index.index_dir, related_index, embedder=fake_embedder) as searcher:
        assert len(searcher.related("quake.txt", k=2)) == 2
        only = searcher.related("quake.txt", filters=SearchFilters(article_ids=("cup.txt", "flood.txt")))
        assert sorted(a.article_id for a in only) == ["cup.txt", "flood.txt"]
        with pytest.raises(NotFoundError, match=r"no article with id 'missing\.txt'"):
            searcher.related("missing.txt")


@pytest.fixture
def http(related_index: Settings, fake_embedder: FakeEmbedder):  # type: ignore[no-untyped-def]
    app = create_app(related_index, embedder=fake_embedder)
    yield app.test_client()
    app.extensions["semsearch"].close()


def test_related_over_http_conforms_to_the_spec(http) -> None:  # type: ignore[no-untyped-def]
    response = http.get("/articles/quake.txt/related?k=3&per_article=2")
    assert response.status_code == 200
    data = conforms("/articles/{article_id}/related", "get", response)
    assert data["article_id"] == "quake.txt" and data["articles"][0]["article_id"] == "quake-followup.txt"
    assert len(data["articles"]) == 3
    filtered = http.get("/articles/quake.txt/related?tag=none-has-this").get_json()
    assert filtered["articles"] == []
    for path, status, message in [
        ("/articles/missing.txt/related", 404, "no article with id 'missing.txt'"),
        ("/articles/quake.txt/related?k=0", 400, "k must be between 1 and 100"),
        ("/articles/quake.txt/related?k=ten", 400, "k must be an integer"),
        ("/articles/quake.txt/related?colour=red", 400, "unknown parameter(s): colour"),
    ]:
        response = http.get(path)
        assert response.status_code == status, path
        assert message in conforms("/articles/{article_id}/related", "get", response)["error"]["message"]


def test_related_from_the_cli(related_index: Settings, use_fake_embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMSEARCH_INDEX_DIR", str(related_index.index_dir))
    result = CliRunner().invoke(main, ["related", "quake.txt", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["articles"][0]["article_id"] == "quake-followup.txt" and len(data["articles"]) == 2
    missing = CliRunner().invoke(main, ["related", "missing.txt"])
    assert missing.exit_code == 2 and "no article with id 'missing.txt'" in missing.output


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass


@pytest.fixture
def live(related_index: Settings, fake_embedder: FakeEmbedder) -> Iterator[str]:
    """The app on a real loopback HTTP server, for the client."""
    app = create_app(related_index.with_(api_keys=("client-key",)), embedder=fake_embedder)
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    app.extensions["semsearch"].close()


def test_related_from_the_client_with_an_api_key(live: str) -> None:
    related = SearchClient(live, api_key="client-key").related("quake.txt", k=2)
    assert related[0].article_id == "quake-followup.txt" and len(related) == 2
    assert related[0].passages[0].article_id == "quake-followup.txt"
    from semsearch.client import SearchHTTPError

    with pytest.raises(SearchHTTPError, match="401"):
        SearchClient(live, retries=0).related("quake.txt")
