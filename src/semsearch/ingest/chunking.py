"""Pure functions: article -> paragraphs -> passages that fit the model window.

Offsets are character offsets into ``Article.text`` (the body), and ``Passage.text == body[start:end]`` always,
so a client can highlight or cite the exact span. Nothing is truncated: a paragraph longer than the model window
is split at sentence boundaries (at word boundaries for a single over-long sentence).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..config import ChunkSettings
from .articles import Article

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Counts the word pieces of each text as the model sees it, special tokens included."""


@dataclass(frozen=True)
class Paragraph:
    number: int
    """1-based position among all paragraphs of the body (boilerplate included, so numbers match the source)."""
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Passage:
    """The unit that is embedded and returned by search."""

    article_id: str
    ordinal: int
    """0-based position of the passage within its article."""
    paragraph: int
    """1-based number of the first paragraph this passage covers."""
    last_paragraph: int
    start: int
    end: int
    text: str
    embed_text: str
    """What the model embeds: whitespace-normalised text, with the article title first when configured."""


def split_paragraphs(text: str) -> list[Paragraph]:
    """Split on blank lines; when the text has none, every non-empty line is a paragraph."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in text.split("\n"):
        spans.append((pos, pos + len(line)))
        pos += len(line) + 1
    blank = [not text[s:e].strip() for s, e in spans]
    first = next((i for i, b in enumerate(blank) if not b), None)
    last = next((i for i in range(len(blank) - 1, -1, -1) if not blank[i]), None)
    has_inner_blank = first is not None and last is not None and any(blank[first:last])

    groups: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for span, is_blank in zip(spans, blank, strict=True):
        if is_blank:
            if current:
                groups.append(current)
                current = []
        elif has_inner_blank:
            current.append(span)
        else:
            groups.append([span])
    if current:
        groups.append(current)

    paragraphs = []
    for number, group in enumerate(groups, start=1):
        start, end = group[0][0], group[-1][1]
        start, end = _strip_span(text, start, end)
        paragraphs.append(Paragraph(number, start, end, text[start:end]))
    return paragraphs


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


@lru_cache(maxsize=32)
def _compile(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


def is_boilerplate(text: str, settings: ChunkSettings) -> bool:
    """Copyright lines, "Updated:" stamps and the like; never a long paragraph."""
    if len(text) > settings.boilerplate_max_chars:
        return False
    return any(p.search(text) for p in _compile(settings.boilerplate_patterns))


_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "gen", "sen", "rep", "gov", "lt", "col", "capt", "sgt", "st", "jr", "sr",
    "inc", "corp", "co", "ltd", "vs", "etc", "no", "fig", "al", "approx", "dept", "est", "mt", "ft",
}  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_INITIALISM = re.compile(r"(?:\b[A-Za-z]\.){2,}$")
_LOOK_BACK = 64


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` in ``text`` (whitespace excluded), by punctuation with abbreviations kept."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        nxt = end
        while nxt < len(text) and text[nxt].isspace():
            nxt += 1
        if nxt >= len(text):
            break
        following = text[nxt]
        if not (following.isupper() or following.isdigit() or following in "\"'“‘([«"):
            continue
        # Only the word before the stop matters: look a bounded way back, not at the whole run since the last
        # sentence (which, in a paragraph of abbreviations and no sentence break, makes splitting quadratic).
        last = text[max(start, match.start() - _LOOK_BACK) : match.start()].rsplit(None, 1)
        word = last[-1] if last else ""
        if match.group().startswith(".") and (
            word.lower().rstrip(".") in _ABBREVIATIONS or _INITIALISM.search(word + ".") or len(word) == 1
        ):
            continue
        s, e = _strip_span(text, start, end)
        if e > s:
            spans.append((s, e))
        start = nxt
    s, e = _strip_span(text, start, len(text))
    if e > s:
        spans.append((s, e))
    return spans


def _embed_text(title: str, text: str, settings: ChunkSettings) -> str:
    body = " ".join(text.split())
    return f"{title}\n{body}" if settings.title_context and title else body


def context_title(title: str, count_tokens: TokenCounter, max_tokens: int) -> str:
    """The title as used for context, cut at a word boundary to at most a quarter of the window."""
    budget = max(max_tokens // 4, 8)
    words = title.split()
    overhead = count_tokens([""])[0]
    while words and count_tokens([" ".join(words)])[0] - overhead > budget:
        words = words[: max(1, len(words) * 3 // 4)] if len(words) > 1 else []
    return " ".join(words)


def chunk_article(
    article: Article, settings: ChunkSettings, count_tokens: TokenCounter, max_tokens: int
) -> list[Passage]:
    """Paragraph passages for one article, each within ``max_tokens`` word pieces once embedded."""
    if settings.max_tokens is not None:
        max_tokens = min(max_tokens, settings.max_tokens)
    body = article.text
    title = context_title(article.title, count_tokens, max_tokens) if settings.title_context else ""
    paragraphs = [p for p in split_paragraphs(body) if not is_boilerplate(p.text, settings)]
    if not paragraphs:
        return []

    def fits(spans: Sequence[tuple[int, int]]) -> list[bool]:
        counts = count_tokens([_embed_text(title, body[s:e], settings) for s, e in spans])
        return [c <= max_tokens for c in counts]

    # Units: (start, end, first paragraph, last paragraph, splittable-into-neighbours flag)
    units: list[tuple[int, int, int, int]] = []
    para_fits = fits([(p.start, p.end) for p in paragraphs])
    for para, ok in zip(paragraphs, para_fits, strict=True):
        if ok:
            units.append((para.start, para.end, para.number, para.number))
        else:
            for s, e in _split_long(body, para.start, para.end, title, settings, count_tokens, max_tokens):
                units.append((s, e, para.number, para.number))

    merged = _merge_short(units, body, settings, fits)
    return [
        Passage(
            article_id=article.id,
            ordinal=i,
            paragraph=first,
            last_paragraph=last,
            start=s,
            end=e,
            text=body[s:e],
            embed_text=_embed_text(title, body[s:e], settings),
        )
        for i, (s, e, first, last) in enumerate(merged)
    ]


def _merge_short(
    units: list[tuple[int, int, int, int]],
    body: str,
    settings: ChunkSettings,
    fits: Callable[[Sequence[tuple[int, int]]], list[bool]],
) -> list[tuple[int, int, int, int]]:
    """Merge units shorter than ``min_chars`` into the next unit, else the previous, when the result fits.

    Only neighbours in the body merge: a passage's text is one slice of the body, so merging across a dropped
    boilerplate paragraph would bring that paragraph back."""
    out: list[tuple[int, int, int, int]] = []
    pending = list(units)
    i = 0
    while i < len(pending):
        s, e, first, last = pending[i]
        if e - s >= settings.min_chars:
            out.append(pending[i])
            i += 1
            continue
        if i + 1 < len(pending):
            _, ne, nfirst, nlast = pending[i + 1]
            if nfirst <= last + 1 and fits([(s, ne)])[0]:
                pending[i + 1] = (s, ne, first, nlast)
                i += 1
                continue
        if out:
            ps, _, pfirst, plast = out[-1]
            if first <= plast + 1 and fits([(ps, e)])[0]:
                out[-1] = (ps, e, pfirst, last)
                i += 1
                continue
        out.append(pending[i])
        i += 1
    return out


def _split_long(
    body: str,
    start: int,
    end: int,
    title: str,
    settings: ChunkSettings,
    count_tokens: TokenCounter,
    max_tokens: int,
) -> list[tuple[int, int]]:
    """Pack sentences greedily into pieces that fit; split an over-long sentence at word boundaries."""
    overhead = count_tokens([_embed_text(title, "", settings)])[0]
    budget = max_tokens - overhead - 1  # one token of slack for the joining whitespace/newline
    if budget < 8:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for text after the title")
    sentences = [(start + s, start + e) for s, e in split_sentences(body[start:end])]
    atoms: list[tuple[int, int]] = []
    sentence_costs = _costs(body, sentences, count_tokens)
    for (s, e), cost in zip(sentences, sentence_costs, strict=True):
        if cost <= budget:
            atoms.append((s, e))
        else:
            atoms.extend(_word_pieces(body, s, e, count_tokens, budget))
    costs = _costs(body, atoms, count_tokens)
    pieces: list[tuple[int, int]] = []
    cur_start, cur_end, cur_cost = atoms[0][0], atoms[0][1], costs[0]
    for (s, e), cost in zip(atoms[1:], costs[1:], strict=True):
        if cur_cost + cost <= budget:
            cur_end, cur_cost = e, cur_cost + cost
        else:
            pieces.append((cur_start, cur_end))
            cur_start, cur_end, cur_cost = s, e, cost
    pieces.append((cur_start, cur_end))
    # Token counts are additive for word-piece tokenizers; verify anyway and halve any piece that is not.
    result: list[tuple[int, int]] = []
    for piece in pieces:
        result.extend(_ensure_fits(body, piece, title, settings, count_tokens, max_tokens))
    return result


def _costs(body: str, spans: Sequence[tuple[int, int]], count_tokens: TokenCounter) -> list[int]:
    if not spans:
        return []
    overhead = count_tokens([""])[0]
    return [c - overhead for c in count_tokens([body[s:e] for s, e in spans])]


def _word_pieces(body: str, start: int, end: int, count_tokens: TokenCounter, budget: int) -> list[tuple[int, int]]:
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", body[start:end])]
    costs = _costs(body, words, count_tokens)
    pieces: list[tuple[int, int]] = []
    cur: tuple[int, int] | None = None
    cur_cost = 0
    for (s, e), cost in zip(words, costs, strict=True):
        if cur is not None and cur_cost + cost <= budget:
            cur, cur_cost = (cur[0], e), cur_cost + cost
            continue
        if cur is not None:
            pieces.append(cur)
        if cost > budget:
            # A single "word" longer than the window (a URL, a base64 blob): cut by characters.
            pieces.extend(_char_pieces(body, s, e, count_tokens, budget))
            cur, cur_cost = None, 0
        else:
            cur, cur_cost = (s, e), cost
    if cur is not None:
        pieces.append(cur)
    return pieces


def _char_pieces(body: str, start: int, end: int, count_tokens: TokenCounter, budget: int) -> list[tuple[int, int]]:
    pieces = []
    pos = start
    while pos < end:
        # Gallop to a cut that does not fit before the binary search, so that each piece costs counts of about its
        # own length, not of the rest of the text: a 20 MB run without whitespace would otherwise take hours.
        lo, step = pos + 1, max(budget, 1)
        hi = min(pos + step, end)
        while hi < end and _costs(body, [(pos, hi)], count_tokens)[0] <= budget:
            lo, step = hi, step * 2
            hi = min(pos + step, end)
        while lo < hi:  # largest cut that fits
            mid = (lo + hi + 1) // 2
            if _costs(body, [(pos, mid)], count_tokens)[0] <= budget:
                lo = mid
            else:
                hi = mid - 1
        pieces.append((pos, lo))
        pos = lo
    return pieces


def _ensure_fits(
    body: str,
    span: tuple[int, int],
    title: str,
    settings: ChunkSettings,
    count_tokens: TokenCounter,
    max_tokens: int,
) -> list[tuple[int, int]]:
    s, e = span
    if count_tokens([_embed_text(title, body[s:e], settings)])[0] <= max_tokens:
        return [span]
    words = [m.start() + s for m in re.finditer(r"\S+", body[s:e])]
    if len(words) < 2:
        return _char_pieces(body, s, e, count_tokens, max_tokens - count_tokens([title])[0])
    mid = words[len(words) // 2]
    left = _strip_span(body, s, mid)
    return _ensure_fits(body, left, title, settings, count_tokens, max_tokens) + _ensure_fits(
        body, (mid, e), title, settings, count_tokens, max_tokens
    )


def embed_hash(text: str) -> str:
    """Content hash of the text a passage embeds: passages with equal hashes share one stored vector (per model),
    so unchanged text is never embedded twice."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
