"""Front matter: the YAML block between two ``---`` lines at the top of a text or Markdown article, as written by
Jekyll, Hugo and most newsroom exports. It carries an article's metadata (date, source, tags, url) next to its text.

Only a block that opens on the file's very first line and closes within :data:`MAX_FRONT_MATTER_CHARS` counts; a
``---`` rule further down is text. The block is parsed with PyYAML's safe loader, and only plain values are kept:
strings, numbers, booleans, dates and lists of those. Anything else (nested mappings, anchors expanding into
structures) is dropped with a warning, so a hostile block can neither run code nor blow up the stored metadata.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_FRONT_MATTER_CHARS = 64 * 1024
MAX_LIST_ITEMS = 200

_OPEN = re.compile(r"\A\ufeff?---[ \t]*\n")
_CLOSE = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE)

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class FrontMatter:
    """The fields of a front matter block (empty when the text has none) and the text after it."""

    fields: dict[str, Any]
    body: str
    warnings: tuple[str, ...] = field(default=())


def split_front_matter(text: str, where: str) -> FrontMatter:
    """Split ``text`` (newlines already normalised to ``\\n``) into its front matter and the rest.

    An invalid block is still removed from the text (it is metadata, never article text) and reported in
    ``warnings``; its fields are then empty.
    """
    opened = _OPEN.match(text)
    if opened is None:
        return FrontMatter({}, text)
    closed = _CLOSE.search(text, opened.end(), opened.end() + MAX_FRONT_MATTER_CHARS)
    if closed is None:
        return FrontMatter({}, text)  # no closing line near the top: a leading rule, not front matter
    block = text[opened.end() : closed.start()]
    body = text[closed.end() :].lstrip("\n")
    try:
        loaded = yaml.load(block, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        return FrontMatter({}, body, (f"{where}: front matter is not valid YAML{at}: {problem}; ignored",))
    except RecursionError:  # the pure-Python loader recurses per nesting level
        return FrontMatter({}, body, (f"{where}: front matter is nested too deeply; ignored",))
    if loaded is None:
        return FrontMatter({}, body)
    if not isinstance(loaded, dict):
        return FrontMatter({}, body, (f"{where}: front matter is not a mapping of names to values; ignored",))
    fields: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in loaded.items():
        plain = _plain(value)
        if plain is _DROP:
            dropped.append(str(key))
        elif plain is not None:
            fields[str(key)] = plain
    warnings = (f"{where}: front matter fields {', '.join(dropped)} are not plain values; ignored",) if dropped else ()
    return FrontMatter(fields, body, warnings)


_DROP = object()


def _plain(value: Any) -> Any:
    """A JSON-ready plain value, or ``_DROP`` for a structure that is not one."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    # Items are checked before any is converted: anchors can make a short block a huge tree, never walked.
    if isinstance(value, list) and len(value) <= MAX_LIST_ITEMS and not any(isinstance(v, list | dict) for v in value):
        items = [_plain(item) for item in value if item is not None]
        if not any(item is _DROP for item in items):
            return items
    return _DROP
