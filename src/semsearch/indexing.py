"""Building and updating an index: articles -> passages -> vectors -> a new published version.

A full build and an incremental reindex are the same operation: diff the sources against the current version by
content hash, chunk and embed only what is new or changed (reusing stored vectors for passages whose embedded
text is unchanged), write a new version beside the current one, then switch the pointer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .articles import Article, LoadReport, SkippedSource, load_articles
from .chunking import Passage, chunk_article
from .config import Settings
from .embedding import Embedder, load_embedder
from .keyword import build_keyword_index
from .store import IndexLayout, IndexVersion, VersionWriter, embed_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReport:
    """What an index or reindex run did."""

    version_id: str | None
    """The published version (None for a dry run or when nothing changed)."""
    articles: int
    passages: int
    added: int
    updated: int
    removed: int
    unchanged: int
    passages_embedded: int
    passages_reused: int
    skipped: tuple[SkippedSource, ...] = ()
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    embed_seconds: float = 0.0
    full_rebuild: bool = True
    full_rebuild_reason: str | None = None
    dry_run: bool = False
    published: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id,
            "articles": self.articles,
            "passages": self.passages,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "passages_embedded": self.passages_embedded,
            "passages_reused": self.passages_reused,
            "skipped": [s.to_dict() for s in self.skipped],
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
            "embed_seconds": round(self.embed_seconds, 3),
            "full_rebuild": self.full_rebuild,
            "full_rebuild_reason": self.full_rebuild_reason,
            "dry_run": self.dry_run,
            "published": self.published,
        }


@dataclass
class _Plan:
    added: list[Article] = field(default_factory=list)
    updated: list[Article] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


def build_index(
    sources: Iterable[str | Path],
    index_dir: str | Path | None = None,
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
) -> IndexReport:
    """Index every article under ``sources`` from scratch and publish it as the current version."""
    return reindex(sources, index_dir, settings, embedder=embedder, full=True)


def reindex(
    sources: Iterable[str | Path],
    index_dir: str | Path | None = None,
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    full: bool = False,
    dry_run: bool = False,
    wait_for_lock: bool = False,
) -> IndexReport:
    """Bring the index in line with ``sources``: add new articles, update changed ones, remove vanished ones.

    Only passages whose embedded text changed are embedded again. ``full=True`` rebuilds from scratch;
    ``dry_run=True`` computes the plan and writes nothing.
    """
    settings = settings or Settings()
    started = time.perf_counter()
    loaded = load_articles(sources, exclude=settings.exclude)
    return apply_articles(
        loaded,
        index_dir if index_dir is not None else settings.index_dir,
        settings,
        embedder=embedder,
        full=full,
        dry_run=dry_run,
        remove_missing=True,
        wait_for_lock=wait_for_lock,
        started=started,
    )


def apply_articles(
    loaded: LoadReport,
    index_dir: str | Path,
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    full: bool = False,
    dry_run: bool = False,
    remove_missing: bool = True,
    delete_ids: Sequence[str] = (),
    wait_for_lock: bool = False,
    started: float | None = None,
) -> IndexReport:
    """Core of index/reindex/upsert/delete. ``remove_missing=False`` leaves articles absent from ``loaded``."""
    started = time.perf_counter() if started is None else started
    layout = IndexLayout(index_dir)
    with layout.writer_lock(wait=wait_for_lock, timeout=None):
        for leftover in layout.clean_staging():
            log.warning("removed a half-written index version left by an interrupted run: %s", leftover)
        base: IndexVersion | None = None
        reason: str | None = None
        if layout.current_version() is not None:
            base = IndexVersion(layout.current_path())
        if embedder is None:
            embedder = load_embedder(settings)
        if base is not None and not full:
            reason = _incompatibility(base, embedder, settings)
            if reason is not None:
                log.warning("full rebuild: %s", reason)
        use_base = base if (base is not None and not full and reason is None) else None
        plan = _plan(loaded.articles, use_base, remove_missing, delete_ids)

        to_index = plan.added + plan.updated
        passages_by_article = _chunk_all(to_index, settings, embedder)
        all_passages = [p for ps in passages_by_article for p in ps]

        # Vectors from the current version are reused for any passage whose embedded text is unchanged,
        # including on a full rebuild, as long as the model is the same.
        reuse_source = base if base is not None and _same_embedding(base, embedder) else None
        reusable = reuse_source.embed_hash_ids(embed_hash(p.embed_text) for p in all_passages) if reuse_source else {}
        need = [i for i, p in enumerate(all_passages) if embed_hash(p.embed_text) not in reusable]
        n_reused = len(all_passages) - len(need)

        if dry_run:
            articles_now = (
                len(loaded.articles)
                if remove_missing
                else len(set(base.article_hashes()) | {a.id for a in loaded.articles})
                if base
                else 0
            )
            return IndexReport(
                version_id=None,
                articles=articles_now,
                passages=len(all_passages),
                added=len(plan.added),
                updated=len(plan.updated),
                removed=len(plan.removed),
                unchanged=plan.unchanged,
                passages_embedded=len(need),
                passages_reused=n_reused,
                skipped=tuple(loaded.skipped),
                warnings=tuple(loaded.warnings),
                seconds=time.perf_counter() - started,
                full_rebuild=use_base is None,
                full_rebuild_reason=reason,
                dry_run=True,
            )

        if use_base is not None and not to_index and not plan.removed:
            articles, passages = use_base.manifest.articles, use_base.manifest.passages
            return IndexReport(
                version_id=use_base.version_id,
                articles=articles,
                passages=passages,
                added=0,
                updated=0,
                removed=0,
                unchanged=plan.unchanged,
                passages_embedded=0,
                passages_reused=0,
                skipped=tuple(loaded.skipped),
                warnings=tuple(loaded.warnings),
                seconds=time.perf_counter() - started,
                full_rebuild=False,
            )

        embed_started = time.perf_counter()
        vectors = np.empty((len(all_passages), embedder.dim), dtype=np.float32)
        if need:
            vectors[need] = embedder.embed_documents(
                [all_passages[i].embed_text for i in need], progress=settings.progress
            )
        embed_seconds = time.perf_counter() - embed_started
        reuse_rows = [i for i, p in enumerate(all_passages) if embed_hash(p.embed_text) in reusable]
        if reuse_rows and reuse_source is not None:
            vectors[reuse_rows] = reuse_source.vectors_for(
                [reusable[embed_hash(all_passages[i].embed_text)] for i in reuse_rows]
            )

        writer = VersionWriter(layout, embedder.dim, base=use_base)
        try:
            writer.delete_articles([a.id for a in plan.updated] + plan.removed)
            row = 0
            for article, passages in zip(to_index, passages_by_article, strict=True):
                writer.add_article(article, passages, vectors[row : row + len(passages)])
                row += len(passages)
            ids, texts = writer.passage_texts()
            keyword_info = build_keyword_index(ids, texts, writer.keyword_dir)
            manifest = writer.commit(
                {
                    "model_id": embedder.model_id,
                    "precision": getattr(embedder, "precision", "fp32"),
                    "chunking": _chunking_record(settings, embedder),
                    "build_seconds": round(time.perf_counter() - started, 3),
                    "keyword": keyword_info,
                }
            )
        except BaseException:
            writer.abort()
            raise
        layout.publish(manifest.version_id)
        for pruned in layout.prune(settings.keep_versions):
            log.info("pruned old index version %s", pruned)
        return IndexReport(
            version_id=manifest.version_id,
            articles=manifest.articles,
            passages=manifest.passages,
            added=len(plan.added),
            updated=len(plan.updated),
            removed=len(plan.removed),
            unchanged=plan.unchanged,
            passages_embedded=len(need),
            passages_reused=n_reused,
            skipped=tuple(loaded.skipped),
            warnings=tuple(loaded.warnings),
            seconds=time.perf_counter() - started,
            embed_seconds=embed_seconds,
            full_rebuild=use_base is None,
            full_rebuild_reason=reason,
            published=True,
        )


def _chunking_record(settings: Settings, embedder: Embedder) -> dict[str, Any]:
    record = settings.chunking.to_dict()
    record["model_max_tokens"] = embedder.max_tokens
    return record


def _same_embedding(version: IndexVersion, embedder: Embedder) -> bool:
    return version.manifest.model_id == embedder.model_id and version.manifest.dim == embedder.dim


def _incompatibility(version: IndexVersion, embedder: Embedder, settings: Settings) -> str | None:
    """Why the current version cannot be updated in place (so a full rebuild is needed), or None."""
    m = version.manifest
    if m.model_id != embedder.model_id or m.dim != embedder.dim:
        return f"the model changed ({m.model_id}, dim {m.dim} -> {embedder.model_id}, dim {embedder.dim})"
    if m.chunking != _chunking_record(settings, embedder):
        return "the chunking settings changed"
    return None


def _plan(
    articles: Sequence[Article], base: IndexVersion | None, remove_missing: bool, delete_ids: Sequence[str]
) -> _Plan:
    plan = _Plan()
    existing = base.article_hashes() if base is not None else {}
    incoming = {a.id for a in articles}
    for article in articles:
        old = existing.get(article.id)
        if old is None:
            plan.added.append(article)
        elif old != article.content_hash:
            plan.updated.append(article)
        else:
            plan.unchanged += 1
    gone = set(delete_ids) - incoming
    if remove_missing:
        gone |= set(existing) - incoming
    plan.removed = sorted(a for a in gone if a in existing)
    return plan


def _chunk_all(articles: Sequence[Article], settings: Settings, embedder: Embedder) -> list[list[Passage]]:
    out = []
    for article in articles:
        passages = chunk_article(article, settings.chunking, embedder.count_tokens, embedder.max_tokens)
        out.append(passages)
    return out


__all__ = ["IndexReport", "apply_articles", "build_index", "reindex"]
