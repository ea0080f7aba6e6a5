"""The Salesforce fake, driven through simple-salesforce itself, behaves like the real org."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from .fakes.salesforce import DEFAULT_CLOCK, FakeSalesforce, id18

T0 = DEFAULT_CLOCK
INCREMENTAL = "SELECT Id, Email, SystemModstamp FROM Contact ORDER BY SystemModstamp, Id"


@pytest.fixture
def fake() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as server:
        yield server


@pytest.fixture
def sf(fake: FakeSalesforce) -> Salesforce:
    return fake.client()


def contacts(fake: FakeSalesforce, n: int, **fields: Any) -> list[str]:
    rows = [{"LastName": f"L{i}", "Email": f"c{i}@example.io", **fields} for i in range(n)]
    return fake.insert_many("Contact", rows)


def pages(sf: Salesforce, soql: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every page of a REST query, following nextRecordsUrl."""
    result = sf.query(soql, **kwargs)
    found = [result]
    while not result["done"]:
        result = sf.query_more(result["nextRecordsUrl"], identifier_is_url=True, **kwargs)
        found.append(result)
    return found


def error_code(info: pytest.ExceptionInfo[Any]) -> str:
    return str(info.value.content[0]["errorCode"])


# ---------------------------------------------------------------- connecting


def test_session_id_client_reaches_the_fake_over_the_https_urls_simple_salesforce_builds(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    assert sf.base_url == f"https://{fake.address}/services/data/v59.0/"
    assert sf.query("SELECT Id FROM Contact")["totalSize"] == 0
    assert fake.requests[-1].path == "/services/data/v59.0/query"
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {fake.session_id}"


def test_the_session_never_reaches_other_hosts(fake: FakeSalesforce) -> None:
    with pytest.raises(requests.ConnectionError, match="no network"):
        fake.http_session().get("https://example.com/")


def test_soap_login_issues_a_session_and_relogs_in_after_expiry(fake: FakeSalesforce) -> None:
    sf = fake.login_client()
    first = sf.session_id
    assert sf.sf_instance == fake.address
    fake.insert("Contact", LastName="Lovelace")
    fake.expire_session()
    assert sf.query("SELECT Id FROM Contact")["totalSize"] == 1  # 401, login, retry
    assert sf.session_id != first
    soap = [r for r in fake.requests if r.path.startswith("/services/Soap/u/")]
    assert len(soap) == 2 and "<n1:password>hunter2TOKEN123</n1:password>" in soap[0].body


def test_soap_login_with_a_wrong_password_fails(fake: FakeSalesforce) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as info:
        fake.login_client(password="wrong")
    assert info.value.code == "INVALID_LOGIN"


def test_client_credentials_flow_on_a_my_domain(fake: FakeSalesforce) -> None:
    c = fake.credentials
    sf = Salesforce(
        consumer_key=c.consumer_key,
        consumer_secret=c.consumer_secret,
        domain="acme.my",
        session=fake.http_session("acme.my"),
    )
    assert sf.session_id == fake.session_id
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 0


def test_jwt_bearer_flow_checks_the_signature(fake: FakeSalesforce, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    fake.credentials.jwt_public_key = public.decode()
    (tmp_path / "server.key").write_bytes(pem)
    c = fake.credentials
    sf = Salesforce(
        username=c.username,
        consumer_key=c.consumer_key,
        privatekey_file=str(tmp_path / "server.key"),
        session=fake.http_session(),
    )
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    with pytest.raises(SalesforceAuthenticationFailed):
        Salesforce(
            username=c.username,
            consumer_key=c.consumer_key,
            privatekey=forged,
            session=fake.http_session(),
        )


def test_expired_session_raises_for_a_session_id_client(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    fake.expire_session()
    with pytest.raises(SalesforceExpiredSession) as info:
        sf.query("SELECT Id FROM Contact")
    assert info.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    assert fake.client(session_id=fake.new_session()).query("SELECT Id FROM Contact")["done"]


# ---------------------------------------------------------------- query and queryAll


def test_query_hides_deleted_records_and_query_all_shows_them(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    keep, gone = contacts(fake, 2)
    fake.advance(60)
    fake.delete("Contact", gone)
    soql = "SELECT Id, IsDeleted, SystemModstamp FROM Contact"
    assert [r["Id"] for r in sf.query(soql)["records"]] == [keep]
    every = {r["Id"]: r for r in sf.query_all(soql, include_deleted=True)["records"]}
    assert every[gone]["IsDeleted"] is True
    assert every[gone]["SystemModstamp"] == "2024-01-01T00:01:00.000+0000"
    deleted = sf.query("SELECT Id FROM Contact WHERE IsDeleted = true", include_deleted=True)
    assert [r["Id"] for r in deleted["records"]] == [gone]
    fake.purge("Contact", gone)
    assert sf.query(soql, include_deleted=True)["totalSize"] == 1


def test_records_carry_attributes_and_salesforce_formatted_values(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    cid = fake.insert("Contact", FirstName="Ada", LastName="Lovelace", Birthdate="1815-12-10")
    record = sf.query("SELECT Id, Name, Birthdate, HasOptedOutOfEmail, CreatedDate FROM Contact")[
        "records"
    ][0]
    assert cid == id18(cid[:15]) and cid.startswith("003") and len(cid) == 18
    assert record["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v59.0/sobjects/Contact/{cid}",
    }
    assert (record["Name"], record["Birthdate"]) == ("Ada Lovelace", "1815-12-10")
    assert (record["HasOptedOutOfEmail"], record["CreatedDate"]) == (
        False,
        "2024-01-01T00:00:00.000+0000",
    )


@pytest.mark.parametrize(
    ("obj", "prefix"),
    [
        ("Contact", "003"),
        ("Lead", "00Q"),
        ("Account", "001"),
        ("Opportunity", "006"),
        ("OpportunityContactRole", "00K"),
        ("CampaignMember", "00v"),
    ],
)
def test_ids_have_the_object_key_prefix(fake: FakeSalesforce, obj: str, prefix: str) -> None:
    assert fake.insert(obj).startswith(prefix)


# ---------------------------------------------------------------- paging


def test_4500_records_come_in_pages_of_2000_linked_by_next_records_url(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    ids = contacts(fake, 4500)
    found = pages(sf, "SELECT Id FROM Contact")
    assert [len(p["records"]) for p in found] == [2000, 2000, 500]
    assert [p["done"] for p in found] == [False, False, True]
    assert {p["totalSize"] for p in found} == {4500}
    assert found[0]["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert found[0]["nextRecordsUrl"].endswith("-2000")
    assert found[1]["nextRecordsUrl"].endswith("-4000")
    assert "nextRecordsUrl" not in found[2]
    assert [r["Id"] for p in found for r in p["records"]] == ids
    assert len(sf.query_all("SELECT Id FROM Contact")["records"]) == 4500
    assert fake.api_usage["query"] == 2 and fake.api_usage["queryMore"] == 4


@pytest.mark.parametrize(("asked", "size"), [(500, 500), (50, 200), (5000, 2000)])
def test_batch_size_header_sets_the_page_size_within_200_to_2000(
    fake: FakeSalesforce, sf: Salesforce, asked: int, size: int
) -> None:
    contacts(fake, 2100)
    options = {"Sforce-Query-Options": f"batchSize={asked}"}
    found = pages(sf, "SELECT Id FROM Contact", headers=options)
    assert len(found[0]["records"]) == size
    assert sum(len(p["records"]) for p in found) == 2100
    assert all(len(p["records"]) == size for p in found[:-1])  # each call asked for it


def test_the_batch_size_header_is_per_call_so_a_next_page_without_it_is_2000(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    contacts(fake, 2600)
    first = sf.query("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=300"})
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert (len(first["records"]), len(second["records"])) == (300, 2000)


def test_records_sharing_one_system_modstamp_span_a_page_boundary(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    early = contacts(fake, 10)
    fake.advance(1)
    same = contacts(fake, 2500)  # one clock reading: one SystemModstamp
    found = pages(sf, INCREMENTAL)
    page1, page2 = found[0]["records"], found[1]["records"]
    assert (
        page1[-1]["SystemModstamp"] == page2[0]["SystemModstamp"] == "2024-01-01T00:00:01.000+0000"
    )
    assert [r["Id"] for p in found for r in p["records"]] == early + same
    since = pages(
        sf, INCREMENTAL.replace("ORDER", "WHERE SystemModstamp >= 2024-01-01T00:00:01Z ORDER")
    )
    assert sum(len(p["records"]) for p in since) == 2500


def test_a_record_updated_while_paging_stays_on_its_snapshot_page(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    ids = contacts(fake, 4500)
    first = sf.query(INCREMENTAL)
    fake.advance(30)
    fake.update("Contact", ids[0], Email="moved@example.io")  # already read: would reappear
    fake.update("Contact", ids[4400], Email="late@example.io")  # not yet read: would move
    rest = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert sf.query_more(first["nextRecordsUrl"], identifier_is_url=True) == rest  # a retry
    last = sf.query_more(rest["nextRecordsUrl"], identifier_is_url=True)
    seen = [r["Id"] for p in (first, rest, last) for r in p["records"]]
    assert seen == ids
    snapshot = last["records"][400]
    assert (snapshot["Id"], snapshot["Email"]) == (ids[4400], "c4400@example.io")
    assert snapshot["SystemModstamp"] == "2024-01-01T00:00:00.000+0000"
    fresh = sf.query(INCREMENTAL)["records"]  # a new query sees the change
    assert ids[0] not in [r["Id"] for r in fresh[:2000]]


def test_expired_cursor_is_an_invalid_query_locator(fake: FakeSalesforce, sf: Salesforce) -> None:
    contacts(fake, 2001)
    first = sf.query("SELECT Id FROM Contact")
    fake.expire_cursors()
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert error_code(info) == "INVALID_QUERY_LOCATOR"


# ---------------------------------------------------------------- SOQL


def test_order_by_system_modstamp_then_id_and_where_with_datetime_literals(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    a, b = contacts(fake, 2)
    fake.advance(10)
    c = fake.insert("Contact", LastName="C")
    fake.advance(10)
    fake.update("Contact", a, Title="CEO")  # a moves to the end
    ordered = sf.query(INCREMENTAL)["records"]
    assert [r["Id"] for r in ordered] == [b, c, a]
    newest_first = sf.query("SELECT Id FROM Contact ORDER BY SystemModstamp DESC, Id")["records"]
    assert [r["Id"] for r in newest_first] == [a, c, b]
    for literal in (
        "2024-01-01T00:00:10Z",
        "2024-01-01T00:00:10.000+0000",
        "2024-01-01T01:00:10+01:00",
    ):
        soql = (
            f"SELECT Id FROM Contact WHERE SystemModstamp >= {literal} ORDER BY SystemModstamp, Id"
        )
        assert [r["Id"] for r in sf.query(soql)["records"]] == [c, a], literal
    assert (
        sf.query("SELECT Id FROM Contact WHERE SystemModstamp > 2024-01-01T00:00:10Z")["totalSize"]
        == 1
    )


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("LastName = 'lovelace'", ["ada"]),
        ("LastName != 'Lovelace'", ["grace", "alan", "nobody"]),
        ("Email = null", ["nobody"]),
        ("Email != null AND HasOptedOutOfEmail = false", ["ada", "alan"]),
        ("FirstName IN ('Ada', 'Alan')", ["ada", "alan"]),
        ("FirstName NOT IN ('Ada', 'Alan')", ["grace", "nobody"]),
        ("Email LIKE '%.org'", ["grace"]),
        ("(LastName = 'Hopper' OR LastName = 'Turing') AND HasOptedOutOfEmail = true", ["grace"]),
        ("NOT LastName = 'Hopper'", ["ada", "alan", "nobody"]),
        ("Birthdate < 1900-01-01", ["ada"]),
    ],
)
def test_where_conditions(
    fake: FakeSalesforce, sf: Salesforce, where: str, expected: list[str]
) -> None:
    people = {
        "ada": {
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "Email": "ada@a.io",
            "Birthdate": "1815-12-10",
        },
        "grace": {
            "FirstName": "Grace",
            "LastName": "Hopper",
            "Email": "grace@navy.org",
            "HasOptedOutOfEmail": True,
        },
        "alan": {"FirstName": "Alan", "LastName": "Turing", "Email": "alan@t.uk"},
        "nobody": {"FirstName": None, "LastName": "Nobody"},
    }
    names = {fake.insert("Contact", **fields): name for name, fields in people.items()}
    records = sf.query(f"SELECT Id FROM Contact WHERE {where}")["records"]
    assert [names[r["Id"]] for r in records] == expected


def test_relationship_fields_are_nested_objects_or_null(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    acme = fake.insert("Account", Name="Acme", Industry="Tools")
    ada = fake.insert("Contact", LastName="Lovelace", Email="ada@a.io", AccountId=acme)
    fake.insert("Contact", LastName="Loner")
    records = sf.query("SELECT Id, Account.Name, Account.Industry FROM Contact ORDER BY LastName")[
        "records"
    ]
    assert records[0]["Account"] is None
    assert records[1]["Id"] == ada
    assert records[1]["Account"] == {
        "attributes": {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{acme}"},
        "Name": "Acme",
        "Industry": "Tools",
    }
    deal = fake.insert("Opportunity", Name="Deal", AccountId=acme, StageName="Won", Amount=120)
    fake.insert("OpportunityContactRole", OpportunityId=deal, ContactId=ada, IsPrimary=True)
    role = sf.query(
        "SELECT Contact.Email, Opportunity.Account.Name, Opportunity.Amount FROM OpportunityContactRole"
    )
    row = role["records"][0]
    assert row["Contact"]["Email"] == "ada@a.io"
    assert row["Opportunity"]["Account"]["Name"] == "Acme" and row["Opportunity"]["Amount"] == 120.0
    where = sf.query("SELECT Id FROM Contact WHERE Account.Name = 'acme'")["records"]
    assert [r["Id"] for r in where] == [ada]


def test_count_query_and_limit(fake: FakeSalesforce, sf: Salesforce) -> None:
    ids = contacts(fake, 5)
    assert sf.query("SELECT COUNT() FROM Contact") == {"totalSize": 5, "done": True, "records": []}
    limited = sf.query("SELECT Id FROM Contact ORDER BY Id DESC LIMIT 2")
    assert [r["Id"] for r in limited["records"]] == ids[:-3:-1] and limited["totalSize"] == 2


@pytest.mark.parametrize(
    ("soql", "code", "message"),
    [
        (
            "SELECT Id, Foo FROM Contact",
            "INVALID_FIELD",
            "No such column 'Foo' on entity 'Contact'",
        ),
        ("SELECT Id FROM Contact WHERE Foo__c = 1", "INVALID_FIELD", "No such column 'Foo__c'"),
        ("SELECT Id FROM Contact ORDER BY Bar", "INVALID_FIELD", "No such column 'Bar'"),
        (
            "SELECT Owner.Name FROM Contact",
            "INVALID_FIELD",
            "Didn't understand relationship 'Owner'",
        ),
        (
            "SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01T00:00:00Z'",
            "INVALID_FIELD",
            "must be of type dateTime and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Contact WHERE Email = 5",
            "INVALID_FIELD",
            "must be of type string and should be enclosed in quotes",
        ),
        ("SELECT Id FROM Nope", "INVALID_TYPE", "sObject type 'Nope' is not supported"),
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
        ("SELECT Id FORM Contact", "MALFORMED_QUERY", "unexpected token: 'FORM'"),
        ("SELECT Id, FROM Contact", "MALFORMED_QUERY", "unexpected token: 'FROM'"),
        (
            "SELECT Id FROM Contact WHERE Email = 'a' AND LastName = 'b' OR Title = 'c'",
            "MALFORMED_QUERY",
            "unexpected token: 'OR'",
        ),
        (
            "SELECT Id FROM Contact WHERE Email = 'a' LIMIT x",
            "MALFORMED_QUERY",
            "unexpected token: 'x'",
        ),
    ],
)
def test_bad_queries_raise_malformed_request_with_the_error_code(
    sf: Salesforce, soql: str, code: str, message: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as info:
        sf.query(soql)
    assert info.value.status == 400
    assert error_code(info) == code
    assert message in info.value.content[0]["message"]


# ---------------------------------------------------------------- merges, conversions, deletes


def test_merge_and_lead_conversion_are_visible_through_query_all(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    winner, loser = contacts(fake, 2)
    lead = fake.insert("Lead", LastName="Prospect", Company="Acme", Status="Open")
    fake.advance(3600)
    fake.merge("Contact", winner, loser)
    fake.convert_lead(lead, winner)
    merged = sf.query_all(
        "SELECT Id, IsDeleted, MasterRecordId, SystemModstamp FROM Contact ORDER BY Id",
        include_deleted=True,
    )["records"]
    assert [(r["Id"], r["IsDeleted"], r["MasterRecordId"]) for r in merged] == [
        (winner, False, None),
        (loser, True, winner),
    ]
    assert {r["SystemModstamp"] for r in merged} == {"2024-01-01T01:00:00.000+0000"}
    assert [r["Id"] for r in sf.query("SELECT Id FROM Contact")["records"]] == [winner]
    converted = sf.query(
        "SELECT Id, IsConverted, ConvertedContactId, ConvertedDate, ConvertedContact.Email "
        "FROM Lead WHERE IsConverted = true",
        include_deleted=True,
    )["records"]
    assert len(converted) == 1
    assert (converted[0]["ConvertedContactId"], converted[0]["ConvertedDate"]) == (
        winner,
        "2024-01-01",
    )
    assert converted[0]["ConvertedContact"]["Email"] == "c0@example.io"


def test_get_deleted_lists_deletions_in_a_window(fake: FakeSalesforce, sf: Salesforce) -> None:
    _, gone = contacts(fake, 2)
    fake.advance(120)
    fake.delete("Contact", gone)
    result = sf.Contact.deleted(T0, T0 + timedelta(hours=1))
    assert result["deletedRecords"] == [{"id": gone, "deletedDate": "2024-01-01T00:02:00.000+0000"}]
    with pytest.raises(SalesforceMalformedRequest):
        sf.Contact.deleted(T0 - timedelta(days=16), T0)


# ---------------------------------------------------------------- describe, limits, usage


def test_describe_lists_fields_with_their_properties(fake: FakeSalesforce, sf: Salesforce) -> None:
    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert {
        "HasOptedOutOfEmail",
        "EmailBouncedReason",
        "EmailBouncedDate",
        "IsEmailBounced",
    } <= set(fields)
    email = fields["Email"]
    assert {k: email[k] for k in ("type", "label", "custom", "nillable", "updateable")} == {
        "type": "email",
        "label": "Email",
        "custom": False,
        "nillable": True,
        "updateable": True,
    }
    assert (
        fields["SystemModstamp"]["type"] == "datetime"
        and not fields["SystemModstamp"]["updateable"]
    )
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Nope__c.describe()


def test_custom_objects_are_described_and_queried(fake: FakeSalesforce, sf: Salesforce) -> None:
    fake.add_object("Thing__c", {"Score__c": "double", "Contact__c": "reference:Contact"})
    ada = fake.insert("Contact", LastName="Lovelace")
    thing = fake.insert("Thing__c", Name="Widget", Score__c=4.5, Contact__c=ada)
    described = sf.Thing__c.describe()
    assert described["custom"] is True
    assert {f["name"]: f["custom"] for f in described["fields"]}["Score__c"] is True
    record = sf.query("SELECT Id, Score__c, Contact__r.LastName FROM Thing__c WHERE Score__c > 4")[
        "records"
    ][0]
    assert (record["Id"], record["Score__c"], record["Contact__r"]["LastName"]) == (
        thing,
        4.5,
        "Lovelace",
    )


def test_api_usage_comes_from_the_limit_info_header_and_limits_agree(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    fake.daily_limit = 1000
    sf.query("SELECT Id FROM Contact")
    assert sf.api_usage["api-usage"] == (1, 1000)
    assert sf.limits()["DailyApiRequests"] == {"Max": 1000, "Remaining": 998}
    assert sf.api_usage["api-usage"] == (2, 1000)
    assert fake.api_calls == 2 and fake.api_usage == {"query": 1, "limits": 1}


def test_exceeding_the_daily_limit_is_refused(fake: FakeSalesforce, sf: Salesforce) -> None:
    fake.daily_limit = 2
    sf.query("SELECT Id FROM Contact")
    sf.query("SELECT Id FROM Contact")
    with pytest.raises(SalesforceRefusedRequest) as info:
        sf.query("SELECT Id FROM Contact")
    assert info.value.status == 403
    assert info.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]


def test_scripted_faults(fake: FakeSalesforce, sf: Salesforce) -> None:
    fake.fail_next(1, 503, path_contains="/query")
    sf.limits()  # not matched
    with pytest.raises(SalesforceGeneralError) as info:
        sf.query("SELECT Id FROM Contact")
    assert info.value.status == 503
    body = [{"message": "Row lock", "errorCode": "UNABLE_TO_LOCK_ROW"}]
    fake.fail_next(1, 400, body=body)
    with pytest.raises(SalesforceMalformedRequest) as bad:
        sf.query("SELECT Id FROM Contact")
    assert bad.value.content == body
    fake.reset_next()
    with pytest.raises(requests.ConnectionError):
        sf.query("SELECT Id FROM Contact")
    assert sf.query("SELECT Id FROM Contact")["done"]


# ---------------------------------------------------------------- Bulk API 2.0


def test_bulk2_query_streams_csv_pages_with_a_locator(fake: FakeSalesforce, sf: Salesforce) -> None:
    acme = fake.insert("Account", Name="Acme, Inc.")
    ids = contacts(fake, 2500, AccountId=acme)
    fake.update("Contact", ids[0], Email=None)
    fake.delete("Contact", ids[-1])
    soql = "SELECT Id, Email, Account.Name, IsDeleted, SystemModstamp FROM Contact"
    chunks = list(sf.bulk2.Contact.query(soql, max_records=1000, wait=0))
    assert len(chunks) == 3
    rows = [row for chunk in chunks for row in csv.DictReader(io.StringIO(chunk))]
    assert [r["Id"] for r in rows] == ids[:-1]
    assert chunks[0].splitlines()[:2] == [
        '"Id","Email","Account.Name","IsDeleted","SystemModstamp"',
        f'"{ids[0]}","","Acme, Inc.","false","2024-01-01T00:00:00.000Z"',
    ]
    assert all(c.startswith('"Id","Email"') for c in chunks)  # a header on every page
    results = [r for r in fake.requests if r.path.endswith("/results")]
    assert [r.query.get("locator") for r in results] == [None, "MTAwMA", "MjAwMA"]  # base64
    assert all(r.query["maxRecords"] == "1000" for r in results)
    every = list(sf.bulk2.Contact.query_all(soql, max_records=5000, wait=0))
    assert len(every) == 1 and len(list(csv.DictReader(io.StringIO(every[0])))) == 2500


def test_bulk2_job_states_and_headers(fake: FakeSalesforce, sf: Salesforce) -> None:
    contacts(fake, 3)
    url = sf.bulk2_url + "query"
    http = fake.http_session()
    headers = {"Authorization": f"Bearer {fake.session_id}", "Content-Type": "application/json"}
    job = http.post(
        url,
        json={
            "operation": "query",
            "query": "SELECT Id FROM Contact",
            "contentType": "CSV",
            "columnDelimiter": "PIPE",
            "lineEnding": "CRLF",
        },
        headers=headers,
    ).json()
    assert job["state"] == "UploadComplete" and job["id"].startswith("750")
    early = http.get(f"{url}/{job['id']}/results", headers=headers)
    assert early.status_code == 412
    states = [http.get(f"{url}/{job['id']}", headers=headers).json()["state"] for _ in range(3)]
    assert states == ["InProgress", "JobComplete", "JobComplete"]
    page = http.get(f"{url}/{job['id']}/results", params={"maxRecords": 2}, headers=headers)
    assert page.headers["Sforce-NumberOfRecords"] == "2" and page.headers["Sforce-Locator"] == "Mg"
    assert page.text.split("\r\n")[0] == '"Id"'
    tail = http.get(
        f"{url}/{job['id']}/results", params={"maxRecords": 2, "locator": "Mg"}, headers=headers
    )
    assert (
        tail.headers["Sforce-NumberOfRecords"] == "1" and tail.headers["Sforce-Locator"] == "null"
    )


def test_bulk2_query_with_an_unknown_field_fails_the_job(sf: Salesforce) -> None:
    with pytest.raises(SalesforceOperationError, match="No such column 'Foo'"):
        list(sf.bulk2.Contact.query("SELECT Id, Foo FROM Contact", wait=0))


def test_clock_is_settable(fake: FakeSalesforce, sf: Salesforce) -> None:
    fake.set_clock(datetime(2025, 6, 1, 12, 0, 0, 999_000, tzinfo=UTC))
    cid = fake.insert("Contact", LastName="Now")
    assert fake.get("Contact", cid)["SystemModstamp"] == datetime(2025, 6, 1, 12, tzinfo=UTC)
    record = sf.query("SELECT SystemModstamp FROM Contact")["records"][0]
    assert record["SystemModstamp"] == "2025-06-01T12:00:00.000+0000"


def test_a_finished_bulk2_job_can_be_deleted_and_is_gone(fake: FakeSalesforce) -> None:
    contacts(fake, 2)
    http = fake.http_session()
    url = fake.instance_url + "/services/data/v59.0/jobs/query"
    headers = {"Authorization": f"Bearer {fake.session_id}"}
    job = http.post(url, json={"operation": "queryAll", "query": "SELECT Id FROM Contact"},
                    headers=headers).json()  # fmt: skip
    assert http.get(f"{url}/{job['id']}", headers=headers).json()["state"] == "InProgress"
    assert http.delete(f"{url}/{job['id']}", headers=headers).status_code == 400  # running
    http.get(f"{url}/{job['id']}", headers=headers)  # JobComplete
    assert http.delete(f"{url}/{job['id']}", headers=headers).status_code == 204
    assert http.get(f"{url}/{job['id']}", headers=headers).status_code == 404


def test_bulk2_calls_need_a_live_session_and_count_as_api_calls(fake: FakeSalesforce) -> None:
    http = fake.http_session()
    url = fake.instance_url + "/services/data/v59.0/jobs/query"
    fake.expire_session_on(2, path_contains="/jobs/query")
    headers = {"Authorization": f"Bearer {fake.session_id}"}
    job = http.post(url, json={"operation": "query", "query": "SELECT Id FROM Contact"},
                    headers=headers)  # fmt: skip
    assert job.status_code == 200 and job.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    poll = http.get(f"{url}/{job.json()['id']}", headers=headers)
    assert poll.status_code == 401 and poll.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    renewed = {"Authorization": f"Bearer {fake.new_session()}"}
    assert http.get(f"{url}/{job.json()['id']}", headers=renewed).status_code == 200


def test_random_faults_are_seeded_503s_on_matching_paths(fake: FakeSalesforce) -> None:
    sf = fake.client()
    fake.fail_randomly(0.3, path_contains="/query", seed=1)
    outcomes = []
    for _ in range(200):
        try:
            sf.query("SELECT Id FROM Contact")
            outcomes.append(True)
        except SalesforceGeneralError as exc:
            assert exc.status == 503 and exc.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
            outcomes.append(False)
    assert 40 <= outcomes.count(False) <= 80
    assert sf.limits()["DailyApiRequests"]  # other paths are untouched
    fake.stop_failing()
    assert all(sf.query("SELECT Id FROM Contact")["done"] for _ in range(20))


def test_a_login_url_of_any_host_reaches_the_login_endpoints(fake: FakeSalesforce) -> None:
    proxy = "https://sso.acme.internal:8443"
    http = fake.http_session(login_urls=[proxy], default_logins=False)
    c = fake.credentials
    form = {"grant_type": "password", "client_id": c.consumer_key,
            "client_secret": c.consumer_secret, "username": c.username, "password": c.password}  # fmt: skip
    assert http.post(f"{proxy}/services/oauth2/token", data=form).status_code == 200
    assert fake.requests[-1].url == f"{proxy}/services/oauth2/token"
    with pytest.raises(requests.ConnectionError):  # only the given login hosts are routed
        http.post("https://login.salesforce.com/services/oauth2/token", data=form)
    refused = http.post(f"{proxy}/services/oauth2/token", data={**form, "password": "x"})
    assert refused.status_code == 400 and refused.json() == {
        "error": "invalid_grant", "error_description": "authentication failure"}  # fmt: skip
