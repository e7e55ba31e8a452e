"""Context assembly for retrieval-augmented generation: passages -> a numbered, cited, budgeted prompt block.

Retrieved passages of one article that overlap or sit next to each other are merged into one block, in article
order, so the model reads connected text; articles come in the order of their best passage. Each block is
numbered ``[n] Title (url): text`` and has a citation (article, paragraphs, character offsets). Blocks are
added while the whole text fits ``max_tokens`` as counted by a real tokenizer; the last one is cut at a sentence
boundary rather than dropped when at least one sentence fits. The budget is never exceeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..ingest.chunking import split_sentences
from .results import Citation, Context, SearchHit

TokenCount = Callable[[str], int]
"""Counts the tokens of a text as the consuming LLM would (no special tokens)."""


@dataclass
class _Block:
    article_id: str
    title: str
    url: str | None
    paragraph: int
    last_paragraph: int
    start: int
    end: int
    passage_ids: list[int]
    text: str
    best_rank: int


def merge_hits(hits: Sequence[SearchHit], article_text: Callable[[str], str]) -> list[_Block]:
    """Blocks of overlapping or adjacent passages per article, articles by best rank, blocks in article order."""
    by_article: dict[str, list[SearchHit]] = {}
    for hit in hits:
        by_article.setdefault(hit.article_id, []).append(hit)
    blocks: list[_Block] = []
    for article_id, group in sorted(by_article.items(), key=lambda item: min(h.rank for h in item[1])):
        body = article_text(article_id)
        merged: list[_Block] = []
        for hit in sorted(group, key=lambda h: h.start):
            prev = merged[-1] if merged else None
            # Adjacent: the next paragraph (nothing but whitespace between) or overlapping offsets.
            if prev is not None and (hit.start <= prev.end or not body[prev.end : hit.start].strip()):
                prev.end = max(prev.end, hit.end)
                prev.last_paragraph = max(prev.last_paragraph, hit.last_paragraph)
                prev.passage_ids.append(hit.passage_id)
                prev.best_rank = min(prev.best_rank, hit.rank)
                continue
            merged.append(
                _Block(hit.article_id, hit.title, hit.url, hit.paragraph, hit.last_paragraph, hit.start, hit.end,
                       [hit.passage_id], "", hit.rank)
            )  # fmt: skip
        for block in merged:
            block.text = " ".join(body[block.start : block.end].split())
        blocks.extend(merged)
    return blocks


def _label(number: int, block: _Block) -> str:
    source = f"{block.title} ({block.url})" if block.url else block.title or block.article_id
    return f"[{number}] {source}: "


def assemble(
    query: str,
    hits: Sequence[SearchHit],
    article_text: Callable[[str], str],
    count_tokens: TokenCount,
    max_tokens: int,
    version: str | None = None,
) -> Context:
    """Build the context block from ranked hits within ``max_tokens``."""
    parts: list[str] = []
    citations: list[Citation] = []
    total = 0
    for block in merge_hits(hits, article_text):
        number = len(citations) + 1
        label = _label(number, block)
        candidate = "\n\n".join([*parts, label + block.text])
        tokens = count_tokens(candidate)
        start, end = block.start, block.end
        if tokens > max_tokens:
            # Cut the block at a sentence boundary: keep the longest prefix of whole sentences that fits.
            body = article_text(block.article_id)
            sentence_ends = [block.start + e for _, e in split_sentences(body[block.start : block.end])]
            fitted = None
            for cut in reversed(sentence_ends[:-1]):
                text = " ".join(body[block.start : cut].split())
                candidate = "\n\n".join([*parts, label + text])
                tokens = count_tokens(candidate)
                if tokens <= max_tokens:
                    fitted = (text, cut)
                    break
            if fitted is None:
                continue  # not even one sentence of this block fits; a later, shorter one may
            block.text, end = fitted
        parts.append(label + block.text)
        total = tokens
        citations.append(
            Citation(number, block.article_id, block.title, block.url, block.paragraph, block.last_paragraph,
                     start, end, tuple(block.passage_ids))
        )  # fmt: skip
    text = "\n\n".join(parts)
    return Context(query, text, tuple(citations), total if parts else count_tokens(""), max_tokens, version)
