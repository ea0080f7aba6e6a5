"""Salesforce connector (simple-salesforce): incremental on SystemModstamp, deletes via queryAll.

Each stream is one object (Contact, Lead, Account, Opportunity, OpportunityContactRole,
CampaignMember, or a custom `Thing__c`). Its fields are the ones its mapping file reads, plus
the bookkeeping fields. Reads are ordered by SystemModstamp then Id; the stream declares
SystemModstamp its cursor, the engine keeps the newest of committed pages as the mark, and the
next read starts a little before it (`overlap_s`), so
records that share a timestamp across a page boundary, or that commit late, are never missed
(their repeats cost a hash comparison). `queryAll` returns soft-deleted and merged records, so
deletes reach the cache; converted leads carry their ConvertedContactId, which the default
mapping uses to join the lead to its contact; merged-away records carry MasterRecordId, which
the default mappings declare as `merged_into` (an alias of the master). A read estimated
(COUNT()) above `bulk_threshold` rows goes through a Bulk API 2.0 query job, streamed page by
page (see salesforce_bulk.py), its CSV made to read like REST.

Every HTTP call, REST or bulk, goes through `SalesforceConnector.call`, on syncbridge's
remote-API layer (`syncbridge.remote`): the policy table below retries with backoff (5xx,
resets, timeouts, REQUEST_LIMIT_EXCEEDED), logs in again once when a login flow's session
expired, and stops on refusals; after each call the daily-usage guard runs. Logins happen at
`login_url` (salesforce_auth.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import requests
from pydantic import Field, SecretStr, model_validator
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from syncbridge.cleaning import format_datetime, parse_datetime
from syncbridge.config.loader import load_mapping
from syncbridge.connectors import DELETED, Connector, Page, SourceOptions, Stream, StreamOptions
from syncbridge.cursors import Cursor, Resume
from syncbridge.errors import FatalError
from syncbridge.redaction import redact, register_secret
from syncbridge.remote import TRANSIENT, Action, Failure, Remote, RetryPolicy, cursor_pages

from .salesforce_auth import Credentials, flow_of, log_in, login_url_for
from .salesforce_bulk import BulkQueryJob, CsvToRest, csv_rows

log = logging.getLogger(__name__)
T = TypeVar("T")
BOOKKEEPING = ("Id", "SystemModstamp", "IsDeleted")
EXTRA_BY_OBJECT = {"Contact": ("MasterRecordId",), "Lead": ("MasterRecordId", "IsConverted",
                   "ConvertedContactId"), "Account": ("MasterRecordId",)}  # fmt: skip
POLICY_TABLE = {**TRANSIENT, "REQUEST_LIMIT_EXCEEDED": Action.RETRY, 401: Action.RENEW,
                403: Action.AUTH}  # fmt: skip
"""Busy or unreachable: retry; an expired session: log in again once; other refusals stop."""
MAX_CONNECTIONS = 10


class SalesforceOptions(SourceOptions):
    """Credentials (one of the flows) and how the source is read."""

    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    domain: str = "login"
    login_url: str | None = None
    """Where to log in, e.g. https://acme.my.salesforce.com, https://test.salesforce.com or a
    proxy (default: https://{domain}.salesforce.com; a login flow's instance_url also works)."""
    consumer_key: str | None = None
    consumer_secret: SecretStr | None = None
    privatekey_file: str | None = None
    instance_url: str | None = None
    session_id: SecretStr | None = None
    version: str = "59.0"
    overlap_s: int = Field(default=300, ge=0)
    bulk_threshold: int = Field(default=50_000, ge=1)
    bulk_page_size: int = Field(default=50_000, ge=1)
    """Records per Bulk API result page (memory stays bounded by one page)."""
    max_api_share: float = Field(default=0.8, gt=0, le=1)
    """Stop a run before this share of the org's daily API requests is used."""
    retries: int = Field(default=4, ge=0, le=10)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    """The first retry waits up to this long (random), doubling each time, at most 60 s."""
    timeout_s: float = Field(default=120, gt=0)
    """Seconds to wait for Salesforce to connect, and between bytes of an answer."""
    bulk_poll_s: float = Field(default=2.0, ge=0)
    """Seconds between polls of a Bulk API job's state."""
    bulk_timeout_s: float = Field(default=3600, gt=0)
    batch_size: int = Field(default=2000, ge=200, le=2000)
    """Records per query page (Sforce-Query-Options batchSize; Salesforce may return fewer)."""

    @model_validator(mode="after")
    def _one_flow(self) -> SalesforceOptions:
        flows = [
            self.session_id is not None and self.instance_url is not None,
            self.username is not None and self.password is not None,
            self.username is not None
            and self.consumer_key is not None
            and bool(self.privatekey_file),
            self.consumer_key is not None and self.consumer_secret is not None,
        ]
        if not any(flows):
            raise ValueError(
                "give credentials: username + password (+ security_token), a JWT connected app "
                "(username, consumer_key, privatekey_file), client credentials (consumer_key, "
                "consumer_secret, domain = your My Domain) or instance_url + session_id"
            )
        return self


class SalesforceStreamOptions(StreamOptions):
    object: str | None = None
    """The sObject (default: the stream's name, e.g. Contact)."""
    fields: list[str] = Field(default_factory=list)
    """Extra fields to read besides those the mapping uses."""
    where: str | None = None
    """An extra SOQL condition, e.g. `IsPersonAccount = false`."""


class SalesforceStream(Stream):
    def __init__(self, connector: SalesforceConnector, options: SalesforceStreamOptions) -> None:
        self.connector = connector
        self.options = options
        self.name = options.name
        self.object = options.object or options.name
        self.primary_key = ("Id",)
        self.cursor_field = "SystemModstamp"
        self.cursor = Cursor("SystemModstamp", "datetime")

    def fields(self) -> list[str]:
        mapping = load_mapping(self.connector.base_dir / self.options.mapping)
        wanted = [column for _, column in mapping.field_references()]
        extra = EXTRA_BY_OBJECT.get(self.object, ())
        ordered = [*BOOKKEEPING, *extra, *self.options.fields, *wanted]
        return list(dict.fromkeys(ordered))

    def soql(self, since: datetime | None) -> str:
        conditions = []
        if since is not None:
            conditions.append(f"SystemModstamp >= {since.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        if self.options.where:
            conditions.append(f"({self.options.where})")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        columns = ", ".join(self.fields())
        return f"SELECT {columns} FROM {self.object}{where} ORDER BY SystemModstamp, Id"

    def read(self, cursor: Any | None) -> Iterator[Page]:
        """Records from a little before the engine's mark (`overlap_s`) on."""
        resume = cursor if isinstance(cursor, Resume) else self.resume(cursor)
        since = None
        if isinstance(resume.mark, datetime):
            since = resume.mark - timedelta(seconds=self.connector.options.overlap_s)
        soql = self.soql(since)
        expected = self.connector.estimate(self.object, since)  # also the live display's total
        if expected > self.connector.options.bulk_threshold:
            yield from self._bulk(soql, expected)
            return
        yield from self._rest(soql, expected)

    def _rest(self, soql: str, expected: int | None = None) -> Iterator[Page]:
        """Ordered by SystemModstamp: every page is a checkpoint for the engine's mark."""
        headers = {"Sforce-Query-Options": f"batchSize={self.connector.options.batch_size}"}

        def fetch(next_url: str | None) -> tuple[dict[str, Any], str | None]:
            def work(sf: Salesforce) -> dict[str, Any]:  # the batch size is per call: ask each
                if next_url is None:
                    return sf.query(soql, include_deleted=True, headers=headers)
                return sf.query_more(
                    next_url, identifier_is_url=True, include_deleted=True, headers=headers
                )

            result = self.connector.call(work, soql)
            done = bool(result.get("done", True))
            return result, None if done else str(result["nextRecordsUrl"])

        seen = 0
        for result in cursor_pages(fetch):
            records = [self._record(r) for r in result.get("records", [])]
            seen += len(records)
            yield Page(records, None, share=_done(seen, expected), expected=expected)

    def _bulk(self, soql: str, expected: int | None = None) -> Iterator[Page]:
        """A Bulk API 2.0 query job, streamed. Its results are not ordered by SystemModstamp,
        so only the last page, once the whole job is in, is a checkpoint: the engine moves the
        mark then, and a crash repeats the job."""
        o = self.connector.options
        log.info("%s: large read through a Bulk API 2.0 query job", self.object)
        job = BulkQueryJob(self.connector.call, soql, o.bulk_page_size, o.bulk_poll_s,
                           o.bulk_timeout_s)  # fmt: skip
        to_rest = CsvToRest(self.object, self.connector.fields_of)
        seen = 0
        for text in job.pages():
            records = [self._record(to_rest.record(row)) for row in csv_rows(text)]
            for start in range(0, len(records), o.batch_size):
                part = records[start : start + o.batch_size]
                seen += len(part)
                yield Page(part, None, checkpoint=False, share=_done(seen, expected),
                           expected=expected)  # fmt: skip
        yield Page([], None, share=1.0, expected=expected)

    def _record(self, raw: dict[str, Any]) -> dict[str, Any]:
        record = _without_attributes(raw)
        stamp = record.get("SystemModstamp")
        if stamp:
            record["SystemModstamp"] = format_datetime(parse_datetime(stamp))
        if record.get("IsDeleted") is True:
            record[DELETED] = True
        return record


class SalesforceConnector(Connector):
    """Reads Salesforce objects incrementally through simple-salesforce."""

    source_options = SalesforceOptions
    stream_options = SalesforceStreamOptions
    session_factory: Callable[[], requests.Session] | None = None
    """How the HTTP session is made (tests route it to a local fake); None: a pooled one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options: SalesforceOptions
        for secret in (self.options.password, self.options.security_token,
                       self.options.consumer_secret, self.options.session_id):  # fmt: skip
            if secret is not None:
                register_secret(secret.get_secret_value())
        self._client: Salesforce | None = None
        self._remote: Remote | None = None
        self._fields: dict[str, list[dict[str, Any]]] = {}

    def streams(self) -> list[Stream]:
        return [SalesforceStream(self, s) for s in self.stream_configs]  # type: ignore[arg-type]

    @property
    def renewable(self) -> bool:
        """A login flow can log in again; a given session_id cannot be renewed."""
        return not (self.options.session_id is not None and self.options.instance_url)

    def client(self) -> Salesforce:
        if self._client is None:
            self._client = self._login()
        return self._client

    @property
    def remote(self) -> Remote:
        """The session, connection limit, policy and call log of every call (logins too)."""
        if self._remote is None:
            o = self.options
            factory = type(self).session_factory
            policy = RetryPolicy(POLICY_TABLE, attempts=o.retries + 1, backoff_s=o.retry_backoff_s,
                                 backoff_max_s=60)  # fmt: skip
            self._remote = Remote(
                "Salesforce", policy, log, max_connections=MAX_CONNECTIONS, timeout_s=o.timeout_s,
                session=factory() if factory is not None else None, classify=self._classify,
                always_show_attempt=False,
            )  # fmt: skip
        return self._remote

    def _login(self) -> Salesforce:
        """A client on the session given, or on a fresh login at the login URL."""
        o = self.options
        http = self.remote.session
        if o.session_id is not None and o.instance_url:
            instance, session_id = o.instance_url, o.session_id.get_secret_value()
        else:
            url = login_url_for(o.login_url or o.instance_url, o.domain)
            secret = lambda s: s.get_secret_value() if s is not None else None  # noqa: E731
            credentials = Credentials(
                username=o.username, password=secret(o.password),
                security_token=secret(o.security_token) or "", consumer_key=o.consumer_key,
                consumer_secret=secret(o.consumer_secret),
                privatekey_file=self.base_dir / o.privatekey_file if o.privatekey_file else None,
                domain=o.domain,
            )  # fmt: skip
            session = log_in(http, url, credentials, o.version)
            register_secret(session.session_id)
            log.info("logged in to Salesforce at %s (%s)", url, flow_of(credentials))
            instance, session_id = session.instance_url, session.session_id
        return Salesforce(instance_url=instance, session_id=session_id, session=http,
                          version=o.version)  # fmt: skip

    def describe(self, obj: str) -> list[dict[str, Any]]:
        """The object's fields (name, type, label, custom, nillable) from the describe call."""
        keys = ("name", "type", "label", "custom", "nillable")
        return [{k: f.get(k) for k in keys} for f in self.fields_of(obj)]

    def fields_of(self, obj: str) -> list[dict[str, Any]]:
        """The object's describe fields, read once per run."""
        if obj not in self._fields:
            result = self.call(  # through the client, so its usage is seen (SFType keeps its own)
                lambda sf: sf.restful(f"sobjects/{obj}/describe"), f"describe {obj}"
            )
            self._fields[obj] = list(result.get("fields", []))
        return self._fields[obj]

    def check(self) -> None:
        self.call(lambda sf: sf.limits(), "limits")

    def estimate(self, obj: str, since: datetime | None = None) -> int:
        """Rows a read would return (a COUNT() query; cheap on Salesforce's side)."""
        where = f" WHERE SystemModstamp >= {since.strftime('%Y-%m-%dT%H:%M:%SZ')}" if since else ""
        soql = f"SELECT COUNT() FROM {obj}{where}"
        result = self.call(lambda sf: sf.query(soql, include_deleted=True), soql)
        return int(result.get("totalSize", 0))

    def call(self, work: Callable[[Salesforce], T], soql: str) -> T:
        """One API call, `work(client)`: retried when Salesforce is busy or unreachable, on a
        new session when a login flow's session expired, stopped near the daily limit."""
        renew = self._renew if self.renewable else None
        result = self.remote.call(lambda: work(self.client()), soql, renew)
        self._check_usage()
        return result

    def _renew(self) -> None:
        log.info("Salesforce session expired; logging in again")
        self._client = None

    def _classify(self, exc: BaseException, soql: str) -> Failure | None:
        """simple-salesforce's exceptions in the policy's terms, with Salesforce's own code and
        message (and the query, when it was the query Salesforce rejected)."""
        if not isinstance(exc, SalesforceError):
            return None
        code, status = _error_code(exc), int(getattr(exc, "status", 0) or 0) or None
        if isinstance(exc, SalesforceExpiredSession):
            if self.renewable:  # the policy renews once; this is what a second expiry means
                message = "Salesforce refused a session it had just issued (INVALID_SESSION_ID)"
            else:
                message = (
                    "Salesforce session expired or invalid; a session_id cannot be renewed: use "
                    "a login flow (username + password, JWT or client credentials)"
                )
            return Failure(message, status=401, code=code or None)
        if isinstance(exc, SalesforceRefusedRequest):
            if code == "REQUEST_LIMIT_EXCEEDED":
                return Failure("Salesforce: REQUEST_LIMIT_EXCEEDED", status=403, code=code)
            message = redact(f"Salesforce refused the request ({code}): {_message(exc)}")
            return Failure(message, status=403, code=code or None)
        if isinstance(exc, SalesforceMalformedRequest):
            message = f"Salesforce rejected the query ({code}: {_message(exc)}): {soql}"
            return Failure(message, status=400, code=code or None)
        if isinstance(exc, SalesforceGeneralError):
            if status is not None and status >= 500:
                return Failure(f"Salesforce {status}", status=status)
            return Failure(redact(f"Salesforce error {status}: {_message(exc)}"), status=status)
        return Failure(redact(f"Salesforce error: {_message(exc)}"), status=status)

    def _check_usage(self) -> None:
        if self._client is None:
            return
        usage = self._client.api_usage.get("api-usage")
        if usage is None:
            return
        used, total = getattr(usage, "used", None), getattr(usage, "total", None)
        if used is not None and total and used / total >= self.options.max_api_share:
            raise FatalError(
                f"stopping: {used} of the org's {total} daily API requests are used, at or above "
                f"max_api_share = {self.options.max_api_share:.0%}; the next run continues from "
                "the saved cursor"
            )


def _without_attributes(value: Any) -> Any:
    """A REST record without `attributes`, at every level of its relationship objects."""
    if isinstance(value, dict):
        return {k: _without_attributes(v) for k, v in value.items() if k != "attributes"}
    return value


def _error_code(exc: SalesforceError) -> str:
    content = getattr(exc, "content", None)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode", ""))
    return ""


def _message(exc: SalesforceError) -> str:
    content = getattr(exc, "content", None)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("message", ""))
    return str(getattr(exc, "message", exc))


__all__ = ["SalesforceConnector"]


def _done(seen: int, expected: int | None) -> float | None:
    """The share of a counted read done (records may have changed since the COUNT())."""
    return min(1.0, seen / expected) if expected else None
