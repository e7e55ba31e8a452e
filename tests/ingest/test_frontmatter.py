"""Front matter in text and Markdown articles: metadata read, text untouched, hostile blocks contained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semsearch.ingest.articles import load_articles
from semsearch.ingest.frontmatter import MAX_FRONT_MATTER_CHARS


def _load(tmp_path: Path, name: str, content: str):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    report = load_articles([path])
    return report


def test_front_matter_gives_the_metadata_and_is_not_article_text(tmp_path: Path) -> None:
    report = _load(
        tmp_path,
        "reef.txt",
        "---\npublished: 2026-10-03\nsource: Harbour Times\ntags: [science, oceans]\nurl: https://x.example/reef\n"
        "author: Ana Ruiz\nwords: 412\n---\nReef headline\n\nFirst paragraph.\n\nSecond paragraph.\n",
    )
    (article,) = report.articles
    assert (article.title, article.text) == ("Reef headline", "First paragraph.\n\nSecond paragraph.")
    assert (article.published, article.source, article.tags) == ("2026-10-03", "Harbour Times", ("science", "oceans"))
    assert article.url == "https://x.example/reef"
    assert article.metadata == {"author": "Ana Ruiz", "words": 412}
    assert article.id == "reef.txt" and report.warnings == []


def test_markdown_title_and_date_fields_as_hugo_writes_them(tmp_path: Path) -> None:
    report = _load(
        tmp_path,
        "story.md",
        '---\ntitle: "Ferry: night sailings"\ndate: 2026-09-14T08:30:00+02:00\ntags: transport, local\n---\n'
        "The ferry adds sailings.\n\nFares are unchanged.\n",
    )
    (article,) = report.articles
    assert article.title == "Ferry: night sailings"
    assert article.text == "The ferry adds sailings.\n\nFares are unchanged."  # no line taken as the headline
    assert article.published == "2026-09-14T06:30:00+00:00"
    assert article.tags == ("transport", "local")


def test_an_id_in_front_matter_does_not_rename_the_file_s_article(tmp_path: Path) -> None:
    (article,) = _load(tmp_path, "a.txt", "---\nid: other\nsource: S\n---\nH\n\nBody.\n").articles
    assert article.id == "a.txt" and article.source == "S"


@pytest.mark.parametrize(
    "content",
    [
        "Headline\n\n---\nsource: not front matter\n---\n\nBody.\n",  # rules further down are text
        "---\nHeadline without a closing line\n\nBody.\n",
    ],
)
def test_only_a_closed_block_on_the_first_line_is_front_matter(tmp_path: Path, content: str) -> None:
    (article,) = _load(tmp_path, "a.txt", content).articles
    assert article.source is None and article.metadata == {}
    assert "---" in article.title + article.text


def test_a_closing_line_beyond_the_size_limit_is_not_front_matter(tmp_path: Path) -> None:
    filler = "# x\n" * (MAX_FRONT_MATTER_CHARS // 4 + 10)
    (article,) = _load(tmp_path, "a.md", f"---\n{filler}source: S\n---\nH\n\nBody.\n").articles
    assert article.source is None and "source: S" in article.text


def test_invalid_yaml_is_a_warning_and_the_article_is_still_indexed(tmp_path: Path) -> None:
    report = _load(tmp_path, "a.txt", "---\nsource: [unclosed\n---\nHeadline\n\nBody.\n")
    (article,) = report.articles
    assert (article.title, article.text, article.source) == ("Headline", "Body.", None)
    (warning,) = report.warnings
    assert "a.txt: front matter is not valid YAML (line 3)" in warning


def test_a_block_that_is_not_a_mapping_is_ignored_with_a_warning(tmp_path: Path) -> None:
    report = _load(tmp_path, "a.txt", "---\n- just\n- a list\n---\nHeadline\n\nBody.\n")
    assert report.articles[0].metadata == {} and "not a mapping" in report.warnings[0]


def test_structures_and_alias_bombs_are_dropped_not_stored(tmp_path: Path) -> None:
    bomb = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )  # 9**9 leaves if expanded
    report = _load(tmp_path, "a.txt", f"---\n{bomb}nested: {{x: 1}}\nsource: S\n---\nH\n\nBody.\n")
    (article,) = report.articles
    assert article.source == "S" and article.metadata == {"a": [1, 2, 3, 4, 5, 6, 7, 8, 9]}
    assert len(json.dumps(article.metadata)) < 100
    assert "b, c, d, e, f, g, h, i, nested are not plain values" in report.warnings[0]


def test_deeply_nested_yaml_is_refused_cleanly(tmp_path: Path) -> None:
    report = _load(tmp_path, "a.txt", "---\nx: " + "[" * 20_000 + "]" * 20_000 + "\n---\nH\n\nBody.\n")
    assert report.articles[0].text == "Body." and "front matter" in report.warnings[0]


def test_python_tags_are_not_constructed(tmp_path: Path) -> None:
    report = _load(tmp_path, "a.txt", "---\nx: !!python/object/apply:os.system ['touch pwned']\n---\nH\n\nBody.\n")
    assert report.articles[0].metadata == {} and "not valid YAML" in report.warnings[0]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_html_article_tags_come_from_article_tag_meta(tmp_path: Path) -> None:
    page = (
        '<html><head><meta property="article:tag" content="sport"><meta property="article:tag" content="rowing">'
        '<meta name="keywords" content="ignored, when tags exist"></head><body><article><h1>T</h1><p>Body.</p>'
        "</article></body></html>"
    )
    (article,) = _load(tmp_path, "a.html", page).articles
    assert article.tags == ("sport", "rowing")
    keywords = page.replace('property="article:tag"', 'property="og:other"')
    (article,) = _load(tmp_path, "b.html", keywords).articles
    assert article.tags == ("ignored", "when tags exist")
