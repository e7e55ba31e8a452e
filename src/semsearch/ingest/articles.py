"""Reading articles from files: .txt/.md, .html, .jsonl and .csv, into :class:`Article` records.

Bad files and rows are reported as :class:`SkippedSource` and never stop the rest from loading.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dates import normalise_date
from .frontmatter import split_front_matter
from .sources import (
    HTML_SUFFIXES,
    MAX_ARTICLE_FILE_BYTES,
    SUPPORTED_SUFFIXES,
    TEXT_SUFFIXES,
    SkippedSource,
    SourceFile,
    decode_source,
    iter_source_files,
    read_source_bytes,
)

if TYPE_CHECKING:
    from selectolax.lexbor import LexborNode

log = logging.getLogger(__name__)

MAX_ARTICLE_CHARS = 2_000_000
"""The longest article body indexed, in characters (about 300,000 words, a thousand pages: far beyond any news
article). A longer one is skipped with a message: it would become thousands of passages and minutes of embedding
with the real model, for what is almost always a stray dump rather than an article."""

_KNOWN_FIELDS = {"id", "_id", "title", "text", "url", "published", "source", "tags"}


@dataclass(frozen=True)
class Article:
    """One article: a title and a body. ``text`` is the body only; passage offsets point into it."""

    id: str
    title: str
    text: str
    url: str | None = None
    published: str | None = None
    """ISO 8601 date or datetime, normalised from the input when it could be parsed."""
    source: str | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    path: str | None = None
    """Where the article came from (file, or file:line for records)."""

    @property
    def content_hash(self) -> str:
        """A hash of everything that is indexed, so an unchanged article is recognised on reindex."""
        payload = json.dumps(
            [
                self.title,
                self.text,
                self.url,
                self.published,
                self.source,
                list(self.tags),
                dict(self.metadata),
            ],
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "url": self.url,
            "published": self.published,
            "source": self.source,
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "path": self.path,
        }


@dataclass
class LoadReport:
    """What :func:`load_articles` read: the articles, what it skipped, and warnings (e.g. encoding fallbacks)."""

    articles: list[Article] = field(default_factory=list)
    skipped: list[SkippedSource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_articles(sources: Iterable[str | Path], exclude: Iterable[str] = ()) -> LoadReport:
    """Read every article under ``sources`` (files or directory trees).

    Raises :class:`~semsearch.errors.SourceError` only when a named source does not exist; unreadable files,
    bad rows and duplicate ids are reported in the result and skipped. Of articles sharing an id, the first read
    (sources in the order given, files in sorted order) is kept.
    """
    report = LoadReport()
    seen: dict[str, str] = {}
    for article in iter_articles(sources, report, exclude=exclude):
        where = article.path or article.id
        if article.id in seen:
            reason = f"duplicate article id {article.id!r}: skipped, the first one (from {seen[article.id]}) is kept"
            report.skipped.append(SkippedSource(where, reason))
            continue
        seen[article.id] = where
        report.articles.append(article)
    return report


def iter_articles(sources: Iterable[str | Path], report: LoadReport, exclude: Iterable[str] = ()) -> Iterator[Article]:
    """Yield articles from each source in a stable order, recording skips and warnings in ``report``."""
    for file in iter_source_files(sources, exclude, report.skipped):
        for article in _read_file(file, report):
            if len(article.text) > MAX_ARTICLE_CHARS:
                reason = f"article too long ({len(article.text):,} characters; the limit is {MAX_ARTICLE_CHARS:,})"
                report.skipped.append(SkippedSource(article.path or article.id, reason))
                continue
            yield article


def _read_file(file: SourceFile, report: LoadReport) -> Iterator[Article]:
    path, where = file.path, str(file.path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        report.skipped.append(SkippedSource(where, f"unsupported file type {suffix or '(none)'}"))
        return
    one_article = suffix in TEXT_SUFFIXES or suffix in HTML_SUFFIXES
    raw = read_source_bytes(file, report.skipped, MAX_ARTICLE_FILE_BYTES if one_article else None)
    if raw is None:
        return
    text = decode_source(raw, where, report.skipped, report.warnings)
    if text is None:
        return
    try:
        if suffix in TEXT_SUFFIXES:
            yield parse_text_article(text, file.rel_id, where, markdown=suffix != ".txt", warnings=report.warnings)
        elif suffix in HTML_SUFFIXES:
            yield parse_html_article(text, file.rel_id, where)
        elif suffix == ".csv":
            yield from _read_csv(text, path, file.rel_id, report)
        else:
            yield from _read_jsonl(text, path, file.rel_id, report)
    except _BadRecord as exc:
        report.skipped.append(SkippedSource(where, str(exc)))


class _BadRecord(ValueError):
    pass


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_text_article(
    text: str, article_id: str, path: str | None = None, *, markdown: bool = False, warnings: list[str] | None = None
) -> Article:
    """Headline on the first non-empty line, body after it (as in the seed article).

    Optional front matter (see :mod:`.frontmatter`) gives the metadata: ``published`` (or ``date``), ``source``,
    ``tags``, ``url``, and ``title``, in which case the whole text after the block is the body. Other fields are
    kept as metadata.
    """
    where = path or article_id
    front = split_front_matter(_normalise_newlines(text), where)
    if warnings is not None:
        warnings.extend(front.warnings)
    fields = dict(front.fields)
    title = fields.pop("title", None)
    if isinstance(title, str) and title.strip():
        body = front.body
    else:
        lines = front.body.split("\n")
        idx = next((i for i, line in enumerate(lines) if line.strip()), None)
        if idx is None:
            raise _BadRecord("empty file")
        title = lines[idx].strip()
        if markdown:
            title = title.lstrip("#").strip()
        body = "\n".join(lines[idx + 1 :])
    body = body.strip("\n").rstrip()
    if not body.strip():
        raise _BadRecord("no text after the headline")
    if not fields:
        return Article(id=article_id, title=title, text=body, path=path)
    if "published" not in fields and "date" in fields:
        fields["published"] = fields.pop("date")
    fields.pop("text", None)
    fields.pop("_id", None)
    fields.pop("id", None)  # the path names a file's article, so that a reindex recognises it
    if not isinstance(fields.get("tags", ""), str | list):
        fields["tags"] = str(fields["tags"])
    article = record_to_article({**fields, "title": title, "text": body}, article_id, where, warnings)
    return dataclasses.replace(article, text=body, path=path)


# Elements that are never text, wherever they are (a script inside the <h1> too).
_HTML_CODE = "script, style, noscript, template"
# Elements that are page chrome, never article text.
_HTML_DROP = "nav, header, footer, aside, form, iframe, svg, button, figure"
_HTML_BLOCKS = frozenset({"p", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "pre"})


def parse_html_article(html: str, article_id: str, path: str | None = None) -> Article:
    """Main text and metadata from an HTML page, using a real HTML parser (selectolax/lexbor).

    The main container is ``<article>``, else ``<main>``/``[role=main]``, else ``<body>``; navigation, headers,
    footers, asides and scripts are removed; block elements become paragraphs.
    """
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    for node in tree.css(_HTML_CODE):
        node.decompose()

    def meta(*names: str) -> str | None:
        for name in names:
            node = tree.css_first(f'meta[property="{name}"]') or tree.css_first(f'meta[name="{name}"]')
            if node is not None and (node.attributes.get("content") or "").strip():
                return (node.attributes.get("content") or "").strip()
        return None

    container = tree.css_first("article") or tree.css_first("main") or tree.css_first('[role="main"]')
    container = container or tree.body
    if container is None:
        raise _BadRecord("HTML has no body")
    h1 = container.css_first("h1") or tree.css_first("h1")
    title_node = tree.css_first("title")
    title = (
        meta("og:title")
        or (h1.text(separator=" ", strip=True) if h1 is not None else "")
        or (title_node.text(strip=True) if title_node is not None else "")
    )
    url = meta("og:url")
    canonical = tree.css_first('link[rel="canonical"]')
    if canonical is not None and canonical.attributes.get("href"):
        url = canonical.attributes.get("href")
    published = meta("article:published_time", "date", "pubdate")
    time_node = container.css_first("time[datetime]")
    if published is None and time_node is not None:
        published = time_node.attributes.get("datetime")
    source = meta("og:site_name")
    tags = [(node.attributes.get("content") or "").strip() for node in tree.css('meta[property="article:tag"]')]
    tags = [tag for tag in tags if tag] or list(_parse_tags(meta("keywords")))

    for node in container.css(_HTML_DROP):
        node.decompose()
    if h1 is not None and h1.parent is not None:
        h1.decompose()
    paragraphs: list[str] = []
    for node in _leaf_blocks(container):
        text = " ".join(node.text(separator=" ", strip=True).split())
        if text:
            paragraphs.append(text)
    if not paragraphs:
        text = " ".join(container.text(separator=" ", strip=True).split())
        paragraphs = [text] if text else []
    if not paragraphs:
        raise _BadRecord("no text found in HTML")
    return Article(
        id=article_id,
        title=" ".join(title.split()),
        text="\n\n".join(paragraphs),
        url=url,
        published=normalise_date(published),
        source=source,
        tags=tuple(dict.fromkeys(tags)),
        path=path,
    )


def _leaf_blocks(root: LexborNode) -> list[LexborNode]:
    """The block elements under ``root`` (itself included) that hold no other block, in document order: a <li>
    holding <p>s is covered by those <p>s.

    One walk with an explicit stack: no recursion, however deep the nesting, and linear time (asking each block for
    the blocks inside it is quadratic in the depth: seconds for 10,000 nested <blockquote>s).
    """
    leaves: list[LexborNode] = []
    # Frames: [node, next child to visit, whether a block was found inside it].
    stack: list[list[Any]] = [[root, root.child, False]]
    while stack:
        frame = stack[-1]
        child = frame[1]
        if child is not None:
            frame[1] = child.next
            if child.is_element_node:
                stack.append([child, child.child, False])
            continue
        stack.pop()
        node, _, holds_block = frame
        is_block = node.tag in _HTML_BLOCKS
        if is_block and not holds_block:
            leaves.append(node)
        if stack and (is_block or holds_block):
            stack[-1][2] = True
    return leaves


def _read_jsonl(text: str, path: Path, rel_id: str, report: LoadReport) -> Iterator[Article]:
    if not text.strip():
        raise _BadRecord("no records in file")
    for lineno, line in enumerate(_normalise_newlines(text).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            report.skipped.append(SkippedSource(where, f"invalid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:  # the parser recurses per nesting level: [[[[... thousands deep
            report.skipped.append(SkippedSource(where, "invalid JSON: nested too deeply"))
            continue
        if not isinstance(record, dict):
            report.skipped.append(SkippedSource(where, "record is not a JSON object"))
            continue
        try:
            yield record_to_article(record, f"{rel_id}#{lineno}", where, report.warnings)
        except _BadRecord as exc:
            report.skipped.append(SkippedSource(where, str(exc)))


def _read_csv(text: str, path: Path, rel_id: str, report: LoadReport) -> Iterator[Article]:
    lines = io.StringIO(text, newline="").readlines()
    consumed = [0]  # lines handed to the csv reader so far (its own line_num is stale after an error)

    def feed(start: int) -> Iterator[str]:
        for number in range(start, len(lines)):
            consumed[0] = number + 1
            yield lines[number]

    # strict: a malformed row is an error to report, not a row whose fields silently swallow what follows.
    reader = csv.DictReader(feed(0), strict=True)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise _BadRecord(f"CSV header: {exc}") from None
    if fieldnames is None:
        raise _BadRecord("empty CSV file")
    if "text" not in fieldnames:
        raise _BadRecord(f"CSV has no 'text' column (columns: {', '.join(fieldnames)})")
    rowno = 1  # rows read, the header being row 1: the id of a record without one
    while True:
        first_line = consumed[0] + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.skipped.append(SkippedSource(f"{path}:{first_line}", f"CSV error: {exc}"))
            if consumed[0] == len(lines):
                # An unclosed quote ran to the end of the file: read on from the line after the bad row's start.
                reader = csv.DictReader(feed(first_line), fieldnames=fieldnames, strict=True)
            continue
        rowno += 1
        where = f"{path}:{first_line}"
        if None in row:
            report.skipped.append(SkippedSource(where, "row has more fields than the header"))
            continue
        try:
            yield record_to_article(row, f"{rel_id}#{rowno}", where, report.warnings)
        except _BadRecord as exc:
            report.skipped.append(SkippedSource(where, str(exc)))


def record_to_article(
    record: Mapping[str, Any], fallback_id: str, where: str, warnings: list[str] | None = None
) -> Article:
    """A JSONL/CSV record (``id``, ``title``, ``text``, optional ``url``, ``published``, ``source``, ``tags``,
    anything else kept as metadata) as an Article."""
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _BadRecord("record has no 'text'")
    title = record.get("title")
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise _BadRecord("'title' must be a string")
    raw_id = record.get("id", record.get("_id"))
    if raw_id is None or str(raw_id).strip() == "":
        article_id = fallback_id
    elif isinstance(raw_id, str | int):
        article_id = str(raw_id).strip()
    else:
        raise _BadRecord("'id' must be a string or an integer")
    published_raw = record.get("published")
    published = normalise_date(published_raw)
    metadata = {k: v for k, v in record.items() if k not in _KNOWN_FIELDS and v not in (None, "")}
    if published_raw not in (None, "") and published is None:
        msg = f"{where}: unparseable 'published' value {published_raw!r} kept as metadata only"
        if warnings is not None:
            warnings.append(msg)
        metadata["published_raw"] = published_raw
    return Article(
        id=article_id,
        title=" ".join(title.split()),
        text=_normalise_newlines(text).strip(),
        url=_opt_str(record.get("url")),
        published=published,
        source=_opt_str(record.get("source")),
        tags=_parse_tags(record.get("tags")),
        metadata=metadata,
        path=where,
    )


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _parse_tags(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = value.split(",") if "," in value else value.split(";")
        return tuple(t.strip() for t in items if t.strip())
    if isinstance(value, list | tuple):
        return tuple(str(t).strip() for t in value if str(t).strip())
    raise _BadRecord("'tags' must be a list or a comma-separated string")
