"""Bulk API 2.0 query jobs, one HTTP call at a time, and their CSV made to read like REST.

simple-salesforce's `sf.bulk2.X.query_all` is a generator that makes its calls (create, polls,
result pages) lazily, with the session id it captured when `sf.bulk2` was read and without its
REST client's re-login or API-usage bookkeeping: wrapping its creation in a retry covers none
of those calls. Here each call is one `work(sf)` handed to the connector's `call`, the door
every REST call goes through (retries with backoff, session renewal, the daily-usage guard),
and it uses the client `call` gives it, so a renewed session is used from the next call on.

Bulk results are CSV: `true`/`false`, datetimes as `2024-03-05T14:22:11.000Z`, relationship
fields flattened (`Account.Name` as a column), empty cells for null. `CsvToRest` turns a row
into what the query resource returns for the same record (JSON types by the object's describe,
`2024-03-05T14:22:11.000+0000`, nested `{"Account": {"Name": ...}}` or `"Account": null`), so
the first REST read after a bulk load finds every record unchanged.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.util import exception_handler

from syncbridge.errors import FatalError, RetriableError
from syncbridge.remote import cursor_pages

log = logging.getLogger(__name__)
T = TypeVar("T")
Call = Callable[[Callable[[Salesforce], T], str], T]
FINISHED = {"JobComplete", "Failed", "Aborted"}


def bulk_request(sf: Salesforce, method: str, path: str, **kwargs: Any) -> requests.Response:
    """One call under `sf.base_url` with the client's current session, errors raised as
    simple-salesforce raises them and the API usage read from `Sforce-Limit-Info`."""
    headers = {**sf.headers, **kwargs.pop("headers", {})}
    reply = sf.session.request(method, sf.base_url + path, headers=headers, **kwargs)
    if reply.status_code >= 300:
        exception_handler(reply, name=path)
    if info := reply.headers.get("Sforce-Limit-Info"):
        sf.api_usage = Salesforce.parse_api_usage(info)
    return reply


class BulkQueryJob:
    """A queryAll job: create, poll until done, read every result page, delete it."""

    def __init__(self, call: Call[Any], soql: str, page_size: int, poll_s: float,
                 timeout_s: float) -> None:  # fmt: skip
        self.call, self.soql = call, soql
        self.page_size, self.poll_s, self.timeout_s = page_size, poll_s, timeout_s
        self.id = ""

    def pages(self) -> Iterator[str]:
        """The CSV text of each result page (each with its header row)."""
        payload = {"operation": "queryAll", "query": self.soql, "contentType": "CSV",
                   "columnDelimiter": "COMMA", "lineEnding": "LF"}  # fmt: skip
        job = self.call(
            lambda sf: bulk_request(sf, "POST", "jobs/query", json=payload).json(),
            f"create a Bulk API query job for {self.soql}",
        )
        self.id = str(job["id"])
        self._wait()
        yield from cursor_pages(self._page)
        self._delete()

    def _page(self, locator: str | None) -> tuple[str, str | None]:
        """One result page's CSV text and the locator of the next (None after the last)."""
        params: dict[str, Any] = {"maxRecords": self.page_size}
        if locator:
            params["locator"] = locator
        reply = self.call(
            lambda sf: bulk_request(
                sf, "GET", f"jobs/query/{self.id}/results", params=params,
                headers={"Accept": "text/csv"},
            ),
            f"results of Bulk API job {self.id}",
        )  # fmt: skip
        following = reply.headers.get("Sforce-Locator", "")
        text = reply.content.decode("utf-8").replace("\x00", "")
        return text, None if following in ("", "null") else following

    def _wait(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            info = self.call(
                lambda sf: bulk_request(sf, "GET", f"jobs/query/{self.id}").json(),
                f"state of Bulk API job {self.id}",
            )
            state = info.get("state")
            if state == "JobComplete":
                return
            if state in FINISHED:
                reason = info.get("errorMessage") or "no reason given"
                raise FatalError(f"Bulk API query job {self.id} {state}: {reason}: {self.soql}")
            if time.monotonic() >= deadline:
                raise RetriableError(
                    f"Bulk API query job {self.id} still {state} after {self.timeout_s:.0f} s"
                )
            time.sleep(self.poll_s)

    def _delete(self) -> None:
        """Results stay on Salesforce's side for days unless deleted; a failed delete only
        leaves them there, so it does not fail the read."""
        try:
            self.call(
                lambda sf: bulk_request(sf, "DELETE", f"jobs/query/{self.id}"),
                f"delete Bulk API job {self.id}",
            )
        except (RetriableError, FatalError) as exc:
            log.warning("Bulk API job %s was read but not deleted: %s", self.id, exc)


Describe = Callable[[str], list[dict[str, Any]]]


class CsvToRest:
    """Turns bulk CSV rows of one object into REST-shaped records, typed by describe."""

    def __init__(self, obj: str, describe: Describe) -> None:
        self.obj, self.describe = obj, describe
        self._columns: dict[str, tuple[list[str], str]] = {}

    def record(self, row: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        parents: set[tuple[str, ...]] = set()
        for column, text in row.items():
            path, kind = self._column(column)
            value = rest_value(kind, text)
            node = out
            for depth, rel in enumerate(path[:-1]):
                parents.add(tuple(path[: depth + 1]))
                node = node.setdefault(rel, {})
            node[path[-1]] = value
        for parent in sorted(parents, key=len, reverse=True):  # no parent: null, as REST has it
            *up, last = parent
            node = out
            for rel in up:
                node = node[rel]
            if isinstance(node.get(last), dict) and all(v is None for v in node[last].values()):
                node[last] = None
        return out

    def _column(self, column: str) -> tuple[list[str], str]:
        """The column's path in API-name case (REST's keys) and its field type."""
        if column not in self._columns:
            self._columns[column] = self._resolve(column)
        return self._columns[column]

    def _resolve(self, column: str) -> tuple[list[str], str]:
        parts = column.split(".")
        obj, path = self.obj, []
        for i, rel in enumerate(parts[:-1]):
            hop = _named(self.describe(obj), "relationshipName", rel)
            targets = (hop or {}).get("referenceTo") or []
            if hop is None or len(targets) != 1:  # unknown or polymorphic: keep it as text
                return [*path, *parts[i:]], "string"
            path.append(str(hop["relationshipName"]))
            obj = str(targets[0])
        name = parts[-1]
        field = _named(self.describe(obj), "name", name)
        if field is None:
            return [*path, name], "string"
        return [*path, str(field["name"])], str(field.get("type", "string"))


def _named(fields: list[dict[str, Any]], key: str, name: str) -> dict[str, Any] | None:
    """The describe field whose `key` is `name`, ignoring case (SOQL names are)."""
    wanted = name.lower()
    return next((f for f in fields if str(f.get(key) or "").lower() == wanted), None)


def rest_value(kind: str, text: str) -> Any:
    """A CSV cell as the REST API's JSON has it for a field of this type."""
    if text == "":
        return None
    if kind == "boolean":
        return text.lower() == "true"
    if kind in ("int", "long"):
        try:
            return int(text)
        except ValueError:
            return float(text)
    if kind in ("double", "currency", "percent"):
        return float(text)
    if kind == "datetime":
        moment = datetime.fromisoformat(text).astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"
    return text


def csv_rows(text: str) -> Iterator[dict[str, str]]:
    yield from csv.DictReader(io.StringIO(text))
