"""A stateful fake of the Mailchimp Marketing API v3.0, served over real HTTP on 127.0.0.1.

Point the official SDK at it with ``client.api_client.host = fake.base_url``. It enforces the rules
in /work/shared/reference/mailchimp-api.md, taking the harsher reading where the real behaviour is
unverified: compliance states, forgotten addresses, merge-field validation, batch limits, tags as
static segments, the simultaneous-connection limit, and scripted faults.

``last_changed`` is shown to the second, as Mailchimp shows it, and moves whenever a member really
changes, by anyone: our own PUT, PATCH, batch subscribe and tag calls move it too.
``since_last_changed`` / ``before_last_changed`` compare at that precision; member lists sort by
``last_changed`` (``sort_field``, ``sort_dir``), and every GET honours ``fields`` /
``exclude_fields``. ``advance_clock`` moves the fake's clock forward so tests need not sleep.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import random
import re
import tarfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .http import LoopbackFake, take_fault

JSON = dict[str, Any]
API_KEY = "0123456789abcdef0123456789abcdef-us21"
API_PREFIX = "/3.0"
RESULTS_PREFIX = "/batch-results"
BATCH_OPERATIONS_LIMIT = 1000
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
FIELD_TYPES: tuple[str, ...] = ("text", "number", "address", "phone", "date", "url", "imageurl")
FIELD_TYPES += ("radio", "dropdown", "birthday", "zip")
FAKE_DOMAINS = frozenset({"example.com", "example.org", "example.net", "test.com"})
FAKE_LOCAL_PARTS = frozenset({"test", "testing", "fake", "example", "asdf", "noemail"})
EMAIL_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
TAG_RE = re.compile(r"[A-Z0-9_]{1,10}")
BATCH_LIMIT, COUNT_LIMIT, TAG_NAME_LIMIT, TAGS_SHOWN = 500, 1000, 100, 50
TITLES = {
    400: "Invalid Resource",
    401: "API Key Invalid",
    403: "Forbidden",
    404: "Resource Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
DEFAULT_MERGE_FIELDS: tuple[tuple[str, str, str, JSON], ...] = (
    ("FNAME", "First Name", "text", {"size": 25}),
    ("LNAME", "Last Name", "text", {"size": 25}),
    ("ADDRESS", "Address", "address", {"default_country": 164}),
    ("PHONE", "Phone Number", "phone", {"phone_format": "none"}),
    ("BIRTHDAY", "Birthday", "birthday", {"date_format": "MM/DD"}),
)
NOT_IN_AUDIENCE = "Email address is not in this audience"
NOT_IN_SEGMENT = "Email address is not a member of the segment"
ALREADY = "Email address is already a member of the segment"
"""What a repeated addition answers is unverified; the fake takes the harsher reading."""
UNSUBSCRIBE_REASONS = {
    "user": "N/A (Unsubscribed by the contact)",
    "admin": "N/A (Unsubscribed by an admin)",
    "api": "N/A (Unsubscribed via API)",
}
VALIDATION_DETAIL = (
    "The resource submitted could not be validated. "
    "For field-specific details, see the 'errors' array."
)
COMPLIANCE = (
    "{} is in a compliance state due to unsubscribe, bounce, or compliance review "
    "and cannot be subscribed."
)
FORGOTTEN = (
    "{} was permanently deleted and cannot be re-imported. "
    "The contact must re-subscribe to get back on the list."
)


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def member_key(hash_or_email: str) -> str:
    """Member paths take the subscriber hash, or the email address itself."""
    return subscriber_hash(hash_or_email) if "@" in hash_or_email else hash_or_email.lower()


def iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------ errors and validation


class ApiError(Exception):
    """An error answered as an application/problem+json document."""

    def __init__(
        self, status: int, title: str = "", detail: str = "", errors: list[JSON] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors = status, detail, errors
        self.title = title or TITLES.get(status, "Error")

    def problem(self) -> JSON:
        doc = {
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": str(uuid.uuid4()),
        }
        return doc | ({"errors": self.errors} if self.errors else {})


def invalid(field_name: str, message: str, detail: str = VALIDATION_DETAIL) -> ApiError:
    return ApiError(400, "Invalid Resource", detail, [{"field": field_name, "message": message}])


def not_found() -> ApiError:
    return ApiError(404, detail="The requested resource could not be found.")


def email_problem(email: Any) -> str | None:
    """Mailchimp's complaint about an address it refuses, or None."""
    complaint = f"{email} looks fake or invalid, please enter a real email address."
    if not isinstance(email, str) or not EMAIL_RE.fullmatch(email):
        return complaint
    local, domain = email.lower().rsplit("@", 1)
    return complaint if domain in FAKE_DOMAINS or local in FAKE_LOCAL_PARTS else None


def _is_date(value: Any, pattern: str, fmt: str, prefix: str = "") -> bool:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        return False
    try:
        datetime.strptime(prefix + value, fmt)
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    if isinstance(value, str):
        return re.fullmatch(r"-?\d+(\.\d+)?", value) is not None
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_address(value: Any) -> bool:
    parts = ("addr1", "city", "state", "zip")
    return isinstance(value, dict) and all(str(value.get(p) or "").strip() for p in parts)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "number": (_is_number, "Please enter a number"),
    "date": (lambda v: _is_date(v, r"\d{4}-\d\d-\d\d", "%Y-%m-%d"), "Use the format YYYY-MM-DD"),
    # 2000 is a leap year, so 02/29 is a valid birthday.
    "birthday": (lambda v: _is_date(v, r"\d\d/\d\d", "%Y/%m/%d", "2000/"), "Use the format MM/DD"),
    "address": (_is_address, "An address needs addr1, city, state and zip"),
    "url": (_is_url, "Please enter a URL starting with http:// or https://"),
    "imageurl": (_is_url, "Please enter a URL starting with http:// or https://"),
}


def value_problem(spec: MergeField, value: Any) -> str | None:
    if value == "":  # clears the field
        return None
    if spec.type in ("radio", "dropdown"):
        return None if value in spec.options.get("choices", []) else "Choose one of the options"
    check, message = VALUE_RULES.get(spec.type, (lambda v: isinstance(v, str), "Enter text"))
    return None if check(value) else message


def merge_problem(
    fields: dict[str, MergeField], values: Any, required_from: JSON | None
) -> tuple[str, str] | None:
    """(tag, message) for the first bad merge value; required fields are checked when
    ``required_from`` (the values a new or re-created member already has) is given."""
    if not isinstance(values, dict):
        return "merge_fields", "merge_fields must be an object"
    for tag, value in values.items():
        spec = fields.get(tag)
        if spec is None:
            return tag, f"Your merge fields were invalid: {tag} is not a field of this audience"
        if problem := value_problem(spec, value):
            return tag, problem
    if required_from is not None:
        merged = required_from | values
        for spec in fields.values():
            if spec.required and not spec.default_value and merged.get(spec.tag) in (None, ""):
                return spec.tag, "Please enter a value"
    return None


def tag_names_problem(names: Any) -> str | None:
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        return "Tags must be a list of non-empty names"
    too_long = [n for n in names if len(n) > TAG_NAME_LIMIT]
    return f"Tag names are limited to {TAG_NAME_LIMIT} characters" if too_long else None


# ------------------------------------------------------------------------ state


class Clock:
    """A UTC clock that strictly advances on every reading; tests may push it forward."""

    def __init__(self) -> None:
        self._last = datetime.fromtimestamp(0, UTC)
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            now = datetime.now(UTC) + self._offset
            self._last = max(now, self._last + timedelta(microseconds=1))
            return self._last

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)


@dataclass
class MergeField:
    merge_id: int
    tag: str
    name: str
    type: str
    required: bool = False
    default_value: str = ""
    public: bool = True
    display_order: int = 0
    options: JSON = field(default_factory=dict)
    help_text: str = ""


@dataclass
class Member:
    email: str
    status: str
    last_changed: datetime
    merge_fields: JSON = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    unsubscribed_by: str | None = None  # "user", "admin" or "api"
    status_before_archive: str | None = None
    unique_email_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def id(self) -> str:
        return subscriber_hash(self.email)

    @property
    def archived(self) -> bool:
        return self.status == "archived"

    def in_compliance_state(self) -> bool:
        """Cleaned, or unsubscribed by the person themselves; archiving does not launder it."""
        status = self.status_before_archive if self.archived else self.status
        return status == "cleaned" or (status == "unsubscribed" and self.unsubscribed_by == "user")

    def set_status(self, status: str, by: str) -> None:
        # The person's own unsubscribe is never overwritten by a later admin or API one.
        if status == "unsubscribed" and (self.status != "unsubscribed" or by == "user"):
            self.unsubscribed_by = by
        elif status not in ("unsubscribed", "archived"):
            self.unsubscribed_by = None
        if status != self.status:
            self.status_before_archive = self.status if status == "archived" else None
            self.status = status

    def snapshot(self) -> tuple[Any, ...]:
        merge = json.dumps(self.merge_fields, sort_keys=True)
        return self.email, self.status, self.unsubscribed_by, merge, frozenset(self.tags)


@dataclass
class Segment:
    id: int
    name: str
    type: str  # "static" (tags are static segments) or "saved"
    created_at: datetime
    options: JSON | None = None


class Audience:
    """One audience: merge fields, members, segments (tags) and permanently deleted addresses."""

    def __init__(self, list_id: str, name: str, merge_field_limit: int, clock: Clock) -> None:
        self.list_id, self.name, self.clock = list_id, name, clock
        self.merge_field_limit = merge_field_limit
        self.merge_fields: dict[str, MergeField] = {}
        self.members: dict[str, Member] = {}
        self.segments: dict[int, Segment] = {}
        self.forgotten: set[str] = set()
        self.confirmations: dict[str, int] = {}
        """Double opt-in emails sent, by address: each write of `pending` sends one, also to a
        member who is already pending (Mailchimp documents pending as "sends the opt-in
        email"; integrations see it re-sent)."""
        self._segment_ids = itertools.count(10_001)
        for tag, label, kind, options in DEFAULT_MERGE_FIELDS:
            self.add_merge_field(MergeField(0, tag, label, kind, options=dict(options)))

    # --- merge fields and segments

    def add_merge_field(self, spec: MergeField) -> MergeField:
        spec.merge_id = spec.display_order = len(self.merge_fields) + 1
        self.merge_fields[spec.tag] = spec
        return spec

    def derive_tag(self, name: str) -> str:
        tag, number = re.sub(r"[^A-Z0-9]", "", name.upper())[:10], len(self.merge_fields) + 1
        while not tag or tag in self.merge_fields:
            tag, number = f"MMERGE{number}", number + 1
        return tag

    def segment(self, segment_id: str) -> Segment:
        seg = self.segments.get(int(segment_id)) if segment_id.isdigit() else None
        if seg is None:
            raise not_found()
        return seg

    def add_segment(self, name: str, kind: str, options: JSON | None = None) -> Segment:
        seg = Segment(next(self._segment_ids), name, kind, self.clock.now(), options)
        self.segments[seg.id] = seg
        return seg

    def tag_segment(self, name: str) -> Segment:
        """The static segment behind a tag, created on first use."""
        for seg in self.segments.values():
            if seg.type == "static" and seg.name == name:
                return seg
        return self.add_segment(name, "static")

    def matches(self, seg: Segment, member: Member) -> bool:
        if seg.type == "static":
            return seg.name in member.tags
        options = seg.options or {}
        results = [self._condition(c, member) for c in options.get("conditions", [])]
        return all(results) if options.get("match") == "all" else any(results)

    def _condition(self, cond: JSON, member: Member) -> bool:
        """The TextMerge and StaticSegment conditions; other kinds match nobody."""
        kind, op, value = cond.get("condition_type"), cond.get("op"), cond.get("value")
        if kind == "StaticSegment":
            seg = self.segments.get(int(str(value))) if str(value).isdigit() else None
            tagged = seg is not None and seg.name in member.tags
            return tagged if op == "static_is" else not tagged
        if kind != "TextMerge":
            return False
        have, want = (
            str(member.merge_fields.get(str(cond.get("field")), "")).lower(),
            str(value).lower(),
        )
        return {
            "is": have == want,
            "not": have != want,
            "contains": want in have,
            "notcontain": want not in have,
            "starts": have.startswith(want),
            "ends": have.endswith(want),
            "blank": not have,
            "blank_not": bool(have),
        }.get(str(op), False)

    def segment_members(self, seg: Segment) -> list[Member]:
        return [m for m in self.members.values() if not m.archived and self.matches(seg, m)]

    # --- members

    def find(self, key: str) -> Member | None:
        return self.members.get(member_key(key))

    def require(self, key: str) -> Member:
        if (member := self.find(key)) is None:
            raise not_found()
        return member

    def change(
        self,
        member: Member,
        *,
        status: str | None = None,
        values: JSON | None = None,
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
        replace_tags: Iterable[str] | None = None,
        email: str | None = None,
        by: str = "api",
    ) -> None:
        """Apply a change; last_changed moves only if something actually changed."""
        before = member.snapshot()
        if email is not None and email != member.email:
            self.members.pop(member.id, None)
            member.email = email
            self.members[member.id] = member
        if status is not None:
            member.set_status(status, by)
            if status == "pending":
                self.confirmations[member.email] = self.confirmations.get(member.email, 0) + 1
        member.merge_fields.update(values or {})
        tags = set(replace_tags) if replace_tags is not None else member.tags | set(add_tags)
        member.tags = tags - set(remove_tags)
        for name in member.tags:
            self.tag_segment(name)
        if member.snapshot() != before:
            member.last_changed = self.clock.now()

    def admit(self, email: str, status: str, previous: Member | None, **changes: Any) -> Member:
        """Add a new member, or bring back an archived one (keeping its data)."""
        member = previous or Member(email=email, status="", last_changed=self.clock.now())
        self.members.setdefault(member.id, member)
        self.change(member, email=email, status=status, **changes)
        return member

    def forget(self, member: Member) -> None:
        del self.members[member.id]
        self.forgotten.add(member.id)

    # --- views

    def member_tags(self, member: Member) -> list[Segment]:
        return sorted((self.tag_segment(name) for name in member.tags), key=lambda s: s.id)

    def member_view(self, m: Member) -> JSON:
        tags = self.member_tags(m)
        view = {
            "id": m.id,
            "email_address": m.email,
            "unique_email_id": m.unique_email_id,
            "email_type": "html",
            "status": m.status,
            "merge_fields": {tag: m.merge_fields.get(tag, "") for tag in self.merge_fields},
            "vip": False,
            "last_changed": iso(m.last_changed),
            "list_id": self.list_id,
            "tags_count": len(tags),
            "tags": [{"id": s.id, "name": s.name} for s in tags[:TAGS_SHOWN]],
        }
        if m.status == "unsubscribed" and m.unsubscribed_by:
            view["unsubscribe_reason"] = UNSUBSCRIBE_REASONS[m.unsubscribed_by]
        return view

    def static_counts(self) -> Counter[str]:
        """Members per tag, in one pass (listing many tags of a large audience stays cheap, as
        Mailchimp's cached counts are)."""
        return Counter(t for m in self.members.values() if not m.archived for t in m.tags)

    def segment_view(self, seg: Segment, counts: Counter[str] | None = None) -> JSON:
        count = (
            counts[seg.name]
            if counts is not None and seg.type == "static"
            else len(self.segment_members(seg))
        )
        view = {
            "id": seg.id,
            "name": seg.name,
            "member_count": count,
            "type": seg.type,
            "created_at": iso(seg.created_at),
            "list_id": self.list_id,
        }
        return view | ({"options": seg.options} if seg.options is not None else {})


# ------------------------------------------------------------------------ HTTP API


def only_fields(doc: Any, fields: str | None, exclude: str | None) -> Any:
    """The `fields` / `exclude_fields` query parameters: comma-separated paths in dot notation
    (`members.id,total_items`), applied through lists to each of their items."""

    def tree(spec: str) -> JSON:
        out: JSON = {}
        for path in filter(None, (p.strip() for p in spec.split(","))):
            node = out
            for part in path.split("."):
                node = node.setdefault(part, {})
        return out

    def keep(value: Any, wanted: JSON) -> Any:
        if isinstance(value, list):
            return [keep(item, wanted) for item in value]
        if not isinstance(value, dict) or not wanted:
            return value
        return {k: keep(v, wanted[k]) for k, v in value.items() if k in wanted}

    def drop(value: Any, unwanted: JSON) -> Any:
        if isinstance(value, list):
            return [drop(item, unwanted) for item in value]
        if not isinstance(value, dict):
            return value
        return {
            k: drop(v, unwanted[k]) if k in unwanted else v
            for k, v in value.items()
            if k not in unwanted or unwanted[k]
        }

    if fields:
        doc = keep(doc, tree(fields))
    if exclude:
        doc = drop(doc, tree(exclude))
    return doc


class BadJson:
    """Stands for a request body that was not valid JSON."""


@dataclass
class Request:
    method: str
    path: str  # without the /3.0 prefix
    query: dict[str, str]
    body: Any

    def json(self) -> JSON:
        if isinstance(self.body, BadJson):
            raise ApiError(400, "JSON Parse Error", "We encountered an unspecified JSON error.")
        if not isinstance(self.body, dict):
            raise invalid("body", "The request body must be a JSON object")
        return self.body

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("true", "1")

    def page(self, items: list[Any]) -> list[Any]:
        try:
            count, offset = int(self.query.get("count", 10)), int(self.query.get("offset", 0))
        except ValueError:
            raise invalid("count", "count and offset must be integers") from None
        if not 0 <= count <= COUNT_LIMIT or offset < 0:
            raise invalid("count", f"count must be 0 to {COUNT_LIMIT} and offset at least 0")
        return items[offset : offset + count]

    def time(self, name: str) -> datetime | None:
        if name not in self.query:
            return None
        try:
            moment = datetime.fromisoformat(self.query[name].replace(" ", "+"))
        except ValueError:
            raise invalid(name, "Use ISO 8601, e.g. 2015-10-21T15:41:36+00:00") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # drop the connection instead of answering

    @classmethod
    def of(cls, status: int, doc: JSON | None, kind: str = "application/json") -> Response:
        if doc is None:
            return cls(status)
        return cls(status, json.dumps(doc).encode(), f"{kind}; charset=utf-8")

    @classmethod
    def problem(cls, err: ApiError) -> Response:
        return cls.of(err.status, err.problem(), "application/problem+json")


class ItemError(Exception):
    """One rejected member inside a batch subscribe."""

    def __init__(self, email: str, error: str, code: str = "ERROR_GENERIC", at: str = "") -> None:
        super().__init__(error)
        self.view = {"email_address": email, "error": error, "error_code": code}
        self.view |= {"field": at, "field_message": error if at else ""}


Reply = tuple[int, JSON | None]


class MailchimpApi:
    """The routing table and its handlers; handlers run one at a time under ``lock``."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.audiences: dict[str, Audience] = {}
        self.lock = threading.RLock()
        table: list[tuple[str, str, Callable[..., Reply]]] = [
            ("GET", "/ping", self.ping),
            ("POST", "/lists/{list_id}", self.batch_subscribe),
            ("GET", "/lists/{list_id}/merge-fields", self.list_merge_fields),
            ("POST", "/lists/{list_id}/merge-fields", self.add_merge_field),
            ("GET", "/lists/{list_id}/members", self.list_members),
            ("GET", "/lists/{list_id}/members/{key}", self.get_member),
            ("PUT", "/lists/{list_id}/members/{key}", self.put_member),
            ("PATCH", "/lists/{list_id}/members/{key}", self.patch_member),
            ("DELETE", "/lists/{list_id}/members/{key}", self.archive_member),
            ("POST", "/lists/{list_id}/members/{key}/actions/delete-permanent", self.forget),
            ("GET", "/lists/{list_id}/members/{key}/tags", self.get_member_tags),
            ("POST", "/lists/{list_id}/members/{key}/tags", self.update_member_tags),
            ("GET", "/lists/{list_id}/segments", self.list_segments),
            ("POST", "/lists/{list_id}/segments", self.create_segment),
            ("GET", "/lists/{list_id}/segments/{segment_id}", self.get_segment),
            ("POST", "/lists/{list_id}/segments/{segment_id}", self.batch_segment),
            ("PATCH", "/lists/{list_id}/segments/{segment_id}", self.update_segment),
            ("GET", "/lists/{list_id}/segments/{segment_id}/members", self.segment_members),
            ("POST", "/batches", self.start_batch),
            ("GET", "/batches/{batch_id}", self.get_batch),
        ]
        self.batches: dict[str, JSON] = {}
        self.batch_archives: dict[str, bytes] = {}
        self.batch_op_s = 0.0
        """Seconds Mailchimp spends on each operation of a batch (see `start_batch`)."""
        self._batch_queue: list[tuple[str, list[JSON]]] = []
        self._batch_worker: threading.Thread | None = None
        self.results_base = ""  # set by FakeMailchimp once its port is known
        self.routes = [
            (method, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)), handler)
            for method, path, handler in table
        ]

    def handle(self, req: Request, authorization: str | None) -> Response:
        try:
            self.authenticate(authorization)
            with self.lock:
                status, doc = self.dispatch(req)
        except ApiError as err:
            return Response.problem(err)
        if doc is not None and ("fields" in req.query or "exclude_fields" in req.query):
            doc = only_fields(doc, req.query.get("fields"), req.query.get("exclude_fields"))
        return Response.of(status, doc)

    def authenticate(self, authorization: str | None) -> None:
        if not authorization or not authorization.startswith("Basic "):
            raise ApiError(401, detail="Your request did not include an API key.")
        try:
            password = base64.b64decode(authorization[6:]).decode().partition(":")[2]
        except ValueError:
            password = ""
        if password != self.api_key:
            detail = (
                "Your API key may be invalid, or you've attempted to access the wrong datacenter."
            )
            raise ApiError(401, detail=detail)

    def dispatch(self, req: Request) -> Reply:
        allowed = []
        for method, pattern, handler in self.routes:
            if match := pattern.fullmatch(req.path):
                if method != req.method:
                    allowed.append(method)
                    continue
                params: dict[str, Any] = match.groupdict()
                if "list_id" in params:
                    params["aud"] = self.audience(params.pop("list_id"))
                return handler(req, **params)
        if allowed:
            raise ApiError(405, detail=f"{req.method} is not allowed; use {', '.join(allowed)}.")
        raise not_found()

    def start_batch(self, req: Request) -> Reply:
        """Accept the operations and queue the batch; Mailchimp runs them in the background,
        one batch at a time ("only one batch request is run at a time", its API reference on
        stopping a batch), each operation taking `batch_op_s` (the harsher reading of "at
        Mailchimp's pace": no faster than one call, one after another). A poll reports
        progress; `finished`, with the results archive, comes no earlier than the second."""
        operations = req.json().get("operations")
        if not isinstance(operations, list) or not operations:
            raise invalid("operations", "operations must be a non-empty array")
        if len(operations) > BATCH_OPERATIONS_LIMIT:
            raise invalid("operations", f"at most {BATCH_OPERATIONS_LIMIT} operations per batch")
        for op in operations:
            if not isinstance(op, dict) or op.get("method") not in (
                "GET",
                "POST",
                "PUT",
                "PATCH",
                "DELETE",
            ):
                raise invalid("operations", "each operation needs a method and a path")
        batch_id = f"b{len(self.batches) + 1:06d}"
        self.batches[batch_id] = {
            "id": batch_id,
            "status": "pending",
            "total_operations": len(operations),
            "finished_operations": 0,
            "errored_operations": 0,
            "submitted_at": iso(datetime.now(UTC)),
            "completed_at": "",
            "response_body_url": "",
            "polls": 0,
            "done": False,
        }
        self._batch_queue.append((batch_id, operations))
        if self._batch_worker is None or not self._batch_worker.is_alive():
            self._batch_worker = threading.Thread(target=self._run_batches, daemon=True)
            self._batch_worker.start()
        return 200, self._batch_view(batch_id)

    def _run_batches(self) -> None:
        """Mailchimp's side: the queued batches, one after another."""
        while True:
            with self.lock:
                if not self._batch_queue:
                    self._batch_worker = None
                    return
                batch_id, operations = self._batch_queue.pop(0)
                self.batches[batch_id]["status"] = "started"
            results = [self._run_operation(batch_id, op) for op in operations]
            with self.lock:
                batch = self.batches[batch_id]
                self.batch_archives[batch_id] = _tar_gz({f"{batch_id}.json": json.dumps(results)})
                batch["done"], batch["completed_at"] = True, iso(datetime.now(UTC))

    def _run_operation(self, batch_id: str, op: JSON) -> JSON:
        if self.batch_op_s:
            time.sleep(self.batch_op_s)
        body = op.get("body")
        try:
            parsed = json.loads(body) if isinstance(body, str) and body else None
        except ValueError:
            parsed = BadJson()
        inner = Request(op["method"], str(op.get("path", "")), dict(op.get("params") or {}), parsed)
        with self.lock:
            try:
                status, doc = self.dispatch(inner)
            except ApiError as err:
                status, doc = err.status, err.problem()
            batch = self.batches[batch_id]
            batch["finished_operations"] += 1
            batch["errored_operations"] += status >= 400
        response = json.dumps(doc) if doc is not None else ""
        return {"operation_id": op.get("operation_id"), "status_code": status, "response": response}

    def get_batch(self, req: Request, batch_id: str) -> Reply:
        if batch_id not in self.batches:
            raise not_found()
        batch = self.batches[batch_id]
        batch["polls"] += 1
        if batch["done"] and batch["polls"] >= 2:
            batch["status"] = "finished"
            batch["response_body_url"] = f"{self.results_base}/{batch_id}.tar.gz"
        elif batch["done"]:
            batch["status"] = "finalizing"
        return 200, self._batch_view(batch_id)

    def _batch_view(self, batch_id: str) -> JSON:
        return {k: v for k, v in self.batches[batch_id].items() if k not in ("polls", "done")}

    def audience(self, list_id: str) -> Audience:
        if list_id not in self.audiences:
            raise not_found()
        return self.audiences[list_id]

    def ping(self, req: Request) -> Reply:
        return 200, {"health_status": "Everything's Chimpy!"}

    # --- merge fields

    def list_merge_fields(self, req: Request, aud: Audience) -> Reply:
        views = [asdict(f) | {"list_id": aud.list_id} for f in aud.merge_fields.values()]
        return 200, {
            "merge_fields": req.page(views),
            "list_id": aud.list_id,
            "total_items": len(views),
        }

    def add_merge_field(self, req: Request, aud: Audience) -> Reply:
        body = req.json()
        name, kind, tag = body.get("name"), body.get("type"), body.get("tag") or None
        options, choices = body.get("options") or {}, (body.get("options") or {}).get("choices")
        if not isinstance(name, str) or not name.strip():
            raise invalid("name", "This value should not be blank.")
        if kind not in FIELD_TYPES:
            raise invalid("type", f"The type must be one of {', '.join(FIELD_TYPES)}")
        if kind in ("radio", "dropdown") and not (
            isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)
        ):
            raise invalid("options.choices", f"A {kind} field needs a list of choices")
        if tag is not None and (not isinstance(tag, str) or not TAG_RE.fullmatch(tag)):
            raise invalid("tag", "A tag is 1-10 uppercase letters, digits or underscores")
        if tag in aud.merge_fields:
            raise invalid("tag", f'A Merge Field with the tag "{tag}" already exists.')
        if len(aud.merge_fields) >= aud.merge_field_limit:
            detail = f"This audience has reached its limit of {aud.merge_field_limit} merge fields."
            raise ApiError(400, detail=detail)
        spec = MergeField(0, tag or aud.derive_tag(name), name, kind, options=options)
        spec.required, spec.public = bool(body.get("required")), bool(body.get("public", True))
        spec.default_value, spec.help_text = (
            body.get("default_value", ""),
            body.get("help_text", ""),
        )
        return 200, asdict(aud.add_merge_field(spec)) | {"list_id": aud.list_id}

    # --- batch subscribe

    def batch_subscribe(self, req: Request, aud: Audience) -> Reply:
        body = req.json()
        items = body.get("members")
        if not isinstance(items, list):
            raise invalid("members", "members must be an array")
        if len(items) > BATCH_LIMIT:
            limit = f"You can only add or update up to {BATCH_LIMIT} members per batch."
            raise invalid("members", limit, limit)
        update, sync = body.get("update_existing") is True, body.get("sync_tags") is True
        if sync and not update:
            raise invalid("sync_tags", "sync_tags can only be used with update_existing: true")
        result: JSON = {"new_members": [], "updated_members": [], "errors": []}
        seen: set[str] = set()
        for item in items:
            try:
                outcome = self.batch_item(req, aud, item, update, sync, seen)
            except ItemError as err:
                result["errors"].append(err.view)
                continue
            if outcome is not None:
                created, member = outcome
                key = "new_members" if created else "updated_members"
                result[key].append(aud.member_view(member))
        return 200, result | {
            "total_created": len(result["new_members"]),
            "total_updated": len(result["updated_members"]),
            "error_count": len(result["errors"]),
        }

    def batch_item(
        self, req: Request, aud: Audience, item: Any, update: bool, sync: bool, seen: set[str]
    ) -> tuple[bool, Member] | None:
        """(created?, member) for one item; None for a skipped duplicate; else ItemError."""
        if not isinstance(item, dict):
            raise ItemError("", "Each member must be an object")
        if problem := email_problem(item.get("email_address")):
            raise ItemError(str(item.get("email_address", "")), problem, at="email_address")
        email, status = str(item["email_address"]), item.get("status")
        if subscriber_hash(email) in seen:
            if req.flag("skip_duplicate_check"):
                return None
            raise ItemError(email, f"{email} appears more than once in this batch.")
        seen.add(subscriber_hash(email))
        if subscriber_hash(email) in aud.forgotten:
            raise ItemError(email, FORGOTTEN.format(email))
        if status not in STATUSES:
            raise ItemError(email, f"Invalid status {status!r}", at="status")
        member = aud.members.get(subscriber_hash(email))
        live = member if member is not None and not member.archived else None
        if live is not None and not update:
            error = f"{email} is already a list member. Use update_existing to update it."
            raise ItemError(email, error, "ERROR_CONTACT_EXISTS")
        if member is not None and status == "subscribed" and member.in_compliance_state():
            raise ItemError(email, COMPLIANCE.format(email))
        values, tags = item.get("merge_fields") or {}, item.get("tags", [])
        required: JSON | None = member.merge_fields if member is not None else {}
        if live is not None or req.flag("skip_merge_validation"):
            required = None
        if problem_at := merge_problem(aud.merge_fields, values, required):
            raise ItemError(email, f"{email}: {problem_at[1]}", at=problem_at[0])
        if problem := tag_names_problem(tags):
            raise ItemError(email, problem, at="tags")
        changes: JSON = {"values": values, "add_tags": tags, "replace_tags": tags if sync else None}
        if live is not None:
            aud.change(live, status=status, **changes)
            return False, live
        return True, aud.admit(email, status, member, **changes)

    # --- members

    def list_members(self, req: Request, aud: Audience) -> Reply:
        """Members by status (archived only when asked for), changed since/before a moment
        (strictly, to the second), in the audience's own order or sorted by last_changed
        (ties keep that order)."""
        status = req.query.get("status")
        since, before = req.time("since_last_changed"), req.time("before_last_changed")
        if status is not None and status not in (*STATUSES, "archived"):
            raise invalid("status", f"Unknown status {status!r}")
        found = [
            m
            for m in aud.members.values()
            if (m.status == status if status else not m.archived)
            and (since is None or m.last_changed.replace(microsecond=0) > since)
            and (before is None or m.last_changed.replace(microsecond=0) < before)
        ]
        sort_field, sort_dir = req.query.get("sort_field"), req.query.get("sort_dir", "ASC")
        if sort_dir.upper() not in ("ASC", "DESC"):
            raise invalid("sort_dir", "sort_dir must be ASC or DESC")
        if sort_field == "last_changed":
            found.sort(key=lambda m: m.last_changed.replace(microsecond=0))
            if sort_dir.upper() == "DESC":  # ties keep the audience's order either way
                found = sorted(found, key=lambda m: m.last_changed.replace(microsecond=0),
                               reverse=True)  # fmt: skip
        elif sort_field is not None:  # timestamp_opt/timestamp_signup: not modelled here
            raise invalid("sort_field", f"The fake sorts by last_changed only, not {sort_field!r}")
        views = [aud.member_view(m) for m in req.page(found)]
        return 200, {"members": views, "list_id": aud.list_id, "total_items": len(found)}

    def get_member(self, req: Request, aud: Audience, key: str) -> Reply:
        return 200, aud.member_view(aud.require(key))

    def put_member(self, req: Request, aud: Audience, key: str) -> Reply:
        """Upsert; an archived member counts as new and comes back."""
        body = self.no_tags(req.json())
        member = aud.find(key)
        if member is not None and not member.archived:
            return 200, self.update(req, aud, member, transactional_ok=True)
        if member_key(key) in aud.forgotten:
            email = body.get("email_address") or key
            raise ApiError(400, "Forgotten Email Not Subscribed", FORGOTTEN.format(email))
        email = self.check_address(aud, body.get("email_address") or (member and member.email))
        if member_key(key) != subscriber_hash(email):
            raise invalid("email_address", "The email address does not match the subscriber hash.")
        status = body.get("status_if_new") or body.get("status")
        if status not in STATUSES:
            raise invalid("status_if_new", f"A new member needs status_if_new, one of {STATUSES}")
        if member is not None and status == "subscribed" and member.in_compliance_state():
            raise ApiError(400, "Member In Compliance State", COMPLIANCE.format(email))
        required = (
            None if req.flag("skip_merge_validation") else member.merge_fields if member else {}
        )
        values = self.merge_values(aud, body, required)
        return 200, aud.member_view(aud.admit(email, status, member, values=values))

    def patch_member(self, req: Request, aud: Audience, key: str) -> Reply:
        self.no_tags(req.json())
        return 200, self.update(req, aud, aud.require(key), transactional_ok=False)

    def update(self, req: Request, aud: Audience, member: Member, transactional_ok: bool) -> JSON:
        """PUT or PATCH on an existing member; status_if_new does not apply."""
        body = req.json()
        status, email = body.get("status"), body.get("email_address")
        allowed = STATUSES if transactional_ok else STATUSES[:-1]
        if status is not None and status not in allowed:
            raise invalid("status", f"The status must be one of {', '.join(allowed)}")
        if status == "subscribed" and member.in_compliance_state():
            raise ApiError(400, "Member In Compliance State", COMPLIANCE.format(member.email))
        values = self.merge_values(aud, body, None)
        if email is not None and email != member.email:
            email = self.check_address(aud, email)
            if subscriber_hash(email) != member.id and subscriber_hash(email) in aud.members:
                raise ApiError(400, "Member Exists", f"{email} is already a list member.")
        aud.change(member, status=status, values=values, email=email)
        return aud.member_view(member)

    @staticmethod
    def no_tags(body: JSON) -> JSON:
        if "tags" in body:
            raise invalid("tags", "Tags cannot be set here; use /members/{hash}/tags")
        return body

    @staticmethod
    def check_address(aud: Audience, email: Any) -> str:
        if not email:
            raise invalid("email_address", "This value should not be blank.")
        if problem := email_problem(email):
            raise invalid("email_address", problem, problem)
        if subscriber_hash(email) in aud.forgotten:
            raise ApiError(400, "Forgotten Email Not Subscribed", FORGOTTEN.format(email))
        return str(email)

    @staticmethod
    def merge_values(aud: Audience, body: JSON, required_from: JSON | None) -> JSON:
        values = body.get("merge_fields") or {}
        if problem := merge_problem(aud.merge_fields, values, required_from):
            raise invalid(*problem)
        return values

    def archive_member(self, req: Request, aud: Audience, key: str) -> Reply:
        aud.change(aud.require(key), status="archived")
        return 204, None

    def forget(self, req: Request, aud: Audience, key: str) -> Reply:
        aud.forget(aud.require(key))
        return 204, None

    def get_member_tags(self, req: Request, aud: Audience, key: str) -> Reply:
        tags = aud.member_tags(aud.require(key))
        views = [{"id": s.id, "name": s.name, "date_added": iso(s.created_at)} for s in tags]
        return 200, {"tags": req.page(views), "total_items": len(views)}

    def update_member_tags(self, req: Request, aud: Audience, key: str) -> Reply:
        member, tags = aud.require(key), req.json().get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
            raise invalid("tags", "tags must be an array of {name, status} objects")
        if problem := tag_names_problem([t.get("name") for t in tags]):
            raise invalid("tags", problem)
        if any(t.get("status") not in ("active", "inactive") for t in tags):
            raise invalid("tags", "A tag's status must be 'active' or 'inactive'")
        names = {
            status: [t["name"] for t in tags if t["status"] == status]
            for status in ("active", "inactive")
        }
        aud.change(member, add_tags=names["active"], remove_tags=names["inactive"])
        return 204, None

    # --- segments

    def list_segments(self, req: Request, aud: Audience) -> Reply:
        kind = req.query.get("type")
        counts = aud.static_counts()
        views = [aud.segment_view(s, counts) for s in aud.segments.values()
                 if kind in (None, s.type)]  # fmt: skip
        return 200, {"segments": req.page(views), "list_id": aud.list_id, "total_items": len(views)}

    def create_segment(self, req: Request, aud: Audience) -> Reply:
        body = req.json()
        name, emails, options = body.get("name"), body.get("static_segment"), body.get("options")
        if not isinstance(name, str) or not name.strip():
            raise invalid("name", "This value should not be blank.")
        if emails is not None and options is not None:
            raise invalid("options", "Use static_segment or options, not both.")
        if any(s.name.casefold() == name.casefold() for s in aud.segments.values()):
            raise invalid("name", f'A segment or tag named "{name}" already exists.')
        if options is not None:
            if not isinstance(options, dict) or options.get("match") not in ("any", "all"):
                raise invalid("options.match", "match must be 'any' or 'all'")
            if not isinstance(options.get("conditions"), list):
                raise invalid("options.conditions", "conditions must be an array")
            return 200, aud.segment_view(aud.add_segment(name, "saved", options))
        if not isinstance(emails, list):
            raise invalid("static_segment", "Give static_segment (a list of emails) or options.")
        seg = aud.add_segment(name, "static")
        for email in emails:  # addresses not in the audience are ignored
            member = aud.find(email) if isinstance(email, str) else None
            if member is not None and not member.archived:
                aud.change(member, add_tags=[name])
        return 200, aud.segment_view(seg)

    def update_segment(self, req: Request, aud: Audience, segment_id: str) -> Reply:
        """PATCH a segment: rename it, or replace a saved segment's conditions."""
        body, seg = req.json(), aud.segment(segment_id)
        name, options = body.get("name", seg.name), body.get("options")
        if not isinstance(name, str) or not name.strip():
            raise invalid("name", "This value should not be blank.")
        if any(s.name == name and s.id != seg.id for s in aud.segments.values()):
            raise invalid("name", f"A segment or tag named {name!r} already exists.")
        if options is not None:
            if seg.type != "saved":
                raise invalid("options", "Only saved segments have conditions.")
            if not isinstance(options, dict) or options.get("match") not in ("any", "all"):
                raise invalid("options.match", "match must be 'any' or 'all'")
            seg.options = options
        seg.name = name
        return 200, aud.segment_view(seg)

    def get_segment(self, req: Request, aud: Audience, segment_id: str) -> Reply:
        return 200, aud.segment_view(aud.segment(segment_id))

    def batch_segment(self, req: Request, aud: Audience, segment_id: str) -> Reply:
        body, seg = req.json(), aud.segment(segment_id)
        if seg.type != "static":
            raise ApiError(400, detail="Only static segments take members_to_add/remove.")
        adds, removes = body.get("members_to_add") or [], body.get("members_to_remove") or []
        for name, emails in (("members_to_add", adds), ("members_to_remove", removes)):
            if not isinstance(emails, list) or len(emails) > BATCH_LIMIT:
                raise invalid(name, f"Give a list of at most {BATCH_LIMIT} addresses")
        done: dict[bool, list[JSON]] = {True: [], False: []}
        refused: dict[str, list[str]] = {}
        for emails, adding in ((adds, True), (removes, False)):
            for email in emails:
                member = aud.find(email) if isinstance(email, str) else None
                if member is None or member.archived:
                    refused.setdefault(NOT_IN_AUDIENCE, []).append(str(email))
                    continue
                if (seg.name in member.tags) == adding:  # already as asked: refused, it holds
                    refused.setdefault(ALREADY if adding else NOT_IN_SEGMENT, []).append(email)
                    continue
                tag = [seg.name]
                aud.change(
                    member, add_tags=tag if adding else [], remove_tags=[] if adding else tag
                )
                done[adding].append(aud.member_view(member))
        errors = [{"email_addresses": emails, "error": text} for text, emails in refused.items()]
        return 200, {
            "members_added": done[True],
            "members_removed": done[False],
            "errors": errors,
            "total_added": len(done[True]),
            "total_removed": len(done[False]),
            "error_count": sum(len(e) for e in refused.values()),
        }

    def segment_members(self, req: Request, aud: Audience, segment_id: str) -> Reply:
        found = aud.segment_members(aud.segment(segment_id))
        views = [aud.member_view(m) for m in req.page(found)]
        return 200, {"members": views, "total_items": len(found)}


# ------------------------------------------------------------------------ server


def _tar_gz(files: dict[str, str]) -> bytes:
    """A gzipped tar of text files, the shape of a /batches result archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class Fault:
    """A scripted failure: an error status, or (status None) a connection reset."""

    remaining: int
    path_contains: str | None
    status: int | None
    retry_after: float | None = None
    body: JSON | str | None = None
    after_applying: bool = False
    """The call is applied first, then its answer is lost (a reset): a lost answer."""

    def response(self) -> Response:
        if self.status is None:
            return Response(0, reset=True)
        if isinstance(self.body, str):  # "" gives a bare status with no body at all
            reply = Response(self.status, self.body.encode(), "text/html" if self.body else None)
        else:
            doc = self.body or ApiError(self.status, detail="Scripted failure.").problem()
            reply = Response.of(self.status, doc, "application/problem+json")
        if self.retry_after is not None:
            reply.headers["Retry-After"] = f"{self.retry_after:g}"
        return reply


@dataclass
class Mishap:
    response: Response
    before: bool
    """True: the request fails before it is applied; False: after (its answer is lost)."""
    hold_s: float = 0.0


@dataclass
class Chaos:
    """Random failures for fault-storm tests, drawn from a seeded generator."""

    rate: float
    rng: random.Random
    hold_s: float
    drawn: dict[str, int] = field(default_factory=dict)
    """How many of each kind were dealt, so a test can tell the storm really blew."""

    def draw(self) -> Mishap | None:
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(("429", "500", "503", "reset", "hold"))
        self.drawn[kind] = self.drawn.get(kind, 0) + 1
        if kind == "reset":
            return Mishap(Response(0, reset=True), before=False)
        if kind == "hold":
            return Mishap(Response(0), before=False, hold_s=self.hold_s)
        status = int(kind)
        return Mishap(Response.problem(ApiError(status, detail="Chaos.")), before=True)


# ------------------------------------------------------------------------ test-facing API


class FakeMailchimp(LoopbackFake):
    """The fake server, with helpers to set up, inspect and sabotage it from tests."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        max_connections: int = 10,
        latency: float = 0.0,
        batch_op_s: float | None = None,
    ) -> None:
        """`batch_op_s`: seconds each `/batches` operation takes Mailchimp (default: `latency`,
        as long as the same call made directly; batches run one at a time)."""
        self.api_key, self.max_connections, self.latency = api_key, max_connections, latency
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self._clock = Clock()
        self._api = MailchimpApi(api_key)
        self._api.batch_op_s = latency if batch_op_s is None else batch_op_s
        self._faults: list[Fault] = []
        self._lock = threading.Lock()  # guards requests, faults and the in-flight count
        self._in_flight = 0
        self.peak_in_flight = 0
        """The most requests it ever had in flight at once (above `max_connections`: a 429)."""
        self.on_applied: Callable[[str, str], None] | None = None
        """Called with (method, path) after a write call was applied, before its answer is
        sent: a test can kill the client there, as a crash between apply and acknowledge."""
        self._chaos: Chaos | None = None
        self.timeline: list[tuple[str, str, str, float, float]] = []
        """(User-Agent, method, path, started, finished) per request, in monotonic seconds:
        which client made each call and when, to tell agents sharing one audience apart."""

    # --- lifecycle

    def _on_start(self, port: int) -> None:
        self._api.results_base = f"http://127.0.0.1:{port}{RESULTS_PREFIX}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    # --- set-up

    def add_list(self, list_id: str, name: str = "Audience", merge_field_limit: int = 30) -> None:
        with self._api.lock:
            self._api.audiences[list_id] = Audience(list_id, name, merge_field_limit, self._clock)

    def seed_member(
        self,
        list_id: str,
        email: str,
        status: str = "subscribed",
        merge_fields: JSON | None = None,
        tags: Iterable[str] = (),
        unsubscribed_by: str | None = None,
    ) -> str:
        """Put a member in place; returns its hash. An unsubscribed member defaults to "user"."""
        with self._api.lock:
            aud = self._audience(list_id)
            values = merge_fields or {}
            if problem := email_problem(email) or merge_problem(aud.merge_fields, values, None):
                raise ValueError(problem)
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}")
            changes = {"values": values, "add_tags": tags, "by": unsubscribed_by or "user"}
            return aud.admit(email, status, aud.find(email), **changes).id

    def member_unsubscribes(self, list_id: str, email: str) -> None:
        """The person clicks "unsubscribe" in an email."""
        self._mutate(list_id, email, lambda aud, m: aud.change(m, status="unsubscribed", by="user"))

    def archive_member(self, list_id: str, email: str) -> None:
        self._mutate(list_id, email, lambda aud, m: aud.change(m, status="archived"))

    def forget_member(self, list_id: str, email: str) -> None:
        """Permanent delete: the address can never be added again."""
        self._mutate(list_id, email, lambda aud, m: aud.forget(m))

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock forward, so that later changes get a later last_changed."""
        self._clock.advance(seconds)

    # --- faults

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: float | None = None,
        body: JSON | str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """The next n matching requests fail: body None gives a problem document, a dict is sent
        as problem+json, a str as text ("" sends no body, like a bare 429 or 403)."""
        with self._lock:
            self._faults.append(Fault(n, path_contains, status, retry_after, body))

    def chaos(self, rate: float, seed: int, hold_s: float) -> None:
        """From now on, a share `rate` of requests fail at random (seeded): a 429, a 500 or a
        503 before anything is applied, a connection reset after the call was applied, or an
        answer held `hold_s` (past the client's timeout) after the call was applied."""
        self._chaos = Chaos(rate, random.Random(seed), hold_s)

    def reset_next(self, n: int = 1, path_contains: str | None = None) -> None:
        """The next n matching requests have their connection reset, with no response."""
        with self._lock:
            self._faults.append(Fault(n, path_contains, None))

    def lose_answer_next(self, n: int = 1, path_contains: str | None = None) -> None:
        """The next n matching requests are applied, then their connection is reset: the
        client never learns that the call took effect (a timeout, a crash of the network)."""
        with self._lock:
            self._faults.append(Fault(n, path_contains, None, after_applying=True))

    # --- inspection

    def members(self, list_id: str) -> dict[str, JSON]:
        """Every member by hash, archived included; last_changed is a full-precision datetime."""
        with self._api.lock:
            return {
                key: {
                    "email_address": m.email,
                    "status": m.status,
                    "merge_fields": dict(m.merge_fields),
                    "tags": set(m.tags),
                    "last_changed": m.last_changed,
                    "unsubscribed_by": m.unsubscribed_by,
                }
                for key, m in self._audience(list_id).members.items()
            }

    def segments(self, list_id: str) -> dict[str, JSON]:
        """Segments (tags included) by name: id, type, options and the members' emails."""
        with self._api.lock:
            aud = self._audience(list_id)
            return {
                s.name: {
                    "id": s.id,
                    "type": s.type,
                    "options": s.options,
                    "members": {m.email for m in aud.segment_members(s)},
                }
                for s in aud.segments.values()
            }

    def merge_fields(self, list_id: str) -> dict[str, JSON]:
        with self._api.lock:
            return {tag: asdict(f) for tag, f in self._audience(list_id).merge_fields.items()}

    def write_calls(self) -> int:
        with self._lock:
            return sum(1 for method, *_ in self.requests if method != "GET")

    # --- internals

    def _audience(self, list_id: str) -> Audience:
        if list_id not in self._api.audiences:
            raise KeyError(f"no audience {list_id!r}; call add_list first")
        return self._api.audiences[list_id]

    def _mutate(self, list_id: str, email: str, action: Callable[[Audience, Member], None]) -> None:
        with self._api.lock:
            aud = self._audience(list_id)
            if (member := aud.find(email)) is None:
                raise KeyError(f"{email} is not in {list_id}")
            action(aud, member)

    def _handle(self, method: str, target: str, raw: bytes, headers: Any) -> Response:
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = BadJson()
        started = time.monotonic()
        with self._lock:
            self.requests.append((method, path, query, None if isinstance(body, BadJson) else body))
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            crowded = self._in_flight > self.max_connections
        try:
            if crowded:
                limit = f"You have more than {self.max_connections} simultaneous connections."
                return Response.problem(ApiError(429, detail=limit))
            if self.latency:
                time.sleep(self.latency)
            with self._lock:
                fault = take_fault(self._faults, f"{method} {path}")  # "POST /3.0/lists/..."
                mishap = self._chaos.draw() if self._chaos is not None else None
            if fault is not None and not fault.after_applying:
                return fault.response()
            if mishap is not None and mishap.before:
                return mishap.response
            if path.startswith(RESULTS_PREFIX + "/") and method == "GET":  # S3 in real life
                archive = self._api.batch_archives.get(path.rsplit("/", 1)[-1].split(".")[0])
                if archive is None:
                    return Response.problem(not_found())
                return Response(200, archive, "application/x-gzip")
            if not path.startswith(API_PREFIX + "/"):
                return Response.problem(not_found())
            request = Request(method, path.removeprefix(API_PREFIX), query, body)
            reply = self._api.handle(request, headers.get("Authorization"))
            if method != "GET" and reply.status < 400 and self.on_applied is not None:
                self.on_applied(method, path)
            if fault is not None:  # after_applying
                return fault.response()
            if mishap is not None:  # applied, but the answer is lost or late
                if mishap.hold_s:
                    time.sleep(mishap.hold_s)
                    return reply
                return mishap.response
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1
                agent = headers.get("User-Agent") or ""
                self.timeline.append((agent, method, path, started, time.monotonic()))
