"""The hostile ingestion corpus (tests/ingest/conftest.py): each bad item is skipped with its own clear message,
every good article of the same run is indexed, and a failed run leaves the published index as it was."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import semsearch.ingest.sources
from semsearch import Settings, build_index, reindex
from semsearch.cli import main
from semsearch.config import ChunkSettings
from semsearch.errors import SourceError
from semsearch.index.layout import IndexLayout
from semsearch.index.reader import IndexVersion
from semsearch.ingest.articles import Article, LoadReport, iter_articles, load_articles, parse_html_article
from semsearch.ingest.chunking import chunk_article, split_sentences
from semsearch.ingest.sources import iter_source_files
from semsearch.retrieve.searcher import Searcher

from ..conftest import FakeEmbedder
from .conftest import NESTING, SECRET, HostileCorpus


def relative(report: LoadReport, root: Path) -> dict[str, str]:
    """Skip reasons by location relative to ``root``."""
    prefix = f"{root}/"
    return {s.location.removeprefix(prefix): s.reason for s in report.skipped}


def deny_reading(patch: pytest.MonkeyPatch, *names: str) -> None:
    """Opening these files fails with EACCES, as it would for another user (tests run as root, for whom chmod 000
    changes nothing)."""
    real_open = os.open

    def deny(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if Path(path).name in names:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)

    patch.setattr(semsearch.ingest.sources.os, "open", deny)


@pytest.fixture(scope="module")
def loaded(hostile_corpus: HostileCorpus) -> LoadReport:
    return load_articles([hostile_corpus.root])


def test_every_good_article_is_loaded(hostile_corpus: HostileCorpus, loaded: LoadReport) -> None:
    assert {a.id for a in loaded.articles} == hostile_corpus.good_ids


def test_nothing_else_is_skipped(hostile_corpus: HostileCorpus, loaded: LoadReport) -> None:
    assert relative(loaded, hostile_corpus.root).keys() == hostile_corpus.skipped.keys()


@pytest.mark.parametrize(
    "item",
    [
        "empty.txt",
        "binary.txt",
        "control-bytes.txt",
        "huge.txt",
        "fifo.txt",
        "passwd.txt",
        "leak.txt",
        "good/deeper-leak.txt",
        "outside-dir",
        "loop-a.txt",
        "loop-b.txt",
        "good/loop-dir",
        "broken.txt",
        "records.jsonl:2",
        "records.jsonl:3",
        "records.jsonl:4",
        "records.jsonl:5",
        "records.jsonl:6",
        "records.csv:3",
        "records.csv:4",
        "records.csv:6",
    ],
)
def test_each_hostile_item_is_skipped_with_its_reason(
    hostile_corpus: HostileCorpus, loaded: LoadReport, item: str
) -> None:
    reasons = relative(loaded, hostile_corpus.root)
    assert item in reasons, f"{item} was not reported: {reasons}"
    assert hostile_corpus.skipped[item] in reasons[item]


def test_nothing_outside_the_source_root_is_read(hostile_corpus: HostileCorpus, loaded: LoadReport) -> None:
    for article in loaded.articles:
        assert SECRET not in article.text and "root:" not in article.text
        assert article.path is not None and Path(article.path).is_relative_to(hostile_corpus.root)


def test_a_symlink_inside_the_root_is_read_under_its_own_name(loaded: LoadReport) -> None:
    by_id = {a.id: a for a in loaded.articles}
    assert by_id["good/alias.txt"].text == by_id["good/harbour.txt"].text


def test_a_duplicate_id_keeps_the_first_and_names_both_places(
    hostile_corpus: HostileCorpus, loaded: LoadReport
) -> None:
    (dup,) = (a for a in loaded.articles if a.id == "dup-1")
    assert dup.title == "First copy"
    reason = relative(loaded, hostile_corpus.root)["records.jsonl:6"]
    assert reason.endswith(f"(from {hostile_corpus.root / 'records.csv'}:5) is kept")


def test_damaged_utf8_keeps_its_good_characters_with_a_warning(
    hostile_corpus: HostileCorpus, loaded: LoadReport
) -> None:
    (article,) = (a for a in loaded.articles if a.id == "good/damaged-utf8.txt")
    assert article.title == "Café owners’ ruling"
    assert article.text == "The court’s décision on cafés \ufffd\ufffd stands."
    (warning,) = (w for w in loaded.warnings if "damaged-utf8.txt" in w)
    assert warning.startswith(str(hostile_corpus.root / "good" / "damaged-utf8.txt"))
    assert "not valid UTF-8 (byte 0xff at offset" in warning and "2 invalid byte sequence(s) replaced" in warning


def test_html_scripts_and_styles_are_never_text(loaded: LoadReport) -> None:
    by_id = {a.id: a for a in loaded.articles}
    page = by_id["good/page.html"]
    assert page.title == "Glacier retreat measured"
    assert page.text == "The glacier retreated forty metres."
    nested = by_id["good/nested.html"]
    assert nested.text == "Lighthouse keepers counted seabirds.\n\nNested page ends here."
    for leak in ("scriptleak", "stylecolour", "headingscript", "inlinescript", "noscriptleak", "deepscript"):
        assert all(leak not in a.text and leak not in a.title for a in loaded.articles)


def test_deeply_nested_blocks_cost_about_what_as_many_flat_blocks_cost(tmp_path: Path) -> None:
    # Asking each of n nested blocks for the blocks inside it visits n^2/2 nodes: 12 s for 10,000 levels, 50 times
    # the flat page. A guard with a wide margin (selectolax's nodes cannot be instrumented), not a benchmark.
    def seconds(html: str) -> float:
        started = time.perf_counter()
        (article,) = parse_html_article(html, "page").text.split("\n\n")[-1:]
        assert article == "Deep."
        return time.perf_counter() - started

    flat = seconds("<html><body>" + "<blockquote>x</blockquote>" * NESTING + "<p>Deep.</p></body></html>")
    nested = seconds(
        "<html><body>" + "<blockquote>" * NESTING + "<p>Deep.</p>" + "</blockquote>" * NESTING + "</body></html>"
    )
    assert nested < 5 * flat + 1.0


def test_a_file_that_vanishes_or_changes_kind_mid_run_is_skipped(tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt"):
        (tmp_path / name).write_text(f"{name}\n\nBody of {name}.", encoding="utf-8")
    report = LoadReport()
    articles = iter_articles([tmp_path], report)
    assert next(articles).id == "a.txt"  # the directory is listed; now its files change under the run
    (tmp_path / "b.txt").unlink()
    (tmp_path / "c.txt").unlink()
    os.mkfifo(tmp_path / "c.txt")
    (tmp_path / "d.txt").unlink()
    (tmp_path / "d.txt").mkdir()
    (tmp_path / "e.txt").unlink()
    (tmp_path / "e.txt").symlink_to("/etc/passwd")
    assert list(articles) == []
    assert relative(report, tmp_path) == {
        "b.txt": "file vanished before it was read",
        "c.txt": "not a regular file (a FIFO)",
        "d.txt": "not a regular file (a directory)",
        "e.txt": "file was replaced by a symlink during the run",
    }


def test_an_unreadable_file_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "locked.txt").write_text("Locked\n\nBody.", encoding="utf-8")
    (tmp_path / "open.txt").write_text("Open\n\nBody.", encoding="utf-8")
    deny_reading(monkeypatch, "locked.txt")
    report = load_articles([tmp_path])
    assert [a.id for a in report.articles] == ["open.txt"]
    assert relative(report, tmp_path) == {"locked.txt": "cannot read file: Permission denied"}


def test_a_file_named_directly_is_read_as_given(hostile_corpus: HostileCorpus) -> None:
    report = load_articles([hostile_corpus.root / "leak.txt"])
    assert [a.id for a in report.articles] == ["leak.txt"] and SECRET in report.articles[0].text


def test_a_named_directory_that_is_a_symlink_is_walked_but_links_inside_it_are_checked(
    hostile_corpus: HostileCorpus, tmp_path: Path
) -> None:
    link = tmp_path / "linked-corpus"
    link.symlink_to(hostile_corpus.root, target_is_directory=True)
    report = load_articles([link])
    assert {a.id for a in report.articles} == hostile_corpus.good_ids
    assert "symlink leaves the source root" in relative(report, link)["leak.txt"]


def test_a_directory_tree_deeper_than_the_recursion_limit_is_walked(tmp_path: Path) -> None:
    # 1,200 levels of one-letter directories: deeper than Python's default recursion limit.
    cwd = os.getcwd()
    os.chdir(tmp_path)  # one level at a time: os.makedirs itself recurses per level
    try:
        for _ in range(1_200):
            os.mkdir("d")
            os.chdir("d")
        Path("bottom.txt").write_text("Bottom\n\nFound at the bottom.", encoding="utf-8")
    finally:
        os.chdir(cwd)
    try:
        files = list(iter_source_files([tmp_path], (), []))
        assert [f.rel_id for f in files] == ["d/" * 1_200 + "bottom.txt"]
    finally:
        _remove_chain(tmp_path, 1_200)


def _remove_chain(root: Path, depth: int) -> None:
    """Remove the tree bottom up, one level at a time: shutil.rmtree (pytest's cleanup of old tmp dirs) recurses
    per level and fails with RecursionError on it."""
    cwd = os.getcwd()
    try:
        os.chdir(root / Path(*["d"] * depth))
        os.remove("bottom.txt")
        for _ in range(depth):
            os.chdir("..")
            os.rmdir("d")
    finally:
        os.chdir(cwd)


def test_a_long_paragraph_without_breaks_is_split_by_the_token_budget_in_linear_work(fake_embedder) -> None:
    # No whitespace at all (a base64-like blob): every cut is found by counting tokens of candidate prefixes.
    text = "ab," * 100_000
    counted = 0

    def count_tokens(texts: list[str]) -> list[int]:
        nonlocal counted
        counted += sum(len(t) for t in texts)
        return fake_embedder.count_tokens(texts)

    passages = chunk_article(Article(id="blob", title="Blob", text=text), ChunkSettings(), count_tokens, 128)
    assert "".join(p.text for p in passages) == text
    assert max(fake_embedder.count_tokens([p.embed_text for p in passages])) <= 128
    # Galloping then bisecting counts O(piece * log piece) characters per piece; bisecting over the rest of the
    # text counted about 2,000 times the text's length here.
    assert counted < 100 * len(text)


def test_sentence_splitting_of_a_run_of_abbreviations_looks_back_a_bounded_way() -> None:
    class CountingStr(str):
        sliced = 0

        def __getitem__(self, key):  # type: ignore[no-untyped-def]
            result = str.__getitem__(self, key)
            if isinstance(key, slice):
                CountingStr.sliced += len(result)
            return result

    text = CountingStr("The U.S. Army " * 20_000 + "ends. Next sentence here.")
    spans = split_sentences(text)
    assert len(spans) == 2
    assert CountingStr.sliced < 20 * len(text)


def test_every_good_article_is_indexed_and_every_hostile_item_reported(
    hostile_corpus: HostileCorpus, settings: Settings, fake_embedder: FakeEmbedder
) -> None:
    report = build_index([hostile_corpus.root], settings.index_dir, settings, embedder=fake_embedder)
    assert report.published and report.articles == len(hostile_corpus.good_ids)
    version = IndexVersion(IndexLayout(settings.index_dir).current_path())
    try:
        assert set(version.article_hashes()) == hostile_corpus.good_ids
    finally:
        version.close()
    reasons = {s.location.removeprefix(f"{hostile_corpus.root}/"): s.reason for s in report.skipped}
    for item, phrase in hostile_corpus.skipped.items():
        assert phrase in reasons[item], item
    assert any("damaged-utf8.txt" in w and "not valid UTF-8" in w for w in report.warnings)
    with Searcher.open(settings.index_dir, settings, embedder=fake_embedder) as searcher:
        hits = searcher.search("lighthouse keepers seabirds", k=3, mode="keyword")
        assert hits[0].article_id == "good/nested.html"
        assert searcher.search(SECRET, k=5, mode="keyword") == []
        assert all(SECRET not in h.text for h in searcher.search(f"root password {SECRET}", k=20))


def _published_state(settings: Settings, embedder: FakeEmbedder) -> tuple[str | None, list[str], list[tuple]]:
    layout = IndexLayout(settings.index_dir)
    with Searcher.open(settings.index_dir, settings, embedder=embedder) as searcher:
        hits = [(h.article_id, h.text, round(h.score, 6)) for h in searcher.search("ferry sailings bakery", k=5)]
    return layout.current_version(), layout.all_version_dirs(), hits


@pytest.fixture
def published(hostile_corpus: HostileCorpus, settings: Settings, fake_embedder: FakeEmbedder):
    build_index([hostile_corpus.root], settings.index_dir, settings, embedder=fake_embedder)
    return _published_state(settings, fake_embedder)


def test_a_run_whose_embedder_fails_leaves_the_published_index_untouched(
    hostile_corpus: HostileCorpus, settings: Settings, fake_embedder: FakeEmbedder, published, tmp_path: Path
) -> None:
    more = tmp_path / "more"
    more.mkdir()
    (more / "new.txt").write_text("Ferry strike\n\nThe ferry crews strike.", "utf-8")
    fake_embedder.fail_after = fake_embedder.documents_embedded
    with pytest.raises(RuntimeError, match="embedding failed"):
        reindex([hostile_corpus.root, more], settings.index_dir, settings, embedder=fake_embedder)
    assert _published_state(settings, fake_embedder) == published


def test_a_run_in_which_every_source_fails_leaves_the_published_index_untouched(
    hostile_corpus: HostileCorpus, settings: Settings, fake_embedder: FakeEmbedder, published, tmp_path: Path
) -> None:
    bad = tmp_path / "all-bad"
    bad.mkdir()
    for name in ("empty.txt", "binary.txt", "leak.txt", "loop-a.txt", "loop-b.txt"):
        shutil.copy(hostile_corpus.root / name, bad / name, follow_symlinks=False)
    with pytest.raises(SourceError, match=r"no article could be read \(5 skipped: .*binary file.*; and 2 more\)"):
        reindex([bad], settings.index_dir, settings, embedder=fake_embedder)
    with pytest.raises(SourceError, match="the index was left unchanged"):
        reindex([bad], settings.index_dir, settings, embedder=fake_embedder, dry_run=True)
    assert _published_state(settings, fake_embedder) == published


@pytest.fixture
def runner(use_fake_embedder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("SEMSEARCH_INDEX_DIR", str(tmp_path / "index"))
    return CliRunner()


def test_cli_index_reports_a_symlink_out_of_the_root_and_search_never_returns_it(
    runner: CliRunner, hostile_corpus: HostileCorpus, tmp_path: Path
) -> None:
    corpus = tmp_path / "cli-corpus"
    corpus.mkdir()
    (corpus / "harbour.txt").write_text("Harbour ferry\n\nThe ferry runs three extra night sailings.", "utf-8")
    (corpus / "notes.txt").symlink_to(hostile_corpus.outside / "secret.txt")
    (corpus / "shared").symlink_to(hostile_corpus.outside, target_is_directory=True)

    result = runner.invoke(main, ["index", str(corpus)])
    assert result.exit_code == 0, result.output
    real = hostile_corpus.outside.resolve()
    assert f"skipped {corpus / 'notes.txt'}: symlink leaves the source root (-> {real / 'secret.txt'})" in result.output
    assert f"skipped {corpus / 'shared'}: symlink leaves the source root (-> {real})" in result.output
    assert "1 articles" in result.output and "2 skipped" in result.output

    for mode in ("hybrid", "keyword", "dense"):
        result = runner.invoke(main, ["search", f"root password {SECRET}", "--mode", mode, "--json"])
        assert result.exit_code == 0, result.output
        hits = json.loads(result.output)["hits"]
        assert [h["article_id"] for h in hits] in ([], ["harbour.txt"])
        assert all(SECRET not in h["text"] and "password" not in h["text"] for h in hits)


def test_cli_index_of_sources_that_all_fail_is_one_error_and_publishes_nothing(
    runner: CliRunner, hostile_corpus: HostileCorpus, tmp_path: Path
) -> None:
    bad = tmp_path / "all-bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "leak.txt").symlink_to(hostile_corpus.outside / "secret.txt")
    result = runner.invoke(main, ["index", str(bad)])
    assert result.exit_code == 2
    assert "error: no article could be read (2 skipped:" in result.output
    assert "empty.txt: empty file" in result.output and "symlink leaves the source root" in result.output
    assert "Traceback" not in result.output
    assert IndexLayout(tmp_path / "index").current_version() is None


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv", "empty.html", "empty.md"])
def test_an_empty_file_of_any_format_says_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    assert relative(load_articles([tmp_path]), tmp_path) == {name: "empty file"}


def test_a_reindex_keeps_the_articles_of_a_file_it_could_not_read(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Permission or I/O errors are not deletions: what the index holds from such a file stays until the file is
    really gone (records files included)."""
    corpus, index_dir = tmp_path / "corpus", tmp_path / "index"
    corpus.mkdir()
    for name in ("locked", "open", "other"):
        (corpus / f"{name}.txt").write_text(f"{name.title()} story\n\nThe {name} article body.", encoding="utf-8")
    records = [{"id": f"rec-{i}", "title": f"Record {i}", "text": f"Record body {i}."} for i in range(3)]
    (corpus / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    settings = Settings(index_dir=index_dir)
    embedder = FakeEmbedder()
    build_index([corpus], index_dir, settings, embedder=embedder)
    (corpus / "other.txt").unlink()  # a real deletion in the same run
    with monkeypatch.context() as patch:
        deny_reading(patch, "locked.txt", "records.jsonl")
        report = reindex([corpus], index_dir, settings, embedder=embedder)
    assert report.removed == 1
    assert {s.location.removeprefix(f"{corpus}/"): s.kept for s in report.skipped} == {"locked.txt": True,
                                                                                       "records.jsonl": True}  # fmt: skip
    current = IndexVersion(IndexLayout(index_dir).current_path())
    assert set(current.article_hashes()) == {"locked.txt", "open.txt", "rec-0", "rec-1", "rec-2"}
    # Readable again and then deleted: now they go.
    (corpus / "locked.txt").unlink()
    (corpus / "records.jsonl").unlink()
    assert reindex([corpus], index_dir, settings, embedder=embedder).removed == 4
    current = IndexVersion(IndexLayout(index_dir).current_path())
    assert set(current.article_hashes()) == {"open.txt"}


def test_the_cli_says_when_a_skipped_file_keeps_its_articles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             use_fake_embedder) -> None:  # fmt: skip
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "locked.txt").write_text("Locked\n\nBody of the locked story.", encoding="utf-8")
    (corpus / "open.txt").write_text("Open\n\nBody of the open story.", encoding="utf-8")
    runner = CliRunner()
    index_dir = str(tmp_path / "index")
    assert runner.invoke(main, ["index", str(corpus), "--index-dir", index_dir]).exit_code == 0
    deny_reading(monkeypatch, "locked.txt")
    result = runner.invoke(main, ["reindex", str(corpus), "--index-dir", index_dir])
    assert result.exit_code == 0, result.output
    assert (
        f"skipped {corpus}/locked.txt: cannot read file: Permission denied (the articles indexed from it are kept)"
        in (result.output)
    )
    assert "removed 0" in result.output
