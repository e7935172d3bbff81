"""Strict marshmallow fields: JSON types as sent, no string-to-number or string-to-bool coercion."""

from __future__ import annotations

import math
import re
from datetime import UTC
from typing import Any

from marshmallow import ValidationError, fields, validate

__all__ = ["ICD10", "AwareDateTime", "FullMatch", "Icd10Code", "Id", "StrictBool", "StrictFloat", "StrictInt", "Text",
           "luhn_npi_valid"]

ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
#: white space, spelled out for regexes: Python's ``\s`` and JSON Schema's (ECMA 262) differ (U+0085
#: is one only in Python, U+FEFF only in ECMA), and the OpenAPI document must mean what the API checks
WHITE_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
#: a ``Text`` must not be blank: at least one character that is not white space (``re.match``)
NOT_BLANK = rf"^[{WHITE_SPACE}]*[^{WHITE_SPACE}]"
# ICD-10-CM: letter, digit, alphanumeric; optional dot and 1-4 more characters (e.g. F33.2, G90.512).
ICD10 = re.compile(r"^[A-Z][0-9][0-9AB](\.[0-9A-TV-Z]{1,4})?$")


class FullMatch(validate.Regexp):
    """A regex the whole string must match: ``re.match`` with ``$`` lets a trailing newline through."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class AwareDateTime(fields.AwareDateTime):
    """An ISO 8601 time with a UTC offset that has a UTC equivalent (stored times are UTC)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        result = super()._deserialize(value, attr, data, **kwargs)
        try:
            result.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Outside the range of representable times.") from None
        return result


class StrictFloat(fields.Float):
    """A JSON number: rejects strings, booleans, NaN and infinities."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("Not a valid number.")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            raise ValidationError("Not a finite number.") from None
        if not math.isfinite(number):
            raise ValidationError("Not a finite number.")
        return number


class StrictInt(fields.Integer):
    """A JSON integer (``5``, not ``5.0``, ``"5"`` or ``true``)."""

    def __init__(self, **kwargs: Any):
        super().__init__(strict=True, **kwargs)


class StrictBool(fields.Boolean):
    """A JSON boolean: ``"true"`` and ``1`` are rejected."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean (true or false).")
        return value


def Id(**kwargs: Any) -> fields.String:
    """A clinic-assigned id: 1-64 characters of ``[A-Za-z0-9._-]``."""
    return fields.String(validate=FullMatch(ID_PATTERN, error="Must be 1-64 characters of A-Z a-z 0-9 . _ -."),
                         **kwargs)


def Text(max_len: int = 255, **kwargs: Any) -> fields.String:
    """A non-blank string of at most ``max_len`` characters."""
    return fields.String(validate=[validate.Length(min=1, max=max_len),
                                   validate.Regexp(NOT_BLANK, error="Must not be blank.")], **kwargs)


def Icd10Code(**kwargs: Any) -> fields.String:
    """An ICD-10-CM code in its dotted form (``F33.2``)."""
    return fields.String(validate=FullMatch(ICD10, error="Not an ICD-10-CM code (e.g. F33.2)."), **kwargs)


def luhn_npi_valid(npi: str) -> bool:
    """NPI check digit: Luhn over the 9 digits prefixed with 80840 (CMS NPI standard)."""
    if not re.fullmatch(r"\d{10}", npi):
        return False
    digits = [int(c) for c in "80840" + npi[:-1]]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return (10 - total % 10) % 10 == int(npi[-1])
