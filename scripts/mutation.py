"""Mutation testing for semsearch: how many small, deliberate bugs in the modules that decide results and safety
do the unit tests catch? Run by hand (it is not part of CI), with the project's virtualenv active:

    python scripts/mutation.py                                  # every default target, one job
    python scripts/mutation.py --jobs 2 --out mutation.json     # two mutants at a time; JSON also to a file
    python scripts/mutation.py --target src/semsearch/retrieve/fusion.py --limit 20
    python scripts/mutation.py --target src/semsearch/retrieve/searcher.py:Searcher.reload --list
    python scripts/mutation.py --repo /path/to/a/worktree       # measure another checkout (default: this one)

How it works. Each mutant is one small change to one target file, found with ``ast`` and spliced into the source
text at the node's position, so every other line stays as it is: a comparison flipped (``<``/``<=``, ``==``/``!=``,
``in``/``not in``, ``is``/``is not``), an arithmetic or set operator swapped, ``and``/``or`` swapped, a ``not``
dropped, a number changed (``n`` -> ``n + 1``, ``x`` -> ``2 * x``, ``0.0`` -> ``1.0``), ``True``/``False`` swapped,
``return <expr>`` -> ``return None``, or a call statement replaced by ``pass``. Docstrings and other strings,
logging calls, type annotations, decorators and the arguments of ``raise`` are never mutated, and neither is a
line carrying the comment ``# mutation: skip`` (for code whose mutants are equivalent by construction). A mutant
id, ``file:line:col:operator``, is stable while the file is, so runs can be compared.

Every mutant runs against the unit tests mapped to its file in ``TARGETS`` (never ``tests/integration``), as
``python -m pytest -x -q -p no:cacheprovider <tests>`` in a private copy of the repository (``src/``, ``tests/``,
``examples/``, ``pyproject.toml``) with ``PYTHONPATH=<copy>/src``, so the copy is imported instead of the
editable install; one copy per job. Killed: pytest failed. Timeout: it ran longer than ``--timeout-factor`` times
the unmutated run of the same tests (at least 30 s); counted as killed, reported apart. Survived: the tests
passed, which is either a hole in the tests or an equivalent mutant; the report (JSON on stdout and in ``--out``)
shows each survivor's line before and after, for a person to judge.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import contextlib
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tokenize
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# -- what is mutated, and which tests must catch it ----------------------------------------------------------

# file -> (functions to mutate, empty for the whole file; the unit tests that exercise it, fastest and most direct
# first, because pytest -x stops at the first failure and most mutants are killed by the first file).
TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # Fusion maths by hand, then through hybrid search.
    "src/semsearch/retrieve/fusion.py": ((), ("tests/retrieve/test_fusion.py", "tests/retrieve/test_retrieval.py")),
    # Filter semantics through search, then parsing and validation over HTTP.
    "src/semsearch/retrieve/filters.py": ((), ("tests/retrieve/test_retrieval.py", "tests/serve/test_api.py")),
    # Budgets, merging and citations (also through /context and the client).
    "src/semsearch/retrieve/context.py": ((), ("tests/retrieve/test_context.py",)),
    # The segmented format: one segment written or merged, the merge policy and merges that publish beside
    # writers, keyword search over segments with live statistics.
    "src/semsearch/index/segment.py": (
        (),
        ("tests/index/test_segments.py", "tests/index/test_store.py", "tests/index/test_crash_safety.py"),
    ),
    "src/semsearch/index/merge.py": ((), ("tests/index/test_segments.py", "tests/index/test_crash_safety.py")),
    "src/semsearch/index/keyword.py": ((), ("tests/index/test_keyword.py", "tests/index/test_segments.py")),
    "src/semsearch/index/bm25.py": ((), ("tests/index/test_postings.py", "tests/index/test_keyword.py")),
    # Writing a version: round trips, incremental reindex, the SIGKILL tests of the publish protocol, and what
    # search reads back (tags, keyword texts).
    "src/semsearch/index/writer.py": (
        (),
        (
            "tests/index/test_segments.py",
            "tests/index/test_store.py",
            "tests/index/test_reindex.py",
            "tests/index/test_crash_safety.py",
            "tests/retrieve/test_retrieval.py",
        ),
    ),
    # Reading a version: round trips, filters and vectors through search, reuse of vectors on reindex, reading
    # from many threads while reloading.
    "src/semsearch/index/reader.py": (
        (),
        (
            "tests/index/test_segments.py",
            "tests/index/test_store.py",
            "tests/retrieve/test_retrieval.py",
            "tests/index/test_reindex.py",
            "tests/serve/test_reload_under_load.py",
        ),
    ),
    # The CURRENT pointer, history, rollback, pruning, the writer lock, and the SIGKILL tests.
    "src/semsearch/index/layout.py": (
        (),
        (
            "tests/index/test_store.py",
            "tests/index/test_reindex.py",
            "tests/index/test_segments.py",
            "tests/index/test_crash_safety.py",
        ),
    ),
    # Reloading: hot and background reload over HTTP, maybe_reload on reindex, reload under 16 threads and under
    # HTTP load, Searcher.warm (the garbage-collector test in test_retrieval).
    "src/semsearch/retrieve/searcher.py": (
        ("Searcher.reload", "Searcher.maybe_reload", "Searcher._reload_in_background", "Searcher.warm"),
        (
            "tests/index/test_reindex.py",
            "tests/serve/test_api.py",
            "tests/retrieve/test_context.py",
            "tests/serve/test_reload_under_load.py",
            "tests/retrieve/test_retrieval.py",
        ),
    ),
    # The token counter of /context.
    "src/semsearch/retrieve/version_searcher.py": (("_token_counter",), ("tests/retrieve/test_context.py",)),
    # Opening the index on first need (and the 503 while there is none), the admin reload route.
    "src/semsearch/serve/app.py": (
        ("SearchService.searcher", "admin_reload"),
        ("tests/serve/test_api.py", "tests/retrieve/test_context.py"),
    ),
}
# Tests for a --target file that TARGETS does not name: every unit test.
ALL_UNIT_TESTS = ("tests", "--ignore=tests/integration")
# What each job's private copy of the repository holds: the code, the tests (some start `python -m
# tests.crash_child` with the copy as cwd), the sample corpus they read, and the pytest configuration.
COPIED = ("src", "tests", "examples", "pyproject.toml")
SKIP_COMMENT = "mutation: skip"
LOGGERS = frozenset({"log", "logger", "logging"})
PATH_NAME = re.compile(r"path|dir|root|file|folder", re.IGNORECASE)
CONSTANT_NAME = re.compile(r"[A-Z][A-Z0-9_]{2,}")
MIN_TIMEOUT = 30.0

# op -> (its text in the source, as a regex; the replacement; the operator name in mutant ids)
COMPARE_SWAPS: dict[type[ast.cmpop], tuple[str, str, str]] = {
    ast.Lt: (r"<", "<=", "Lt->LtE"),
    ast.LtE: (r"<=", "<", "LtE->Lt"),
    ast.Gt: (r">", ">=", "Gt->GtE"),
    ast.GtE: (r">=", ">", "GtE->Gt"),
    ast.Eq: (r"==", "!=", "Eq->NotEq"),
    ast.NotEq: (r"!=", "==", "NotEq->Eq"),
    ast.In: (r"\bin\b", "not in", "In->NotIn"),
    ast.NotIn: (r"\bnot\s+in\b", "in", "NotIn->In"),
    ast.Is: (r"\bis\b", "is not", "Is->IsNot"),
    ast.IsNot: (r"\bis\s+not\b", "is", "IsNot->Is"),
}
BINOP_SWAPS: dict[type[ast.operator], tuple[str, str, str]] = {
    ast.Add: (r"\+", "-", "Add->Sub"),
    ast.Sub: (r"-", "+", "Sub->Add"),
    ast.Mult: (r"\*", "/", "Mult->Div"),
    ast.Div: (r"/", "*", "Div->Mult"),
    ast.FloorDiv: (r"//", "/", "FloorDiv->Div"),
    ast.Mod: (r"%", "*", "Mod->Mult"),
    ast.Pow: (r"\*\*", "*", "Pow->Mult"),
    ast.BitOr: (r"\|", "&", "BitOr->BitAnd"),  # set union vs intersection, flag sets
    ast.BitAnd: (r"&", "|", "BitAnd->BitOr"),
}
BOOLOP_SWAPS: dict[type[ast.boolop], tuple[str, str, str]] = {
    ast.And: (r"\band\b", "or", "And->Or"),
    ast.Or: (r"\bor\b", "and", "Or->And"),
}


@dataclass(frozen=True)
class Target:
    path: str
    """Relative to the repository root, with forward slashes."""
    functions: tuple[str, ...]
    """Qualified names (``Class.method``, ``function``) to restrict mutation to; empty: the whole file."""
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    line: int
    col: int
    """1-based, in characters (as editors count)."""
    operator: str
    function: str
    """Qualified name of the innermost enclosing def or class; empty at module level."""
    start: int
    """Byte offsets of the replaced text in the file."""
    end: int
    replacement: bytes
    original: str
    """The source lines the mutation changes, before and after."""
    mutated: str

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement + source[self.end :]


@dataclass
class Result:
    mutant: Mutant
    status: str
    """killed | timeout | survived"""
    seconds: float


@dataclass
class _Edit:
    start: int
    end: int
    replacement: bytes
    operator: str
    function: str


def parse_target(spec: str) -> Target:
    """``path[:Qualname,Qualname]``. A path in TARGETS keeps its tests (and, with no names given, its functions);
    any other file is checked against every unit test."""
    path, _, names = spec.partition(":")
    path = Path(path).as_posix().removeprefix("./")
    functions = tuple(n.strip() for n in names.split(",") if n.strip())
    if path in TARGETS:
        default_functions, tests = TARGETS[path]
        return Target(path, functions or default_functions, tests)
    return Target(path, functions, ALL_UNIT_TESTS)


# -- finding mutants -------------------------------------------------------------------------------------------


def _is_logging_call(node: ast.AST) -> bool:
    """``log.info(...)``, ``logger.x.y(...)``, ``logging.getLogger(...)``: their arguments are messages."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    while isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id in LOGGERS and isinstance(node.func, ast.Attribute)


def _is_string(node: ast.AST) -> bool:
    """A string literal, an f-string, or a concatenation, repetition or %-formatting with one."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult | ast.Mod):
        return _is_string(node.left) or _is_string(node.right)
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str | bytes))


def _trailing_name(node: ast.AST) -> str:
    """``path`` for ``x.path``, ``path``, ``x.path()`` and ``x.path / y``: what an operand is called."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _trailing_name(node.left)
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _is_path_join(node: ast.BinOp) -> bool:
    """``root / "x"``, ``self.path / MANIFEST``, ``layout.staging_dir / version_id``: a pathlib join, by the names
    this code base gives paths (``*path*``, ``*dir*``, ``*root*``, ``*file*``) and file names (CONSTANTS)."""
    if not isinstance(node.op, ast.Div):
        return False
    right = node.right
    return bool(
        PATH_NAME.search(_trailing_name(node.left))
        or _is_string(right)
        or (isinstance(right, ast.Name) and CONSTANT_NAME.fullmatch(right.id))
    )


class _Finder(ast.NodeVisitor):
    """Collects the edits of every mutant of one file, in source order."""

    def __init__(self, source: bytes, functions: Sequence[str]) -> None:
        self.source = source
        self.line_starts = [0]
        for line in source.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))
        self.functions = tuple(functions)
        self.found: set[str] = set()
        self.stack: list[str] = []
        self.edits: list[_Edit] = []

    # positions

    def offset(self, line: int, col: int) -> int:
        # ast columns are UTF-8 byte offsets, so the whole splice works on bytes.
        return self.line_starts[line - 1] + col

    def span(self, node: ast.expr | ast.stmt) -> tuple[int, int]:
        assert node.end_lineno is not None and node.end_col_offset is not None  # ast.parse always sets them
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def in_scope(self) -> bool:
        if not self.functions:
            return True
        qualname = ".".join(self.stack)
        return any(qualname == f or qualname.startswith(f + ".") for f in self.functions)

    def add(self, start: int, end: int, replacement: str, operator: str) -> None:
        if not self.in_scope():
            return
        # Replacing several lines by one would move every line after it; pad with blank lines instead, so the
        # mutant's tracebacks and every other line keep their numbers.
        padding = b"\n" * self.source[start:end].count(b"\n")
        self.edits.append(_Edit(start, end, replacement.encode() + padding, operator, ".".join(self.stack)))

    def add_operator(self, left: ast.expr, right: ast.expr, swap: tuple[str, str, str]) -> None:
        """Replace the operator token between two operands (only parentheses, spaces and comments besides it)."""
        pattern, replacement, name = swap
        start, end = self.span(left)[1], self.span(right)[0]
        between = re.sub(rb"#[^\n]*", lambda m: b" " * len(m.group()), self.source[start:end])
        match = re.search(pattern.encode(), between)
        if match is not None:
            self.add(start + match.start(), start + match.end(), replacement, name)

    # scopes: only the named functions are mutated; decorators and annotations never are

    def _visit_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.stack.append(node.name)
        qualname = ".".join(self.stack)
        if qualname in self.functions:
            self.found.add(qualname)
        if isinstance(node, ast.ClassDef):
            for base in [*node.bases, *node.keywords]:
                self.visit(base)
        else:
            args = node.args
            for default in [*args.defaults, *args.kw_defaults]:
                if default is not None:
                    self.visit(default)
        for statement in node.body:
            self.visit(statement)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_def

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        self.visit(node.body)

    # never mutated: exception messages, formatted strings, log calls

    def visit_Raise(self, node: ast.Raise) -> None:
        pass

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        pass

    def visit_Call(self, node: ast.Call) -> None:
        if not _is_logging_call(node):
            self.generic_visit(node)

    # the operators

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Call) and not _is_logging_call(node.value):
            self.add(*self.span(node), "pass", "call->pass")
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        value = node.value
        # `return None` for a constant: nothing for None, and a number or bool has its own constant mutant.
        if value is not None and not (isinstance(value, ast.Constant) and not isinstance(value.value, str | bytes)):
            self.add(*self.span(value), "None", "return->None")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            self.add_operator(operands[i], operands[i + 1], COMPARE_SWAPS[type(op)])
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        # String concatenation, repetition and %-formatting build messages and SQL text, and `*` for a path join
        # is a TypeError on first use: mutants that say nothing about the tests.
        swap = BINOP_SWAPS.get(type(node.op))
        if swap is not None and not (_is_string(node.left) or _is_string(node.right) or _is_path_join(node)):
            self.add_operator(node.left, node.right, swap)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        swap = BINOP_SWAPS.get(type(node.op))
        if swap is not None and not _is_string(node.value):
            pattern, replacement, name = swap
            before, after = name.split("->")
            self.add_operator(node.target, node.value, (pattern + "=", replacement + "=", f"Aug{before}->Aug{after}"))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        for left, right in zip(node.values, node.values[1:], strict=False):
            self.add_operator(left, right, BOOLOP_SWAPS[type(node.op)])
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            start = self.span(node)[0]
            match = re.match(rb"not\b\s*", self.source[start:])
            if match is not None:
                self.add(start, start + match.end(), "", "drop-not")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self.add(*self.span(node), str(not value), f"{value}->{not value}")
        elif isinstance(value, int):
            self.add(*self.span(node), str(value + 1), "int+1")
        elif isinstance(value, float):
            self.add(*self.span(node), repr(value * 2 if value else 1.0), "float*2" if value else "float0->1")


def _skip_lines(text: str) -> set[int]:
    """Lines with a ``# mutation: skip`` comment (a real comment token, not text in a string)."""
    lines: set[int] = set()
    with contextlib.suppress(tokenize.TokenError, SyntaxError):
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT and SKIP_COMMENT in token.string:
                lines.add(token.start[0])
    return lines


def _lines(source: bytes, first: int, last: int) -> str:
    text = b"".join(source.splitlines(keepends=True)[first - 1 : last]).decode("utf-8", errors="replace")
    return textwrap.dedent("\n".join(line for line in text.splitlines() if line.strip()))


def find_mutants(repo: Path, target: Target) -> list[Mutant]:
    """Every mutant of ``target`` that parses and changes the program, in source order."""
    file = repo / target.path
    if not file.is_file():
        raise SystemExit(f"mutation: target {target.path} does not exist in {repo}")
    source = file.read_bytes()
    tree = ast.parse(source, filename=str(file))
    finder = _Finder(source, target.functions)
    finder.visit(tree)
    missing = sorted(set(target.functions) - finder.found)
    if missing:
        raise SystemExit(f"mutation: {target.path} has no function or method named {', '.join(missing)}")
    skip = _skip_lines(source.decode("utf-8"))
    original_dump = ast.dump(tree)
    mutants: list[Mutant] = []
    seen: set[str] = set()
    for edit in sorted(finder.edits, key=lambda e: (e.start, e.end, e.operator)):
        first = bisect.bisect_right(finder.line_starts, edit.start)
        last = bisect.bisect_right(finder.line_starts, max(edit.start, edit.end - 1))
        if skip.intersection(range(first, last + 1)):
            continue
        mutated = source[: edit.start] + edit.replacement + source[edit.end :]
        try:
            mutated_tree = ast.parse(mutated)
        except SyntaxError:
            continue  # a splice that does not parse is not a mutant
        if ast.dump(mutated_tree) == original_dump:
            continue
        line_start = finder.line_starts[first - 1]
        col = len(source[line_start : edit.start].decode("utf-8", errors="replace")) + 1
        mutant_id = f"{target.path}:{first}:{col}:{edit.operator}"
        if mutant_id in seen:
            continue
        seen.add(mutant_id)
        mutants.append(
            Mutant(
                mutant_id,
                target.path,
                first,
                col,
                edit.operator,
                edit.function,
                edit.start,
                edit.end,
                edit.replacement,
                _lines(source, first, last),
                _lines(mutated, first, last),
            )
        )
    return mutants


def sample(mutants: list[Mutant], limit: int | None) -> list[Mutant]:
    """``limit`` mutants spread evenly over the file: deterministic, and covers every part of it."""
    if limit is None or len(mutants) <= limit:
        return mutants
    return [mutants[i * len(mutants) // limit] for i in range(limit)]


# -- running tests in private copies ---------------------------------------------------------------------------


class Workspace:
    """One job's copy of the repository. A mutant is written over its file and the original put back after."""

    def __init__(self, repo: Path, root: Path) -> None:
        self.root = root
        for name in COPIED:
            source = repo / name
            if source.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache", "*.egg-info")
                shutil.copytree(source, root / name, ignore=ignore)
            elif source.is_file():
                shutil.copy2(source, root / name)
            elif name != "examples":
                raise SystemExit(f"mutation: {source} is missing; is {repo} a semsearch checkout?")
        self.env = {**os.environ, "PYTHONPATH": str(root / "src")}
        self.env.pop("PYTEST_ADDOPTS", None)
        # Python trusts a .pyc whose source has the same mtime (in whole seconds) and size; a mutant of the same
        # size written within the second would run stale bytecode. Every write gets a new, unique mtime.
        self._mtime = int(time.time())

    def write(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.write_bytes(data)
        self._mtime += 1
        os.utime(path, (self._mtime, self._mtime))

    def check_import(self) -> None:
        """Fail loudly unless a subprocess of this workspace imports semsearch from the copy (not the editable
        install of some other checkout)."""
        probe = subprocess.run(
            [sys.executable, "-c", "import pytest, semsearch; print(semsearch.__file__)"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        imported = Path(probe.stdout.strip()).resolve() if probe.returncode == 0 else None
        expected = (self.root / "src" / "semsearch").resolve()
        if imported is None or imported.parent != expected:
            raise SystemExit(
                f"mutation: with PYTHONPATH={self.root / 'src'}, python imports semsearch from {imported} instead of "
                f"{expected}; mutants would not be tested.\n{probe.stderr}"
            )

    def run_tests(self, tests: Sequence[str], timeout: float | None, running: _Running) -> tuple[str, float, str]:
        """(killed | timeout | survived, seconds, the tail of pytest's output)."""
        # A mutant's hypothesis failures would be replayed against the next mutant; each run starts clean.
        shutil.rmtree(self.root / ".hypothesis", ignore_errors=True)
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        # Output to a file, not a pipe: a grandchild that outlives pytest would hold a pipe open.
        with tempfile.TemporaryFile() as output:
            started = time.monotonic()
            proc = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so it and every child it starts can be killed
            )
            running.add(proc)
            try:
                code: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                # Also ends what a failing test left behind (a crash-test child sleeping, a server thread's process).
                _kill_group(proc)
                running.discard(proc)
            seconds = time.monotonic() - started
            output.seek(0)
            tail = output.read()[-4000:].decode("utf-8", errors="replace")
        status = "timeout" if code is None else "survived" if code == 0 else "killed"
        return status, seconds, tail


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class _Running:
    """The pytest processes running now, to end them on Ctrl-C."""

    procs: set[subprocess.Popen[bytes]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.add(proc)

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.procs.discard(proc)

    def kill_all(self) -> None:
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def workspaces(repo: Path, jobs: int) -> Iterator[list[Workspace]]:
    with tempfile.TemporaryDirectory(prefix="semsearch-mutation-") as tmp:
        made = []
        for i in range(jobs):
            workspace = Workspace(repo, Path(tmp) / f"job{i}")
            workspace.check_import()
            made.append(workspace)
        yield made


def run_mutants(
    repo: Path,
    plan: list[tuple[Target, list[Mutant], float]],
    pool: list[Workspace],
    running: _Running,
    progress: Callable[[Result, int, int], None],
) -> list[Result]:
    """Run every mutant of ``plan`` (target, mutants, timeout) on the free workspaces, ``len(pool)`` at a time."""
    originals = {target.path: (repo / target.path).read_bytes() for target, _, _ in plan}
    free: queue.Queue[Workspace] = queue.Queue()
    for workspace in pool:
        free.put(workspace)

    def run(target: Target, mutant: Mutant, timeout: float) -> Result:
        workspace = free.get()
        try:
            workspace.write(mutant.path, mutant.apply(originals[mutant.path]))
            try:
                status, seconds, _ = workspace.run_tests(target.tests, timeout, running)
            finally:
                workspace.write(mutant.path, originals[mutant.path])
            return Result(mutant, status, seconds)
        finally:
            free.put(workspace)

    jobs = [(target, mutant, timeout) for target, mutants, timeout in plan for mutant in mutants]
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=len(pool)) as executor:
        futures = [executor.submit(run, *job) for job in jobs]
        try:
            for future in as_completed(futures):
                results.append(future.result())
                progress(results[-1], len(results), len(jobs))
        except BaseException:
            for future in futures:
                future.cancel()
            running.kill_all()
            raise
    order = {mutant.id: i for i, (_, mutant, _) in enumerate(jobs)}
    return sorted(results, key=lambda r: order[r.mutant.id])


# -- the report ------------------------------------------------------------------------------------------------


def _counts(results: Sequence[Result]) -> dict[str, float | int | None]:
    killed = sum(r.status == "killed" for r in results)
    timeout = sum(r.status == "timeout" for r in results)
    survived = sum(r.status == "survived" for r in results)
    score = round((killed + timeout) / len(results), 4) if results else None
    return {"mutants": len(results), "killed": killed, "timeout": timeout, "survived": survived, "score": score}


def _git_commit(repo: Path) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return done.stdout.strip()
    return None


def _mutant_dict(mutant: Mutant) -> dict[str, object]:
    return {
        "id": mutant.id,
        "file": mutant.path,
        "line": mutant.line,
        "col": mutant.col,
        "function": mutant.function,
        "operator": mutant.operator,
        "original": mutant.original,
        "mutated": mutant.mutated,
    }


def _emit(report: dict[str, object], out: Path | None) -> None:
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    sys.stdout.write(text)
    if out is not None:
        out.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the checkout to measure (default: the one holding this script)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at a time, each in its own copy")
    parser.add_argument(
        "--target",
        action="extend",
        nargs="+",
        metavar="SPEC",
        default=[],
        help="path[:Qualname,Qualname] (default: every file in TARGETS)",
    )
    parser.add_argument(
        "--timeout-factor",
        type=float,
        default=5.0,
        help=f"a mutant times out after this many times the unmutated run (at least {MIN_TIMEOUT:g} s)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--limit", type=int, help="at most N mutants per target, spread evenly over the file")
    parser.add_argument("--list", action="store_true", help="print the mutants without running them")
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.limit is not None and args.limit < 1) or args.timeout_factor <= 0:
        parser.error("--jobs and --limit must be at least 1, --timeout-factor positive")
    repo = args.repo.resolve()
    specs = args.target or list(TARGETS)
    targets = [parse_target(spec) for spec in specs]
    found = {target.path: find_mutants(repo, target) for target in targets}
    chosen = {path: sample(mutants, args.limit) for path, mutants in found.items()}

    if args.list:
        _emit(
            {
                "repo": str(repo),
                "targets": [
                    {
                        "file": t.path,
                        "functions": list(t.functions),
                        "tests": list(t.tests),
                        "mutants_found": len(found[t.path]),
                        "mutants": len(chosen[t.path]),
                    }
                    for t in targets
                ],
                "mutants": [_mutant_dict(m) for t in targets for m in chosen[t.path]],
            },
            args.out,
        )
        return 0

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    running = _Running()
    total = sum(len(m) for m in chosen.values())
    stderr = sys.stderr  # progress goes here; stdout carries only the JSON report
    print(f"mutation: {total} mutants in {len(targets)} targets, {args.jobs} job(s), repo {repo}", file=stderr)
    with workspaces(repo, args.jobs) as pool:
        # The unmutated tests must pass, and their time sets each target's timeout.
        plan: list[tuple[Target, list[Mutant], float]] = []
        baselines: dict[str, float] = {}
        for target in targets:
            status, seconds, tail = pool[0].run_tests(target.tests, None, running)
            if status != "survived":
                raise SystemExit(
                    f"mutation: the unmutated tests of {target.path} fail, so no mutant can be judged:\n"
                    f"  python -m pytest -x -q -p no:cacheprovider {' '.join(target.tests)}\n{tail}"
                )
            baselines[target.path] = seconds
            timeout = max(MIN_TIMEOUT, args.timeout_factor * seconds)
            plan.append((target, chosen[target.path], timeout))
            print(
                f"mutation: baseline {target.path}: {seconds:.1f} s, timeout {timeout:.0f} s, "
                f"{len(chosen[target.path])} mutants",
                file=stderr,
            )

        def progress(result: Result, done: int, count: int) -> None:
            elapsed = time.monotonic() - started
            eta = (time.monotonic() - runs_started) / done * (count - done)
            print(
                f"[{done}/{count}] {result.status:8} {result.seconds:5.1f}s {result.mutant.id}"
                f"  (elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min)",
                file=stderr,
                flush=True,
            )

        runs_started = time.monotonic()
        try:
            results = run_mutants(repo, plan, pool, running, progress)
        except KeyboardInterrupt:
            running.kill_all()
            print("mutation: interrupted", file=stderr)
            return 130

    by_target = {t.path: [r for r in results if r.mutant.path == t.path] for t in targets}
    report: dict[str, object] = {
        "tool": "scripts/mutation.py",
        "repo": str(repo),
        "commit": _git_commit(repo),
        "started_at": started_at,
        "seconds": round(time.monotonic() - started, 1),
        "jobs": args.jobs,
        "timeout_factor": args.timeout_factor,
        "limit": args.limit,
        "targets": [
            {
                "file": t.path,
                "functions": list(t.functions),
                "tests": list(t.tests),
                "baseline_seconds": round(baselines[t.path], 2),
                "mutants_found": len(found[t.path]),
                **_counts(by_target[t.path]),
            }
            for t in targets
        ],
        "overall": _counts(results),
        "survivors": [_mutant_dict(r.mutant) for r in results if r.status == "survived"],
        "timeouts": [r.mutant.id for r in results if r.status == "timeout"],
        "results": {r.mutant.id: {"status": r.status, "seconds": round(r.seconds, 2)} for r in results},
    }
    _emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
