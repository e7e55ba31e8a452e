"""Recency: an optional decay of a hit's score with the age of its article.

An article published ``age`` days before ``as_of`` (default: now, UTC) gets the factor ``0.5 ** (age /
half_life_days)``: 1 for an article of ``as_of``'s day or later, 0.5 one half-life before, 0.25 two before. The factor
applies to the ranking score of every mode (dense cosine, BM25, the fused score) after retrieval and before the top
``k`` are taken: a score ``s >= 0`` becomes ``s * factor`` and a negative one ``s / factor`` (fused scores are
standardised and can be negative), so an older article always moves down, never up.

Articles without a date are neither favoured nor dropped: they get the median factor of the dated candidates of
the same query (1 when none is dated), so they keep their place among articles of typical age.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from ..errors import InvalidRequestError
from ..ingest.dates import normalise_date

_DAY_SECONDS = 86_400.0
_MIN_FACTOR = 1e-12


@dataclass(frozen=True)
class Recency:
    """Decay scores by article age: ``half_life_days`` (> 0), measured back from ``as_of`` (ISO date or datetime;
    None: the time of the search)."""

    half_life_days: float
    as_of: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.half_life_days, bool) or not isinstance(self.half_life_days, int | float):
            raise InvalidRequestError("recency half_life_days must be a number")
        if not 0 < self.half_life_days < float("inf"):
            raise InvalidRequestError("recency half_life_days must be greater than 0")
        if self.as_of is not None and normalise_date(self.as_of) is None:
            raise InvalidRequestError(f"recency as_of must be an ISO date such as 2026-10-03, not {self.as_of!r}")

    def factors(self, published: list[str | None], now: datetime | None = None) -> np.ndarray:
        """The factor of each article date (None: undated, given the median factor of the dated ones)."""
        reference = _instant(self.as_of) if self.as_of is not None else (now or datetime.now(UTC))
        out = np.ones(len(published), dtype=np.float64)
        dated = np.zeros(len(published), dtype=bool)
        for i, value in enumerate(published):
            when = _instant(value) if value else None
            if when is None:
                continue
            age_days = max(0.0, (reference - when).total_seconds() / _DAY_SECONDS)
            out[i] = 0.5 ** (age_days / self.half_life_days)
            dated[i] = True
        if dated.any() and not dated.all():
            out[~dated] = float(np.median(out[dated]))
        # Centuries at a half-life of a day would underflow to 0, and a negative score cannot be divided by 0.
        return np.maximum(out, _MIN_FACTOR)

    def to_dict(self) -> dict[str, object]:
        return {"half_life_days": self.half_life_days, "as_of": self.as_of}


def apply(scores: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Scores decayed by their factors: multiplied when non-negative, divided when negative."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(scores >= 0, scores * factors, scores / factors)


def _instant(value: str) -> datetime | None:
    """An ISO date (midnight UTC) or datetime as an aware UTC datetime."""
    normalised = normalise_date(value)
    if normalised is None:
        return None
    parsed = datetime.fromisoformat(normalised)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
