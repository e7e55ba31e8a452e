"""Explicit settings. This is the only module that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from .errors import InvalidRequestError

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


@dataclass(frozen=True)
class ChunkSettings:
    """How articles become passages. Recorded in the index manifest."""

    min_chars: int = 120
    """Paragraphs shorter than this are merged into a neighbour."""
    max_tokens: int | None = None
    """Word-piece budget of one embedded passage (title included); None = the model's max_seq_length."""
    title_context: bool = True
    """Prefix the article title to the text that is embedded (not to the stored passage text)."""
    boilerplate_patterns: tuple[str, ...] = DEFAULT_BOILERPLATE
    boilerplate_max_chars: int = 400
    """A paragraph longer than this is never treated as boilerplate, whatever it matches."""

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
    """Everything semsearch can be configured with. Build one explicitly or with :meth:`from_env`."""

    index_dir: Path = Path("index")
    model: str | None = None
    """Embedding model name or path. None: the index's own model when searching, DEFAULT_MODEL when building."""
    precision: str = "auto"
    """fp32, bf16, or auto: bf16 on CPUs with native bf16 when it stays within min_bf16_cosine of fp32."""
    min_bf16_cosine: float = 0.99
    batch_size: int = 32
    threads: int | None = None
    """Intra-op threads for the model; None: PyTorch's default (the number of cores)."""
    query_backend: str = "auto"
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
    keep_versions: int = 3
    """Published index versions kept on disk (for rollback)."""
    auto_merge: bool = True
    """After an update, merge segments as the tiered policy asks (:mod:`semsearch.index.merge`); off: only
    ``semsearch optimize`` merges."""
    merge_factor: int = 10
    """Segments per tier before they are merged into one (Lucene's default)."""
    ann_min_rows: int = 10_000
    """Segments with at least this many passages get an ANN vector index (IVF-SQ8, exact re-rank); smaller ones
    are searched exactly (:mod:`semsearch.index.vectors`)."""
    progress: bool = False
    """Show progress bars on long runs (the CLI turns this on for terminals)."""
    admin_token: str | None = None
    cors_origins: tuple[str, ...] = ()
    reload_check_seconds: float = 1.0
    """How often a server checks the index directory for a newly published version."""
    max_body_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidRequestError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.query_backend not in QUERY_BACKENDS:
            raise InvalidRequestError(
                f"query_backend must be one of {', '.join(QUERY_BACKENDS)}, not {self.query_backend!r}"
            )
        if self.batch_size < 1:
            raise InvalidRequestError("batch_size must be at least 1")
        if self.merge_factor < 2:
            raise InvalidRequestError("merge_factor must be at least 2")
        if self.ann_min_rows < 1:
            raise InvalidRequestError("ann_min_rows must be at least 1")
        if self.keep_versions < 1:
            raise InvalidRequestError("keep_versions must be at least 1")
        if not isinstance(self.index_dir, Path):
            object.__setattr__(self, "index_dir", Path(self.index_dir))
        if self.cache_dir is not None and not isinstance(self.cache_dir, Path):
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (None values are ignored, so CLI options can be passed through)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, prefix: str = "SEMSEARCH_", environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SEMSEARCH_INDEX_DIR``, ``SEMSEARCH_MODEL``, ``SEMSEARCH_PRECISION`` ... (one per field)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        hints = get_type_hints(cls)
        for f in fields(cls):
            raw = env.get(prefix + f.name.upper())
            if raw is None or f.name == "chunking":
                continue
            values[f.name] = _parse(f.name, hints[f.name], raw)
        chunk_hints = get_type_hints(ChunkSettings)
        chunk_values: dict[str, Any] = {}
        for f in fields(ChunkSettings):
            raw = env.get(prefix + "CHUNK_" + f.name.upper())
            if raw is not None:
                chunk_values[f.name] = _parse(f.name, chunk_hints[f.name], raw)
        if chunk_values:
            values["chunking"] = ChunkSettings(**chunk_values)
        return cls(**values)


def _parse(name: str, annotation: Any, raw: str) -> Any:
    """``raw`` converted to the field's declared type (``int``, ``float``, ``bool``, ``Path``, ``str``,
    ``tuple[str, ...]``, or one of them ``| None``, where an empty value means None)."""
    kind = annotation
    if get_origin(annotation) in (Union, UnionType):  # X | None
        (kind,) = [a for a in get_args(annotation) if a is not type(None)]
        if not raw.strip():
            return None
    try:
        if kind is bool:
            return _parse_bool(raw)
        if kind in (int, float):
            return kind(raw)
        if kind is Path:
            return Path(raw)
        if get_origin(kind) is tuple:
            sep = "\n" if name == "boilerplate_patterns" else ","  # regular expressions may contain commas
            return tuple(p.strip() for p in raw.split(sep) if p.strip())
        if kind is str:
            return raw
    except ValueError as exc:
        raise InvalidRequestError(f"invalid value for setting {name}: {raw!r}") from exc
    raise TypeError(f"setting {name} has a type the environment cannot express: {annotation!r}")


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)
