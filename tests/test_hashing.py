"""One content hash: the bytes of hashes stored in existing caches do not move.

The expected digests were computed by the hashers this module replaced (`prepare.digest` of
`prepare.canonical_json`, `push.desired.stable_hash`), so a cache written before the fold sees
its records and members as unchanged.
"""

from __future__ import annotations

from datetime import date

from syncbridge.connectors import DELETED, Page
from syncbridge.hashing import canonical_json, content_hash
from syncbridge.prepare import prepare_page
from syncbridge.push.desired import DesiredMember

RECORD = {
    "id": "c1", "email": "zoë@example.com", "n": 3, "x": 1.5,
    "nested": {"b": [1, None, True], "a": '\n"q"'}, "when": date(2026, 1, 2),
}  # fmt: skip
HUGE = {"id": 1, "huge": 2**70, "name": "Ünïcode"}


def test_record_digest_is_the_one_stored_by_earlier_versions() -> None:
    [record] = prepare_page(Page([dict(RECORD)], cursor=None), ("id",)).records
    assert record.digest == "8dbfa8554afb04d914d19af607d715e7"
    assert record.payload.encode() == canonical_json(RECORD)


def test_integers_beyond_64_bits_hash_as_before() -> None:
    assert (
        canonical_json(HUGE) == '{"huge":1180591620717411303424,"id":1,"name":"Ünïcode"}'.encode()
    )
    assert content_hash(HUGE) == "1190a51f0f84b0d95c8cb158c649aac9"


def test_deleted_record_digest_is_the_one_stored_by_earlier_versions() -> None:
    page = Page([{**RECORD, DELETED: True}], cursor=None)
    [record] = prepare_page(page, ("id",)).records
    assert record.digest == "82e9b3a1e26211cae2fc4eff8d620cf5"


def test_merge_and_state_hashes_are_the_ones_acknowledged_by_earlier_versions() -> None:
    member = DesiredMember(
        1, "zoë@example.com", True, {"FNAME": "Zoë", "LTV": 250, "BDAY": "01/02", "X": 1.25},
        frozenset({"vip", "b"}),
    )  # fmt: skip
    assert member.merge_hash == "3129542832189fb4c423493404203b99"
    assert member.state_hash == "5d7c33172d7dc038190ee1fd38b5ea11"


def test_bytes_are_hashed_as_the_canonical_json_they_are() -> None:
    assert content_hash(canonical_json(RECORD)) == content_hash(RECORD)
    assert content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})
