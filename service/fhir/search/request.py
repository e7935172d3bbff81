"""Parse a FHIR search query into a typed ``SearchRequest`` (R4 search.html), apart from running it.

Values of one parameter separated by commas are ORed; a repeated parameter is ANDed
(search.html#combining). Bad values (a malformed date, ``_count=abc``) are always a 400 naming
the parameter; unknown parameter names and unsupported control values (``_sort``, ``_include``,
``_summary``, ``_total``) are a 400 under ``Prefer: handling=strict`` and otherwise left out and
listed in ``ignored`` (search.html#errors), so the ``self`` link shows what was applied.

What would *filter* the result is never dropped, even when lenient: an unsupported chain
(``patient.name``), modifier (``code:text``) or filter parameter (``_has``, ``_filter``, ...) is
always a 400, because ignoring a filter widens the answer, here to patient data the client did not
ask for (security review, finding 13). Sizes are capped (:data:`MAX_VALUES`, :data:`MAX_PARAMS`,
:data:`MAX_SORT`): a query the database cannot plan is a 400, not a 500 (finding 10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from service.fhir.outcomes import FhirError
from service.fhir.search._values import date_range, normalise
from service.fhir.search.index import parse_reference
from service.fhir.search.params import SEARCH_PARAMS, SearchParam

__all__ = [
    "AP_MIN_WINDOW",
    "DEFAULT_COUNT",
    "MAX_COUNT",
    "MAX_PARAMS",
    "MAX_SORT",
    "MAX_VALUES",
    "PAGE_TOKEN_PARAM",
    "Criterion",
    "DateValue",
    "Include",
    "NumberValue",
    "ReferenceValue",
    "SearchRequest",
    "SortKey",
    "StringValue",
    "TokenValue",
    "parse_search",
]

DEFAULT_COUNT = 20
MAX_COUNT = 1000
#: most comma-separated values in one parameter occurrence (more: 400): a 1,500-value OR made a
#: query SQLite could not plan (security review, finding 10)
MAX_VALUES = 100
#: most parameter occurrences (criteria and controls) in one search (more: 400)
MAX_PARAMS = 100
#: most ``_sort`` keys (each is a subquery, and the page keyset grows with their square)
MAX_SORT = 5
#: filters of R4 search.html we do not support; never ignored (see the module docstring)
UNSUPPORTED_FILTERS = ("_has", "_filter", "_query", "_text", "_content", "_list", "_tag", "_profile",
                       "_source", "_type")
#: a number's exponent must lie within this (float has about +-308; 1E-999999999 made Decimal fail)
_MAX_EXPONENT = 100
#: the query parameter that carries the opaque page token in ``next``/``previous`` links
PAGE_TOKEN_PARAM = "_page_token"
#: parameters the blueprint handles (http.html#parameters): neither applied nor unknown
_TRANSPORT = ("_format", "_pretty")
#: ``ap`` on a date: ±10 % of the gap between the value and the search's snapshot time
#: (search.html#prefix leaves "approximately" to the server), at least this much either side
AP_MIN_WINDOW = timedelta(days=1)

_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_MODIFIERS = {"string": ("exact", "contains", "missing"), "token": ("missing",), "date": ("missing",),
              "reference": ("missing",), "quantity": ("missing",), "uri": ("missing",)}
_ELEMENT = re.compile(r"^[a-z][A-Za-z0-9]*$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class TokenValue:
    """``code`` (any system), ``system|code``, ``system|`` (any code), ``|code`` (no system)."""

    system: str | None
    code: str | None
    any_system: bool


@dataclass(frozen=True)
class StringValue:
    text: str
    norm: str


@dataclass(frozen=True)
class DateValue:
    """A prefixed date; ``start``/``end`` are the half-open UTC range the value's precision covers
    (``ap`` is widened when the search runs, relative to its snapshot time)."""

    prefix: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class NumberValue:
    """A prefixed number, its implicit precision range ``[low, high)``, and an optional unit."""

    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None


@dataclass(frozen=True)
class ReferenceValue:
    """``Type/id``, ``id`` (type None: any allowed target) or an absolute URL ending in ``Type/id``."""

    type: str | None
    id: str


Value = TokenValue | StringValue | DateValue | NumberValue | ReferenceValue


@dataclass(frozen=True)
class Criterion:
    """One occurrence of a parameter: its values ORed; ``missing`` set for ``:missing``."""

    param: SearchParam
    modifier: str | None
    values: tuple[Value, ...] = ()
    missing: bool | None = None


@dataclass(frozen=True)
class SortKey:
    param: str
    descending: bool


@dataclass(frozen=True)
class Include:
    """``_include``/``_revinclude`` ``source:param[:target]``."""

    source: str
    param: str
    target: str | None


@dataclass(frozen=True)
class SearchRequest:
    """A parsed search. ``applied`` lists the query parameters used (for the ``self`` link);
    ``ignored`` those left out under lenient handling."""

    resource_type: str
    criteria: tuple[Criterion, ...] = ()
    count: int = DEFAULT_COUNT
    sort: tuple[SortKey, ...] = ()
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    summary_count: bool = False
    elements: tuple[str, ...] | None = None
    total: str = "accurate"
    applied: tuple[tuple[str, str], ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()
    page_token: str | None = None
    #: what identifies the search across its pages (page tokens are bound to it)
    fingerprint: str = field(default="", compare=False)


def _bad(name: str, message: str) -> FhirError:
    return FhirError(400, "invalid", f"Search parameter {name}: {message}", [name])


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` unless escaped with a backslash (search.html#escaping); unescape the parts."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _split_raw(text: str, sep: str) -> list[str]:
    """Split on unescaped ``sep`` keeping escapes (for a second split)."""
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    return _split(text, "\x00")[0]


def _prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in _PREFIXES and not raw[:2].isdigit():
        return raw[:2], raw[2:]
    return "eq", raw


def _date(name: str, raw: str) -> DateValue:
    prefix, text = _prefix(raw)
    try:
        start, end = date_range(text)
    except (ValueError, OverflowError) as exc:
        raise _bad(name, f"{raw!r} is not a date, dateTime or instant") from exc
    return DateValue(prefix, start, end)


def _number(name: str, raw: str) -> NumberValue:
    parts = _split(raw, "|")
    if len(parts) not in (1, 3):
        raise _bad(name, f"{raw!r} is not number or number|system|code")
    prefix, text = _prefix(parts[0])
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise _bad(name, f"{text!r} is not a number") from exc
    if not value.is_finite():
        raise _bad(name, f"{text!r} is not a number")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if abs(exponent) > _MAX_EXPONENT or abs(value.adjusted()) > _MAX_EXPONENT:
        raise _bad(name, f"{text!r} is out of range (exponents up to {_MAX_EXPONENT})")
    # the implicit range of the value's significant figures (search.html#number): 100 -> [99.5, 100.5)
    half = Decimal(5).scaleb(value.as_tuple().exponent - 1)  # type: ignore[operator]
    if prefix == "ap":
        half = max(half, abs(value) / 10)
    system = parts[1] or None if len(parts) == 3 else None
    code = parts[2] or None if len(parts) == 3 else None
    return NumberValue(prefix, value, value - half, value + half, system, code)


def _token(raw: str) -> TokenValue:
    parts = _split_raw(raw, "|")
    if len(parts) == 1:
        return TokenValue(None, _unescape(raw), True)
    system, code = _unescape(parts[0]), _unescape("|".join(parts[1:]))
    return TokenValue(system or None, code or None, False)


def _reference(name: str, raw: str, type_modifier: str | None) -> ReferenceValue:
    parsed = parse_reference(raw)
    if parsed is not None:
        if type_modifier and parsed[0] != type_modifier:
            raise _bad(name, f"{raw!r} is not a {type_modifier} reference")
        return ReferenceValue(parsed[0], parsed[1])
    if _ID.match(raw):
        return ReferenceValue(type_modifier, raw)
    raise _bad(name, f"{raw!r} is not Type/id, id or an absolute URL ending in Type/id")


def _values(param: SearchParam, name: str, modifier: str | None, raw: str) -> tuple[Value, ...]:
    out: list[Value] = []
    parts = _split_raw(raw, ",")
    if len(parts) > MAX_VALUES:
        raise _bad(name, f"at most {MAX_VALUES} comma-separated values, not {len(parts)}: split the search")
    for part in parts:
        if part == "":
            continue
        if param.type == "token":
            out.append(_token(part))
        elif param.type == "string":
            text = _unescape(part)
            out.append(StringValue(text, normalise(text)))
        elif param.type == "date":
            out.append(_date(name, part))
        elif param.type == "quantity":
            out.append(_number(name, part))
        elif param.type == "reference":
            out.append(_reference(name, _unescape(part), modifier))
    return tuple(out)


class _Parser:
    """Collects the parts of one request; ``skip`` decides strict (raise) or lenient (ignore)."""

    def __init__(self, resource_type: str, strict: bool):
        self.type, self.strict = resource_type, strict
        self.params = SEARCH_PARAMS[resource_type]
        self.fields: dict[str, object] = {"criteria": [], "sort": [], "includes": [], "revincludes": []}
        self.applied: list[tuple[str, str]] = []
        self.ignored: list[tuple[str, str]] = []

    def skip(self, key: str, value: str, code: str, message: str) -> None:
        if self.strict:
            raise FhirError(400, code, message, [key.split(":")[0]])
        self.ignored.append((key, value))

    def add(self, key: str, value: str) -> None:
        if key in _TRANSPORT:
            return
        if key == PAGE_TOKEN_PARAM:
            self.fields["page_token"] = value
            return
        if key.split(":")[0] in UNSUPPORTED_FILTERS:
            raise FhirError(400, "not-supported", f"{key.split(':')[0]} is not supported here; the search is "
                            "refused rather than answered without that filter", [key.split(":")[0]])
        handler = getattr(self, "_control_" + key[1:], None) if key.startswith("_") and key not in self.params \
            else None
        if handler is not None:
            if handler(key, value) is not False:
                self.applied.append((key, value))
            return
        self._criterion(key, value)

    def _criterion(self, key: str, value: str) -> None:
        name, _, modifier = key.partition(":")
        if "." in name:
            raise FhirError(400, "not-supported", f"Chained parameters ({name}) are not supported; search the "
                            "target type first, then by reference", [name])
        param = self.params.get(name)
        if param is None:
            return self.skip(key, value, "not-supported", f"Unknown search parameter {name!r} for {self.type}")
        if modifier and modifier not in _MODIFIERS[param.type] and not (
                param.type == "reference" and modifier in SEARCH_PARAMS):
            # never ignored: the filter without its modifier (or no filter) would match more
            raise FhirError(400, "not-supported", f"Modifier :{modifier} is not supported on {name} "
                            "(chains and modifiers other than :missing, :exact, :contains and :Type are not)",
                            [name])
        if value == "":
            return None  # search.html#errors: an empty parameter value is ignored
        if modifier == "missing":
            if value not in ("true", "false"):
                raise _bad(name, f":missing takes true or false, not {value!r}")
            self.fields["criteria"].append(Criterion(param, modifier, missing=value == "true"))  # type: ignore[attr-defined]
        else:
            values = _values(param, name, modifier or None, value)
            if values:
                self.fields["criteria"].append(Criterion(param, modifier or None, values))  # type: ignore[attr-defined]
        self.applied.append((key, value))
        return None

    def _control_count(self, key: str, value: str) -> None:
        if not value.isdigit():
            raise _bad(key, f"{value!r} is not a non-negative integer")
        self.fields["count"] = min(int(value), MAX_COUNT)

    def _control_sort(self, key: str, value: str) -> bool:
        keys = []
        if len(value.split(",")) + len(self.fields["sort"]) > MAX_SORT:  # type: ignore[arg-type]
            raise _bad(key, f"at most {MAX_SORT} sort keys")
        for item in value.split(","):
            name = item.removeprefix("-")
            param = self.params.get(name)
            if param is None or param.type != "date":
                self.skip(key, value, "not-supported", f"_sort on {name!r}: only date parameters and _lastUpdated")
                return False
            keys.append(SortKey(name, item.startswith("-")))
        self.fields["sort"] = [*self.fields["sort"], *keys]  # type: ignore[misc]
        return True

    def _include(self, key: str, value: str, reverse: bool) -> bool:
        parts = value.split(":")
        source, name = ([*parts, "", ""])[:2]
        target = parts[2] if len(parts) > 2 else None
        param = SEARCH_PARAMS.get(source, {}).get(name)
        valid = (len(parts) in (2, 3) and param is not None and param.type == "reference"
                 and (reverse or source == self.type)
                 and (target is None or (target in SEARCH_PARAMS and (target in param.targets
                                                                       or "Resource" in param.targets))))
        if not valid:
            self.skip(key, value, "not-supported", f"{key}={value} is not a supported reference of "
                                                   f"{'any type' if reverse else self.type}")
            return False
        self.fields["revincludes" if reverse else "includes"].append(Include(source, name, target))  # type: ignore[attr-defined]
        return True

    def _control_include(self, key: str, value: str) -> bool:
        return self._include(key, value, reverse=False)

    def _control_revinclude(self, key: str, value: str) -> bool:
        return self._include(key, value, reverse=True)

    def _control_summary(self, key: str, value: str) -> bool:
        if value not in ("count", "false"):
            self.skip(key, value, "not-supported", f"_summary={value} is not supported (count, false)")
            return False
        self.fields["summary_count"] = value == "count"
        return True

    def _control_elements(self, key: str, value: str) -> None:
        names = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [n for n in names if not _ELEMENT.match(n)]
        if bad:
            raise _bad(key, f"{bad[0]!r} is not a top-level element name")
        self.fields["elements"] = (*(self.fields.get("elements") or ()), *names)  # type: ignore[misc]

    def _control_total(self, key: str, value: str) -> bool:
        if value not in ("none", "estimate", "accurate"):
            self.skip(key, value, "not-supported", f"_total={value} is not supported (none, estimate, accurate)")
            return False
        self.fields["total"] = value
        return True

    def request(self) -> SearchRequest:
        fields = dict(self.fields)
        for name in ("criteria", "sort", "includes", "revincludes"):
            fields[name] = tuple(fields[name])  # type: ignore[call-overload]
        return SearchRequest(self.type, applied=tuple(self.applied), ignored=tuple(self.ignored),
                             fingerprint=repr((self.type, self.applied)), **fields)  # type: ignore[arg-type]


def parse_search(resource_type: str, params: list[tuple[str, str]], strict: bool) -> SearchRequest:
    """Parse the query parameters of a search on ``resource_type`` (GET query or POST form).

    :param strict: ``Prefer: handling=strict`` (search.html#errors)
    :raise FhirError: 400 ``invalid`` for a bad value; under ``strict`` 400 ``not-supported``
        for an unknown parameter, modifier or unsupported value; 404 for an unknown type
    """
    if resource_type not in SEARCH_PARAMS:
        raise FhirError(404, "not-supported", f"Resource type {resource_type} is not supported")
    if len(params) > MAX_PARAMS:
        raise FhirError(400, "too-costly", f"a search takes at most {MAX_PARAMS} parameters, not {len(params)}")
    parser = _Parser(resource_type, strict)
    for key, value in params:
        parser.add(key, value)
    return parser.request()
