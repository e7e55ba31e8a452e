from __future__ import annotations

from pathlib import Path

import pytest

from semsearch.errors import SourceError
from semsearch.ingest.articles import load_articles, normalise_date, parse_text_article

from ..conftest import FIXTURES, SAMPLE_CORPUS

FORMATS = FIXTURES / "formats"


def test_seed_format_text_article_headline_and_body() -> None:
    report = load_articles([SAMPLE_CORPUS / "world" / "russia-military-outreach.txt"])
    (article,) = report.articles
    assert article.id == "russia-military-outreach.txt"
    assert article.title == "Russian military leaders rejecting outreach from US counterparts"
    assert article.text.startswith("Top U.S. defense officials")
    assert "declined to engage" in article.text


def test_directory_ids_are_paths_relative_to_root_and_docs_are_excluded() -> None:
    report = load_articles([SAMPLE_CORPUS], exclude=("README*", "QUESTIONS*"))
    ids = {a.id for a in report.articles}
    assert "world/russia-military-outreach.txt" in ids
    assert "technology/quantum-sensor-startup.md" in ids
    assert not any(i.endswith((".md",)) and "README" in i for i in ids)
    assert not any("QUESTIONS" in i for i in ids)
    assert report.skipped == []


def test_markdown_title_strips_hashes() -> None:
    (article,) = load_articles([FORMATS / "story.md"]).articles
    assert article.title == "Quantum sensor startup raises funds"


def test_html_main_text_title_and_metadata() -> None:
    (article,) = load_articles([FORMATS / "page.html"]).articles
    assert article.title == "Harbour ferry adds night sailings"
    assert article.url == "https://news.example.com/ferry-night-sailings"
    assert article.published == "2026-09-14T08:30:00+00:00"
    assert article.source == "Example News"
    paragraphs = article.text.split("\n\n")
    assert paragraphs[0].startswith("The harbour ferry will run three extra night sailings")
    assert "north pier" in paragraphs[1]
    assert "Fares are unchanged." in paragraphs
    for chrome in ("navigation link", "masthead", "sidebar restaurant", "All rights reserved", "tracking", "color"):
        assert chrome not in article.text


def test_jsonl_records_good_rows_kept_bad_rows_reported() -> None:
    report = load_articles([FORMATS / "records.jsonl"])
    by_id = {a.id: a for a in report.articles}
    assert set(by_id) == {"rec-1", "records.jsonl#2", "6"}
    rec = by_id["rec-1"]
    assert rec.tags == ("energy", "business")
    assert rec.metadata == {"desk": "climate"}
    assert rec.published == "2026-10-03"
    assert rec.text.split("\n\n")[1] == "The developer must fund a compensation scheme."
    assert by_id["6"].published is None and by_id["6"].metadata["published_raw"] == "next tuesday"
    reasons = {s.location.rsplit(":", 1)[1]: s.reason for s in report.skipped}
    assert reasons.keys() == {"3", "4", "5"}
    assert "invalid JSON" in reasons["3"]
    assert "not a JSON object" in reasons["4"]
    assert "no 'text'" in reasons["5"]
    assert any("published" in w for w in report.warnings)


def test_csv_records() -> None:
    report = load_articles([FORMATS / "records.csv"])
    by_id = {a.id: a for a in report.articles}
    assert set(by_id) == {"csv-1", "csv-4"}
    assert by_id["csv-1"].metadata == {"section": "local"}
    assert by_id["csv-1"].text.endswith("Weekend hours are unchanged.")
    assert by_id["csv-4"].url is None and by_id["csv-4"].source is None
    skipped = sorted(s.reason for s in report.skipped)
    assert any("no 'text'" in r for r in skipped)
    assert any("more fields" in r for r in skipped)


def test_csv_without_text_column_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,title\n1,x\n", encoding="utf-8")
    report = load_articles([path])
    assert report.articles == []
    assert "no 'text' column" in report.skipped[0].reason


def test_cp1252_file_is_decoded_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "legacy.txt"
    path.write_bytes("Caf\u00e9 owners\u2019 ruling\n\nThe court\u2019s decision on caf\u00e9s.".encode("cp1252"))
    report = load_articles([path])
    (article,) = report.articles
    assert article.title == "Café owners’ ruling"
    assert article.text == "The court’s decision on cafés."
    assert len(report.warnings) == 1 and "cp1252" in report.warnings[0]


def test_latin1_only_bytes_fall_back_to_latin1(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"Title \x81\n\nBody text.")  # 0x81 is undefined in cp1252
    report = load_articles([path])
    assert report.articles[0].title == "Title \x81"
    assert "latin-1" in report.warnings[0]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.txt", b"", "empty file"),
        ("blank.txt", b"\n\n  \n", "empty file"),
        ("headline-only.txt", b"Just a headline\n", "no text after the headline"),
        ("binary.txt", b"\x00\x01\x02binary", "binary file"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    (tmp_path / "good.txt").write_text("Headline\n\nBody.", encoding="utf-8")
    report = load_articles([tmp_path])
    assert [a.id for a in report.articles] == ["good.txt"]
    assert len(report.skipped) == 1
    assert reason in report.skipped[0].reason


def test_duplicate_ids_keep_the_first(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(
        '{"id": "x", "title": "First", "text": "one"}\n{"id": "x", "title": "Second", "text": "two"}\n',
        encoding="utf-8",
    )
    report = load_articles([tmp_path])
    assert [a.title for a in report.articles] == ["First"]
    assert "duplicate article id" in report.skipped[0].reason


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="source not found"):
        load_articles([tmp_path / "nope"])


def test_hidden_and_unsupported_files_are_ignored_in_directories(tmp_path: Path) -> None:
    (tmp_path / ".hidden.txt").write_text("H\n\nbody", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "ok.txt").write_text("H\n\nbody", encoding="utf-8")
    assert [a.id for a in load_articles([tmp_path]).articles] == ["ok.txt"]


def test_content_hash_changes_with_text_only() -> None:
    a = parse_text_article("T\n\nBody one.", "a")
    b = parse_text_article("T\n\nBody one.", "a")
    c = parse_text_article("T\n\nBody two.", "a")
    assert a.content_hash == b.content_hash != c.content_hash


def test_crlf_is_normalised() -> None:
    article = parse_text_article("Title\r\n\r\nPara one.\r\n\r\nPara two.", "x")
    assert article.text == "Para one.\n\nPara two."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-10-03", "2026-10-03"),
        ("2026-10-03T08:30:00Z", "2026-10-03T08:30:00+00:00"),
        ("Tue, 03 Nov 2026 10:00:00 +0000", "2026-11-03T10:00:00+00:00"),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_normalise_date(raw: str | None, expected: str | None) -> None:
    assert normalise_date(raw) == expected
