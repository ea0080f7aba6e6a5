"""The validated shape of a mapping file (`mappings/*.toml`).

A mapping says what a stream's fields mean: which identify a person, which become profile
attributes, which become behaviour events. Connectors never decide that.
"""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FieldType = Literal[
    "text",
    "email",
    "number",
    "integer",
    "boolean",
    "datetime",
    "date",
    "country",
    "phone",
    "json",
    "list",
]
ColumnMatching = Literal["exact", "ignore-case"]
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
Scalar = str | bool | int | float
ITEM = "item"
"""In an event with `each`, the first segment of a path that reads the list's item."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldSpec(_Frozen):
    """Where a value comes from and how it is cleaned.

    `field` is a column name or a dotted path into nested JSON; a list means "the first non-empty".
    `value` is a constant instead, for what a source means by construction (every row of a
    sign-up form's export is consent): `value = true`. Give one of the two.
    """

    field: str | list[str] | None = None
    value: Any = None
    type: FieldType = "text"
    format: str | None = None
    timezone: str | None = None
    region: str | None = None
    region_field: str | None = None
    """For phones: a field with the record's country, for numbers without a country code."""
    strip_chars: str | None = None
    separator: str | None = None
    """For lists: what separates the items of a text cell (default ",")."""
    values: dict[str, Scalar] | None = None
    """What the source's values mean, when they are codes: `{ SUBSCRIBED = true }` makes
    Shopify's marketing state a consent flag. Matched ignoring case; a value not listed is no
    value (not an error), so a three-valued state can feed two flags."""
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str | list):
            return {"field": value}
        if isinstance(value, dict) and "value" in value and "type" not in value:
            # `value = true` means the boolean, not the text "True"
            constant = value["value"]
            inferred = (
                "boolean"
                if isinstance(constant, bool)
                else "integer"
                if isinstance(constant, int)
                else "number"
                if isinstance(constant, float)
                else "list"
                if isinstance(constant, list)
                else None
            )
            if inferred:
                return {**value, "type": inferred}
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, tz: str | None) -> str | None:
        if tz is not None:
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {tz!r} (use an IANA name)") from None
        return tz

    @field_validator("region")
    @classmethod
    def _known_region(cls, region: str | None) -> str | None:
        if region is not None and region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {region!r} (use ISO 3166 alpha-2)")
        return region.upper() if region else None

    @model_validator(mode="after")
    def _options_fit_type(self) -> FieldSpec:
        if self.format is not None and self.type not in ("datetime", "date"):
            raise ValueError(f"'format' applies to datetime and date fields, not {self.type}")
        if self.timezone is not None and self.type not in ("datetime", "date"):
            raise ValueError(f"'timezone' applies to datetime fields, not {self.type}")
        if (self.region or self.region_field) and self.type != "phone":
            raise ValueError(f"'region' and 'region_field' apply to phone fields, not {self.type}")
        if self.separator is not None:
            if self.type != "list":
                raise ValueError(f"'separator' applies to list fields, not {self.type}")
            if not self.separator or '"' in self.separator:
                raise ValueError("'separator' must be non-empty text without a double quote")
        return self

    @model_validator(mode="after")
    def _values_fit_type(self) -> FieldSpec:
        if self.values is None:
            return self
        if not self.values:
            raise ValueError("'values' lists no value")
        if self.type == "phone":
            raise ValueError("'values' does not apply to phone fields")
        from ..transform import constant_value

        for raw, meant in self.values.items():
            try:
                constant_value(FieldSpec(value=meant, type=self.type))
            except ValueError as exc:
                raise ValueError(
                    f"values.{raw}: {meant!r} is not a valid {self.type}: {exc}"
                ) from None
        folded = [k.casefold() for k in self.values]
        if len(set(folded)) != len(folded):
            raise ValueError("'values' lists a value twice (they are matched ignoring case)")
        return self

    @model_validator(mode="after")
    def _field_or_value(self) -> FieldSpec:
        if (self.field is None) == (self.value is None):
            raise ValueError("give one of 'field' (read from the record) or 'value' (a constant)")
        if self.value is None:
            return self
        given = [o for o in ("strip_chars", "default", "region_field", "values")
                 if getattr(self, o)]  # fmt: skip
        if given:
            listed = ", ".join(repr(o) for o in given)
            raise ValueError(f"{listed} cannot go with a constant 'value'")
        from ..transform import constant_value  # the cleaners are compiled there

        try:
            constant_value(self)
        except ValueError as exc:
            raise ValueError(f"value {self.value!r} is not a valid {self.type}: {exc}") from None
        return self

    @property
    def fields(self) -> list[str]:
        """The fields the spec reads (none for a constant)."""
        if self.field is None:
            return []
        return [self.field] if isinstance(self.field, str) else list(self.field)


def _no_constant(spec: FieldSpec | None, what: str) -> None:
    if spec is not None and spec.value is not None:
        raise ValueError(f"{what} must be read from the record ('field'), not a constant 'value'")


class RecordSpec(_Frozen):
    """Record-level meaning: when it last changed (for survivorship) and whether it is deleted."""

    timestamp: FieldSpec | None = None
    deleted: FieldSpec | None = None

    @model_validator(mode="after")
    def _read_from_records(self) -> RecordSpec:
        _no_constant(self.timestamp, "record.timestamp")
        _no_constant(self.deleted, "record.deleted")
        return self


class IdentifierSpec(_Frozen):
    email: FieldSpec | None = None
    phone: FieldSpec | None = None
    external: dict[str, FieldSpec] = Field(default_factory=dict)
    merged_into: dict[str, FieldSpec] = Field(default_factory=dict)
    """Namespace -> the field naming the record this one was merged into (Salesforce's
    MasterRecordId). Such a record becomes an alias: its external ids join the master's profile
    (records elsewhere still point at the merged-away id), and it brings no other data."""

    @field_validator("phone", mode="before")
    @classmethod
    def _phone_typed(cls, value: Any) -> Any:
        if isinstance(value, str | list):
            return {"field": value, "type": "phone"}
        if isinstance(value, dict):
            return {"type": "phone", **value}
        return value

    @field_validator("external")
    @classmethod
    def _namespaces(cls, external: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for namespace in external:
            if not namespace or any(c.isspace() for c in namespace):
                raise ValueError(f"external id namespace {namespace!r} must be a non-empty word")
        return external

    @model_validator(mode="after")
    def _merged_into_known_namespace(self) -> IdentifierSpec:
        import difflib

        for namespace in self.merged_into:
            if namespace not in self.external:
                close = difflib.get_close_matches(namespace, list(self.external), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"merged_into namespace {namespace!r} is not one of identifiers.external "
                    f"({', '.join(sorted(self.external)) or 'none'}){hint}"
                )
        return self

    @model_validator(mode="after")
    def _read_from_records(self) -> IdentifierSpec:
        """A constant identifier would join every record of the stream into one person."""
        _no_constant(self.email, "identifiers.email")
        _no_constant(self.phone, "identifiers.phone")
        for namespace, spec in self.external.items():
            _no_constant(spec, f"identifiers.external.{namespace}")
        return self


class EventMapping(_Frozen):
    """Turns a record into one behaviour event, e.g. an order line into a `purchase`."""

    type: str | None = Field(default=None, pattern=NAME_PATTERN)
    type_field: str | None = None
    type_map: dict[str, str] = Field(default_factory=dict)
    only_mapped: bool = False
    when: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    """Only records whose field has this value (or one of a list); see syncbridge.filters."""
    time: FieldSpec
    properties: dict[str, FieldSpec] = Field(default_factory=dict)
    each: str | None = None
    """A list in the record (`lineItems`, `properties.products`): one event per item, whose
    fields are read as `item.<field>` beside the record's own (an order's lines become one
    `purchase` each, carrying the order's fields too). An empty or absent list makes none."""

    @model_validator(mode="after")
    def _one_type_source(self) -> EventMapping:
        if (self.type is None) == (self.type_field is None):
            raise ValueError("give exactly one of 'type' (a constant) or 'type_field'")
        if self.each is None and any(_of_item(f) for f in self._fields_read()):
            raise ValueError(f"'{ITEM}.' fields read a list's items: set 'each' to the list")
        if self.time.type not in ("datetime", "date"):
            raise ValueError("'time' must be a datetime or date field")
        _no_constant(self.time, "'time'")
        return self

    def _fields_read(self) -> list[str]:
        fields = [*self.time.fields, *self.when, *([self.type_field] if self.type_field else [])]
        for spec in self.properties.values():
            fields += spec.fields
        return fields


class Mapping(_Frozen):
    description: str = ""
    columns: ColumnMatching = "exact"
    """How field names match the record's: `"ignore-case"` for sources that change the case of
    their headers (Salesforce Data Loader up to v60 upper-cases them, later versions do not).
    Only a path's first segment (the column, or the top-level JSON key) is matched that way."""
    record: RecordSpec = RecordSpec()
    identifiers: IdentifierSpec = IdentifierSpec()
    attributes: dict[str, FieldSpec] = Field(default_factory=dict)
    events: list[EventMapping] = Field(default_factory=list)

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, attributes: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        import re

        for name in attributes:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"attribute name {name!r} must be lower_snake_case")
            if name in ("email", "email_valid"):
                raise ValueError(f"attribute {name!r} is set from identifiers.email")
        return attributes

    @model_validator(mode="after")
    def _says_something(self) -> Mapping:
        ids = self.identifiers
        if not (ids.email or ids.phone or ids.external):
            raise ValueError("identifiers: map at least one of email, phone or external ids")
        return self

    def field_references(self) -> list[tuple[str, str]]:
        """(key path in the mapping file, source field) for every field the mapping reads."""
        refs: list[tuple[str, str]] = []

        def add(path: str, spec: FieldSpec | None) -> None:
            if spec is not None:
                refs.extend((path, f) for f in spec.fields)
                if spec.region_field:
                    refs.append((f"{path}.region_field", spec.region_field))

        add("record.timestamp", self.record.timestamp)
        add("record.deleted", self.record.deleted)
        add("identifiers.email", self.identifiers.email)
        add("identifiers.phone", self.identifiers.phone)
        for ns, spec in self.identifiers.external.items():
            add(f"identifiers.external.{ns}", spec)
        for ns, spec in self.identifiers.merged_into.items():
            add(f"identifiers.merged_into.{ns}", spec)
        for name, spec in self.attributes.items():
            add(f"attributes.{name}", spec)
        for i, event in enumerate(self.events):
            start = len(refs)
            add(f"events[{i}].time", event.time)
            if event.type_field:
                refs.append((f"events[{i}].type_field", event.type_field))
            refs.extend((f"events[{i}].when", f) for f in event.when)
            for name, spec in event.properties.items():
                add(f"events[{i}].properties.{name}", spec)
            if event.each is not None:  # an item's fields are the list's, not the record's
                refs[start:] = [r for r in refs[start:] if not _of_item(r[1])]
                refs.append((f"events[{i}].each", event.each))
        return refs


def _of_item(field: str) -> bool:
    return field == ITEM or field.startswith(ITEM + ".")
