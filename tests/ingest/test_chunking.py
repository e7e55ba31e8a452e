from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.config import ChunkSettings
from semsearch.ingest.articles import Article
from semsearch.ingest.chunking import chunk_article, is_boilerplate, split_paragraphs, split_sentences

from ..conftest import SAMPLE_CORPUS, FakeEmbedder

fake = FakeEmbedder()
SEED = (SAMPLE_CORPUS / "world" / "russia-military-outreach.txt").read_text(encoding="utf-8")


def article(text: str, title: str = "A title") -> Article:
    return Article(id="a", title=title, text=text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One.\n\nTwo.\n\nThree.", ["One.", "Two.", "Three."]),
        ("One.\nTwo.\nThree.", ["One.", "Two.", "Three."]),  # no blank lines: each line is a paragraph
        ("Line a\nline b\n\nPara two", ["Line a\nline b", "Para two"]),  # hard-wrapped paragraph kept whole
        ("\n\n  Lead.  \n \n\n Next.\n\n", ["Lead.", "Next."]),
        ("Only one", ["Only one"]),
        ("", []),
    ],
)
def test_split_paragraphs(text: str, expected: list[str]) -> None:
    paragraphs = split_paragraphs(text)
    assert [p.text for p in paragraphs] == expected
    for p in paragraphs:
        assert text[p.start : p.end] == p.text
    assert [p.number for p in paragraphs] == list(range(1, len(expected) + 1))


@pytest.mark.parametrize(
    ("text", "boilerplate"),
    [
        ("Updated: Thursday at 12:57 p.m.", True),
        ("Last updated: 3 May", True),
        ("Copyright 2023 Nexstar Media Inc. All rights reserved. This material may not be published.", True),
        ("© 2026 Example News", True),
        ("The company said it had updated its forecasts: profits will rise.", False),
        ("The court ruled on copyright law in a case brought by three authors.", False),
        ("All rights reserved, the judge said, " + "and the trial went on for weeks. " * 20, False),  # too long
    ],
)
def test_boilerplate_rules(text: str, boilerplate: bool) -> None:
    assert is_boilerplate(text, ChunkSettings()) is boilerplate


def test_boilerplate_rules_are_configurable() -> None:
    custom = ChunkSettings(boilerplate_patterns=(r"^Follow us on",))
    assert is_boilerplate("Follow us on social media", custom)
    assert not is_boilerplate("Updated: Thursday", custom)


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One here. Two there! Three?", ["One here.", "Two there!", "Three?"]),
        ("Gen. Valery Gerasimov declined. Mr. Smith agreed.", ["Gen. Valery Gerasimov declined.", "Mr. Smith agreed."]),
        ("The U.S. Embassy was told. It left.", ["The U.S. Embassy was told.", "It left."]),
        ("Prices rose 2.5 percent. Wages did not.", ["Prices rose 2.5 percent.", "Wages did not."]),
        ("“It is over,” he said. “We won.”", ["“It is over,” he said.", "“We won.”"]),
        ("no final punctuation", ["no final punctuation"]),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert [text[s:e] for s, e in split_sentences(text)] == sentences


def test_seed_article_passages_drop_boilerplate_and_keep_offsets() -> None:
    from semsearch.ingest.articles import parse_text_article

    art = parse_text_article(SEED, "seed")
    passages = chunk_article(art, ChunkSettings(), fake.count_tokens, 256)
    assert len(passages) == 8
    assert passages[0].text.startswith("Top U.S. defense officials")
    assert passages[1].paragraph == 2 and "declined to engage" in passages[1].text
    for p in passages:
        assert art.text[p.start : p.end] == p.text
        assert "Updated:" not in p.text and "All rights reserved" not in p.text
        assert p.embed_text.startswith(art.title + "\n")
    assert [p.ordinal for p in passages] == list(range(8))


@pytest.mark.parametrize(
    "body",
    [
        "A long first paragraph about the harbour ferry timetable, the fares and the extra night sailings "
        "planned for October.\n\nCopyright 2026 Example Media. All rights reserved.\n\nShort tail line.",
        "Short lead.\n\nUpdated: Monday at 9:00 a.m.\n\nA long second paragraph about the harbour ferry "
        "timetable, the fares and the extra night sailings planned for October.",
    ],
)
def test_short_paragraphs_never_merge_across_dropped_boilerplate(body: str) -> None:
    passages = chunk_article(article(body), ChunkSettings(), fake.count_tokens, 256)
    assert [p.text for p in passages] == [
        p.text for p in split_paragraphs(body) if not is_boilerplate(p.text, ChunkSettings())
    ]
    for p in passages:
        assert "rights reserved" not in p.text and "Updated:" not in p.text


def test_title_context_can_be_turned_off() -> None:
    (p,) = chunk_article(
        article("Some body text long enough."), ChunkSettings(title_context=False), fake.count_tokens, 64
    )
    assert p.embed_text == "Some body text long enough."


def test_short_paragraphs_merge_into_next() -> None:
    text = "Short.\n\n" + "A long paragraph " * 10 + "\n\nAnother long paragraph " + "x " * 60
    passages = chunk_article(article(text), ChunkSettings(min_chars=50), fake.count_tokens, 512)
    assert len(passages) == 2
    assert passages[0].text.startswith("Short.\n\nA long paragraph")
    assert (passages[0].paragraph, passages[0].last_paragraph) == (1, 2)


def test_short_last_paragraph_merges_into_previous() -> None:
    text = "A long paragraph " * 10 + "\n\nEnd."
    (p,) = chunk_article(article(text), ChunkSettings(min_chars=50), fake.count_tokens, 512)
    assert p.text.endswith("End.") and (p.paragraph, p.last_paragraph) == (1, 2)


def test_long_paragraph_splits_at_sentence_boundaries_without_losing_text() -> None:
    sentences = [f"Sentence number {i} talks about topic {i} at some length." for i in range(40)]
    text = " ".join(sentences)
    passages = chunk_article(article(text, title="Headline words"), ChunkSettings(), fake.count_tokens, 64)
    assert len(passages) > 1
    for p in passages:
        assert fake.count_tokens([p.embed_text])[0] <= 64
        assert p.text.startswith("Sentence number") and p.text.endswith(".")
        assert p.paragraph == 1
    assert " ".join(p.text for p in passages) == text


def test_a_single_over_long_sentence_is_split_by_words() -> None:
    text = " ".join(f"word{i}" for i in range(300))
    passages = chunk_article(article(text), ChunkSettings(), fake.count_tokens, 50)
    assert all(fake.count_tokens([p.embed_text])[0] <= 50 for p in passages)
    assert " ".join(p.text for p in passages) == text


def test_max_tokens_setting_caps_the_model_window() -> None:
    text = " ".join(f"Sentence {i} is here." for i in range(50))
    passages = chunk_article(article(text), ChunkSettings(max_tokens=40), fake.count_tokens, 256)
    assert all(fake.count_tokens([p.embed_text])[0] <= 40 for p in passages)


def test_article_of_only_boilerplate_has_no_passages() -> None:
    assert chunk_article(article("Updated: today\n\nCopyright 2026 X. All rights reserved."), ChunkSettings(),
                         fake.count_tokens, 256) == []  # fmt: skip


_words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    paragraphs=st.lists(st.lists(_words, min_size=1, max_size=80).map(" ".join), min_size=1, max_size=8),
    max_tokens=st.integers(min_value=24, max_value=120),
    sep=st.sampled_from(["\n\n", "\n"]),
)
def test_passages_always_fit_and_cover_the_text(paragraphs: list[str], max_tokens: int, sep: str) -> None:
    text = sep.join(p for p in paragraphs if p.strip())
    art = article(text, title="Title")
    passages = chunk_article(art, ChunkSettings(boilerplate_patterns=()), fake.count_tokens, max_tokens)
    for p in passages:
        assert fake.count_tokens([p.embed_text])[0] <= max_tokens
        assert art.text[p.start : p.end] == p.text
    # Every non-space character of the body is in exactly one passage, in order.
    covered = "".join(p.text for p in passages)
    assert re.sub(r"\s", "", covered) == re.sub(r"\s", "", text)
