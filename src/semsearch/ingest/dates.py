"""Publication dates from article metadata and filters, normalised so that they compare correctly as strings."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


def normalise_date(value: Any) -> str | None:
    """ISO 8601 from ISO-ish or RFC 2822 input: a plain date stays a date (``2026-03-15``); a datetime becomes UTC
    (``2026-03-15T08:00:00+00:00``; one without a zone is taken as UTC), so that dates and datetimes from any zone
    compare correctly as strings (filters do). None when it cannot be parsed."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    iso = text.upper().replace("Z", "+00:00")
    # RFC 3339 allows a leap second, which datetime cannot hold: it counts as the second before.
    iso = re.sub(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d):60", r"\1:59", iso)
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if len(text) == 10 and parsed.hour == parsed.minute == parsed.second == 0 and parsed.tzinfo is None:
        return parsed.date().isoformat()
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC).isoformat()
    except OverflowError:  # within a day of year 1 or 9999: the UTC instant is not representable; clamp to it
        edge = datetime.min if parsed.year == 1 else datetime.max
        return edge.replace(tzinfo=UTC).isoformat()
