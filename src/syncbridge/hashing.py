"""One content hash for everything compared by content: records, merge fields, rules, mappings.

`content_hash` is blake2b-128 (32 hex digits) of canonical JSON: UTF-8, keys sorted, no spaces,
values JSON cannot hold written as `str()`. The bytes are a stored contract, not a detail: each
record's digest is kept in `source_record.content_hash`, so a change to either the serialisation
or the algorithm would make every stored record look changed on the next read. Merge-field
hashes (`member_state.merge_hash`), the rules' item hashes and the mapping fingerprints are
stored too; a different hash for those costs one full re-evaluation, push or re-map.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson


def canonical_json(value: Any) -> bytes:
    """`value` as canonical JSON bytes: what is hashed, and, for records, what is stored."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: the standard library copes, in the same form
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), default=str, sort_keys=True
        )
        return text.encode()


def content_hash(value: Any) -> str:
    """The hash of `value`'s canonical JSON; bytes are taken as canonical JSON already (a
    record's stored payload), so they are not serialised twice."""
    data = value if isinstance(value, bytes) else canonical_json(value)
    return hashlib.blake2b(data, digest_size=16).hexdigest()


__all__ = ["canonical_json", "content_hash"]
