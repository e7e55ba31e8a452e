"""The ``semsearch`` command line. Every command only calls the library."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .config import Settings
from .errors import InvalidRequestError, SemsearchError

F = TypeVar("F", bound=Callable[..., Any])


def _fail_cleanly(func: F) -> F:
    """User mistakes (and any semsearch error) print one line and exit non-zero, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SemsearchError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(2 if exc.http_status < 500 or exc.http_status == 503 else 1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


index_dir_option = click.option(
    "--index-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Index directory (default: $SEMSEARCH_INDEX_DIR or ./index).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def rerank_options(command: Any) -> Any:
    """--rerank-model and --rerank-depth: the settings of the same names, for one command."""
    command = click.option("--rerank-depth", type=click.IntRange(1, 1000), default=None,
                           help="Candidates the rerank model reads [default: $SEMSEARCH_RERANK_DEPTH or 30].")(command)  # fmt: skip
    return click.option("--rerank-model", default=None,
                        help="Rerank the best candidates with this sentence-transformers CrossEncoder (name or path) "
                        "[default: $SEMSEARCH_RERANK_MODEL; none].")(command)  # fmt: skip


def _rerank_overrides(rerank_model: str | None, rerank_depth: int | None) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if rerank_model is not None:
        overrides["rerank_model"] = rerank_model
    if rerank_depth is not None:
        overrides["rerank_depth"] = rerank_depth
    return overrides


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    base: Settings = ctx.obj
    return base.with_(**overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="semsearch")
@click.pass_context
@_fail_cleanly
def main(ctx: click.Context, verbose: int) -> None:
    """Semantic search over articles: index them, search them, serve them over HTTP."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "httpx", "huggingface_hub", "bm25s"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    ctx.obj = Settings.from_env().with_(progress=sys.stderr.isatty())


def _print_index_report(report: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    if report.dry_run:
        click.echo("dry run: nothing written")
    for skip in report.skipped:
        kept = " (the articles indexed from it are kept)" if skip.kept else ""
        click.echo(f"skipped {skip.location}: {skip.reason}{kept}", err=True)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if report.full_rebuild_reason:
        click.echo(f"full rebuild: {report.full_rebuild_reason}", err=True)
    click.echo(
        f"{report.articles} articles, {report.passages} passages"
        f" (added {report.added}, updated {report.updated}, removed {report.removed}, unchanged {report.unchanged};"
        f" passages embedded {report.passages_embedded}, reused {report.passages_reused});"
        f" {len(report.skipped)} skipped; {report.seconds:.1f} s"
    )
    if report.version_id and report.published:
        click.echo(f"published version {report.version_id}")


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_dir_option
@click.option("--model", default=None, help="Embedding model name or path (default: bundled all-MiniLM-L6-v2).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None)
@json_option
@click.pass_context
@_fail_cleanly
def index(ctx: click.Context, sources: tuple[Path, ...], index_dir: Path | None, model: str | None,
          precision: str | None, batch_size: int | None, as_json: bool) -> None:  # fmt: skip
    """Index every article under SOURCE... from scratch and publish it.

    SOURCE is a file or directory of .txt/.md/.html articles, or .jsonl/.csv records.
    """
    from .index.build import build_index

    settings = _settings(ctx, index_dir=index_dir, model=model, precision=precision, batch_size=batch_size)
    report = build_index(sources, settings.index_dir, settings)
    _print_index_report(report, as_json)


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@index_dir_option
@click.option("--full", is_flag=True, help="Rebuild from scratch instead of applying the difference.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--wait", is_flag=True, help="If another reindex is running, wait for it instead of exiting.")
@click.option("--model", default=None, help="Embedding model name or path (a change forces a full rebuild).")
@json_option
@click.pass_context
@_fail_cleanly
def reindex(ctx: click.Context, sources: tuple[Path, ...], index_dir: Path | None, full: bool, dry_run: bool,
            wait: bool, model: str | None, as_json: bool) -> None:  # fmt: skip
    """Bring the index in line with SOURCE...: add new articles, update changed ones, remove vanished ones.

    Only passages whose text changed are embedded again; the new version is published atomically.
    """
    from .index.build import reindex as run_reindex

    settings = _settings(ctx, index_dir=index_dir, model=model)
    report = run_reindex(sources, settings.index_dir, settings, full=full, dry_run=dry_run, wait_for_lock=wait)
    _print_index_report(report, as_json)


@main.command()
@index_dir_option
@click.option("--wait", is_flag=True, help="If a reindex is running, wait for it instead of exiting.")
@click.pass_context
@_fail_cleanly
def rollback(ctx: click.Context, index_dir: Path | None, wait: bool) -> None:
    """Make the previously published index version current again (servers follow within a second)."""
    from .index.build import rollback as run_rollback

    settings = _settings(ctx, index_dir=index_dir)
    version = run_rollback(settings.index_dir, wait_for_lock=wait)
    click.echo(f"rolled back to version {version}")


@main.command()
@index_dir_option
@json_option
@click.pass_context
@_fail_cleanly
def optimize(ctx: click.Context, index_dir: Path | None, as_json: bool) -> None:
    """Merge every segment of the index into one and drop deleted passages for good.

    Searches and writers go on meanwhile; the merged version is published atomically (servers follow).
    """
    from .index.merge import optimize as run_optimize

    settings = _settings(ctx, index_dir=index_dir)
    report = run_optimize(settings.index_dir, settings)
    if as_json:
        click.echo(json.dumps(report.to_dict() if report else {"version_id": None, "merged": []}, indent=2))
    elif report is None:
        click.echo("nothing to do: one segment and no deleted passages")
    elif report.version_id is None:
        click.echo(f"merge abandoned: {report.reason}", err=True)
        sys.exit(1)
    else:
        click.echo(
            f"merged {len(report.merged)} segments into one of {report.rows} passages"
            f" ({report.purged} deleted passages dropped) in {report.seconds:.1f} s; published version {report.version_id}"
        )


@main.command()
@index_dir_option
@click.option("--wait", is_flag=True, help="If a reindex is running, wait for it instead of exiting.")
@json_option
@click.pass_context
@_fail_cleanly
def upgrade(ctx: click.Context, index_dir: Path | None, wait: bool, as_json: bool) -> None:
    """Convert an index written by an older semsearch to the current format, keeping every vector."""
    from .index.upgrade import upgrade as run_upgrade

    settings = _settings(ctx, index_dir=index_dir)
    report = run_upgrade(settings.index_dir, ann_min_rows=settings.ann_min_rows, wait_for_lock=wait)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(
        f"upgraded format {report.from_format} to the current one: {report.articles} articles, {report.passages}"
        f" passages, nothing embedded again; published version {report.version_id}"
    )


@main.command()
@click.argument("query")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of passages.")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "keyword"]), default="hybrid", show_default=True)
@click.option("--source", multiple=True, help="Only articles from this source (repeatable).")
@click.option("--tag", multiple=True, help="Only articles with this tag (repeatable).")
@click.option("--after", "published_after", default=None, help="Published on or after this ISO date.")
@click.option("--before", "published_before", default=None, help="Published on or before this ISO date.")
@click.option("--half-life", "half_life", type=float, default=None,
              help="Decay scores by article age with this half-life in days (recent first).")  # fmt: skip
@click.option("--as-of", "as_of", default=None, help="Count ages back from this ISO date (default: now).")
@click.option("--explain", is_flag=True, help="With --json: how each hit was scored.")
@rerank_options
@index_dir_option
@json_option
@click.pass_context
@_fail_cleanly
def search(ctx: click.Context, query: str, k: int, mode: str, source: tuple[str, ...], tag: tuple[str, ...],
           published_after: str | None, published_before: str | None, half_life: float | None, as_of: str | None,
           explain: bool, rerank_model: str | None, rerank_depth: int | None, index_dir: Path | None,
           as_json: bool) -> None:  # fmt: skip
    """Print the passages that best match QUERY."""
    from .retrieve.filters import SearchFilters
    from .retrieve.recency import Recency
    from .retrieve.searcher import Searcher

    settings = _settings(ctx, index_dir=index_dir, **_rerank_overrides(rerank_model, rerank_depth))
    filters = SearchFilters(source=source, tags=tag, published_after=published_after, published_before=published_before)
    if as_of is not None and half_life is None:
        raise InvalidRequestError("--as-of needs --half-life")
    recency = Recency(half_life, as_of) if half_life is not None else None
    with Searcher.open(settings.index_dir, settings) as searcher:
        hits = searcher.search(query, k=k, mode=mode, filters=filters, recency=recency, explain=explain)
    if as_json:
        click.echo(json.dumps({"query": query, "k": k, "hits": [h.to_dict() for h in hits]}, indent=2))
        return
    if not hits:
        click.echo("no results")
    for hit in hits:
        click.secho(f"{hit.rank:>2}. {hit.score:.3f}  {hit.title}", bold=True)
        click.echo(
            f"    {hit.article_id} ¶{hit.paragraph} [{hit.start}:{hit.end}]" + (f"  {hit.url}" if hit.url else "")
        )
        click.echo("    " + " ".join(hit.text.split()))


@main.command()
@click.argument("article_id")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of articles.")
@click.option("--source", multiple=True, help="Only articles from this source (repeatable).")
@click.option("--tag", multiple=True, help="Only articles with this tag (repeatable).")
@index_dir_option
@json_option
@click.pass_context
@_fail_cleanly
def related(ctx: click.Context, article_id: str, k: int, source: tuple[str, ...], tag: tuple[str, ...],
            index_dir: Path | None, as_json: bool) -> None:  # fmt: skip
    """Print the articles closest to ARTICLE_ID (by its stored passage vectors)."""
    from .retrieve.filters import SearchFilters
    from .retrieve.searcher import Searcher

    settings = _settings(ctx, index_dir=index_dir)
    with Searcher.open(settings.index_dir, settings) as searcher:
        articles = searcher.related(article_id, k=k, filters=SearchFilters(source=source, tags=tag))
    if as_json:
        click.echo(json.dumps({"article_id": article_id, "articles": [a.to_dict() for a in articles]}, indent=2))
        return
    if not articles:
        click.echo("no related articles")
    for article in articles:
        click.secho(f"{article.rank:>2}. {article.score:.3f}  {article.title}", bold=True)
        dated = " ".join(x for x in (article.published, article.source) if x)
        click.echo(f"    {article.article_id}" + (f"  {dated}" if dated else ""))


@main.command()
@index_dir_option
@json_option
@click.pass_context
@_fail_cleanly
def info(ctx: click.Context, index_dir: Path | None, as_json: bool) -> None:
    """Describe the published index: version, model, counts, build time."""
    from .index.layout import IndexLayout
    from .index.reader import IndexVersion

    settings = _settings(ctx, index_dir=index_dir)
    layout = IndexLayout(settings.index_dir)
    version = IndexVersion(layout.current_path())
    try:
        manifest = version.manifest
        data = manifest.to_dict()
        data.update(version.stats())
    finally:
        version.close()
    sizes = layout.segment_bytes()
    data["index_dir"] = str(layout.root)
    data["versions"] = layout.all_version_dirs()
    data["previous_version"] = layout.previous_version()
    data["bytes"] = sum(sizes.get(s, 0) for s in manifest.segments)
    data["bytes_all_versions"] = sum(sizes.values())
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"index       {layout.root}")
    click.echo(f"version     {manifest.version_id} (format {manifest.format_version})")
    click.echo(f"model       {manifest.model_id} (dim {manifest.dim}, {manifest.precision})")
    click.echo(f"articles    {manifest.articles}")
    click.echo(f"passages    {manifest.passages}")
    click.echo(f"built       {manifest.built_at} in {manifest.build_seconds:.1f} s")
    click.echo(f"versions    {len(data['versions'])} kept")
    click.echo(
        f"disk        {data['bytes'] / 1e6:.1f} MB ({data['bytes_all_versions'] / 1e6:.1f} MB with older versions)"
    )
    click.echo(f"segments    {len(data['segments'])}, {manifest.deleted} deleted passages")
    for seg in data["segments"]:
        params = ", ".join(f"{k} {v}" for k, v in seg["params"].items() if k in ("nlist", "nprobe"))
        click.echo(
            f"  {seg['id']}  {seg['rows']:>9} rows  {seg['deleted']:>7} deleted  {seg['vector_index']}"
            + (f" ({params})" if params else "")
            + f"  recall@10 {seg['recall_at_10']}"
        )


@main.command(name="eval")
@click.argument("beir_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@index_dir_option
@click.option("--mode", type=click.Choice(["hybrid", "dense", "keyword"]), default="hybrid", show_default=True)
@click.option("--fusion", type=click.Choice(["adaptive", "zscore", "rrf"]), default="adaptive", show_default=True)
@rerank_options
@json_option
@click.pass_context
@_fail_cleanly
def eval_(ctx: click.Context, beir_dir: Path, index_dir: Path | None, mode: str, fusion: str,
          rerank_model: str | None, rerank_depth: int | None, as_json: bool) -> None:  # fmt: skip
    """Index a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv) and report nDCG@10, Recall@100 and
    MRR@10 at document level, or at passage level when the judgements name passages (DOC_ID#ORDINAL). With
    --index-dir the index is kept (and reused incrementally next time)."""
    from .eval.beir import evaluate_beir

    settings = _settings(ctx, **_rerank_overrides(rerank_model, rerank_depth))
    report = evaluate_beir(beir_dir, settings, index_dir=index_dir, mode=mode, fusion=fusion)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    for key, value in report.to_dict().items():
        click.echo(f"{key:<14}{value}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Server processes [default: one per CPU core, at most 8: queries embed on the request thread].",
)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True, help="Threads per worker.")
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn.")
@click.option(
    "--corpus",
    type=click.Path(exists=True, path_type=Path),
    multiple=True,
    help="Bring the index up to date with these sources before serving (built on first run, then incremental).",
)
@rerank_options
@index_dir_option
@click.pass_context
@_fail_cleanly
def serve(ctx: click.Context, host: str, port: int, workers: int | None, threads: int, dev: bool,
          corpus: tuple[Path, ...], rerank_model: str | None, rerank_depth: int | None,
          index_dir: Path | None) -> None:  # fmt: skip
    """Serve the HTTP API (search page at /, OpenAPI spec at /openapi.json)."""
    from .index.build import reindex
    from .serve.gunicorn import default_workers
    from .serve.gunicorn import serve as run_server

    settings = _settings(ctx, index_dir=index_dir, **_rerank_overrides(rerank_model, rerank_depth))
    workers = workers or default_workers()
    if corpus:
        report = reindex(corpus, settings.index_dir, settings, wait_for_lock=True)
        _print_index_report(report, as_json=False)
    click.echo(f"serving {settings.index_dir} on http://{host}:{port}/ ({'dev' if dev else f'{workers} worker(s)'})")
    run_server(settings, host=host, port=port, workers=workers, threads=threads, dev=dev)


@main.command()
@click.option("--http", "over_http", is_flag=True, help="Serve streamable HTTP at http://HOST:PORT/mcp, not stdio.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind with --http.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port with --http.")
@index_dir_option
@click.pass_context
@_fail_cleanly
def mcp(ctx: click.Context, over_http: bool, host: str, port: int, index_dir: Path | None) -> None:
    """Serve the search tools to MCP clients (search, get_article, related_articles, context).

    Over stdin/stdout by default, as a chat client starts it; logs go to stderr.
    """
    from .serve.mcp import serve_http, serve_stdio

    settings = _settings(ctx, index_dir=index_dir)
    if not over_http:
        serve_stdio(settings)
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        # The HTTP API's keys do not apply here.
        click.echo(f"warning: {host} is not loopback and the MCP server has no authentication", err=True)
    click.echo(f"serving {settings.index_dir} to MCP clients at http://{host}:{port}/mcp", err=True)
    serve_http(settings, host=host, port=port)


if __name__ == "__main__":  # pragma: no cover
    main()
