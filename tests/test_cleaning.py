"""Cleaners: what a marketer's exports really contain, and clear refusals for the rest."""

from __future__ import annotations

import pytest

from syncbridge import cleaning


@pytest.mark.parametrize(
    ("raw", "expected", "valid"),
    [
        (" Jane.Doe@Gmail.COM ", "jane.doe@gmail.com", True),
        ("o'brien+news@web.de", "o'brien+news@web.de", True),
        ("jane.doe@", "jane.doe@", False),
        ("bob at gmail.com", "bob at gmail.com", False),
        ("maria@@web.de", "maria@@web.de", False),
        ("tom@gmail", "tom@gmail", False),
        ("n/a", "n/a", False),
    ],
)
def test_normalize_email(raw: str, expected: str, valid: bool) -> None:
    assert cleaning.normalize_email(raw) == (expected, valid)


@pytest.mark.parametrize(
    ("raw", "fmt", "tz", "expected"),
    [
        ("2026-10-14 09:31:12 -0400", "%Y-%m-%d %H:%M:%S %z", None, "2026-10-14T13:31:12Z"),
        ("10/2/2026 4:05 PM", "%m/%d/%Y %I:%M %p", "America/Los_Angeles", "2026-10-02T23:05:00Z"),
        ("2026-11-20T08:00:00Z", None, None, "2026-11-20T08:00:00Z"),
        ("2026-11-20T08:00:00.250+01:00", None, None, "2026-11-20T07:00:00.250Z"),
        ("2026-11-20 08:00", None, "Europe/Berlin", "2026-11-20T07:00:00Z"),
        (1763625600, None, None, "2025-11-20T08:00:00Z"),
        ("1763625600000", None, None, "2025-11-20T08:00:00Z"),
    ],
)
def test_clean_datetime_to_utc_iso(
    raw: object, fmt: str | None, tz: str | None, expected: str
) -> None:
    assert cleaning.clean_datetime(raw, fmt, tz) == expected


@pytest.mark.parametrize(("raw", "fmt"), [("yesterday", None), ("31/31/2025", "%m/%d/%Y")])
def test_unparseable_dates_say_what_was_expected(raw: str, fmt: str | None) -> None:
    with pytest.raises(ValueError, match="not a date/time in"):
        cleaning.clean_datetime(raw, fmt)


def test_clean_date_keeps_calendar_day_in_its_timezone() -> None:
    assert cleaning.clean_date("3/11/2025", "%m/%d/%Y") == "2025-03-11"
    assert cleaning.clean_date("2026-01-01T02:00:00Z", None, "America/New_York") == "2025-12-31"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("United States", "US"),
        ("USA", "US"),
        ("U.S.A.", "US"),
        ("us", "US"),
        ("UK", "GB"),
        ("United Kingdom", "GB"),
        ("Deutschland", "DE"),
        ("España", "ES"),
        ("Viet Nam", "VN"),
        ("Brasil", "BR"),
        ("Türkiye", "TR"),
        ("fra", "FR"),
        ("Japan", "JP"),
        (" canada ", "CA"),
    ],
)
def test_country_to_alpha2(raw: str, code: str) -> None:
    assert cleaning.clean_country(raw) == code


@pytest.mark.parametrize("raw", ["Atlantis", "Earth", "N/A"])
def test_unknown_country_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not a known country"):
        cleaning.clean_country(raw)


@pytest.mark.parametrize(
    ("raw", "expected"), [("1234.50", 1234.5), ("-3", -3), ("1e3", 1000.0), (" 42 ", 42), (7, 7)]
)
def test_numbers_from_locale_free_strings(raw: object, expected: float) -> None:
    assert cleaning.clean_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12", 12), ("+5", 5), ("12.0", 12.0), ("5.", 5.0), (".5", 0.5), ("2E2", 200.0),
     ("123456789012345678901234567890", 123456789012345678901234567890), ("0.1", 0.1)],
)  # fmt: skip
def test_whole_numbers_stay_integers_and_the_rest_are_exact_floats(
    raw: str, expected: float
) -> None:
    cleaned = cleaning.clean_number(raw)
    assert cleaned == expected and type(cleaned) is type(expected)


@pytest.mark.parametrize("raw", ["1.234,50", "1,234.50", "$12", "twelve", "12 EUR"])
def test_locale_or_decorated_numbers_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="locale-free number"):
        cleaning.clean_number(raw)


@pytest.mark.parametrize(
    ("raw", "expected"), [("yes", True), ("no", False), ("1", True), ("0", False), ("TRUE", True)]
)
def test_booleans(raw: str, expected: bool) -> None:
    assert cleaning.clean_boolean(raw) is expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(415) 555-0132", "US", "+14155550132"),
        ("415.555.0132", "US", "+14155550132"),
        ("'+14155550132", None, "+14155550132"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("0151 23456789", "DE", "+4915123456789"),
    ],
)
def test_phone_to_e164(raw: str, region: str | None, expected: str) -> None:
    assert cleaning.clean_phone(raw, region) == expected


def test_impossible_phone_is_refused() -> None:
    with pytest.raises(ValueError, match="phone"):
        cleaning.clean_phone("12", "US")


def test_text_strips_spreadsheet_quote_prefix() -> None:
    assert cleaning.clean_text("  '02134 ", "'") == "02134"
    assert cleaning.clean_text("   ") is None
