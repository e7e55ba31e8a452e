"""The search page for people, driven in a real headless Chromium against a real ``semsearch serve`` on the
bundled sample corpus: grouping by article, filters and facets, recency, pages, the article view with related
articles, keyboard use, and the API key prompt.

Expected values come from the sample corpus itself (its front matter: dates, sources, tags), never from the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..conftest import SAMPLE_CORPUS
from .servers import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
API_KEY = "page-test-key"
SAMPLE_ARTICLES = 18  # 13 text files, one HTML page and the four records of briefs.jsonl
REEF = "science/isla-carranca-reef-restoration.txt"
REEF_TITLE = "Isla Carranca reef project replants 120,000 coral fragments"


def require_chromium() -> None:
    """Skip without Chromium on a developer's machine; under CI (CI=true, as .ci/run sets it) a missing browser
    is a failure, so CI can never pass without running the browser tests."""
    if Path(CHROMIUM).exists():
        return
    message = f"Debian chromium is not installed ({CHROMIUM}); scripts/test.sh installs it as root"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(sample_index: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API keys on: the page must work with them too (the key is entered once per browser session)."""
    with running_server(sample_index, tmp_path_factory.mktemp("page-server"), model_cache,
                        {"SEMSEARCH_API_KEYS": API_KEY}) as running:  # fmt: skip
        yield running.base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        yield browser
        browser.close()


def _new_page(browser: Any, *, with_key: bool) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    if with_key:
        context.add_init_script(f"sessionStorage.setItem('semsearch-api-key', '{API_KEY}')")
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # A CSP violation, a failed script or a missing file (a 404) is reported on the console as an error.
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
    return context, page, problems


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    context, page, problems = _new_page(browser, with_key=True)
    page.set_default_timeout(30_000)
    page.base = server
    page.problems = problems
    yield page
    context.close()
    assert problems == []


def api(server: str, path: str, **params: Any) -> dict[str, Any]:
    response = requests.get(server + path, params=params, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200, response.text
    return response.json()


def search(page: Any, query: str) -> None:
    page.fill("#q", query)
    page.press("#q", "Enter")
    wait_for_results(page)


def wait_for_results(page: Any) -> None:
    page.wait_for_function("() => document.querySelector('#main').getAttribute('aria-busy') === null && "
                           "document.querySelectorAll('li.article-hit').length > 0")  # fmt: skip


def result_ids(page: Any) -> list[str]:
    return page.locator("li.article-hit").evaluate_all("items => items.map(i => i.dataset.article)")


def front_matter(article_id: str) -> dict[str, str]:
    lines = (SAMPLE_CORPUS / article_id).read_text(encoding="utf-8").split("\n")
    assert lines[0] == "---"
    return dict(line.split(": ", 1) for line in lines[1 : lines.index("---", 1)])


def test_results_are_grouped_by_article_with_date_source_and_highlighted_passages(page: Any, tmp_path: Path) -> None:
    page.goto(page.base + "/")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('articles')")
    assert f"Search {SAMPLE_ARTICLES} articles" in page.inner_text("#status")
    search(page, "How much stone was dumped on the seabed to stop the reef from shifting?")
    ids = result_ids(page)
    assert ids[0] == REEF and len(ids) == len(set(ids)) == 10  # one entry per article
    first = page.locator("li.article-hit").first
    assert first.locator("h3").inner_text() == REEF_TITLE
    meta = front_matter(REEF)
    assert first.locator(".meta time").get_attribute("datetime") == meta["published"]
    assert first.locator(".meta .source").inner_text() == meta["source"]
    assert first.locator(".meta .tag").all_inner_texts() == ["science", "oceans", "environment"]
    passages = first.locator("ol.passages > li")
    assert 1 <= passages.count() <= 3
    assert "4,812 tonnes" in first.locator("ol.passages").inner_text()
    # The undated seed article says so instead of showing a date.
    undated = page.locator('li.article-hit[data-article="world/russia-military-outreach.txt"] .undated')
    if result_ids(page).count("world/russia-military-outreach.txt"):
        assert undated.inner_text() == "undated"
    # What the page shows is the API's answer, in its order.
    answer = api(page.base, "/search", q="How much stone was dumped on the seabed to stop the reef from shifting?",
                 k=10, group_by="article", per_article=3)  # fmt: skip
    assert ids == [a["article_id"] for a in answer["articles"]]
    marked = [h["text"] for hit in answer["articles"][0]["passages"] for h in hit["highlights"]]
    assert marked and first.locator("mark").all_inner_texts() == marked
    assert f"of about {SAMPLE_ARTICLES}" in page.inner_text("#status")
    page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_a_source_facet_filters_the_results_and_its_chip_removes_the_filter(page: Any) -> None:
    page.goto(page.base + "/?q=" + requests.utils.quote("new services and openings"))
    wait_for_results(page)
    texts = [p.read_text(encoding="utf-8") for p in SAMPLE_CORPUS.rglob("*") if p.suffix in (".txt", ".md")]
    records = (SAMPLE_CORPUS / "briefs.jsonl").read_text(encoding="utf-8").count('"source": "Example Wire"')
    expected = sum("\nsource: Example Wire\n" in text for text in texts) + records
    label = page.locator('fieldset[data-facet="source"] label', has_text="Example Wire")
    assert label.locator(".count").inner_text() == f"({expected})"
    label.locator("input").check()
    page.wait_for_url(re.compile(r"source=Example\+Wire"))
    wait_for_results(page)
    page.wait_for_function(f"() => document.querySelectorAll('li.article-hit').length === {expected}")
    assert set(page.locator("li.article-hit .meta .source").all_inner_texts()) == {"Example Wire"}
    assert page.locator('fieldset[data-facet="source"] input[data-value="Example Wire"]').is_checked()
    page.click("#active-filters button:has-text('source: Example Wire')")
    page.wait_for_function("() => !location.search.includes('source=')")
    page.wait_for_function("() => document.querySelectorAll('li.article-hit').length === 10")
    assert len(set(page.locator("li.article-hit .meta .source").all_inner_texts())) > 1


def test_a_month_facet_and_the_date_range_filter_by_publication_date(page: Any) -> None:
    page.goto(page.base + "/?q=" + requests.utils.quote("local news"))
    wait_for_results(page)
    page.locator('fieldset[data-facet="published_month"] input[data-value="2026-10"]').check()
    page.wait_for_url(re.compile(r"after=2026-10-01&before=2026-10-31"))  # the whole month, its 31st day too
    page.wait_for_function("() => document.querySelector('#after').value === '2026-10-01'")
    wait_for_results(page)
    dates = page.locator("li.article-hit .meta time").evaluate_all("ts => ts.map(t => t.getAttribute('datetime'))")
    october = [p.relative_to(SAMPLE_CORPUS).as_posix() for p in SAMPLE_CORPUS.rglob("*.txt")
               if "\npublished: 2026-10-" in p.read_text(encoding="utf-8")]  # fmt: skip
    records = SAMPLE_CORPUS.joinpath("briefs.jsonl").read_text(encoding="utf-8").splitlines()
    october += [json.loads(r)["id"] for r in records if json.loads(r)["published"].startswith("2026-10-")]
    assert len(dates) == len(october) and all(d.startswith("2026-10-") for d in dates)
    assert sorted(result_ids(page)) == sorted(october)
    # The date inputs: from 2026-11-01 on, only the November articles.
    page.fill("#after", "2026-11-01")
    page.fill("#before", "")
    page.click("#apply-dates")
    page.wait_for_url(re.compile(r"after=2026-11-01(?!&before)"))
    wait_for_results(page)
    dates = page.locator("li.article-hit .meta time").evaluate_all("ts => ts.map(t => t.getAttribute('datetime'))")
    assert dates and all(d >= "2026-11-01" for d in dates)


def test_the_second_page_continues_the_first_without_repeats_and_back_returns(page: Any) -> None:
    page.goto(page.base + "/")
    search(page, "coral reef restoration")
    first = result_ids(page)
    assert page.inner_text("#page-number") == "Page 1" and page.locator("#prev").is_disabled()
    page.click("#next")
    page.wait_for_url(re.compile(r"page=2"))
    page.wait_for_function("() => document.getElementById('page-number').textContent === 'Page 2'")
    wait_for_results(page)
    second = result_ids(page)
    assert len(first) == 10 and len(second) == SAMPLE_ARTICLES - 10
    assert not set(first) & set(second)
    assert page.locator("#next").is_disabled()  # the last page
    assert "Articles 11–18" in page.inner_text("#status")
    # The next page's first result has the keyboard focus.
    assert page.evaluate("document.activeElement.dataset.article") == second[0]
    page.go_back()
    page.wait_for_function("() => document.getElementById('page-number').textContent === 'Page 1'")
    assert result_ids(page) == first
    # A shared link to page 2 walks the pages from the first: the same articles.
    page.goto(page.base + "/?q=coral+reef+restoration&page=2")
    wait_for_results(page)
    assert result_ids(page) == second


def test_recent_first_puts_the_newer_of_two_matching_stories_above_the_older(page: Any) -> None:
    greyhaven, portwell = "sport/greyhaven-win-national-cup.txt", "sport/portwell-marathon-course-record.txt"
    assert front_matter(greyhaven)["published"] < front_matter(portwell)["published"]  # May and October
    page.goto(page.base + "/")
    search(page, "Who won the football cup final?")
    ids = result_ids(page)
    assert ids[0] == greyhaven and ids.index(portwell) > 0
    page.check("#recent")
    page.wait_for_url(re.compile(r"recent=1"))
    page.wait_for_function("() => document.querySelector('#active-filters').textContent.includes('recent first')")
    wait_for_results(page)
    recent = result_ids(page)
    assert portwell in recent and (greyhaven not in recent or recent.index(portwell) < recent.index(greyhaven))
    page.uncheck("#recent")
    page.wait_for_function("() => !location.search.includes('recent=')")
    wait_for_results(page)
    assert result_ids(page) == ids


def test_the_article_view_shows_the_whole_article_and_its_related_articles(page: Any, tmp_path: Path) -> None:
    page.goto(page.base + "/")
    search(page, "How much stone was dumped on the seabed to stop the reef from shifting?")
    page.click(f'li.article-hit[data-article="{REEF}"] h3 a')
    page.wait_for_selector("#related-list li a")
    assert "article=" in page.url and page.inner_text("#article h2") == REEF_TITLE
    assert page.evaluate("document.activeElement.tagName") == "H2"
    shown = "\n\n".join(page.locator("#article > p:not(.meta)").all_inner_texts())
    body = (SAMPLE_CORPUS / REEF).read_text(encoding="utf-8").split("---\n", 2)[2].split("\n", 1)[1]
    paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
    assert paragraphs[-2:] == ["Updated: Friday at 1:36 p.m.", "Copyright 2026 Example Media Inc. All rights reserved."]
    for paragraph in paragraphs[:-2]:  # all but the boilerplate, which is not indexed
        assert paragraph in shown
    assert "Copyright" not in shown
    related = page.locator("#related-list li").evaluate_all("items => items.map(i => i.dataset.article)")
    expected = api(page.base, f"/articles/{REEF}/related", k=5)["articles"]
    assert related == [a["article_id"] for a in expected] and REEF not in related and len(related) == 5
    page.screenshot(path=str(tmp_path / "article.png"), full_page=True)
    assert (tmp_path / "article.png").stat().st_size > 10_000
    # A related article opens in the same view; the browser's back button returns to the first one.
    title = page.locator("#related-list li a").first.inner_text()
    page.locator("#related-list li a").first.click()
    page.wait_for_function(f"() => document.querySelector('#article h2')?.textContent === {title!r}")
    assert related[0] in requests.utils.unquote(page.url)
    page.go_back()
    page.wait_for_function(f"() => document.querySelector('#article h2')?.textContent === {REEF_TITLE!r}")
    # The passage link of a hit opens the article with that passage marked.
    page.click("#back")
    wait_for_results(page)
    page.locator(f'li.article-hit[data-article="{REEF}"] a.para').first.click()
    page.wait_for_selector("#article p.hit")
    assert "4,812 tonnes" in page.inner_text("#article p.hit")


def test_the_page_is_usable_from_the_keyboard_alone(page: Any) -> None:
    page.goto(page.base + "/")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('articles')")
    assert page.evaluate("document.activeElement.id") == "q"  # the search box has the focus on arrival
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")  # before the search box: the home link, and first of all the skip link
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("Which architect was behind the new river bridge in Aldermouth?")
    page.keyboard.press("Enter")
    wait_for_results(page)
    page.keyboard.press("Escape")  # leaves the search box
    page.keyboard.press("j")
    first, second = result_ids(page)[:2]
    assert page.evaluate("document.activeElement.dataset.article") == first
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.dataset.article") == second
    page.keyboard.press("k")
    assert page.evaluate("document.activeElement.dataset.article") == first
    assert first == "local/aldermouth-tessel-crossing-opens.txt"
    page.keyboard.press("Enter")
    page.wait_for_selector("#related-list li a")
    assert "Tessel Crossing" in page.inner_text("#article h2")
    page.keyboard.press("j")  # in the article view, j and k walk the related articles
    assert page.evaluate("document.activeElement.closest('#related-list') !== null")
    page.keyboard.press("Escape")
    wait_for_results(page)
    assert result_ids(page)[0] == first
    # A filter from the keyboard: tab to the first source checkbox and tick it with the space bar.
    page.focus("#recent")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('fieldset[data-facet=\"source\"]') !== null"):
            break
    value = page.evaluate("document.activeElement.dataset.value")
    page.keyboard.press(" ")
    page.wait_for_url(re.compile("source="))
    wait_for_results(page)
    assert set(page.locator("li.article-hit .meta .source").all_inner_texts()) == {value}


def test_a_server_error_is_shown_to_the_person(page: Any) -> None:
    page.goto(page.base + "/")
    page.evaluate("document.getElementById('q').removeAttribute('maxlength')")
    page.fill("#q", "x" * 2100)
    page.press("#q", "Enter")
    page.wait_for_selector("#status.error")
    assert "longer than 2000" in page.inner_text("#status")
    # The browser reports the refused request on the console; that one is expected.
    assert [p for p in page.problems if "status of 400" not in p] == []
    page.problems.clear()


def test_without_a_key_the_page_asks_for_one_and_then_searches(browser: Any, server: str) -> None:
    context, page, problems = _new_page(browser, with_key=False)
    try:
        page.goto(server + "/?q=bridge")
        page.wait_for_selector("#key-form:not([hidden])")
        assert "API key" in page.inner_text("#status")
        page.fill("#api-key", "wrong-key")
        page.press("#api-key", "Enter")
        page.wait_for_selector("#key-form:not([hidden])")
        page.fill("#api-key", API_KEY)
        page.press("#api-key", "Enter")
        wait_for_results(page)
        assert page.locator("#key-form").is_hidden()
    finally:
        context.close()
    # The browser reports each refused request (401) on the console; nothing else may go wrong.
    assert [p for p in problems if "401" not in p] == []
