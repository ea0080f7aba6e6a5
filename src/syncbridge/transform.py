"""Applies a mapping to raw records: cleaned attributes, identifiers, events and record errors.

A mapping is compiled once into closures, so the per-record cost is a few dictionary lookups and
the cleaners themselves; ingestion of a million records depends on that.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from . import cleaning
from .config.mapping import ITEM, EventMapping, FieldSpec, Mapping
from .errors import RecordError
from .filters import compile_filters
from .hashing import content_hash

EMAIL = "email"
PHONE = "phone"
EXTERNAL_PREFIX = "ext:"

Getter = Callable[[dict[str, Any]], Any]
_NULL_MARKERS = frozenset({"#N/A", "NULL", "null", "#n/a"})
"""Spreadsheet and database exports write these for 'no value'."""
Cleaner = Callable[[Any], Any]


@dataclass
class Event:
    index: int
    """The event's ordinal within its record (unique there): the event mapping's index, plus
    the item's number times the mapping's event count for `each` lists."""
    type: str
    occurred_at: str
    properties: dict[str, Any]


@dataclass
class Transformed:
    """What one raw record means. `identifiers` are (kind, value) join keys, valid ones only."""

    attributes: dict[str, Any] = field(default_factory=dict)
    identifiers: list[tuple[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    source_ts: str | None = None
    deleted: bool = False
    alias: bool = False
    """Merged into another record (`identifiers.merged_into`): live, only external ids."""


def _empty(value: Any) -> bool:
    if isinstance(value, str):
        text = value.strip()
        return not text or text in _NULL_MARKERS
    return value is None


def case_clashes(names: list[str]) -> list[tuple[str, str]]:
    """Pairs of names that differ only by case: `ignore-case` cannot tell them apart."""
    seen: dict[str, str] = {}
    clashes = []
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            clashes.append((other, name))
    return clashes


def _path_getter(path: str, fold: bool = False) -> Getter:
    """Exact key first (CSV headers may contain dots), else a dotted path into nested objects;
    a number picks an item of a list (`collections.0.title`: the first collection's title).

    With `fold` the record's top-level keys are case-folded (see `_folded`), so the exact key and
    the path's first segment are folded too; keys inside nested objects keep their case.
    """
    parts = path.split(".")
    if fold:
        path, parts = path.casefold(), [parts[0].casefold(), *parts[1:]]
    if len(parts) == 1:
        return lambda record: record.get(path)

    def get(record: dict[str, Any]) -> Any:
        if path in record:
            return record[path]
        node: Any = record
        for part in parts:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit():  # `collections.0.title`
                node = node[int(part)] if int(part) < len(node) else None
            else:
                return None
        return node

    return get


def _getter(spec: FieldSpec, fold: bool = False) -> Getter:
    getters = [_path_getter(f, fold) for f in spec.fields]
    if len(getters) == 1:
        return getters[0]

    def first_present(record: dict[str, Any]) -> Any:
        for get in getters:
            value = get(record)
            if not _empty(value):
                return value
        return None

    return first_present


def _cleaner(spec: FieldSpec) -> Cleaner:
    kind = spec.type
    if kind == "text":
        if spec.strip_chars:
            return lambda v: cleaning.clean_text(v, spec.strip_chars)
        return lambda v: v if type(v) is str else cleaning.clean_text(v)
    if kind == "email":
        return lambda v: cleaning.normalize_email(str(v))[0]
    if kind == "number":
        return cleaning.clean_number
    if kind == "integer":
        return cleaning.clean_integer
    if kind == "boolean":
        return cleaning.clean_boolean
    if kind == "datetime":
        return lambda v: cleaning.clean_datetime(v, spec.format, spec.timezone)
    if kind == "date":
        return lambda v: cleaning.clean_date(v, spec.format, spec.timezone)
    if kind == "country":
        return cleaning.clean_country
    if kind == "phone":
        return lambda v: cleaning.clean_phone(v, spec.region)
    if kind == "list":
        separator = spec.separator or ","
        return lambda v: cleaning.clean_list(v, separator, spec.strip_chars)
    return lambda v: v  # json: kept as the source sent it


def _coded(spec: FieldSpec) -> Cleaner:
    """A field whose `values` say what its codes mean: the listed meaning, cleaned as the
    field's type once, here; a code not listed is no value."""
    meanings = {}
    for code, meant in (spec.values or {}).items():
        meanings[code.casefold()] = constant_value(FieldSpec(value=meant, type=spec.type))

    def clean(value: Any) -> Any:
        return meanings.get(str(value).casefold())

    return clean


def constant_value(spec: FieldSpec) -> Any:
    """A spec's constant `value`, cleaned like a value read from a record (ValueError if bad)."""
    value = spec.value
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError("is empty")
    return _cleaner(spec)(value)


class FieldReader:
    """Reads and cleans one mapped field; failures become RecordErrors naming the field."""

    __slots__ = ("clean", "column", "default", "fields", "get")

    def __init__(self, spec: FieldSpec, fold: bool = False) -> None:
        self.get = _getter(spec, fold)
        single = spec.fields[0] if len(spec.fields) == 1 else None
        column = single if single and "." not in single else None
        self.column = column.casefold() if column and fold else column
        self.clean = _cleaner(spec) if spec.values is None else _coded(spec)
        self.default = spec.default
        self.fields = "|".join(spec.fields)

    def read(self, record: dict[str, Any], errors: list[RecordError]) -> Any:
        raw = record.get(self.column) if self.column is not None else self.get(record)
        if raw is None:
            return self.default
        value = raw
        if type(raw) is str:
            value = raw.strip()
            if not value or value in _NULL_MARKERS:
                return self.default
        try:
            return self.clean(value)
        except ValueError as exc:
            errors.append(RecordError(self.fields, raw, str(exc)))
            return None


class PhoneReader(FieldReader):
    """A phone whose country comes from another field of the record (else the default region):
    a UK customer's `020 7946 0958` is only a number once we know it is British."""

    __slots__ = ("region", "region_get")

    def __init__(self, spec: FieldSpec, default_region: str | None, fold: bool = False) -> None:
        super().__init__(spec, fold)
        self.region = spec.region or default_region
        self.region_get = _path_getter(spec.region_field, fold) if spec.region_field else None

    def read(self, record: dict[str, Any], errors: list[RecordError]) -> Any:
        raw = self.get(record)
        if raw is None or (type(raw) is str and (not raw.strip() or raw.strip() in _NULL_MARKERS)):
            return self.default
        region = self.region
        if self.region_get is not None:
            country = self.region_get(record)
            if country and str(country).strip():
                # an unknown country is reported where the country field itself is mapped
                with suppress(ValueError):
                    region = cleaning.clean_country(str(country))
        try:
            return cleaning.clean_phone(str(raw).strip(), region)
        except ValueError as exc:
            errors.append(RecordError(self.fields, raw, str(exc)))
            return None


class ConstantReader(FieldReader):
    """A constant `value`: the same for every record, cleaned once."""

    __slots__ = ("value",)

    def __init__(self, spec: FieldSpec) -> None:
        self.value = constant_value(spec)
        self.fields = ""
        self.default = None

    def read(self, record: dict[str, Any], errors: list[RecordError]) -> Any:
        return self.value


def _reader(spec: FieldSpec, default_region: str | None, fold: bool = False) -> FieldReader:
    if spec.value is not None:
        return ConstantReader(spec)
    if spec.type == "phone":
        return PhoneReader(spec, default_region, fold)
    return FieldReader(spec, fold)


class _EventReader:
    def __init__(self, index: int, spec: EventMapping, stride: int, fold: bool = False) -> None:
        """`stride` is the mapping's number of events: the n-th item of an `each` list gets
        ordinal `index + n * stride`, so ordinals stay unique within a record and an event
        mapping without `each` keeps its index as its ordinal."""
        self.index, self.stride = index, stride
        self.spec = spec
        self.items = _path_getter(spec.each, fold) if spec.each else None
        self.type_get = _path_getter(spec.type_field, fold) if spec.type_field else None
        self.filters = [
            (_path_getter(f, fold), accepts) for f, accepts in compile_filters(spec.when)
        ]
        self.time = FieldReader(spec.time, fold)
        self.properties = {
            n: ConstantReader(s) if s.value is not None else FieldReader(s, fold)
            for n, s in spec.properties.items()
        }

    def read_all(self, record: dict[str, Any], errors: list[RecordError]) -> list[Event]:
        """The record's events from this mapping: one, none, or one per item with `each`."""
        if self.items is None:
            event = self.read(record, errors, self.index)
            return [] if event is None else [event]
        items = self.items(record)
        if not isinstance(items, list):
            return []
        found = []
        for n, item in enumerate(items):
            before = len(errors)
            event = self.read({**record, ITEM: item}, errors, self.index + n * self.stride)
            if event is not None:
                found.append(event)
            for error in errors[before:]:  # `item.quantity` → `lineItems[2].quantity`
                if isinstance(error.field, str) and error.field.split(".", 1)[0] == ITEM:
                    error.field = f"{self.spec.each}[{n}]{error.field[len(ITEM) :]}"
        return found

    def read(self, record: dict[str, Any], errors: list[RecordError], ordinal: int) -> Event | None:
        for get, accepts in self.filters:
            if not accepts(get(record)):
                return None
        event_type = self._type(record)
        if event_type is None:
            return None
        occurred_at = self.time.read(record, errors)
        if occurred_at is None:
            return None
        props = {}
        for name, reader in self.properties.items():
            value = reader.read(record, errors)
            if value is not None:
                props[name] = value
        return Event(ordinal, event_type, occurred_at, props)

    def _type(self, record: dict[str, Any]) -> str | None:
        if self.spec.type is not None:
            return self.spec.type
        assert self.type_get is not None
        raw = self.type_get(record)
        if _empty(raw):
            return None
        raw = str(raw)
        if raw in self.spec.type_map:
            return self.spec.type_map[raw]
        return None if self.spec.only_mapped else raw


def mapping_fingerprint(mapping: Mapping, default_phone_region: str | None = None) -> str:
    """A hash of everything that decides what a record maps to: the mapping (less its
    description) and the default phone region when a phone without a region of its own uses
    it. Stored per stream, so that an edited mapping re-maps the stored records (`remap.py`)."""
    ids = mapping.identifiers
    phones = [ids.phone] if ids.phone else []
    phones += [s for s in mapping.attributes.values() if s.type == "phone"]
    region = default_phone_region if any(s.region is None for s in phones) else None
    meaning = {
        "mapping": mapping.model_dump(mode="json", exclude={"description"}),
        "default_phone_region": region,
    }
    return content_hash(meaning)


def _folded(record: dict[str, Any], errors: list[RecordError]) -> dict[str, Any]:
    """The record with case-folded top-level keys; keys that clash are an error, and neither is
    read (which one the mapping means is a guess)."""
    folded = {k.casefold(): v for k, v in record.items()}
    if len(folded) < len(record):
        for first, second in case_clashes(list(record)):
            folded.pop(first.casefold(), None)
            reason = (
                f"fields {first!r} and {second!r} differ only by case, which "
                'columns = "ignore-case" cannot tell apart; rename one at the source'
            )
            errors.append(RecordError(f"{first}|{second}", None, reason))
    return folded


class RecordTransformer:
    """A mapping compiled for fast application to many records."""

    def __init__(self, mapping: Mapping, default_phone_region: str | None = None) -> None:
        self.fingerprint = mapping_fingerprint(mapping, default_phone_region)
        self.ignore_case = fold = mapping.columns == "ignore-case"
        ids = mapping.identifiers
        self.email = FieldReader(ids.email, fold) if ids.email else None
        phone = ids.phone.model_copy(update={"type": "phone"}) if ids.phone else None
        self.phone = PhoneReader(phone, default_phone_region, fold) if phone else None
        self.external = [
            (EXTERNAL_PREFIX + ns, FieldReader(spec, fold)) for ns, spec in ids.external.items()
        ]
        # Plain single-column text attributes (most of them) take a fast path in `apply`.
        self.plain_text = [
            (n, s.field.casefold() if fold else s.field)
            for n, s in mapping.attributes.items()
            if s.type == "text"
            and isinstance(s.field, str)
            and "." not in s.field
            and not s.strip_chars
            and s.default is None
        ]
        plain = {n for n, _ in self.plain_text}
        self.attributes = [
            (n, _reader(s, default_phone_region, fold))
            for n, s in mapping.attributes.items()
            if n not in plain
        ]
        count = len(mapping.events)
        self.events = [_EventReader(i, e, count, fold) for i, e in enumerate(mapping.events)]
        self.merged_into = [
            (EXTERNAL_PREFIX + ns, FieldReader(spec, fold)) for ns, spec in ids.merged_into.items()
        ]
        rec = mapping.record
        self.timestamp = FieldReader(rec.timestamp, fold) if rec.timestamp else None
        self.deleted = FieldReader(rec.deleted, fold) if rec.deleted else None

    def apply(self, record: dict[str, Any]) -> Transformed:
        if self.merged_into:
            alias = self._alias(record)
            if alias is not None:
                return alias
        out = Transformed()
        errors = out.errors
        if self.ignore_case:
            record = _folded(record, errors)
        if self.email is not None:
            raw = self.email.get(record)
            if not _empty(raw):
                email, valid = cleaning.normalize_email(str(raw))
                out.attributes["email"] = email
                out.attributes["email_valid"] = valid
                if valid:
                    out.identifiers.append((EMAIL, email))
                else:
                    errors.append(RecordError(self.email.fields, raw, "not a valid email address"))
        if self.phone is not None:
            phone = self.phone.read(record, errors)
            if phone is not None:
                out.attributes.setdefault("phone", phone)
                out.identifiers.append((PHONE, phone))
        for kind, reader in self.external:
            value = reader.read(record, errors)
            if value is not None:
                out.identifiers.append((kind, str(value)))
        attributes = out.attributes
        for name, column in self.plain_text:
            value = record.get(column)
            if value is None:
                continue
            if type(value) is str:
                value = value.strip()
                if not value or value in _NULL_MARKERS:
                    continue
            else:
                value = cleaning.clean_text(value)
            attributes[name] = value
        for name, reader in self.attributes:
            value = reader.read(record, errors)
            if value is not None:
                attributes[name] = value
        for event_reader in self.events:
            out.events += event_reader.read_all(record, errors)
        if self.timestamp is not None:
            out.source_ts = self.timestamp.read(record, errors)
        if self.deleted is not None:
            flag = self.deleted.read(record, errors)
            out.deleted = bool(flag)
        return out

    def _alias(self, record: dict[str, Any]) -> Transformed | None:
        """A record merged into another: it joins its own external ids to the master's and
        carries nothing else (its email, attributes and events were the merge's to keep), so it
        is live although the source deleted it. None when the record was not merged."""
        out = Transformed(alias=True)
        masters = []
        for kind, reader in self.merged_into:
            value = reader.read(record, out.errors)
            if value is not None:
                masters.append((kind, str(value)))
        if not masters:
            return None
        for kind, reader in self.external:
            value = reader.read(record, out.errors)
            if value is not None:
                out.identifiers.append((kind, str(value)))
        out.identifiers.extend(m for m in masters if m not in out.identifiers)
        if self.timestamp is not None:
            out.source_ts = self.timestamp.read(record, out.errors)
        return out
