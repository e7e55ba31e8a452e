"""Building and updating an index: articles -> passages -> vectors -> a new published version.

A full build and an incremental reindex are one operation: diff the articles against the current version by
content hash, chunk and embed only what is new or changed (reusing stored vectors for every passage whose
embedded text is unchanged), write one segment with the new passages and a version naming it beside the current
one (:mod:`semsearch.index.writer`), switch the pointer, then merge segments as the tiered policy asks
(:mod:`semsearch.index.merge`).
:class:`Index` offers the same as a long-lived object (``upsert``/``delete``) for backends that ingest live.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DEFAULT_MODEL, Settings
from ..errors import IndexWriteError, InvalidRequestError, SourceError
from ..ingest.articles import Article, LoadReport, SkippedSource, load_articles
from ..ingest.chunking import chunk_article, embed_hash
from ..models.embedding import Embedder, load_embedder, resolve_model
from .keyword import keyword_record
from .layout import IndexLayout
from .manifest import IndexFormatError
from .merge import MergeReport, maybe_merge, optimize
from .reader import IndexVersion
from .writer import VersionWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReport:
    """What an index, reindex, upsert or delete run did."""

    version_id: str | None
    """The current version after the run (None for a dry run of an empty index)."""
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
    """True when a new version was published (False for a dry run or when nothing changed)."""
    merges: tuple[MergeReport, ...] = ()
    """Segment merges run after publishing (``version_id`` is then the merged version: the same passages)."""

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
            "merges": [m.to_dict() for m in self.merges],
        }


@dataclass
class _Plan:
    added: list[Article] = field(default_factory=list)
    updated: list[Article] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.updated or self.removed)


def build_index(
    sources: Iterable[str | Path],
    index_dir: str | Path | None = None,
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
) -> IndexReport:
    """Index every article under ``sources`` from scratch and publish it as the current version.

    Vectors of passages whose embedded text is already in the current version (same model) are reused.
    """
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

    ``full=True`` rebuilds from scratch; ``dry_run=True`` computes the plan and writes nothing. Raises
    :class:`~semsearch.errors.IndexLockedError` if another writer is running (unless ``wait_for_lock``), and
    :class:`~semsearch.errors.SourceError` when files were found but none could be read: the index is then left
    as it is (an empty directory, by contrast, empties the index).
    """
    settings = settings or Settings()
    started = time.perf_counter()
    loaded = load_articles(sources, exclude=settings.exclude)
    if loaded.skipped and not loaded.articles:
        raise SourceError(_nothing_read(loaded.skipped))
    target = index_dir if index_dir is not None else settings.index_dir
    return apply_articles(
        loaded, target, settings, embedder=embedder, full=full, dry_run=dry_run, wait_for_lock=wait_for_lock,
        started=started,
    )  # fmt: skip


def rollback(index_dir: str | Path, *, wait_for_lock: bool = False) -> str:
    """Make the previously published version current again; returns its id."""
    layout = IndexLayout(index_dir)
    with layout.writer_lock(wait=wait_for_lock):
        layout.current_path()  # raises a clear error when there is no index at all
        previous = layout.previous_version()
        if previous is None:
            raise InvalidRequestError(f"no earlier index version in {layout.root} to roll back to")
        IndexVersion(layout.version_path(previous)).close()  # must open cleanly before it is published
        layout.publish(previous, action="rollback")
        return previous


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
    """The core of index/reindex/upsert/delete.

    ``remove_missing=False`` keeps articles absent from ``loaded`` (upsert); ``delete_ids`` removes articles.
    """
    started = time.perf_counter() if started is None else started
    layout = IndexLayout(index_dir)
    with layout.writing("writing a new version"):
        report = _apply(
            loaded, layout, settings, embedder, full, dry_run, remove_missing, delete_ids, wait_for_lock, started
        )
    if report.published and settings.auto_merge:
        try:
            merges = tuple(maybe_merge(layout.root, settings))
        except IndexWriteError as exc:  # the update is published; only the merge waits for space
            log.warning("%s", exc.message)
            merges = ()
            report = replace(report, warnings=(*report.warnings, f"segments not merged: {exc.message}"))
        if merges:
            report = replace(
                report, merges=merges, version_id=layout.current_version(), seconds=time.perf_counter() - started
            )
    return report


def _apply(
    loaded: LoadReport,
    layout: IndexLayout,
    settings: Settings,
    embedder: Embedder | None,
    full: bool,
    dry_run: bool,
    remove_missing: bool,
    delete_ids: Sequence[str],
    wait_for_lock: bool,
    started: float,
) -> IndexReport:
    with layout.writer_lock(wait=wait_for_lock):
        for leftover in layout.clean_staging():
            log.warning("removed a half-written index version left by an interrupted run: %s", leftover)
        for leftover in layout.prune_segments():
            log.warning("removed a segment no version names (left by an interrupted run): %s", leftover)
        base = _open_current(layout, full)
        model = embedder.model_id if embedder is not None else _model_id(settings, base)
        reason = _incompatibility(base, model, settings) if base is not None and not full else None
        if reason is not None:
            log.warning("full rebuild: %s", reason)
        incremental = base is not None and not full and reason is None
        plan = _plan(loaded.articles, base if incremental else None, remove_missing, delete_ids)
        unreadable = [skip.location for skip in loaded.skipped if skip.kept]
        if incremental and remove_missing and unreadable and plan.removed:
            # A file that exists but failed to read (permissions, an I/O error) is not a deleted article.
            assert base is not None
            kept = base.article_ids_from(unreadable)
            plan.unchanged += sum(a in kept for a in plan.removed)
            plan.removed = [a for a in plan.removed if a not in kept]

        def report(**fields: Any) -> IndexReport:
            defaults: dict[str, Any] = {
                "added": len(plan.added),
                "updated": len(plan.updated),
                "removed": len(plan.removed),
                "unchanged": plan.unchanged,
                "skipped": tuple(loaded.skipped),
                "warnings": tuple(loaded.warnings),
                "seconds": time.perf_counter() - started,
                "full_rebuild": not incremental,
                "full_rebuild_reason": reason,
            }
            return IndexReport(**{**defaults, **fields})

        if incremental and plan.empty:
            assert base is not None
            return report(
                version_id=base.version_id, articles=base.manifest.articles, passages=base.manifest.passages,
                passages_embedded=0, passages_reused=0, dry_run=dry_run,
            )  # fmt: skip

        # Only now is the model needed: to count tokens for chunking and to embed.
        if embedder is None:
            embedder = load_embedder(settings.with_(model=model))
        if base is not None and incremental and base.manifest.chunking.get("model_max_tokens") != embedder.max_tokens:
            reason, incremental = "the model window changed", False
            plan = _plan(loaded.articles, None, remove_missing, delete_ids)
        to_index = plan.added + plan.updated
        passages_by_article = [
            chunk_article(a, settings.chunking, embedder.count_tokens, embedder.max_tokens) for a in to_index
        ]
        empty = [a for a, ps in zip(to_index, passages_by_article, strict=True) if not ps]
        skipped = list(loaded.skipped) + [
            SkippedSource(a.path or a.id, "no text left after boilerplate") for a in empty
        ]
        all_passages = [p for ps in passages_by_article for p in ps]
        hashes = [embed_hash(p.embed_text) for p in all_passages]
        # Stored vectors are reused for every passage whose embedded text is unchanged (same model), on a full
        # rebuild too.
        reuse_from = base if base is not None and base.manifest.model_id == embedder.model_id else None
        reusable = reuse_from.embed_hash_ids(hashes) if reuse_from is not None else {}
        need = [i for i, h in enumerate(hashes) if h not in reusable]

        if dry_run:
            kept = set(base.article_hashes()) if base is not None and incremental else set()
            articles_after = len((kept - set(plan.removed)) | {a.id for a in to_index if a not in empty})
            return report(
                version_id=base.version_id if base is not None else None, articles=articles_after,
                passages=len(all_passages), passages_embedded=len(need), passages_reused=len(hashes) - len(need),
                skipped=tuple(skipped), dry_run=True,
            )  # fmt: skip

        embed_started = time.perf_counter()
        vectors = np.empty((len(all_passages), embedder.dim), dtype=np.float32)
        if need:
            vectors[need] = embedder.embed_documents(
                [all_passages[i].embed_text for i in need], progress=settings.progress
            )
        embed_seconds = time.perf_counter() - embed_started
        reuse_rows = [i for i, h in enumerate(hashes) if h in reusable]
        if reuse_rows and reuse_from is not None:
            vectors[reuse_rows] = reuse_from.vectors_for([reusable[hashes[i]] for i in reuse_rows])

        writer = VersionWriter(
            layout, embedder.dim, base=base if incremental else None,
            first_id=base.manifest.next_passage_id if base is not None else 0, ann_min_rows=settings.ann_min_rows,
        )  # fmt: skip
        try:
            writer.delete_articles([a.id for a in plan.updated] + plan.removed)
            row = 0
            for article, passages in zip(to_index, passages_by_article, strict=True):
                if passages:
                    writer.add_article(article, passages, vectors[row : row + len(passages)])
                row += len(passages)
            manifest = writer.commit(
                {
                    "model_id": embedder.model_id,
                    "precision": getattr(embedder, "precision", "fp32"),
                    "chunking": _chunking_record(settings, embedder.max_tokens),
                    "build_seconds": round(time.perf_counter() - started, 3),
                    "keyword": keyword_record(),
                }
            )
            layout.publish(manifest.version_id)
        except BaseException:
            # Half-written staging, and a segment or version written but never published (a full disk while
            # writing the version or the pointer), go now rather than at the next run.
            writer.abort()
            layout.discard_unpublished(writer.version_id)
            raise
        finally:
            if base is not None:
                base.close()
        for pruned in layout.prune(settings.keep_versions):
            log.info("pruned old index version %s", pruned)
        return report(
            version_id=manifest.version_id, articles=manifest.articles, passages=manifest.passages,
            passages_embedded=len(need), passages_reused=len(hashes) - len(need), skipped=tuple(skipped),
            embed_seconds=embed_seconds, published=True, seconds=time.perf_counter() - started,
        )  # fmt: skip


class Index:
    """A writable index for code that ingests live (a chatbot backend): keeps the model loaded between calls.

    Every update publishes a new version atomically (readers never see a partial update), under the same lock as
    ``semsearch reindex``; it writes only the changed passages (one segment) and deletion marks, so its cost follows
    the change, not the index. Safe to call from several threads: writes are serialised by the lock. Segment merges
    (``settings.auto_merge``) run after the update has published, without the lock.
    """

    def __init__(
        self, index_dir: str | Path | None = None, settings: Settings | None = None, *, embedder: Embedder | None = None
    ) -> None:
        self.settings = settings or Settings()
        self.index_dir = Path(index_dir if index_dir is not None else self.settings.index_dir)
        self._embedder = embedder

    def _model(self) -> Embedder:
        if self._embedder is None:
            layout = IndexLayout(self.index_dir)
            base = IndexVersion(layout.current_path()) if layout.current_version() is not None else None
            self._embedder = load_embedder(self.settings.with_(model=_model_id(self.settings, base)))
            if base is not None:
                base.close()
        return self._embedder

    def upsert(self, articles: Iterable[Article]) -> IndexReport:
        """Add new articles and replace changed ones (by id); other articles are left as they are."""
        batch = list(articles)
        for article in batch:
            if not isinstance(article, Article):
                raise InvalidRequestError(f"upsert takes Article records, not {type(article).__name__}")
            if not article.text.strip():
                raise InvalidRequestError(f"article {article.id!r} has no text")
        ids = [a.id for a in batch]
        if len(set(ids)) != len(ids):
            raise InvalidRequestError("duplicate article ids in one upsert")
        return apply_articles(
            LoadReport(articles=batch), self.index_dir, self.settings, embedder=self._model(), remove_missing=False,
            wait_for_lock=True,
        )  # fmt: skip

    def delete(self, article_ids: Iterable[str]) -> IndexReport:
        """Remove articles by id (unknown ids are ignored and counted as not removed)."""
        return apply_articles(
            LoadReport(), self.index_dir, self.settings, embedder=self._model(), remove_missing=False,
            delete_ids=list(article_ids), wait_for_lock=True,
        )  # fmt: skip

    def reindex(self, sources: Iterable[str | Path], *, full: bool = False, dry_run: bool = False) -> IndexReport:
        return reindex(
            sources, self.index_dir, self.settings, embedder=self._model(), full=full, dry_run=dry_run,
            wait_for_lock=True,
        )  # fmt: skip

    def rollback(self) -> str:
        return rollback(self.index_dir, wait_for_lock=True)

    def optimize(self) -> MergeReport | None:
        """Merge every segment into one, dropping deleted passages for good (None: nothing to do). Writers may
        go on meanwhile: the lock is taken only to publish."""
        return optimize(self.index_dir, self.settings)

    def merge(self) -> list[MergeReport]:
        """Run the merges the tiered policy asks for (updates do this themselves unless ``auto_merge`` is off)."""
        return maybe_merge(self.index_dir, self.settings)

    def versions(self) -> list[str]:
        """Version directories on disk, oldest first."""
        return IndexLayout(self.index_dir).all_version_dirs()

    @property
    def current_version(self) -> str | None:
        return IndexLayout(self.index_dir).current_version()


def _open_current(layout: IndexLayout, full: bool) -> IndexVersion | None:
    """The current version, or None: no index yet, or a full rebuild over an index in an older format (which
    only loses the reuse of its vectors)."""
    if layout.current_version() is None:
        return None
    try:
        return IndexVersion(layout.current_path())
    except IndexFormatError:
        if not full:
            raise
        log.warning("full rebuild over an index in an older format: every passage is embedded again")
        return None


def _nothing_read(skipped: Sequence[SkippedSource], shown: int = 3) -> str:
    # Every skip is logged too: the error is one line, and the user needs each reason to fix the sources.
    for skip in skipped:
        log.warning("skipped %s: %s", skip.location, skip.reason)
    reasons = "; ".join(f"{s.location}: {s.reason}" for s in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"no article could be read ({len(skipped)} skipped: {reasons}{more}); the index was left unchanged"


def _model_id(settings: Settings, base: IndexVersion | None) -> str:
    """The model this run uses: the one named in settings, else the index's own, else the default."""
    if settings.model is not None:
        return resolve_model(settings.model)[0]
    return base.manifest.model_id if base is not None else DEFAULT_MODEL


def _chunking_record(settings: Settings, max_tokens: int) -> dict[str, Any]:
    record = settings.chunking.to_dict()
    record["model_max_tokens"] = max_tokens
    return record


def _incompatibility(base: IndexVersion, model_id: str, settings: Settings) -> str | None:
    """Why the current version cannot be updated in place (so a full rebuild is needed), or None."""
    m = base.manifest
    if m.model_id != model_id:
        return f"the model changed ({m.model_id} -> {model_id}): every passage is embedded again"
    recorded = {k: v for k, v in m.chunking.items() if k != "model_max_tokens"}
    if recorded != settings.chunking.to_dict():
        return "the chunking settings changed"
    return None


def _plan(
    articles: Sequence[Article], base: IndexVersion | None, remove_missing: bool, delete_ids: Sequence[str]
) -> _Plan:
    plan = _Plan()
    if base is None:
        existing: dict[str, str] = {}
    elif remove_missing:
        existing = base.article_hashes()
    else:  # an upsert or delete: only the articles it names matter, however large the index
        existing = base.article_hashes([a.id for a in articles] + list(delete_ids))
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


__all__ = ["Index", "IndexReport", "apply_articles", "build_index", "reindex", "rollback"]
