"""Plant each known bug in a private copy of the code and check that the tests named for it fail. Run by hand (not
in CI), with the project's virtualenv active:

    python scripts/planted_bugs.py                  # every bug below, unit and integration tests
    python scripts/planted_bugs.py --unit-only      # skip the bugs whose tests need the real model or a server
    python scripts/planted_bugs.py --only admin-reload-never-reloads

Each bug is a literal replacement in one file (the original text must occur exactly once, so a refactoring that
moves the code makes this script fail loudly instead of planting nothing). The copies, the ``PYTHONPATH`` trick
and the process handling are those of ``scripts/mutation.py``. Prints a JSON report; exits 1 if any planted bug
left its tests passing.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mutation import _emit, _git_commit, _Running, workspaces


@dataclass(frozen=True)
class PlantedBug:
    name: str
    path: str
    original: str
    planted: str
    tests: tuple[str, ...]
    integration: bool = False


BUGS = (
    PlantedBug(
        "context-budget-counts-a-third",
        "src/semsearch/retrieve/version_searcher.py",
        "return lambda text: embedder.count_tokens([text])[0] - overhead",
        "return lambda text: (embedder.count_tokens([text])[0] - overhead) // 3",
        ("tests/retrieve/test_context.py",),
    ),
    PlantedBug(
        "warm-does-nothing",
        "src/semsearch/index/reader.py",
        "            self.keyword.warm()\n            for segment in self.segments:",
        "            return\n            for segment in self.segments:",
        ("tests/index/test_store.py",),
    ),
    PlantedBug(
        "published-before-exclusive",
        "src/semsearch/retrieve/filters.py",
        '(self.published_before, "<=")',
        '(self.published_before, "<")',
        ("tests/retrieve/test_retrieval.py",),
    ),
    PlantedBug(
        "published-after-exclusive",
        "src/semsearch/retrieve/filters.py",
        '(self.published_after, ">=")',
        '(self.published_after, ">")',
        ("tests/retrieve/test_retrieval.py",),
    ),
    PlantedBug(
        "dates-compared-in-their-own-zone",
        "src/semsearch/ingest/dates.py",
        "return parsed.astimezone(UTC).isoformat()",
        "return parsed.isoformat()",
        ("tests/retrieve/test_retrieval.py",),
    ),
    PlantedBug(
        "admin-reload-never-reloads",
        "src/semsearch/serve/app.py",
        "changed = searcher.reload()",
        "changed = False",
        ("tests/serve/test_api.py",),
    ),
    PlantedBug(
        "batch-embeds-one-query-at-a-time",
        "src/semsearch/retrieve/version_searcher.py",
        'vectors = self.embedder.embed_queries(list(queries)) if mode != "keyword" else None',
        'vectors = np.vstack([self.embedder.embed_queries([q]) for q in queries]) if mode != "keyword" else None',
        ("tests/serve/test_api.py",),
    ),
    PlantedBug(
        "merge-across-dropped-boilerplate",
        "src/semsearch/ingest/chunking.py",
        "if nfirst <= last + 1 and fits([(s, ne)])[0]:",
        "if fits([(s, ne)])[0]:",
        ("tests/ingest/test_chunking.py",),
    ),
    PlantedBug(
        "leftovers-of-a-killed-writer-kept",
        "src/semsearch/index/layout.py",
        "                    if path.is_dir():\n                        shutil.rmtree(path, ignore_errors=True)\n"
        "                    else:\n                        path.unlink(missing_ok=True)",
        "                    pass",
        ("tests/index/test_crash_safety.py",),
    ),
    PlantedBug(
        "client-does-not-retry-504",
        "src/semsearch/client.py",
        "_RETRY_STATUSES = {502, 503, 504}",
        "_RETRY_STATUSES = {502, 503}",
        ("tests/test_client.py",),
    ),
    PlantedBug(
        "background-reload-never-starts",
        "src/semsearch/retrieve/searcher.py",
        "        if time.monotonic() - self._last_check < self._settings.reload_check_seconds:\n            return False",
        "        if True:\n            return False",
        ("tests/integration/test_server_reload.py",),
        integration=True,
    ),
    PlantedBug(
        "workers-exit-through-cpp-destructors",
        "src/semsearch/serve/gunicorn.py",
        '            "worker_exit": worker_exit,\n',
        "",
        ("tests/integration/test_server.py",),
        integration=True,
    ),
    PlantedBug(
        "sigterm-during-warm-up-swallowed",
        "src/semsearch/serve/gunicorn.py",
        "        signal.signal(signal.SIGTERM, signal.SIG_DFL)\n",
        "",
        ("tests/integration/test_server.py::test_sigterm_while_workers_warm_up_stops_the_server_at_once",),
        integration=True,
    ),
    PlantedBug(
        "api-key-any-bearer-accepted",
        "src/semsearch/serve/app.py",
        "found |= hmac.compare_digest(",
        "found = True or hmac.compare_digest(",
        ("tests/serve/test_security.py",),
    ),
    PlantedBug(
        "rate-limit-per-worker",
        "src/semsearch/serve/ratelimit.py",
        '        self._table = multiprocessing.get_context("fork").Array("d", _SLOTS * _FIELDS, lock=True)\n',
        '        self._table = multiprocessing.get_context("fork").Array("d", _SLOTS * _FIELDS, lock=True)\n'
        "        __import__('os').register_at_fork(after_in_child=lambda: setattr(self, '_table', "
        "multiprocessing.get_context('fork').Array('d', _SLOTS * _FIELDS, lock=True)))\n",
        ("tests/serve/test_security.py",),
    ),
    PlantedBug(
        "request-schema-not-enforced",
        "src/semsearch/serve/requests.py",
        "    if error is not None:\n        raise InvalidRequestError(_message(error))",
        "    if error is not None and False:\n        raise InvalidRequestError(_message(error))",
        ("tests/serve/test_api.py",),
    ),
    PlantedBug(
        "symlink-out-of-the-source-root-followed",
        "src/semsearch/ingest/sources.py",
        "    if not real.is_relative_to(real_root):",
        "    if False:",
        ("tests/ingest/test_hostile.py",),
    ),
    PlantedBug(
        "index-checksums-not-compared",
        "src/semsearch/index/integrity.py",
        "        if actual != expected:",
        "        if False:",
        ("tests/index/test_integrity.py",),
    ),
    PlantedBug(
        "front-matter-structures-kept",
        "src/semsearch/ingest/frontmatter.py",
        "        if plain is _DROP:",
        "        if False:",
        ("tests/ingest/test_frontmatter.py::test_structures_and_alias_bombs_are_dropped_not_stored",),
    ),
    PlantedBug(
        "front-matter-rule-mid-text-taken",
        "src/semsearch/ingest/frontmatter.py",
        "    opened = _OPEN.match(text)",
        '    opened = re.compile(r"^---[ \\t]*\\n", re.MULTILINE).search(text)',
        ("tests/ingest/test_frontmatter.py",),
    ),
    PlantedBug(
        "paging-depth-grows-with-the-page",
        "src/semsearch/retrieve/searcher.py",
        "explain=explain, depth=state.depth)  # fmt: skip\n                fresh_hits",
        "explain=explain, depth=max(4 * total, 100))  # fmt: skip\n                fresh_hits",
        ("tests/retrieve/test_paging.py",),
    ),
    PlantedBug(
        "rerank-order-not-applied",
        "src/semsearch/retrieve/version_searcher.py",
        "out = [replace(head[i], score=float(scores[i]), rerank=float(scores[i])) for i in order]",
        "out = [replace(head[i], score=float(scores[i]), rerank=float(scores[i])) for i in range(len(head))]",
        ("tests/retrieve/test_rerank.py",),
    ),
    PlantedBug(
        "rerank-tail-scores-not-shifted",
        "src/semsearch/retrieve/version_searcher.py",
        "            out += [replace(c, score=c.score + shift) for c in tail]",
        "            out += tail",
        ("tests/retrieve/test_rerank.py",),
    ),
    PlantedBug(
        "rerank-skipped-for-articles",
        "src/semsearch/retrieve/version_searcher.py",
        "        candidates = self._rerank(version, query, candidates)\n",
        "",
        ("tests/retrieve/test_rerank.py",),
    ),
    PlantedBug(
        "page-facet-filter-not-sent",
        "src/semsearch/serve/static/search.js",
        '  for (const v of state.source) p.append("source", v);\n  for (const v of state.tag) p.append("tag", v);\n'
        "  if (state.after)",
        '  for (const v of state.tag) p.append("tag", v);\n  if (state.after)',
        ("tests/integration/test_search_page.py",),
        integration=True,
    ),
    PlantedBug(
        "page-next-without-cursor",
        "src/semsearch/serve/static/search.js",
        "const cursor = entry.cursors[n - 1];",
        "const cursor = null;",
        ("tests/integration/test_search_page.py",),
        integration=True,
    ),
    PlantedBug(
        "page-recent-toggle-ignored",
        "src/semsearch/serve/static/search.js",
        'p.set("recency_half_life_days", RECENT_HALF_LIFE_DAYS);',
        "",
        ("tests/integration/test_search_page.py",),
        integration=True,
    ),
    PlantedBug(
        "page-month-has-30-days",
        "src/semsearch/serve/static/search.js",
        "const last = new Date(Date.UTC(y, m, 0)).getUTCDate();",
        "const last = 30;",
        ("tests/integration/test_search_page.py",),
        integration=True,
    ),
)

_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def plant(source: str, bug: PlantedBug) -> str:
    count = source.count(bug.original)
    if count != 1:
        raise SystemExit(f"planted_bugs: {bug.name}: the original text occurs {count} times in {bug.path}, not once")
    return source.replace(bug.original, bug.planted)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--unit-only", action="store_true", help="skip bugs whose tests are integration tests")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="just these bugs")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    bugs = [b for b in BUGS if (not args.unit_only or not b.integration) and (not args.only or b.name in args.only)]
    originals = {b.path: (repo / b.path).read_text(encoding="utf-8") for b in bugs}
    planted = {b.name: plant(originals[b.path], b) for b in bugs}  # checks every bug before running any
    running = _Running()
    results = []
    with workspaces(repo, 1) as (workspace,):
        for bug in bugs:
            workspace.write(bug.path, planted[bug.name].encode("utf-8"))
            try:
                status, seconds, tail = workspace.run_tests(["-rfE", *bug.tests], None, running)
            finally:
                workspace.write(bug.path, originals[bug.path].encode("utf-8"))
            failed = _FAILED.findall(tail)
            caught = status == "killed"
            print(f"{'caught' if caught else 'MISSED':7} {bug.name}: {failed[:1] or status}", file=sys.stderr)
            results.append({"bug": bug.name, "file": bug.path, "tests": list(bug.tests), "caught": caught,
                            "failing_tests": failed, "seconds": round(seconds, 1)})  # fmt: skip
    report = {
        "tool": "scripts/planted_bugs.py",
        "commit": _git_commit(repo),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "caught": sum(r["caught"] for r in results),
        "planted": len(results),
        "results": results,
    }
    _emit(report, args.out)
    return 0 if all(r["caught"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
