"""Explicit settings. This is the only module that reads the environment."""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# A paragraph is boilerplate when it matches one of these (case-insensitive, searched anywhere) and is short.
DEFAULT_BOILERPLATE: tuple[str, ...] = (
    r"^\s*(last\s+)?updated\s*:",
    r"^\s*(copyright|©|\(c\))\s",
    r"\ball rights reserved\b",
    r"^\s*this material may not be (published|broadcast|rewritten|redistributed)",
)

# Files in a source directory that are documentation, not articles. Files named explicitly are always read.
DEFAULT_EXCLUDE: tuple[str, ...] = ("README*", "LICENSE*", "LICENCE*", "CHANGELOG*", "QUESTIONS*")

PRECISIONS = ("auto", "fp32", "bf16")
QUERY_BACKENDS = ("auto", "torch", "onnx-fp32", "onnx-int8")


def default_cache_dir() -> Path:
    """Where derived model files (the ONNX query export) are cached: ``$XDG_CACHE_HOME/semsearch`` or
    ``~/.cache/semsearch``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "semsearch"


def _limits(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
            choices: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Field metadata read by :func:`_check`: the values a setting accepts beyond its type."""
    return {"ge": ge, "gt": gt, "le": le, "choices": choices}


@dataclass(frozen=True)
class ChunkSettings:
    """How articles become passages. Recorded in the index manifest."""

    min_chars: int = field(default=120, metadata=_limits(ge=0))
    """Paragraphs shorter than this are merged into a neighbour."""
    max_tokens: int | None = field(default=None, metadata=_limits(ge=16))
    """Word-piece budget of one embedded passage (title included); None = the model's max_seq_length."""
    title_context: bool = True
    """Prefix the article title to the text that is embedded (not to the stored passage text)."""
    boilerplate_patterns: tuple[str, ...] = DEFAULT_BOILERPLATE
    boilerplate_max_chars: int = field(default=400, metadata=_limits(ge=0))
    """A paragraph longer than this is never treated as boilerplate, whatever it matches."""

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_chars": self.min_chars,
            "max_tokens": self.max_tokens,
            "title_context": self.title_context,
            "boilerplate_patterns": list(self.boilerplate_patterns),
            "boilerplate_max_chars": self.boilerplate_max_chars,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChunkSettings:
        return cls(
            min_chars=int(data["min_chars"]),
            max_tokens=None if data.get("max_tokens") is None else int(data["max_tokens"]),
            title_context=bool(data["title_context"]),
            boilerplate_patterns=tuple(data["boilerplate_patterns"]),
            boilerplate_max_chars=int(data["boilerplate_max_chars"]),
        )


@dataclass(frozen=True)
class Settings:
    """Everything semsearch can be configured with. Build one explicitly or with :meth:`from_env`.

    Every field is also the environment variable ``SEMSEARCH_<FIELD>`` (chunking: ``SEMSEARCH_CHUNK_<FIELD>``),
    parsed by the field's type; a bad value is an error naming the variable and what it accepts."""

    index_dir: Path = Path("index")
    model: str | None = None
    """Embedding model name or path. None: the index's own model when searching, DEFAULT_MODEL when building."""
    precision: str = field(default="auto", metadata=_limits(choices=PRECISIONS))
    """fp32, bf16, or auto: bf16 on CPUs with native bf16 when it stays within min_bf16_cosine of fp32."""
    min_bf16_cosine: float = field(default=0.99, metadata=_limits(gt=0, le=1))
    batch_size: int = field(default=32, metadata=_limits(ge=1))
    threads: int | None = field(default=None, metadata=_limits(ge=1))
    """Intra-op threads for the model; None: PyTorch's default (the number of cores)."""
    query_backend: str = field(default="auto", metadata=_limits(choices=QUERY_BACKENDS))
    """How queries are embedded: ``onnx-int8``/``onnx-fp32`` (ONNX Runtime on the request thread, see
    semsearch.models.onnx_query), ``torch`` (the model thread), or ``auto``: the fastest ONNX variant that is installed
    and measured faithful to PyTorch at load, else torch."""
    cache_dir: Path | None = None
    """Cache for derived model files (the ONNX export); None: :func:`default_cache_dir`."""
    device: str = "cpu"
    allow_download: bool = False
    """Let sentence-transformers fetch a model from a hub. Off: only local paths and cached/bundled models."""
    chunking: ChunkSettings = field(default_factory=ChunkSettings)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    keep_versions: int = field(default=3, metadata=_limits(ge=1))
    """Published index versions kept on disk (for rollback)."""
    auto_merge: bool = True
    """After an update, merge segments as the tiered policy asks (:mod:`semsearch.index.merge`); off: only
    ``semsearch optimize`` merges."""
    merge_factor: int = field(default=10, metadata=_limits(ge=2))
    """Segments per tier before they are merged into one (Lucene's default)."""
    ann_min_rows: int = field(default=10_000, metadata=_limits(ge=1))
    """Segments with at least this many passages get an ANN vector index (IVF-SQ8, exact re-rank); smaller ones
    are searched exactly (:mod:`semsearch.index.vectors`)."""
    progress: bool = False
    """Show progress bars on long runs (the CLI turns this on for terminals)."""
    admin_token: str | None = field(default=None, repr=False)
    """Bearer token of the admin endpoints (``POST /admin/reload``); None: they do not exist."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """Bearer keys the search endpoints accept (comma-separated in the environment); empty: no key needed."""
    rate_limit: float | None = field(default=None, metadata=_limits(gt=0))
    """Requests per second one client may make to the search endpoints, across all workers (a client is its API
    key, else its address); over it: 429 with Retry-After. None: no limit."""
    rate_burst: int | None = field(default=None, metadata=_limits(ge=1))
    """Requests a client may make at once before ``rate_limit`` applies; None: twice the rate (at least 1)."""
    rerank_model: str | None = None
    """A sentence-transformers CrossEncoder name or path that reorders the best ``rerank_depth`` candidates of every
    search (:mod:`semsearch.models.reranker`); None: no rerank stage."""
    rerank_depth: int = field(default=30, metadata=_limits(ge=1, le=1000))
    """How many of the best fused candidates the rerank model reads (its cost grows with it: one model pass each)."""
    cors_origins: tuple[str, ...] = ()
    reload_check_seconds: float = field(default=1.0, metadata=_limits(ge=0))
    """How often a server checks the index directory for a newly published version."""
    max_body_bytes: int = field(default=2 * 1024 * 1024, metadata=_limits(ge=1024))
    """Largest request body. The default holds the largest request the API describes (a batch of 64 queries of
    2,000 characters, JSON-escaped)."""

    def __post_init__(self) -> None:
        if not isinstance(self.index_dir, Path):
            object.__setattr__(self, "index_dir", Path(self.index_dir))
        if self.cache_dir is not None and not isinstance(self.cache_dir, Path):
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if any(not key.strip() for key in self.api_keys):
            raise ConfigError("api_keys must not contain an empty key")
        _check(self)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (None values are ignored, so CLI options can be passed through)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, prefix: str = "SEMSEARCH_", environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SEMSEARCH_INDEX_DIR``, ``SEMSEARCH_MODEL``, ``SEMSEARCH_PRECISION`` ... (one per field)."""
        env = os.environ if environ is None else environ
        known: set[str] = set()
        chunk_values = _values_from_env(ChunkSettings, prefix + "CHUNK_", env, known)
        values = _values_from_env(cls, prefix, env, known, skip={"chunking"})
        _warn_unknown(prefix, env, known)
        try:
            if chunk_values:
                values["chunking"] = ChunkSettings(**chunk_values)
            return cls(**values)
        except _Rejected as exc:
            variable = prefix + ("CHUNK_" if exc.owner is ChunkSettings else "") + exc.name.upper()
            raise ConfigError(f"{variable}={env[variable]!r} is not valid: expected {exc.accepts}") from None


class _Rejected(ConfigError):
    """A field value outside what the field accepts (raised by :func:`_check`)."""

    def __init__(self, owner: type, name: str, value: Any, accepts: str) -> None:
        super().__init__(f"{name}={value!r} is not valid: expected {accepts}")
        self.owner, self.name, self.accepts = owner, name, accepts


def _values_from_env(
    cls: type, prefix: str, env: Mapping[str, str], known: set[str], skip: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        variable = prefix + f.name.upper()
        known.add(variable)
        raw = env.get(variable)
        if raw is None or f.name in skip:
            continue
        try:
            values[f.name] = _parse(f.name, hints[f.name], raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not valid: expected {_accepts(f, hints[f.name])}") from None
    return values


def _warn_unknown(prefix: str, env: Mapping[str, str], known: set[str]) -> None:
    """A misspelt variable would otherwise be ignored without a word."""
    for name in sorted(n for n in env if n.startswith(prefix) and n not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        log.warning("ignoring %s: semsearch has no such setting%s", name, hint)


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(annotation, False)``."""
    if get_origin(annotation) in (Union, UnionType):
        (kind,) = [a for a in get_args(annotation) if a is not type(None)]
        return kind, True
    return annotation, False


def _parse(name: str, annotation: Any, raw: str) -> Any:
    """``raw`` converted to the field's declared type (``int``, ``float``, ``bool``, ``Path``, ``str``,
    ``tuple[str, ...]``, or one of them ``| None``, where an empty value means None). ValueError when it is not
    one."""
    kind, optional = _optional(annotation)
    if optional and not raw.strip():
        return None
    if kind is bool:
        return _parse_bool(raw)
    if kind is int:
        return int(raw)
    if kind is float:
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(raw)
        return value
    if kind is Path:
        return Path(raw)
    if get_origin(kind) is tuple:
        sep = "\n" if name == "boilerplate_patterns" else ","  # regular expressions may contain commas
        return tuple(p.strip() for p in raw.split(sep) if p.strip())
    if kind is str:
        return raw
    raise TypeError(f"setting {name} has a type the environment cannot express: {annotation!r}")


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)


_KIND_NAMES = {bool: "true or false (also 1/0, yes/no, on/off)", int: "an integer", float: "a number",
               Path: "a path", str: "a string"}  # fmt: skip


def _accepts(f: Any, annotation: Any) -> str:
    """What a field accepts, in words, for error messages."""
    kind, optional = _optional(annotation)
    limits = f.metadata or {}
    if limits.get("choices"):
        text = "one of " + ", ".join(limits["choices"])
    elif get_origin(kind) is tuple:
        text = "a list separated by " + ("newlines" if f.name == "boilerplate_patterns" else "commas")
    else:
        text = _KIND_NAMES.get(kind, str(kind))
        bounds = [f"{op} {limits[key]:g}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if
                  limits.get(key) is not None]  # fmt: skip
        if bounds:
            text += " " + " and ".join(bounds)
    return text + (" (empty: the default)" if optional else "")


def _check(obj: Any) -> None:
    """Each field's value is one its type and limits accept (settings built in code are checked as those read from
    the environment are)."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        limits = f.metadata
        if not limits or value is None:
            continue
        kind, _ = _optional(hints[f.name])
        ok = True
        if limits["choices"]:
            ok = value in limits["choices"]
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (kind is int and not isinstance(value, int))
        ):
            ok = False
        else:
            ok = (
                (limits["ge"] is None or value >= limits["ge"])
                and (limits["gt"] is None or value > limits["gt"])
                and (limits["le"] is None or value <= limits["le"])
                and math.isfinite(value)
            )
        if not ok:
            raise _Rejected(type(obj), f.name, value, _accepts(f, hints[f.name]))
