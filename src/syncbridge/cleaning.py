"""Turns raw source values into clean, comparable ones, or says precisely why it cannot.

Every cleaner takes the raw value (never None or an empty string: callers skip those) and returns
the clean value, or raises ValueError with a short reason; the transformer turns that into a
per-record error naming the field and the value, and the rest of the record still loads.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, tzinfo
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
import pycountry

_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TRUE = frozenset({"true", "t", "yes", "y", "1", "on", "x", "checked"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off", "unchecked"})
_EPOCH_MS_THRESHOLD = 10**11


def normalize_email(raw: str) -> tuple[str, bool]:
    """Trim and lower-case an address; the flag says whether it is syntactically valid."""
    email = raw.strip().lower()
    valid = len(email) <= 254 and _EMAIL.match(email) is not None
    return email, valid


def clean_text(value: Any, strip_chars: str | None = None) -> str | None:
    text = str(value).strip()
    if strip_chars:
        text = text.strip(strip_chars).strip()
    return text or None


def clean_list(
    value: Any, separator: str = ",", strip_chars: str | None = None
) -> list[str] | None:
    """A list of trimmed, non-empty text items, or None when there is none.

    A JSON array is a list already. A text cell is split at `separator`; an item may be bare
    (Shopify's `a, b`) or double-quoted with `""` for a quote inside (Mailchimp's
    `"Customer","VIP"`), so a quoted item can hold the separator.
    """
    raw: list[str | None]
    if isinstance(value, list | tuple):
        raw = [clean_text(item) for item in value if item is not None]
    else:
        raw = list(_split_list(str(value), separator))
    items = [clean_text(item, strip_chars) for item in raw if item is not None]
    kept = [item for item in items if item]
    return kept or None


def _split_list(text: str, separator: str) -> list[str]:
    items: list[str] = []
    at, end = 0, len(text)
    while True:
        start = at
        while start < end and text[start].isspace() and not text.startswith(separator, start):
            start += 1
        if start < end and text[start] == '"':
            parts, at = [], start + 1
            while True:
                close = text.find('"', at)
                if close == -1:
                    raise ValueError(f"unclosed quote in a list (at character {start + 1})")
                parts.append(text[at:close])
                if text.startswith('"', close + 1):  # "" is a quote inside the item
                    parts.append('"')
                    at = close + 2
                    continue
                at = close + 1
                break
            while at < end and text[at].isspace() and not text.startswith(separator, at):
                at += 1
            if at < end and not text.startswith(separator, at):
                raise ValueError(f"text after a closing quote in a list (at character {at + 1})")
            items.append("".join(parts))
        else:
            at = text.find(separator, start)
            if at == -1:
                at = end
            items.append(text[start:at])
        if at >= end:
            return items
        at += len(separator)


def clean_number(value: Any) -> int | float:
    """Numbers from locale-free strings: `1234.5`, `-3`, `1e3`.

    `1,234.50` and `1.234,50` are refused: which separator is the decimal one is a guess.
    """
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a number")
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    if not _NUMBER.match(text):
        raise ValueError("not a locale-free number (expected digits with an optional '.')")
    if "." in text or "e" in text or "E" in text:
        return float(text)  # correctly rounded, like float(Decimal(text))
    return int(text)


def clean_integer(value: Any) -> int:
    number = clean_number(value)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError("not a whole number")
        return int(number)
    return number


def clean_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a yes/no value")


@cache
def _zone(name: str | None) -> tzinfo:
    return UTC if name in (None, "UTC") else ZoneInfo(name)  # type: ignore[arg-type]


def parse_datetime(value: Any, fmt: str | None = None, timezone: str | None = None) -> datetime:
    """A timezone-aware UTC datetime from ISO 8601, a strptime format, or epoch (s or ms).

    Naive times are read in `timezone` (default UTC).
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= _EPOCH_MS_THRESHOLD else value
        return datetime.fromtimestamp(seconds, UTC)
    else:
        text = str(value).strip()
        try:
            if fmt:
                parsed = datetime.strptime(text, fmt)
            elif text.isdigit():
                return parse_datetime(int(text))
            else:
                parsed = datetime.fromisoformat(text)
        except ValueError:
            expected = f"format {fmt!r}" if fmt else "ISO 8601"
            raise ValueError(f"not a date/time in {expected}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(timezone))
    return parsed.astimezone(UTC)


def format_datetime(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`; seconds precision unless the source had fractions."""
    moment = moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def clean_datetime(value: Any, fmt: str | None = None, timezone: str | None = None) -> str:
    if type(value) is str:
        return _clean_datetime_text(value, fmt, timezone)
    return format_datetime(parse_datetime(value, fmt, timezone))


@lru_cache(maxsize=65536)
def _clean_datetime_text(value: str, fmt: str | None, timezone: str | None) -> str:
    """Exports repeat dates a lot (and strptime is slow): parse each distinct text once."""
    return format_datetime(parse_datetime(value, fmt, timezone))


def clean_date(value: Any, fmt: str | None = None, timezone: str | None = None) -> str:
    """A calendar date (`YYYY-MM-DD`); a date-time is taken in `timezone` (default UTC)."""
    if isinstance(value, str) and fmt is None:
        text = value.strip()
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    moment = parse_datetime(value, fmt, timezone)
    return moment.astimezone(_zone(timezone)).date().isoformat()


def _fold(text: str) -> str:
    """Case-, accent- and punctuation-insensitive key for matching country names."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(c for c in decomposed if c.isalnum() or c.isspace())
    return " ".join(letters.split())


_COUNTRY_ALIASES = {
    "usa": "US",
    "us": "US",
    "united states of america": "US",
    "america": "US",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "britain": "GB",
    "deutschland": "DE",
    "espana": "ES",
    "brasil": "BR",
    "turkey": "TR",
    "turkiye": "TR",
    "russia": "RU",
    "south korea": "KR",
    "korea": "KR",
    "north korea": "KP",
    "holland": "NL",
    "the netherlands": "NL",
    "czech republic": "CZ",
    "ivory coast": "CI",
    "vietnam": "VN",
    "viet nam": "VN",
    "iran": "IR",
    "syria": "SY",
    "laos": "LA",
    "bolivia": "BO",
    "venezuela": "VE",
    "tanzania": "TZ",
    "moldova": "MD",
    "macedonia": "MK",
    "taiwan": "TW",
    "osterreich": "AT",
    "schweiz": "CH",
    "suisse": "CH",
    "svizzera": "CH",
    "italia": "IT",
    "nederland": "NL",
    "belgique": "BE",
    "belgie": "BE",
    "sverige": "SE",
    "norge": "NO",
    "danmark": "DK",
    "suomi": "FI",
    "polska": "PL",
    "nippon": "JP",
    "nihon": "JP",
    "uae": "AE",
    "emirates": "AE",
    "hong kong sar": "HK",
    "mexico": "MX",
    "deutsch": "DE",
}


@cache
def _country_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        for attr in ("alpha_2", "alpha_3", "name", "official_name", "common_name"):
            name = getattr(country, attr, None)
            if name:
                index.setdefault(_fold(name), code)
    index.update(_COUNTRY_ALIASES)
    return index


@lru_cache(maxsize=4096)
def clean_country(value: Any) -> str:
    """ISO 3166-1 alpha-2 from a code (`us`, `USA`) or a name (`United States`, `Deutschland`)."""
    text = str(value).strip()
    key = _fold(text)
    if len(key) <= 3 and not text.replace(".", "").isalpha():
        raise ValueError("not a known country name or ISO 3166 code")  # "N/A" is not Namibia
    code = _country_index().get(key) or _country_index().get(key.replace(" ", ""))
    if code is None:
        raise ValueError("not a known country name or ISO 3166 code")
    return code


@lru_cache(maxsize=65536)
def clean_phone(value: Any, region: str | None = None) -> str:
    """E.164 (`+14155550132`); numbers without a country code are read in `region`."""
    text = str(value).strip().lstrip("'")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a possible phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
