from __future__ import annotations

import itertools
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from semsearch import Article, Index, Searcher, Settings, build_index
from semsearch.client import SearchClient, SearchHTTPError, SearchTimeout, SearchUnavailable
from semsearch.errors import InvalidRequestError
from semsearch.index.layout import IndexLayout
from semsearch.index.reader import IndexVersion
from semsearch.serve.app import create_app

from ..conftest import FakeEmbedder

WORDS = re.compile(r"\w+|[^\w\s]")


def count_words(text: str) -> int:
    return len(WORDS.findall(text))


@pytest.fixture(scope="module")
def rag_embedder() -> FakeEmbedder:
    return FakeEmbedder(max_tokens=64)


@pytest.fixture(scope="module")
def rag_searcher(tmp_path_factory: pytest.TempPathFactory, rag_embedder: FakeEmbedder):
    embedder = rag_embedder
    settings = Settings(index_dir=tmp_path_factory.mktemp("rag") / "ix")
    paragraphs = lambda i: [  # noqa: E731
        f"Paragraph one of story {i} covers the harbour ferry timetable and fares in detail for readers.",
        f"Paragraph two of story {i} says the night sailings start in October with three extra boats.",
        f"Paragraph three of story {i} quotes the operator about demand from commuters and tourists.",
        f"Paragraph four of story {i} notes the council subsidy and the union's view on staffing.",
    ]
    articles = [Article(id=f"s{i}", title=f"Ferry story {i}", text="\n\n".join(paragraphs(i)), url=f"https://x/{i}")
                for i in range(6)]  # fmt: skip
    Index(settings.index_dir, settings, embedder=embedder).upsert(articles)
    with Searcher.open(settings.index_dir, settings, embedder=embedder) as searcher:
        yield searcher


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    max_tokens=st.integers(min_value=1, max_value=400),
    k=st.integers(min_value=1, max_value=20),
    query=st.sampled_from(["ferry night sailings October", "council subsidy union staffing", "fares", "tourists"]),
)
def test_budget_is_never_exceeded_and_citations_match(rag_searcher: Searcher, max_tokens, k, query) -> None:
    ctx = rag_searcher.context(query, max_tokens=max_tokens, k=k, tokenizer=count_words)
    assert ctx.token_count <= max_tokens
    assert ctx.token_count == count_words(ctx.text)
    assert [c.number for c in ctx.citations] == list(range(1, len(ctx.citations) + 1))
    blocks = re.split(r"\n\n(?=\[\d+\] )", ctx.text) if ctx.text else []
    assert len(blocks) == len(ctx.citations)
    for block, citation in zip(blocks, ctx.citations, strict=True):
        assert block.startswith(f"[{citation.number}] {citation.title} ({citation.url}): ")
        body = rag_searcher.article(citation.article_id).article.text
        assert block.endswith(" ".join(body[citation.start : citation.end].split()))


def test_adjacent_paragraphs_of_one_article_are_one_block_in_article_order(rag_searcher: Searcher) -> None:
    ctx = rag_searcher.context("story 3 ferry sailings October operator demand commuters", max_tokens=2000, k=4,
                               tokenizer=count_words)  # fmt: skip
    by_article: dict[str, list] = {}
    for c in ctx.citations:
        by_article.setdefault(c.article_id, []).append(c)
    for citations in by_article.values():
        starts = [c.start for c in citations]
        assert starts == sorted(starts)  # article order
        body = rag_searcher.article(citations[0].article_id).article.text
        for a, b in itertools.pairwise(citations):
            assert body[a.end : b.start].strip()  # blocks of one article are never adjacent: they were merged
    assert any(c.last_paragraph > c.paragraph for c in ctx.citations)


def prompt_tokens(embedder: FakeEmbedder, text: str) -> int:
    """Tokens of ``text`` as a prompt, by the embedder's own tokenizer: its count less the two special tokens it
    adds to every text."""
    return embedder.count_tokens([text])[0] - 2


@pytest.mark.parametrize("max_tokens", [40, 80, 200])
def test_the_default_budget_counts_with_the_index_models_tokenizer(
    rag_searcher: Searcher, rag_embedder: FakeEmbedder, max_tokens: int
) -> None:
    ctx = rag_searcher.context("ferry fares night sailings", max_tokens=max_tokens, k=8)
    assert ctx.citations
    assert ctx.token_count == prompt_tokens(rag_embedder, ctx.text) <= max_tokens
    # The budget is used, not wasted: one more whole sentence of the next passage would not have fitted.
    assert prompt_tokens(rag_embedder, ctx.text) > max_tokens // 2


def test_context_with_encode_style_tokenizers(rag_searcher: Searcher) -> None:

    class EncodeTokenizer:
        def encode(self, text: str) -> list[str]:  # tiktoken-style: no keyword arguments
            return text.split()

    ctx = rag_searcher.context("ferry fares", max_tokens=50, k=5, tokenizer=EncodeTokenizer())
    assert ctx.token_count == len(ctx.text.split()) <= 50
    with pytest.raises(InvalidRequestError, match="tokenizer"):
        rag_searcher.context("ferry", tokenizer=42)
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        rag_searcher.context("ferry", max_tokens=0)


def test_tiny_budget_gives_an_empty_context_not_an_overflow(rag_searcher: Searcher) -> None:
    ctx = rag_searcher.context("ferry", max_tokens=3, tokenizer=count_words)
    assert ctx.text == "" and ctx.citations == () and ctx.token_count == 0


def test_sixteen_threads_search_while_the_index_reloads(tmp_path: Path, corpus_dir: Path, fake_embedder) -> None:
    settings = Settings(index_dir=tmp_path / "ix", keep_versions=20)
    build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
    searcher = Searcher.open(settings.index_dir, settings, embedder=fake_embedder)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[tuple[str, list[str], int]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        n = 0
        while not stop.is_set() or n < 10:
            n += 1
            try:
                version = searcher.version
                hits = searcher.search(f"bridge bank reef volcano {i} {n}", k=50, version=version)
                ctx = searcher.context("bridge reef", max_tokens=60, k=4, version=version)
                with lock:
                    seen.append((version.version_id, [h.article_id for h in hits], len(hits)))
                    seen.append((version.version_id, [c.article_id for c in ctx.citations], -1))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for r in range(5):
        (corpus_dir / f"v{r}.txt").write_text(
            f"Volcano {r}\n\nThe volcano {r} erupted near the reef.", encoding="utf-8"
        )
        build_index([corpus_dir], settings.index_dir, settings, embedder=fake_embedder)
        searcher.reload()
    stop.set()
    for t in threads:
        t.join()
    searcher.close()
    assert errors == []
    layout = IndexLayout(settings.index_dir)
    versions = {v for v, _, _ in seen}
    assert len(versions) >= 3
    contents = {}
    for version in versions:
        opened = IndexVersion(layout.version_path(version))
        contents[version] = (set(opened.article_hashes()), opened.manifest.passages)
        opened.close()
    for version, article_ids, n in seen:
        articles, passages = contents[version]
        assert set(article_ids) <= articles  # every result comes from one complete version
        if n >= 0:
            assert n == passages  # k=50 > passages: every passage of exactly that version


@pytest.fixture
def live_server(built_index, settings: Settings, fake_embedder):
    app = create_app(settings, embedder=fake_embedder)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()


def test_client_against_a_live_server(live_server) -> None:
    base, _ = live_server
    client = SearchClient(base, timeout=5)
    hits = client.search("who designed the bridge architect", k=2)
    assert hits[0].article_id == "bridge.txt" and len(hits) == 2
    assert hits[0].text[hits[0].highlights[0].start : hits[0].highlights[0].end] == hits[0].highlights[0].text
    batch = client.search_batch(["bridge architect", "interest rate cut"], k=1)
    assert [r[0].article_id for r in batch] == ["bridge.txt", "bank.txt"]
    ctx = client.context("limestone boulders reef", max_tokens=60, k=3)
    assert ctx.citations[0].article_id == "reef.txt" and ctx.token_count <= 60
    filtered = client.search("bridge", filters={"article_ids": ["bank.txt"]})
    assert {h.article_id for h in filtered} == {"bank.txt"}


def test_client_errors_are_clear_and_4xx_is_not_retried(live_server) -> None:
    base, app = live_server
    client = SearchClient(base, timeout=5, retries=3, backoff=0.01)
    with pytest.raises(SearchHTTPError) as info:
        client.search("", k=1)
    assert info.value.status == 400 and info.value.code == "invalid_request"
    assert "must not be empty" in info.value.server_message
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'route="/search",status="400"} 1.0' in metrics  # one attempt only


def test_client_retries_503_then_gives_up(tmp_path: Path, fake_embedder) -> None:
    app = create_app(Settings(index_dir=tmp_path / "none"), embedder=fake_embedder)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = SearchClient(f"http://127.0.0.1:{server.server_port}", retries=2, backoff=0.01)
        with pytest.raises(SearchHTTPError) as info:
            client.search("anything")
        assert info.value.status == 503
        metrics = app.test_client().get("/metrics").get_data(as_text=True)
        assert 'route="/search",status="503"} 3.0' in metrics  # first try + 2 retries
    finally:
        server.shutdown()


def test_client_timeout_and_unreachable() -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        client = SearchClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3, retries=1, backoff=0.01)
        with pytest.raises(SearchTimeout, match=r"within 0\.3 s"):
            client.search("x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SearchUnavailable, match="cannot reach"):
        SearchClient(f"http://127.0.0.1:{port}", retries=1, backoff=0.01).search("x")
    with pytest.raises(ValueError, match="http"):
        SearchClient("localhost:8000")


def test_context_endpoint_validation(live_server) -> None:
    _, app = live_server
    client = app.test_client()
    ok = client.post("/context", json={"query": "reef boulders", "max_tokens": 40})
    data = ok.get_json()
    assert ok.status_code == 200 and data["token_count"] <= 40 and data["citations"]
    for body, message in [
        ({}, "query is required"),
        ({"query": ""}, "must not be empty"),
        ({"query": "a", "max_tokens": 0}, "max_tokens must be between"),
        ({"query": "a", "k": 51}, "k must be between 1 and 50"),
        ({"query": "a", "mode": "x"}, "mode must be one of"),
        ({"query": "a", "extra": 1}, "unknown field"),
    ]:
        response = client.post("/context", json=body)
        assert response.status_code == 400 and message in response.get_json()["error"]["message"]


def test_citations_name_every_merged_passage_and_its_paragraph_range(rag_searcher: Searcher) -> None:
    hits = rag_searcher.search("story 2 ferry sailings October operator demand commuters", k=8, highlights=False)
    ctx = rag_searcher.context("story 2 ferry sailings October operator demand commuters", max_tokens=5000, k=8,
                               tokenizer=count_words)  # fmt: skip
    assert sorted(p for c in ctx.citations for p in c.passage_ids) == sorted(h.passage_id for h in hits)
    for citation in ctx.citations:
        stored = {p.id: p for p in rag_searcher.article(citation.article_id).passages}
        cited = [stored[p] for p in citation.passage_ids]
        assert citation.paragraph == min(p.paragraph for p in cited)
        assert citation.last_paragraph == max(p.last_paragraph for p in cited)
        assert (citation.start, citation.end) == (min(p.start for p in cited), max(p.end for p in cited))
    assert any(len(c.passage_ids) > 1 for c in ctx.citations)


def test_a_budget_of_exactly_the_full_count_keeps_everything(rag_searcher: Searcher) -> None:
    full = rag_searcher.context("ferry fares night sailings", max_tokens=5000, k=6, tokenizer=count_words)
    exact = rag_searcher.context("ferry fares night sailings", max_tokens=full.token_count, k=6, tokenizer=count_words)
    assert exact.text == full.text and exact.citations == full.citations
    short = rag_searcher.context("ferry fares night sailings", max_tokens=full.token_count - 1, k=6,
                                 tokenizer=count_words)  # fmt: skip
    assert short.text != full.text and short.token_count <= full.token_count - 1


@pytest.fixture(scope="module")
def long_paragraph_searcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searcher]:
    embedder = FakeEmbedder(max_tokens=256)
    settings = Settings(index_dir=tmp_path_factory.mktemp("long") / "ix")
    sentences = ["The tide mill opened in 1810.", "It ground wheat for the valley.", "A storm broke its wheel in 1902.",
                 "Volunteers rebuilt the wheel last spring."]  # fmt: skip
    articles = [Article(id="mill", title="Tide mill", text=" ".join(sentences)),  # no url: labelled by title alone
                Article(id="untitled", title="", text="An untitled note about the tide mill wheel.")]  # fmt: skip
    Index(settings.index_dir, settings, embedder=embedder).upsert(articles)
    with Searcher.open(settings.index_dir, settings, embedder=embedder) as searcher:
        yield searcher


@pytest.mark.parametrize("slack", [0, 2])
@pytest.mark.parametrize("whole_sentences", [1, 2, 3])
def test_a_block_is_cut_after_the_last_whole_sentence_that_fits(long_paragraph_searcher: Searcher,
                                                                 whole_sentences: int, slack: int) -> None:  # fmt: skip
    body = long_paragraph_searcher.article("mill").article.text
    ends = [m.end() for m in re.finditer(r"\.", body)]
    kept = body[: ends[whole_sentences - 1]]
    budget = count_words("[1] Tide mill: " + kept) + slack  # an exact fit, or room for a bit more but not for
    # the next whole sentence
    ctx = long_paragraph_searcher.context("tide mill wheel storm volunteers", max_tokens=budget, k=1,
                                          mode="keyword", tokenizer=count_words)  # fmt: skip
    assert ctx.text == "[1] Tide mill: " + kept
    assert (ctx.citations[0].start, ctx.citations[0].end) == (0, len(kept))


def test_labels_without_url_or_title(long_paragraph_searcher: Searcher) -> None:
    ctx = long_paragraph_searcher.context("untitled note tide mill wheel", max_tokens=500, k=2, tokenizer=count_words)
    labels = re.findall(r"^\[\d+\] [^:]*:", ctx.text, flags=re.M)
    assert sorted(labels) == ["[1] untitled:", "[2] Tide mill:"] or sorted(labels) == [
        "[1] Tide mill:",
        "[2] untitled:",
    ]
