"""A stateful fake of the Salesforce REST API and Bulk API 2.0 query jobs, served over real HTTP
on 127.0.0.1, that simple-salesforce itself talks to. Facts are from
/work/shared/reference/sources.md section 1 and simple-salesforce 1.12.10's own source.

Connecting simple-salesforce
    simple-salesforce hard-codes ``https://`` (``Salesforce.base_url`` and ``bulk2_url``,
    ``SFType.base_url``, and ``query_more(identifier_is_url=True)`` all build
    ``https://{sf_instance}``), so an ``http://`` ``instance_url`` is not enough, and patching
    ``sf.base_url`` misses SFType and query_more. It does take a custom ``session=``, so the fake
    hands out a ``requests.Session`` (:meth:`FakeSalesforce.http_session`) whose transport
    adapter, mounted on ``https://127.0.0.1:PORT/`` and on the login hosts
    ``https://{login,test,fake-login}.salesforce.com/``, sends each request as plain HTTP to
    ``127.0.0.1:PORT`` (no TLS, no DNS). Any other URL raises ``requests.ConnectionError``, so a
    test cannot reach the network::

        sf = fake.client()        # Salesforce(instance_url=fake.instance_url, session_id=...,
                                  #            session=fake.http_session())
        sf = fake.login_client()  # SOAP login: username, password, security_token,
                                  #            domain="fake-login", session=fake.http_session()

    The SOAP login (``/services/Soap/u/{version}``) and the OAuth token endpoint
    (``/services/oauth2/token``: username-password, client-credentials and JWT bearer grants; for
    a My Domain such as ``domain="acme.my"`` use ``fake.http_session("acme.my")``) check
    ``fake.credentials`` and issue fresh session ids, so simple-salesforce's automatic re-login
    after a 401 ``INVALID_SESSION_ID`` works. A JWT's signature is checked only when
    ``credentials.jwt_public_key`` is set. Refusals are Salesforce's: a SOAP fault (HTTP 500,
    ``sf:INVALID_LOGIN`` with ``exceptionCode`` / ``exceptionMessage``) and OAuth's HTTP 400
    ``{"error": "invalid_grant" | "invalid_client", "error_description": ...}``. A login URL of
    any host (a proxy, ``http_session(login_urls=[...])``) reaches the same endpoints; each
    recorded request keeps the URL the client asked for (``RecordedRequest.url``).

Bulk API 2.0
    ``sf.bulk2.Contact.query(soql, max_records=N, wait=0)``: the library sleeps ``wait`` seconds
    (default 5) before its first poll, so pass ``wait=0`` or a small value in tests. A job answers
    ``UploadComplete`` when created, ``InProgress`` on the first poll and ``JobComplete`` (or
    ``Failed`` with ``errorMessage`` for a bad query) on poll number ``bulk_polls`` (default 2).
    Its rows are snapshotted when the job is created. Results are CSV with every value quoted
    (as in the docs' example), a header row on every page, empty cells for nulls, datetimes as
    ``2024-01-01T00:00:00.000Z``; the ``Sforce-Locator`` is base64 of the next offset (like the
    docs' ``MTAwMDA``), or ``null``. ``DELETE jobs/query/{id}`` removes a finished job (204).
    Bulk calls are ordinary ``/services/data`` calls: they need a valid session (401
    ``INVALID_SESSION_ID`` otherwise), count against the daily limit and carry
    ``Sforce-Limit-Info``.

SOQL subset
    ``SELECT f, Parent.f | COUNT() FROM Obj [WHERE ...] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST],
    ...] [LIMIT n] [OFFSET n]``. Conditions: ``= != < <= > >=``, ``LIKE``, ``[NOT] IN (...)``,
    ``NOT``, parentheses; mixing AND and OR without parentheses is a ``MALFORMED_QUERY``, as the
    SOQL docs require. Names are case-insensitive; string comparisons ignore case; ``!=`` matches
    nulls. Literal types are checked against the field (a quoted datetime is ``INVALID_FIELD``).
    Date literals such as ``TODAY``, functions, aggregates other than ``COUNT()``, GROUP BY and
    subqueries are not supported (``MALFORMED_QUERY``).

REST query cursors
    A query renders all its rows when it starts; ``nextRecordsUrl`` pages come from that
    snapshot (so a record changed while paging stays on its page, with its old values), pages of
    2,000 or ``Sforce-Query-Options: batchSize=N`` clamped to 200..2,000, read from each request
    (the query and every ``nextRecordsUrl`` call: the header is per call, as QueryOptions is
    for SOAP ``query()`` and ``queryMore()``; without it a page is 2,000). A page can be fetched
    again (a client's retry); cursors live until :meth:`FakeSalesforce.expire_cursors`.

Time
    Timestamps come from the fake's clock, which stands still (at ``clock=``, default
    2024-01-01T00:00:00Z) until :meth:`FakeSalesforce.set_clock` or
    :meth:`FakeSalesforce.advance` moves it, and are truncated to the second, so many records can
    share one SystemModstamp.

Test-facing API (:class:`FakeSalesforce`)
    Set-up and changes: ``add_object``, ``insert``/``insert_many``, ``update``, ``touch``,
    ``delete`` (recycle bin), ``purge``, ``merge``, ``convert_lead``; clock: ``set_clock``,
    ``advance``; sessions: ``session_id``, ``new_session``, ``expire_session``; limits:
    ``daily_limit``, ``api_calls`` (every authenticated ``/services/data`` call counts; logins
    do not), ``api_usage`` (a Counter by resource); sabotage: ``fail_next``, ``reset_next``,
    ``fail_randomly`` (a seeded share of 503 ``SERVER_UNAVAILABLE``), ``expire_session_on``
    (every session expires at the nth matching request), ``expire_cursors``; inspection: ``requests``, ``get``, ``records``. A connector that takes a
    session factory can use ``fake.http_session`` as one.

Guesses (not confirmed in the docs): the cursor-expired error (400 ``INVALID_QUERY_LOCATOR``),
the bulk results-before-complete error (412 ``JOB_NOT_COMPLETE``, from an old docs page), the
bad-locator error, ``!=`` matching nulls, and the 15-day window of ``sobjects/X/deleted``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import html
import io
import itertools
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import Message
from typing import Any, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import jwt
import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from simple_salesforce import Salesforce

from .http import LoopbackFake, take_fault

JSON = dict[str, Any]
DEFAULT_CLOCK = datetime(2024, 1, 1, tzinfo=UTC)
MAX_BATCH, MIN_BATCH = 2000, 200
DELETED_LOG_DAYS = 15
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ORG_ID = "00D5E0000000001AAA"
USER_ID = "0055E0000000001AAA"
ORIGINAL_URL_HEADER = "X-Fake-Original-Url"  # set by the loopback adapter, for assertions

# ------------------------------------------------------------------------ ids and values

_ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def id18(id15: str) -> str:
    """The 18-character form of a 15-character id (the case-encoding checksum suffix)."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        suffix += _ID_SUFFIX[sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")]
    return id15 + suffix


def make_id(prefix: str, number: int) -> str:
    return id18(f"{prefix}5E{number:010d}")


def sf_datetime(moment: datetime) -> str:
    """A datetime as the REST API writes it: 2024-01-01T00:00:00.000+0000."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def csv_datetime(moment: datetime) -> str:
    """A datetime as Bulk API 2.0 CSV writes it: 2024-01-01T00:00:00.000Z."""
    return sf_datetime(moment).removesuffix("+0000") + "Z"


def parse_datetime(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ------------------------------------------------------------------------ schema

NUMERIC_TYPES = frozenset({"currency", "double", "int", "percent"})
TEXT_TYPES = frozenset({"id", "reference", "string", "email", "phone", "picklist", "textarea"})
TEXT_TYPES |= {"url"}
FIELD_TYPES = NUMERIC_TYPES | TEXT_TYPES | {"boolean", "date", "datetime"}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    custom: bool = False
    nillable: bool = True
    updateable: bool = True
    reference_to: str | None = None

    @property
    def label(self) -> str:
        base = self.name.removesuffix("__c").replace("_", " ")
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base)

    @property
    def relationship_name(self) -> str | None:
        if self.reference_to is None:
            return None
        return self.name[:-3] + "__r" if self.custom else self.name.removesuffix("Id")

    def describe(self) -> JSON:
        return {
            "name": self.name,
            "type": self.type,
            "label": self.label,
            "custom": self.custom,
            "nillable": self.nillable,
            "updateable": self.updateable,
            "referenceTo": [self.reference_to] if self.reference_to else [],
            "relationshipName": self.relationship_name,
        }

    def coerce(self, value: Any) -> Any:
        """A test-supplied value in the type the store keeps."""
        if value is None:
            return None
        if self.type == "datetime":
            moment = parse_datetime(value) if isinstance(value, str) else value
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if self.type == "date":
            if isinstance(value, datetime):
                return value.date()
            return date.fromisoformat(value) if isinstance(value, str) else value
        if self.type == "boolean":
            return bool(value)
        if self.type == "int":
            return int(value)
        if self.type in NUMERIC_TYPES:
            return float(value)
        return str(value)


def parse_field(line: str) -> FieldSpec:
    """``"Name type [Target] [required] [readonly]"``, e.g. ``"AccountId reference Account"``."""
    name, kind, *rest = line.split()
    target = next((word for word in rest if word not in ("required", "readonly")), None)
    return FieldSpec(
        name,
        kind,
        custom=name.endswith("__c"),
        nillable="required" not in rest and kind != "boolean",
        updateable="readonly" not in rest,
        reference_to=target,
    )


SYSTEM_FIELDS = (
    "Id id required readonly",
    "IsDeleted boolean readonly",
    "CreatedDate datetime required readonly",
    "LastModifiedDate datetime required readonly",
    "SystemModstamp datetime required readonly",
)
PERSON_FIELDS = (
    "FirstName string",
    "LastName string required",
    "Name string readonly",
    "Email email",
    "Phone phone",
    "Title string",
    "LeadSource picklist",
    "HasOptedOutOfEmail boolean",
    "IsEmailBounced boolean readonly",
    "EmailBouncedReason string",
    "EmailBouncedDate datetime",
)
STANDARD_OBJECTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Account": (
        "001",
        (
            "Name string required",
            "Type picklist",
            "Industry picklist",
            "Website url",
            "Phone phone",
            "BillingCity string",
            "BillingCountry string",
            "AnnualRevenue currency",
            "NumberOfEmployees int",
            "ParentId reference Account",
            "MasterRecordId reference Account readonly",
        ),
    ),
    "Contact": (
        "003",
        (
            *PERSON_FIELDS,
            "MobilePhone phone",
            "Birthdate date",
            "MailingStreet textarea",
            "MailingCity string",
            "MailingState string",
            "MailingCountry string",
            "MailingPostalCode string",
            "AccountId reference Account",
            "MasterRecordId reference Contact readonly",
        ),
    ),
    "Lead": (
        "00Q",
        (
            *PERSON_FIELDS,
            "Company string required",
            "Status picklist required",
            "City string",
            "Country string",
            "IsConverted boolean readonly",
            "ConvertedDate date readonly",
            "ConvertedContactId reference Contact readonly",
            "ConvertedAccountId reference Account readonly",
            "ConvertedOpportunityId reference Opportunity readonly",
            "MasterRecordId reference Lead readonly",
        ),
    ),
    "Opportunity": (
        "006",
        (
            "Name string required",
            "AccountId reference Account",
            "StageName picklist required",
            "Amount currency",
            "CloseDate date required",
            "Probability percent",
            "Type picklist",
            "LeadSource picklist",
            "IsClosed boolean readonly",
            "IsWon boolean readonly",
        ),
    ),
    "OpportunityContactRole": (
        "00K",
        (
            "OpportunityId reference Opportunity required",
            "ContactId reference Contact required",
            "Role picklist",
            "IsPrimary boolean",
        ),
    ),
    "Campaign": (
        "701",
        (
            "Name string required",
            "Type picklist",
            "Status picklist",
            "IsActive boolean",
            "StartDate date",
        ),
    ),
    "CampaignMember": (
        "00v",
        (
            "CampaignId reference Campaign required",
            "ContactId reference Contact",
            "LeadId reference Lead",
            "Status picklist",
            "HasResponded boolean readonly",
            "FirstRespondedDate date readonly",
        ),
    ),
}
PERSON_OBJECTS = frozenset({"Contact", "Lead"})
MERGEABLE = frozenset({"Account", "Contact", "Lead"})


@dataclass
class ObjectSpec:
    name: str
    prefix: str
    custom: bool
    fields: dict[str, FieldSpec]  # by lower-case name
    relationships: dict[str, FieldSpec] = field(default_factory=dict)  # lower-case rel. name

    @classmethod
    def build(cls, name: str, prefix: str, lines: Iterable[str]) -> ObjectSpec:
        specs = [parse_field(line) for line in (*SYSTEM_FIELDS, *lines)]
        spec = cls(name, prefix, name.endswith("__c"), {f.name.lower(): f for f in specs})
        for f in specs:
            if f.relationship_name:
                spec.relationships[f.relationship_name.lower()] = f
        return spec

    def field(self, name: str) -> FieldSpec | None:
        return self.fields.get(name.lower())

    def describe(self) -> JSON:
        return {
            "name": self.name,
            "label": self.name.removesuffix("__c").replace("_", " "),
            "custom": self.custom,
            "keyPrefix": self.prefix,
            "queryable": True,
            "fields": [f.describe() for f in self.fields.values()],
        }


# ------------------------------------------------------------------------ the org's data


class Org:
    """Objects, their records (soft-deleted ones included), the deletion log and the clock."""

    def __init__(self, clock: datetime) -> None:
        self.objects: dict[str, ObjectSpec] = {}  # by lower-case name
        self.records: dict[str, dict[str, JSON]] = {}  # object name -> id -> record
        self.deleted_log: dict[str, list[tuple[str, datetime]]] = {}
        self.clock = clock
        self._numbers = itertools.count(1)
        self._custom_prefixes = (f"a{n:02d}" for n in itertools.count())
        for name, (prefix, lines) in STANDARD_OBJECTS.items():
            self.add(ObjectSpec.build(name, prefix, lines))

    def add(self, spec: ObjectSpec) -> None:
        self.objects[spec.name.lower()] = spec
        self.records.setdefault(spec.name, {})
        self.deleted_log.setdefault(spec.name, [])

    def add_custom(self, name: str, fields: Mapping[str, str] | Iterable[str]) -> ObjectSpec:
        """``fields``: names (text), or name -> type, where a lookup is ``"reference:Account"``."""
        types = dict(fields) if isinstance(fields, Mapping) else dict.fromkeys(fields, "string")
        types.setdefault("Name", "string")
        lines = [f"{n} {t.replace(':', ' ')}" for n, t in types.items()]
        for n, t in types.items():
            if t.split(":")[0] not in FIELD_TYPES:
                raise ValueError(f"unknown type {t!r} for {n}; use one of {sorted(FIELD_TYPES)}")
        spec = ObjectSpec.build(name, next(self._custom_prefixes), lines)
        self.add(spec)
        return spec

    def spec(self, name: str) -> ObjectSpec:
        if (spec := self.objects.get(name.lower())) is None:
            raise KeyError(f"no object {name!r}; add it with add_object")
        return spec

    def now(self) -> datetime:
        return self.clock.replace(microsecond=0)

    def record(self, obj: str, record_id: str) -> JSON:
        spec = self.spec(obj)
        if (rec := self.records[spec.name].get(record_id)) is None:
            raise KeyError(f"no {spec.name} {record_id}")
        return rec

    def parent(self, ref: FieldSpec, record: JSON) -> JSON | None:
        target, parent_id = ref.reference_to, record.get(ref.name)
        return None if target is None or parent_id is None else self.records[target].get(parent_id)

    # --- writes (each stamps LastModifiedDate and SystemModstamp unless the test sets them)

    def insert(self, obj: str, fields: JSON) -> str:
        spec = self.spec(obj)
        now = self.now()
        record_id = make_id(spec.prefix, next(self._numbers))
        record: JSON = {
            f.name: (False if f.type == "boolean" else None) for f in spec.fields.values()
        }
        stamps = {"CreatedDate": now, "LastModifiedDate": now, "SystemModstamp": now}
        record |= {"Id": record_id, "IsDeleted": False} | stamps
        self._write(spec, record, fields, stamp=False)
        self.records[spec.name][record_id] = record
        return record_id

    def update(self, obj: str, record_id: str, fields: JSON) -> None:
        spec = self.spec(obj)
        self._write(spec, self.record(spec.name, record_id), fields)

    def delete(self, obj: str, record_id: str, master_id: str | None = None) -> None:
        spec = self.spec(obj)
        record = self.record(spec.name, record_id)
        if record["IsDeleted"]:
            raise ValueError(f"{spec.name} {record_id} is already deleted")
        changes: JSON = {"IsDeleted": True}
        if master_id is not None:
            changes["MasterRecordId"] = master_id
        self._write(spec, record, changes)
        self.deleted_log[spec.name].append((record_id, self.now()))

    def merge(self, obj: str, winner_id: str, loser_id: str) -> None:
        spec = self.spec(obj)
        if spec.name not in MERGEABLE:
            raise ValueError(f"{spec.name} records cannot be merged")
        self.update(spec.name, winner_id, {})
        self.delete(spec.name, loser_id, master_id=winner_id)

    def purge(self, obj: str, record_id: str) -> None:
        """Empty the record out of the recycle bin: queryAll no longer sees it."""
        spec = self.spec(obj)
        self.record(spec.name, record_id)
        del self.records[spec.name][record_id]

    def _write(self, spec: ObjectSpec, record: JSON, fields: JSON, stamp: bool = True) -> None:
        given = set()
        for name, value in fields.items():
            if (f := spec.field(name)) is None or f.name == "Id":
                raise KeyError(f"{spec.name} has no settable field {name!r}")
            record[f.name] = f.coerce(value)
            given.add(f.name)
        if spec.name in PERSON_OBJECTS:
            parts = (record.get("FirstName"), record.get("LastName"))
            record["Name"] = " ".join(p for p in parts if p) or None
        if spec.name == "Opportunity":  # derived from the stage, as the standard stages define
            stage = str(record.get("StageName") or "")
            record["IsClosed"] = stage.startswith("Closed")
            record["IsWon"] = stage == "Closed Won"
        for name in ("LastModifiedDate", "SystemModstamp"):
            if stamp and name not in given:
                record[name] = self.now()


# ------------------------------------------------------------------------ SOQL: parsing


class SoqlError(Exception):
    """A query Salesforce refuses: answered as 400 with ``errorCode``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
    | (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))
    | (?P<date>\d{4}-\d\d-\d\d)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)
    | (?P<op>!=|<=|>=|=|<|>)
    | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
CLAUSE_WORDS = {"SELECT", "FROM", "WHERE", "ORDER", "BY", "LIMIT", "OFFSET"}
OPERATOR_WORDS = {"AND", "OR", "NOT", "IN", "LIKE", "ASC", "DESC", "NULLS"}
KEYWORDS = frozenset(CLAUSE_WORDS | OPERATOR_WORDS)
ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


@dataclass(frozen=True)
class Token:
    kind: str  # a TOKEN_RE group name, or "eof"
    text: str
    pos: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "name" and self.text.upper() in words


@dataclass(frozen=True)
class FieldPath:
    text: str
    pos: int


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, boolean, null, datetime or date
    value: Any


@dataclass(frozen=True)
class Compare:
    path: FieldPath
    op: str
    value: Literal


@dataclass(frozen=True)
class InList:
    path: FieldPath
    values: tuple[Literal, ...]
    negate: bool


@dataclass(frozen=True)
class Like:
    path: FieldPath
    pattern: str


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND or OR
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Compare | InList | Like | BoolOp | Not


@dataclass(frozen=True)
class OrderItem:
    path: FieldPath
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Select:
    fields: tuple[FieldPath, ...]  # empty for COUNT()
    sobject: FieldPath
    where: Condition | None
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int

    @property
    def is_count(self) -> bool:
        return not self.fields


def tokenize(soql: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(soql):
        match = TOKEN_RE.match(soql, pos)
        if match is None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{soql[pos]}'")
        if match.lastgroup != "ws":
            tokens.append(Token(str(match.lastgroup), match.group(), pos))
        pos = match.end()
    return [*tokens, Token("eof", "", len(soql))]


class SoqlParser:
    """Recursive descent over the SOQL subset in the module docstring."""

    def __init__(self, soql: str) -> None:
        self.tokens = tokenize(soql)
        self.at = 0

    def parse(self) -> Select:
        self.word("SELECT")
        fields = self.select_list()
        self.word("FROM")
        sobject = self.path()
        where = self.condition() if self.accept_word("WHERE") else None
        order_by: list[OrderItem] = []
        if self.accept_word("ORDER"):
            self.word("BY")
            order_by.append(self.order_item())
            while self.accept(","):
                order_by.append(self.order_item())
        limit = self.integer() if self.accept_word("LIMIT") else None
        offset = self.integer() if self.accept_word("OFFSET") else 0
        if self.peek().kind != "eof":
            raise self.unexpected()
        return Select(fields, sobject, where, tuple(order_by), limit, offset)

    # --- clauses

    def select_list(self) -> tuple[FieldPath, ...]:
        if self.peek().is_word("COUNT") and self.tokens[self.at + 1].text == "(":
            self.at += 1
            self.expect("(")
            self.expect(")")
            return ()
        fields = [self.path()]
        while self.accept(","):
            fields.append(self.path())
        return tuple(dict.fromkeys(fields))

    def order_item(self) -> OrderItem:
        path = self.path()
        descending = self.accept_word("DESC")
        if not descending:
            self.accept_word("ASC")
        nulls_first = not descending
        if self.accept_word("NULLS"):
            token = self.advance()
            if not token.is_word("FIRST", "LAST"):
                raise self.unexpected(token)
            nulls_first = token.text.upper() == "FIRST"
        return OrderItem(path, descending, nulls_first)

    def condition(self) -> Condition:
        """Terms joined by one kind of operator: SOQL wants parentheses to mix AND and OR."""
        items, joiner = [self.term()], ""
        while (token := self.peek()).is_word("AND", "OR"):
            if joiner and token.text.upper() != joiner:
                raise self.unexpected(token)
            joiner = token.text.upper()
            self.advance()
            items.append(self.term())
        return items[0] if len(items) == 1 else BoolOp(joiner, tuple(items))

    def term(self) -> Condition:
        if self.accept_word("NOT"):
            return Not(self.term())
        if self.accept("("):
            inner = self.condition()
            self.expect(")")
            return inner
        return self.predicate()

    def predicate(self) -> Condition:
        path = self.path()
        token = self.peek()
        if token.kind == "op":
            self.advance()
            return Compare(path, token.text, self.literal())
        if self.accept_word("LIKE"):
            pattern = self.literal()
            if pattern.kind != "string":
                raise self.unexpected(self.tokens[self.at - 1])
            return Like(path, pattern.value)
        negate = self.accept_word("NOT")
        if not self.accept_word("IN"):
            raise self.unexpected()
        self.expect("(")
        values = [self.literal()]
        while self.accept(","):
            values.append(self.literal())
        self.expect(")")
        return InList(path, tuple(values), negate)

    # --- terminals

    def path(self) -> FieldPath:
        token = self.advance()
        if token.kind != "name" or token.text.upper() in KEYWORDS:
            raise self.unexpected(token)
        return FieldPath(token.text, token.pos)

    def literal(self) -> Literal:
        token = self.advance()
        text = token.text
        if token.kind == "string":
            return Literal(
                "string", re.sub(r"\\(.)", lambda m: ESCAPES.get(m[1], m[1]), text[1:-1])
            )
        if token.kind == "number":
            return Literal("number", float(text) if "." in text else int(text))
        if token.kind == "datetime":
            return Literal("datetime", parse_datetime(text))
        if token.kind == "date":
            return Literal("date", date.fromisoformat(text))
        if token.is_word("TRUE", "FALSE"):
            return Literal("boolean", text.upper() == "TRUE")
        if token.is_word("NULL"):
            return Literal("null", None)
        raise self.unexpected(token)

    def integer(self) -> int:
        token = self.advance()
        if token.kind != "number" or not token.text.isdigit():
            raise self.unexpected(token)
        return int(token.text)

    # --- token plumbing

    def peek(self) -> Token:
        return self.tokens[self.at]

    def advance(self) -> Token:
        token = self.tokens[self.at]
        self.at = min(self.at + 1, len(self.tokens) - 1)
        return token

    def accept(self, punct: str) -> bool:
        if self.peek().text == punct and self.peek().kind == "punct":
            self.at += 1
            return True
        return False

    def accept_word(self, word: str) -> bool:
        if self.peek().is_word(word):
            self.at += 1
            return True
        return False

    def expect(self, punct: str) -> None:
        if not self.accept(punct):
            raise self.unexpected()

    def word(self, word: str) -> None:
        if not self.accept_word(word):
            raise self.unexpected()

    def unexpected(self, token: Token | None = None) -> SoqlError:
        token = token or self.peek()
        shown = "<EOF>" if token.kind == "eof" else token.text
        return SoqlError("MALFORMED_QUERY", f"unexpected token: '{shown}'")


# ------------------------------------------------------------------------ SOQL: evaluation


@dataclass(frozen=True)
class FieldRef:
    """A field path resolved against the schema: lookups to follow, then a field."""

    hops: tuple[FieldSpec, ...]
    field: FieldSpec

    @property
    def text(self) -> str:
        return ".".join([*(h.relationship_name or "" for h in self.hops), self.field.name])

    def value(self, record: JSON, org: Org) -> Any:
        current: JSON | None = record
        for hop in self.hops:
            current = org.parent(hop, current) if current is not None else None
        return None if current is None else current.get(self.field.name)


Predicate = Callable[[JSON], bool]


def _fold(value: Any, ftype: str) -> Any:
    """Text compares without case, except ids."""
    return (
        value.casefold() if isinstance(value, str) and ftype not in ("id", "reference") else value
    )


def _compare(op: str, have: Any, want: Any) -> bool:
    if want is None or have is None:
        same = have is None and want is None
        return same if op == "=" else (not same) if op == "!=" else False
    return {
        "=": have == want,
        "!=": have != want,
        "<": have < want,
        "<=": have <= want,
        ">": have > want,
        ">=": have >= want,
    }[op]


def _like(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\\.|%|_)", pattern)
    wild = {"%": ".*", "_": "."}
    body = "".join(wild.get(p) or re.escape(p[1:] if p.startswith("\\") else p) for p in parts)
    return re.compile(body, re.IGNORECASE | re.DOTALL)


@dataclass
class CompiledQuery:
    """A parsed query bound to the schema; ``run`` gives the matching records, in order."""

    sobject: ObjectSpec
    columns: list[FieldRef]
    where: Predicate
    order_by: list[tuple[FieldRef, OrderItem]]
    limit: int | None
    offset: int
    is_count: bool

    def run(self, org: Org, include_deleted: bool) -> list[JSON]:
        rows = [
            r
            for r in org.records[self.sobject.name].values()
            if (include_deleted or not r["IsDeleted"]) and self.where(r)
        ]
        if self.order_by:
            rows.sort(key=functools.cmp_to_key(lambda a, b: self._cmp(org, a, b)))
        end = None if self.limit is None else self.offset + self.limit
        return rows[self.offset : end]

    def _cmp(self, org: Org, a: JSON, b: JSON) -> int:
        for ref, item in self.order_by:
            x, y = (_fold(ref.value(r, org), ref.field.type) for r in (a, b))
            if x is None or y is None:
                if x is None and y is None:
                    continue
                return (-1 if x is None else 1) * (1 if item.nulls_first else -1)
            order = (x > y) - (x < y)
            if order:
                return -order if item.descending else order
        return 0


class QueryCompiler:
    """Binds a parsed query to the org's schema, with Salesforce's errors for bad names."""

    def __init__(self, org: Org, soql: str) -> None:
        self.org, self.soql = org, soql

    def compile(self) -> CompiledQuery:
        select = SoqlParser(self.soql).parse()
        sobject = self.org.objects.get(select.sobject.text.lower())
        if sobject is None:
            raise SoqlError(
                "INVALID_TYPE",
                self._located(select.sobject)
                + f"sObject type '{select.sobject.text}' is not supported. If you are attempting "
                "to use a custom object, be sure to append the '__c' after the entity name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
            )
        self.sobject = sobject
        columns = [self.ref(p) for p in select.fields]
        order_by = [(self.ref(item.path), item) for item in select.order_by]
        where = self.predicate(select.where) if select.where else (lambda _r: True)
        return CompiledQuery(
            sobject, columns, where, order_by, select.limit, select.offset, select.is_count
        )

    def ref(self, path: FieldPath) -> FieldRef:
        *relationships, name = path.text.split(".")
        spec, hops = self.sobject, []
        for rel in relationships:
            hop = spec.relationships.get(rel.lower())
            if hop is None or hop.reference_to is None:
                raise SoqlError(
                    "INVALID_FIELD",
                    self._located(path) + f"Didn't understand relationship '{rel}' in field path. "
                    "If you are attempting to use a custom relationship, be sure to append the "
                    "'__r' after the custom relationship name. Please reference your WSDL or the "
                    "describe call for the appropriate names.",
                )
            hops.append(hop)
            spec = self.org.spec(hop.reference_to)
        if (found := spec.field(name)) is None:
            raise SoqlError(
                "INVALID_FIELD",
                self._located(path) + f"No such column '{name}' on entity '{spec.name}'. If you "
                "are attempting to use a custom field, be sure to append the '__c' after the "
                "custom field name. Please reference your WSDL or the describe call for the "
                "appropriate names.",
            )
        return FieldRef(tuple(hops), found)

    def predicate(self, cond: Condition) -> Predicate:
        org = self.org
        if isinstance(cond, BoolOp):
            parts = [self.predicate(c) for c in cond.items]
            combine = all if cond.op == "AND" else any
            return lambda r: combine(p(r) for p in parts)
        if isinstance(cond, Not):
            inner = self.predicate(cond.item)
            return lambda r: not inner(r)
        ref = self.ref(cond.path)
        ftype = ref.field.type
        if isinstance(cond, Like):
            if ftype not in TEXT_TYPES:
                raise self._type_error(ref, "string")
            regex = _like(cond.pattern)
            return lambda r: (v := ref.value(r, org)) is not None and bool(regex.fullmatch(v))
        if isinstance(cond, Compare):
            want = _fold(self.literal_value(ref, cond.value), ftype)
            op = cond.op
            if ftype == "boolean" and op not in ("=", "!="):
                raise SoqlError("INVALID_FIELD", f"invalid operator on boolean field: {op}")
            return lambda r: _compare(op, _fold(ref.value(r, org), ftype), want)
        wanted = [_fold(self.literal_value(ref, v), ftype) for v in cond.values]
        negate = cond.negate
        return lambda r: (_fold(ref.value(r, org), ftype) in wanted) != negate

    def literal_value(self, ref: FieldRef, literal: Literal) -> Any:
        ftype = ref.field.type
        if literal.kind == "null":
            return None
        expected = (
            "string" if ftype in TEXT_TYPES else "number" if ftype in NUMERIC_TYPES else ftype
        )
        if literal.kind != expected:
            raise self._type_error(ref, expected)
        value = literal.value
        if ftype in ("id", "reference") and len(value) == 15:
            value = id18(value)
        return value

    def _type_error(self, ref: FieldRef, expected: str) -> SoqlError:
        kind = {"number": "double", "datetime": "dateTime"}.get(expected, expected)
        quoting = "be enclosed" if expected == "string" else "not be enclosed"
        return SoqlError(
            "INVALID_FIELD",
            f"value of filter criterion for field '{ref.text}' must be of type {kind} and "
            f"should {quoting} in quotes",
        )

    def _located(self, path: FieldPath) -> str:
        """The caret display Salesforce puts before a bad name (single-line queries)."""
        return f"\n{self.soql}\n{' ' * path.pos}^\nERROR at Row:1:Column:{path.pos + 1}\n"


# ------------------------------------------------------------------------ rendering


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return sf_datetime(value)
    return value.isoformat() if isinstance(value, date) else value


def csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return csv_datetime(value)
    return value.isoformat() if isinstance(value, date) else str(value)


def attributes(obj: str, record_id: str, version: str) -> JSON:
    return {"type": obj, "url": f"/services/data/v{version}/sobjects/{obj}/{record_id}"}


def rest_record(query: CompiledQuery, record: JSON, org: Org, version: str) -> JSON:
    """One record as the query resource returns it; lookups become nested objects (or null)."""
    out: JSON = {"attributes": attributes(query.sobject.name, record["Id"], version)}
    for ref in query.columns:
        node, current = out, record
        for hop in ref.hops:
            rel, parent = str(hop.relationship_name), org.parent(hop, current)
            if parent is None:
                node.setdefault(rel, None)
                break
            if node.get(rel) is None:
                node[rel] = {"attributes": attributes(str(hop.reference_to), parent["Id"], version)}
            node, current = node[rel], parent
        else:
            node[ref.field.name] = json_value(current.get(ref.field.name))
    return out


# ------------------------------------------------------------------------ HTTP plumbing


class ApiError(Exception):
    """An error answered as Salesforce's JSON list of ``{message, errorCode}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> Response:
        return Response.json(self.status, [{"message": self.message, "errorCode": self.code}])


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


@dataclass
class Request:
    method: str
    path: str  # decoded, without a trailing slash
    query: dict[str, str]
    headers: Message
    body: bytes

    def json(self) -> JSON:
        try:
            doc = json.loads(self.body or b"null")
        except ValueError:
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not JSON") from None
        if not isinstance(doc, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        return doc


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # drop the connection instead of answering

    @classmethod
    def json(cls, status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(doc).encode()
        return cls(status, body, "application/json;charset=UTF-8", headers or {})

    @classmethod
    def text(cls, status: int, text: str, content_type: str) -> Response:
        return cls(status, text.encode(), content_type)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str

    @property
    def url(self) -> str:
        """The URL the client asked for (before the loopback adapter rerouted it)."""
        return self.headers.get(ORIGINAL_URL_HEADER, self.path)


@dataclass
class RandomFaults:
    """A share of matching requests fail with `status` (SERVER_UNAVAILABLE), drawn from a
    seeded generator so a test run repeats itself."""

    rate: float
    path_contains: str | None
    status: int
    rng: random.Random

    def response(self, path: str) -> Response | None:
        if self.path_contains is not None and self.path_contains not in path:
            return None
        if self.rng.random() >= self.rate:
            return None
        body = [{"message": "Server temporarily unavailable.", "errorCode": "SERVER_UNAVAILABLE"}]
        return Response.json(self.status, body)


@dataclass
class Fault:
    """A scripted failure: an error status, or (status None) a connection reset."""

    remaining: int
    path_contains: str | None
    status: int | None
    body: Any = None

    def response(self) -> Response:
        if self.status is None:
            return Response(0, reset=True)
        if isinstance(self.body, str):
            return Response.text(self.status, self.body, "text/html")
        default = [{"message": "Scripted failure.", "errorCode": "UNKNOWN_EXCEPTION"}]
        return Response.json(self.status, default if self.body is None else self.body)


# ------------------------------------------------------------------------ authentication


SOAP_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns="urn:partner.soap.sforce.com" xmlns:sf="urn:fault.partner.soap.sforce.com" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{}</soapenv:Body>'
    "</soapenv:Envelope>"
)
LOGIN_FAULT = (
    "<soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: "
    "Invalid username, password, security token; or user locked out.</faultstring><detail>"
    '<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>'
    "<sf:exceptionMessage>Invalid username, password, security token; or user locked out."
    "</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault>"
)


def oauth_error(code: str, description: str) -> Response:
    return Response.json(400, {"error": code, "error_description": description})


def basic_pair(authorization: str) -> tuple[str, str]:
    """The (user, password) of a Basic Authorization header; blanks if it is not one."""
    try:
        text = base64.b64decode(authorization.removeprefix("Basic ")).decode()
    except (ValueError, binascii.Error):
        return "", ""
    user, _, password = text.partition(":")
    return user, password


def jwt_claims(assertion: str, public_key: str | None) -> JSON:
    """The claims of a JWT bearer assertion; the RS256 signature is checked when a public key
    is configured. An unreadable or badly signed assertion has no claims."""
    check = public_key is not None
    try:
        claims = jwt.decode(
            assertion,
            public_key or "",
            algorithms=["RS256"],
            options={"verify_signature": check, "verify_aud": False},
        )
        return dict(claims)
    except jwt.PyJWTError:
        return {}


@dataclass
class Credentials:
    username: str = "syncbridge@example.com"
    password: str = "hunter2"
    security_token: str = "TOKEN123"
    consumer_key: str = "3MVG9fake.consumer.key"
    consumer_secret: str = "FAKE0CONSUMER0SECRET"
    jwt_public_key: str | None = None  # PEM; when set, JWT bearer assertions must be signed


class Sessions:
    """Issued session ids; a login issues a new one, ``expire_all`` invalidates them."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.latest = ""
        self._numbers = itertools.count(1)

    def issue(self) -> str:
        self.latest = f"{ORG_ID[:15]}!AQ4AQFakeSession{next(self._numbers):06d}"
        self.valid.add(self.latest)
        return self.latest

    def expire_all(self) -> None:
        self.valid.clear()


class LoginApi:
    """SOAP ``login`` and the OAuth token endpoint (password, client-credentials, JWT bearer)."""

    def __init__(self, credentials: Credentials, sessions: Sessions) -> None:
        self.credentials, self.sessions = credentials, sessions
        self.instance_url = ""  # set once the server's port is known

    def handle(self, req: Request) -> Response:
        if req.method != "POST":
            raise not_found()
        if req.path.startswith("/services/Soap/u/"):
            return self.soap_login(req)
        return self.oauth_token(req)

    def soap_login(self, req: Request) -> Response:
        body = req.body.decode()
        found = {
            tag: html.unescape(m[1])
            for tag in ("username", "password")
            if (m := re.search(rf"<(?:\w+:)?{tag}>(.*?)</(?:\w+:)?{tag}>", body, re.DOTALL))
        }
        c = self.credentials
        accepted = {c.password + c.security_token}
        if "organizationId>" in body:  # the IP-filtering flow sends no token
            accepted.add(c.password)
        if found.get("username") != c.username or found.get("password") not in accepted:
            return Response.text(500, SOAP_ENVELOPE.format(LOGIN_FAULT), "text/xml; charset=utf-8")
        version = req.path.rsplit("/", 1)[-1]
        session_id = self.sessions.issue()
        result = (
            f"<loginResponse><result><passwordExpired>false</passwordExpired>"
            f"<sandbox>false</sandbox><serverUrl>{self.instance_url}/services/Soap/u/{version}/"
            f"{ORG_ID[:15]}</serverUrl><sessionId>{session_id}</sessionId>"
            f"<userId>{USER_ID}</userId></result></loginResponse>"
        )
        return Response.text(200, SOAP_ENVELOPE.format(result), "text/xml; charset=utf-8")

    def oauth_token(self, req: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode()).items()}
        c, grant = self.credentials, form.get("grant_type")
        app = (c.consumer_key, c.consumer_secret)
        if grant == "password":
            client_ok = (form.get("client_id"), form.get("client_secret")) == app
            passwords = (c.password, c.password + c.security_token)
            user_ok = form.get("username") == c.username and form.get("password") in passwords
        elif grant == "client_credentials":
            client_ok, user_ok = basic_pair(req.headers.get("Authorization", "")) == app, True
        elif grant == JWT_BEARER:
            claims = jwt_claims(form.get("assertion", ""), c.jwt_public_key)
            client_ok, user_ok = (
                claims.get("iss") == c.consumer_key,
                claims.get("sub") == c.username,
            )
        else:
            return oauth_error("unsupported_grant_type", "grant type not supported")
        if not client_ok:
            return oauth_error("invalid_client", "invalid client credentials")
        if not user_ok:
            return oauth_error("invalid_grant", "authentication failure")
        token = {
            "access_token": self.sessions.issue(),
            "instance_url": self.instance_url,
            "id": f"{self.instance_url}/id/{ORG_ID}/{USER_ID}",
            "token_type": "Bearer",
            "issued_at": "1704067200000",
            "signature": "ZmFrZQ==",
        }
        return Response.json(200, token)


# ------------------------------------------------------------------------ the data API


@dataclass
class QueryCursor:
    """The rows of a query, rendered when it started: later pages come from this snapshot."""

    rows: list[JSON]
    batch_size: int
    endpoint: str  # query or queryAll


@dataclass
class QueryJob:
    """A Bulk API 2.0 query job; its CSV rows are taken when it is created."""

    id: str
    operation: str
    query: str
    object: str
    api_version: str
    created: datetime
    column_delimiter: str
    line_ending: str
    header: list[str]
    rows: list[list[str]]
    error: str | None
    polls: int = 0
    state: str = "UploadComplete"

    def poll(self, polls_to_finish: int) -> None:
        self.polls += 1
        if self.state in ("UploadComplete", "InProgress"):
            done = self.polls >= polls_to_finish
            self.state = ("Failed" if self.error else "JobComplete") if done else "InProgress"

    def info(self) -> JSON:
        doc: JSON = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": USER_ID,
            "createdDate": sf_datetime(self.created),
            "systemModstamp": sf_datetime(self.created),
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        }
        if self.state == "JobComplete":
            doc |= {"numberRecordsProcessed": len(self.rows), "retries": 0}
        if self.state == "Failed":
            doc["errorMessage"] = self.error
        return doc

    def page(self, offset: int, limit: int) -> tuple[str, str]:
        """The CSV text of rows [offset, offset+limit) and the next locator (or "null")."""
        delimiter = CSV_DELIMITERS[self.column_delimiter]
        terminator = "\r\n" if self.line_ending == "CRLF" else "\n"
        buffer = io.StringIO()
        writer = csv.writer(
            buffer, delimiter=delimiter, lineterminator=terminator, quoting=csv.QUOTE_ALL
        )
        writer.writerow(self.header)
        writer.writerows(self.rows[offset : offset + limit])
        end = offset + limit
        return buffer.getvalue(), encode_locator(end) if end < len(self.rows) else "null"


CSV_DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}


def encode_locator(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def decode_locator(locator: str) -> int:
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4)).decode()
        return int(text)
    except (ValueError, binascii.Error):
        raise ApiError(400, "INVALIDLOCATOR", f"Invalid locator: {locator}") from None


Handler = Callable[..., Response]


class DataApi:
    """The ``/services/data/vXX.X`` routing table and its handlers."""

    def __init__(self, org: Org, fake: FakeSalesforce) -> None:
        self.org, self.fake = org, fake
        self.cursors: dict[str, QueryCursor] = {}
        self.jobs: dict[str, QueryJob] = {}
        self._cursor_numbers = itertools.count(1)
        self._job_numbers = itertools.count(1)
        obj, rid = r"(?P<obj>\w+)", r"(?P<record_id>[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?)"
        endpoint = "(?P<endpoint>query|queryAll)"
        cursor = r"(?P<cursor>01g\w+)-(?P<offset>\d+)"
        table: list[tuple[str, str, str, Handler]] = [
            ("GET", "limits", "limits", self.limits),
            ("GET", "sobjects", "describeGlobal", self.describe_global),
            ("GET", f"sobjects/{obj}/describe", "describe", self.describe),
            ("GET", f"sobjects/{obj}/deleted", "getDeleted", self.get_deleted),
            ("GET", f"sobjects/{obj}/{rid}", "retrieve", self.retrieve),
            ("GET", endpoint, "query", self.query),
            ("GET", rf"{endpoint}/{cursor}", "queryMore", self.query_more),
            ("POST", "jobs/query", "bulk2Create", self.create_job),
            ("GET", r"jobs/query/(?P<job_id>750\w+)", "bulk2Job", self.get_job),
            ("GET", r"jobs/query/(?P<job_id>750\w+)/results", "bulk2Results", self.job_results),
            ("DELETE", r"jobs/query/(?P<job_id>750\w+)", "bulk2Delete", self.delete_job),
        ]  # fmt: skip
        prefix = r"/services/data/v(?P<version>\d+\.\d+)/"
        self.routes = [
            (method, re.compile(prefix + pattern), name, handler)
            for method, pattern, name, handler in table
        ]

    def route(self, req: Request) -> tuple[str, Callable[[], Response]]:
        """The usage name of the request's resource, and a call that answers it."""
        for method, pattern, name, handler in self.routes:
            if method == req.method and (match := pattern.fullmatch(req.path)):
                return name, functools.partial(handler, req, **match.groupdict())
        return "unknown", lambda: not_found().response()

    # --- org

    def limits(self, req: Request, version: str) -> Response:
        fake = self.fake
        remaining = max(fake.daily_limit - fake.api_calls, 0)
        jobs = {"Max": 10000, "Remaining": 10000 - len(self.jobs)}
        doc = {
            "DailyApiRequests": {"Max": fake.daily_limit, "Remaining": remaining},
            "DailyBulkV2QueryJobs": jobs,
        }
        return Response.json(200, doc)

    def describe_global(self, req: Request, version: str) -> Response:
        sobjects = [
            {k: v for k, v in spec.describe().items() if k != "fields"}
            for spec in self.org.objects.values()
        ]
        return Response.json(200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects})

    def describe(self, req: Request, version: str, obj: str) -> Response:
        return Response.json(200, self._spec(obj).describe())

    def retrieve(self, req: Request, version: str, obj: str, record_id: str) -> Response:
        spec = self._spec(obj)
        record = self.org.records[spec.name].get(id18(record_id[:15]))
        if record is None:
            raise not_found()
        if record["IsDeleted"]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        doc = {"attributes": attributes(spec.name, record["Id"], version)}
        return Response.json(200, doc | {k: json_value(v) for k, v in record.items()})

    def get_deleted(self, req: Request, version: str, obj: str) -> Response:
        spec = self._spec(obj)
        try:
            start, end = (parse_datetime(req.query[k]) for k in ("start", "end"))
        except (KeyError, ValueError):
            raise ApiError(400, "MALFORMED_QUERY", "start and end must be ISO dates") from None
        now = self.org.now()
        earliest = now - timedelta(days=DELETED_LOG_DAYS)
        if start < earliest:
            raise ApiError(
                400,
                "INVALID_REPLICATION_DATE",
                f"startDate cannot be more than {DELETED_LOG_DAYS} days ago",
            )
        found = [
            {"id": rid, "deletedDate": sf_datetime(when)}
            for rid, when in self.org.deleted_log[spec.name]
            if start <= when <= end
        ]
        doc = {
            "deletedRecords": found,
            "earliestDateAvailable": sf_datetime(earliest),
            "latestDateCovered": sf_datetime(min(end, now)),
        }
        return Response.json(200, doc)

    # --- REST query

    def query(self, req: Request, version: str, endpoint: str) -> Response:
        soql = req.query.get("q")
        if not soql:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        compiled = self._compile(soql)
        rows = compiled.run(self.org, include_deleted=endpoint == "queryAll")
        if compiled.is_count:
            return Response.json(200, {"totalSize": len(rows), "done": True, "records": []})
        rendered = [rest_record(compiled, r, self.org, version) for r in rows]
        cursor = QueryCursor(rendered, self._batch_size(req), endpoint)
        cursor_id = make_id("01g", next(self._cursor_numbers))
        self.cursors[cursor_id] = cursor
        return self._page(cursor, cursor_id, 0, version)

    def query_more(
        self, req: Request, version: str, endpoint: str, cursor: str, offset: str
    ) -> Response:
        found = self.cursors.get(cursor)
        if found is None or int(offset) > len(found.rows):
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(found, cursor, int(offset), version, self._batch_size(req))

    def _page(
        self,
        cursor: QueryCursor,
        cursor_id: str,
        offset: int,
        version: str,
        batch_size: int | None = None,
    ) -> Response:
        end = offset + (batch_size or cursor.batch_size)
        doc: JSON = {
            "totalSize": len(cursor.rows),
            "done": end >= len(cursor.rows),
            "records": cursor.rows[offset:end],
        }
        if not doc["done"]:
            doc["nextRecordsUrl"] = f"/services/data/v{version}/{cursor.endpoint}/{cursor_id}-{end}"
        return Response.json(200, doc)

    @staticmethod
    def _batch_size(req: Request) -> int:
        options = req.headers.get("Sforce-Query-Options", "")
        match = re.search(r"batchSize\s*=\s*(\d+)", options)
        return min(max(int(match[1]), MIN_BATCH), MAX_BATCH) if match else MAX_BATCH

    # --- Bulk API 2.0 query jobs

    def create_job(self, req: Request, version: str) -> Response:
        body = req.json()
        operation, soql = body.get("operation"), body.get("query")
        if operation not in ("query", "queryAll") or not isinstance(soql, str) or not soql:
            raise ApiError(
                400, "INVALIDJOB", "A query job needs operation query|queryAll and a query"
            )
        delimiter = body.get("columnDelimiter", "COMMA")
        line_ending = body.get("lineEnding", "LF")
        if delimiter not in CSV_DELIMITERS or line_ending not in ("LF", "CRLF"):
            raise ApiError(400, "INVALIDJOB", "Unsupported columnDelimiter or lineEnding")
        header: list[str] = []
        rows: list[list[str]] = []
        error, obj = None, ""
        try:
            compiled = self._compile(soql)
            obj = compiled.sobject.name
            if compiled.is_count:
                raise ApiError(400, "INVALIDJOB", "Aggregate queries are not supported")
            header = [ref.text for ref in compiled.columns]
            for record in compiled.run(self.org, include_deleted=operation == "queryAll"):
                rows.append([csv_value(ref.value(record, self.org)) for ref in compiled.columns])
        except ApiError as err:
            error = f"{err.code}: {err.message}"
        job_id = make_id("750", next(self._job_numbers))
        job = QueryJob(job_id, operation, soql, obj, version, self.org.now(), delimiter,
                       line_ending, header, rows, error)  # fmt: skip
        self.jobs[job_id] = job
        return Response.json(200, job.info())

    def get_job(self, req: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id)
        job.poll(self.fake.bulk_polls)
        return Response.json(200, job.info())

    def delete_job(self, req: Request, version: str, job_id: str) -> Response:
        """Deletes the job and its results (204); a job still running cannot be deleted."""
        job = self._job(job_id)
        if job.state == "InProgress":
            raise ApiError(400, "INVALIDJOB", "Cannot delete a job that is in progress")
        del self.jobs[job_id]
        return Response(204)

    def job_results(self, req: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id)
        if version != job.api_version:
            raise ApiError(409, "API_VERSION_MISMATCH", "Use the API version of the job")
        if job.state != "JobComplete":
            message = (
                "can only download query results of successfully completed bulk job with "
                f"status: JOB_COMPLETE. Current status: {job.state}"
            )
            raise ApiError(412, "JOB_NOT_COMPLETE", message)
        locator = req.query.get("locator", "")
        offset = decode_locator(locator) if locator else 0
        try:
            limit = int(req.query.get("maxRecords") or len(job.rows) or 1)
        except ValueError:
            raise ApiError(400, "INVALIDJOB", "maxRecords must be a number") from None
        text, next_locator = job.page(offset, max(limit, 1))
        reply = Response.text(200, text, "text/csv")
        count = min(limit, max(len(job.rows) - offset, 0))
        reply.headers |= {"Sforce-NumberOfRecords": str(count), "Sforce-Locator": next_locator}
        return reply

    # --- helpers

    def _spec(self, obj: str) -> ObjectSpec:
        if (spec := self.org.objects.get(obj.lower())) is None:
            raise not_found()
        return spec

    def _job(self, job_id: str) -> QueryJob:
        if (job := self.jobs.get(job_id)) is None:
            raise not_found()
        return job

    def _compile(self, soql: str) -> CompiledQuery:
        try:
            return QueryCompiler(self.org, soql).compile()
        except SoqlError as err:
            raise ApiError(400, err.code, err.message) from None


# ------------------------------------------------------------------------ server and transport


class LoopbackAdapter(HTTPAdapter):
    """Sends ``https://<mounted host>/...`` as plain HTTP to the fake (no TLS, no DNS)."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        parts = urlsplit(str(request.url))
        request.headers[ORIGINAL_URL_HEADER] = str(request.url)
        request.url = urlunsplit(("http", self.address, parts.path, parts.query, ""))
        return super().send(request, stream, timeout, verify, cert, proxies={})


class NoNetworkAdapter(BaseAdapter):
    """Refuses every URL the fake does not serve."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> NoReturn:
        raise requests.ConnectionError(f"FakeSalesforce session: no network for {request.url}")

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------ test-facing API


class FakeSalesforce(LoopbackFake):
    """The fake org and server, with helpers to set up, inspect and sabotage it from tests."""

    def __init__(
        self,
        *,
        clock: datetime = DEFAULT_CLOCK,
        daily_limit: int = 15_000,
        bulk_polls: int = 2,
        login_domain: str = "fake-login",
        credentials: Credentials | None = None,
    ) -> None:
        self.daily_limit = daily_limit
        self.bulk_polls = bulk_polls  # job polls until JobComplete (the first answers InProgress)
        self.login_domain = login_domain
        self.credentials = credentials or Credentials()
        self.requests: list[RecordedRequest] = []
        self.api_calls = 0  # counted against daily_limit
        self.api_usage: Counter[str] = Counter()  # by resource: query, queryMore, describe, ...
        self._org = Org(clock)
        self._sessions = Sessions()
        self._sessions.issue()
        self._login = LoginApi(self.credentials, self._sessions)
        self._api = DataApi(self._org, self)
        self._faults: list[Fault] = []
        self._random_faults: list[RandomFaults] = []
        self._expiries: list[Fault] = []  # when to expire every session (status unused)
        self._lock = threading.RLock()

    # --- lifecycle and connection

    def _on_start(self, port: int) -> None:
        self._login.instance_url = self.instance_url

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def instance_url(self) -> str:
        """What simple-salesforce is given; only ``http_session()`` sessions can reach it."""
        return f"https://{self.address}"

    @property
    def base_url(self) -> str:
        """The plain-HTTP address the fake really listens on."""
        return f"http://{self.address}"

    def http_session(
        self, *login_domains: str, login_urls: Iterable[str] = (), default_logins: bool = True
    ) -> requests.Session:
        """A session that routes the instance and the login hosts (``login``, ``test``,
        ``login_domain`` and any given, e.g. ``"acme.my"``; ``login_urls`` such as a proxy's
        ``"https://sso.acme.internal:8443"``) to the fake, and nothing else. With
        ``default_logins=False`` only the given login hosts are routed."""
        session = requests.Session()
        session.trust_env = False  # no proxies from the environment
        session.mount("https://", NoNetworkAdapter())
        session.mount("http://", NoNetworkAdapter())
        loopback = LoopbackAdapter(self.address)
        session.mount(f"https://{self.address}/", loopback)
        session.mount(f"http://{self.address}/", loopback)
        defaults = ("login", "test", self.login_domain) if default_logins else ()
        for domain in {*defaults, *login_domains}:
            session.mount(f"https://{domain}.salesforce.com/", loopback)
        for url in login_urls:
            session.mount(url.rstrip("/") + "/", loopback)
        return session

    def client(self, session_id: str | None = None, **kwargs: Any) -> Salesforce:
        """A simple-salesforce client using a session id (the latest issued one by default)."""
        return Salesforce(
            instance_url=self.instance_url,
            session_id=session_id or self.session_id,
            session=self.http_session(),
            **kwargs,
        )

    def login_client(
        self,
        username: str | None = None,
        password: str | None = None,
        security_token: str | None = None,
        **kwargs: Any,
    ) -> Salesforce:
        """A simple-salesforce client that logs in through SOAP (and re-logs in after a 401)."""
        c = self.credentials
        return Salesforce(
            username=username or c.username,
            password=password or c.password,
            security_token=c.security_token if security_token is None else security_token,
            domain=kwargs.pop("domain", self.login_domain),
            session=kwargs.pop("session", None) or self.http_session(),
            **kwargs,
        )

    # --- sessions

    @property
    def session_id(self) -> str:
        """The latest session id issued (it may have been expired since)."""
        return self._sessions.latest

    def new_session(self) -> str:
        with self._lock:
            return self._sessions.issue()

    def expire_session(self) -> None:
        """Every issued session becomes invalid; a login issues a new one."""
        with self._lock:
            self._sessions.expire_all()

    # --- set-up and changes

    def add_object(self, name: str, fields: Mapping[str, str] | Iterable[str]) -> None:
        """A custom object, e.g. ``add_object("Thing__c", {"Score__c": "double",
        "Contact__c": "reference:Contact"})``; a list of names makes text fields."""
        with self._lock:
            self._org.add_custom(name, fields)

    def insert(self, obj: str, **fields: Any) -> str:
        with self._lock:
            return self._org.insert(obj, fields)

    def insert_many(self, obj: str, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        with self._lock:
            return [self._org.insert(obj, dict(row)) for row in rows]

    def update(self, obj: str, record_id: str, **fields: Any) -> None:
        """Change fields; LastModifiedDate and SystemModstamp move to the clock's time."""
        with self._lock:
            self._org.update(obj, record_id, fields)

    def touch(self, obj: str, record_id: str) -> None:
        """A system update: only SystemModstamp (and LastModifiedDate) move."""
        self.update(obj, record_id)

    def delete(self, obj: str, record_id: str) -> None:
        """To the recycle bin: IsDeleted true, seen only by queryAll."""
        with self._lock:
            self._org.delete(obj, record_id)

    def purge(self, obj: str, record_id: str) -> None:
        """Hard delete (recycle bin emptied): gone even from queryAll."""
        with self._lock:
            self._org.purge(obj, record_id)

    def merge(self, obj: str, winner_id: str, loser_id: str) -> None:
        """The loser is deleted with MasterRecordId = winner; the winner's stamps move."""
        with self._lock:
            self._org.merge(obj, winner_id, loser_id)

    def convert_lead(
        self,
        lead_id: str,
        contact_id: str,
        account_id: str | None = None,
        opportunity_id: str | None = None,
    ) -> None:
        with self._lock:
            self._org.update(
                "Lead",
                lead_id,
                {
                    "IsConverted": True,
                    "ConvertedContactId": contact_id,
                    "ConvertedAccountId": account_id,
                    "ConvertedOpportunityId": opportunity_id,
                    "ConvertedDate": self._org.now().date(),
                },
            )

    # --- clock

    @property
    def now(self) -> datetime:
        return self._org.now()

    def set_clock(self, moment: datetime) -> None:
        with self._lock:
            self._org.clock = moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._org.clock += timedelta(seconds=seconds)

    # --- inspection

    def get(self, obj: str, record_id: str) -> JSON:
        """A copy of a stored record (Python values: datetimes, dates, bools)."""
        with self._lock:
            return dict(self._org.record(obj, record_id))

    def records(self, obj: str, include_deleted: bool = True) -> list[JSON]:
        with self._lock:
            rows = self._org.records[self._org.spec(obj).name].values()
            return [dict(r) for r in rows if include_deleted or not r["IsDeleted"]]

    # --- faults

    def fail_next(
        self, n: int = 1, status: int = 500, body: Any = None, path_contains: str | None = None
    ) -> None:
        """The next n matching requests fail: body None gives an UNKNOWN_EXCEPTION error list,
        a list or dict is sent as JSON, a str as text/html."""
        with self._lock:
            self._faults.append(Fault(n, path_contains, status, body))

    def reset_next(self, n: int = 1, path_contains: str | None = None) -> None:
        """The next n matching requests have their connection reset, with no response."""
        with self._lock:
            self._faults.append(Fault(n, path_contains, None))

    def fail_randomly(
        self, rate: float, status: int = 503, path_contains: str | None = None, seed: int = 0
    ) -> None:
        """From now on, this share of matching requests fails (503 SERVER_UNAVAILABLE by
        default); ``rate=0`` with the same arguments does not undo it, ``stop_failing`` does."""
        with self._lock:
            self._random_faults.append(
                RandomFaults(rate, path_contains, status, random.Random(seed))
            )

    def stop_failing(self) -> None:
        with self._lock:
            self._random_faults.clear()

    def expire_session_on(self, nth: int = 1, path_contains: str | None = None) -> None:
        """Every session expires when the nth matching request arrives (it is answered 401
        INVALID_SESSION_ID, as are later ones until a login issues a new session)."""
        with self._lock:
            self._expiries.append(Fault(nth, path_contains, None))

    def expire_cursors(self) -> None:
        """Every open query cursor expires: nextRecordsUrl gives INVALID_QUERY_LOCATOR."""
        with self._lock:
            self._api.cursors.clear()

    # --- internals

    def _handle(self, method: str, target: str, raw: bytes, headers: Message) -> Response:
        parts = urlsplit(target)
        path = unquote(parts.path).rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            body = raw.decode(errors="replace")
            self.requests.append(RecordedRequest(method, path, query, dict(headers.items()), body))
            if (fault := take_fault(self._faults, path)) is not None:
                return fault.response()
            for random_faults in self._random_faults:
                if (reply := random_faults.response(path)) is not None:
                    return reply
            for expiry in list(self._expiries):
                if expiry.path_contains is None or expiry.path_contains in path:
                    expiry.remaining -= 1
                    if expiry.remaining <= 0:
                        self._expiries.remove(expiry)
                        self._sessions.expire_all()
            req = Request(method, path, query, headers, raw)
            try:
                if path.startswith("/services/Soap/u/") or path == "/services/oauth2/token":
                    return self._login.handle(req)
                if path.startswith("/services/data/"):
                    return self._data_call(req)
                raise not_found()
            except ApiError as err:
                return err.response()

    def _data_call(self, req: Request) -> Response:
        auth = req.headers.get("Authorization", "")
        token = auth.partition(" ")[2] if auth.startswith(("Bearer ", "OAuth ")) else ""
        if token not in self._sessions.valid:
            raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self.api_calls >= self.daily_limit:
            refusal = ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            return self._with_usage(refusal.response())
        name, call = self._api.route(req)
        self.api_calls += 1
        self.api_usage[name] += 1
        try:
            reply = call()
        except ApiError as err:
            reply = err.response()
        return self._with_usage(reply)

    def _with_usage(self, reply: Response) -> Response:
        reply.headers["Sforce-Limit-Info"] = f"api-usage={self.api_calls}/{self.daily_limit}"
        return reply
