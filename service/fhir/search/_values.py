"""Value semantics shared by the index and the parser: date ranges and string normalisation.

Dates are compared as half-open UTC ranges ``[start, end)`` covering the precision of the value
(R4 search.html#date: "the precision of the value defines the range"): ``2026-01-12`` covers that
whole day, ``2026-01-12T09:00`` that minute. A value without a time zone is read as UTC; a
Period with an open end extends to ``FAR_FUTURE`` (an open start to ``FAR_PAST``).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["FAR_FUTURE", "FAR_PAST", "date_range", "normalise"]

FAR_PAST = datetime(1, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _add_months(value: datetime, months: int) -> datetime:
    total = value.year * 12 + value.month - 1 + months
    return value.replace(year=total // 12, month=total % 12 + 1)


def date_range(text: str) -> tuple[datetime, datetime]:
    """The UTC range ``[start, end)`` a FHIR date, dateTime or instant covers.

    :raise ValueError: not a FHIR date/dateTime (a space before the offset is read as ``+``,
        the usual result of an unencoded ``+`` in a query string)
    """
    match = _DATE.match(text.strip().replace(" ", "+"))
    if not match:
        raise ValueError(f"not a FHIR date or dateTime: {text!r}")
    g = match.groupdict()
    tz = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    fraction = (g["f"] or "")[:6]
    start = datetime(int(g["y"]), int(g["m"] or 1), int(g["d"] or 1), int(g["H"] or 0), int(g["M"] or 0),
                     int(g["S"] or 0), int(fraction.ljust(6, "0")) if fraction else 0, tzinfo=tz)
    if g["f"]:
        step: timedelta | None = timedelta(microseconds=10 ** (6 - len(fraction)))
    elif g["S"]:
        step = timedelta(seconds=1)
    elif g["M"]:
        step = timedelta(minutes=1)
    else:
        step = None
    if step is not None:
        end = start + step
    elif g["d"]:
        end = start + timedelta(days=1)
    elif g["m"]:
        end = _add_months(start, 1)
    else:
        end = start.replace(year=start.year + 1) if start.year < 9999 else FAR_FUTURE
    return start.astimezone(UTC), end.astimezone(UTC)


def normalise(text: str) -> str:
    """Lower-case ``text`` and strip accents: string search is case- and accent-insensitive
    (R4 search.html#string)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
