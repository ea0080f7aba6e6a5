"""The Salesforce connector, through simple-salesforce, against the stateful Salesforce fake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from syncbridge_connectors.salesforce import SalesforceConnector

from syncbridge.config.loader import Settings
from syncbridge.errors import AuthError, FatalError
from syncbridge.pipeline import run_cycle
from syncbridge.store.tables import Profile, RecordErrorRow, SourceRecord

from ..builders import settings_from
from ..fakes.salesforce import FakeSalesforce
from .contract import ConnectorContract, Harness

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
R = SourceRecord.__table__.c
P = Profile.__table__.c


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as server:
        server.set_clock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))
        monkeypatch.setattr(
            SalesforceConnector, "session_factory", staticmethod(server.http_session)
        )
        yield server


def sf_settings(fake: FakeSalesforce, tmp: Path, store_url: str, **source: Any) -> Settings:
    streams = source.pop(
        "streams", [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")}]
    )
    data = {
        "store": {"url": store_url},
        "sources": [{"name": "salesforce", "connector": "salesforce",
                     "instance_url": fake.instance_url, "session_id": fake.session_id,
                     "overlap_s": 60, **source, "streams": streams}],
    }  # fmt: skip
    return settings_from(data, tmp)


class SalesforceHarness(Harness):
    page_size = 200  # Salesforce's smallest query page

    def __init__(self, fake: FakeSalesforce, tmp: Path) -> None:
        self.fake, self.tmp = fake, tmp
        self.ids: dict[str, str] = {}
        self.secret = fake.session_id

    def put(self, people: list[dict[str, Any]]) -> None:
        self.fake.advance(5)
        for p in people:
            fields = {"Email": p["email"], "FirstName": p["first_name"], "LastName": "Test"}
            if p["id"] in self.ids:
                self.fake.update("Contact", self.ids[p["id"]], **fields)
            else:
                self.ids[p["id"]] = self.fake.insert("Contact", **fields)

    def put_older(self, people: list[dict[str, Any]]) -> None:
        now = self.fake.now
        self.fake.set_clock(now - timedelta(hours=1))
        self.put(people)
        self.fake.set_clock(now)

    def delete(self, ids: list[str]) -> None:
        self.fake.advance(5)
        for i in ids:
            self.fake.delete("Contact", self.ids[i])

    def break_record(self, person_id: str) -> str:
        self.fake.advance(5)
        self.fake.update("Contact", self.ids[person_id], MailingCountry="Atlantis")
        return self.ids[person_id]

    def break_credentials(self) -> None:
        self.fake.expire_session()

    def settings(self, store_url: str) -> Settings:
        return sf_settings(self.fake, self.tmp, store_url, batch_size=self.page_size)


class TestSalesforceContract(ConnectorContract):
    @pytest.fixture
    def harness(self, fake: FakeSalesforce, tmp_path: Path) -> SalesforceHarness:
        return SalesforceHarness(fake, tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Engine]:
    from syncbridge.store.engine import open_engine

    engine = open_engine(f"sqlite:///{tmp_path / 'sf.db'}")
    yield engine
    engine.dispose()


def live(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(P.deleted.is_(False))).scalar_one()


def test_records_sharing_one_timestamp_across_a_page_boundary_are_all_read(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    fake.insert_many(
        "Contact", [{"Email": f"c{i}@gmail.com", "LastName": f"L{i}"} for i in range(2300)]
    )
    settings = sf_settings(fake, tmp_path, str(store.url))
    report = run_cycle(settings, store)
    assert report.totals.inserted == 2300  # two pages of one SystemModstamp, nothing lost
    fake.advance(30)
    fake.insert("Contact", Email="late@gmail.com", LastName="Late")
    again = run_cycle(settings, store)
    assert again.totals.inserted == 1 and again.totals.updated == 0
    assert live(store) == 2301


def test_record_updated_while_paging_is_picked_up_next_time(
    fake: FakeSalesforce, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [fake.insert("Contact", Email=f"c{i}@gmail.com", LastName=f"L{i}") for i in range(2500)]
    settings = sf_settings(fake, tmp_path, str(store.url))
    from syncbridge import ingest

    original = ingest._write_page
    pages = 0

    def write_then_update(*args: Any) -> None:
        nonlocal pages
        original(*args)
        pages += 1
        if pages == 1:  # someone edits a record of the second page meanwhile
            fake.advance(10)
            fake.update("Contact", ids[-1], FirstName="Edited")

    monkeypatch.setattr(ingest, "_write_page", write_then_update)
    run_cycle(settings, store)
    monkeypatch.setattr(ingest, "_write_page", original)
    run_cycle(settings, store)
    with store.connect() as conn:
        name = conn.execute(select(P.attributes).where(P.email == "c2499@gmail.com")).scalar_one()
    assert name["first_name"] == "Edited"


def test_merged_contact_leaves_one_profile(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    winner = fake.insert("Contact", Email="ann@gmail.com", LastName="Lee")
    loser = fake.insert("Contact", Email="ann.lee@yahoo.com", LastName="Lee")
    settings = sf_settings(fake, tmp_path, str(store.url))
    run_cycle(settings, store)
    assert live(store) == 2
    fake.advance(60)
    fake.merge("Contact", winner, loser)
    run_cycle(settings, store)
    assert live(store) == 1
    with store.connect() as conn:
        deleted = conn.execute(select(R.payload).where(R.external_id == loser)).scalar_one()
    assert deleted["MasterRecordId"] == winner


def holder(engine: Engine, kind: str, value: str) -> int:
    from syncbridge.store.tables import Identity

    i = Identity.__table__.c
    with engine.connect() as conn:
        found = conn.execute(
            select(i.profile_id).where(i.kind == f"ext:{kind}", i.value == value)
        ).scalar_one_or_none()
    assert found is not None, f"no profile holds {kind}={value}"
    return int(found)


def test_a_lead_converted_into_a_merged_away_contact_joins_the_master(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    master = fake.insert("Contact", Email="ann@gmail.com", LastName="Lee")
    loser = fake.insert("Contact", Email="ann.lee@yahoo.com", LastName="Lee")
    lead = fake.insert("Lead", Email="a.lee@outlook.com", LastName="Lee", Company="Acme")
    fake.convert_lead(lead, loser)
    streams = [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")},
               {"name": "Lead", "mapping": str(MAPPINGS / "salesforce_lead.toml")}]  # fmt: skip
    settings = sf_settings(fake, tmp_path, str(store.url), streams=streams)
    run_cycle(settings, store)
    assert live(store) == 2  # {master}, {loser, lead}
    fake.advance(60)
    fake.merge("Contact", master, loser)  # the lead keeps ConvertedContactId = loser
    run_cycle(settings, store)
    assert live(store) == 1
    person = holder(store, "salesforce:contact", master)
    assert holder(store, "salesforce:contact", loser) == person
    assert holder(store, "salesforce:lead", lead) == person
    with store.connect() as conn:
        rows = conn.execute(select(P.id, P.deleted, P.merged_into, P.attributes)).all()
    survivor = next(r for r in rows if r.id == person)
    assert not survivor.deleted and survivor.attributes["last_name"] == "Lee"
    gone = [r for r in rows if r.deleted]  # merged into the survivor, not deleted outright
    assert [g.merged_into for g in gone] == [person] * len(gone)
    assert "ann.lee@yahoo.com" not in {r.attributes.get("email") for r in rows if not r.deleted}


def test_a_campaign_member_of_a_merged_away_lead_joins_the_master_lead(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    master = fake.insert("Lead", Email="li.wei@outlook.com", LastName="Li", Company="Acme")
    loser = fake.insert("Lead", Email="wei.li@gmail.com", LastName="Li", Company="Acme")
    webinar = fake.insert("Campaign", Name="Spring webinar")
    fake.insert("CampaignMember", CampaignId=webinar, LeadId=loser, Status="Sent")
    streams = [{"name": "Lead", "mapping": str(MAPPINGS / "salesforce_lead.toml")},
               {"name": "CampaignMember",
                "mapping": str(MAPPINGS / "salesforce_campaign_members.toml")}]  # fmt: skip
    settings = sf_settings(fake, tmp_path, str(store.url), streams=streams)
    run_cycle(settings, store)
    assert live(store) == 2
    fake.advance(60)
    fake.merge("Lead", master, loser)
    run_cycle(settings, store)
    assert live(store) == 1
    assert holder(store, "salesforce:lead", loser) == holder(store, "salesforce:lead", master)


def test_converted_lead_joins_its_contact(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    lead = fake.insert("Lead", Email="zoe.lead@gmail.com", LastName="Mueller", Company="Acme")
    contact = fake.insert("Contact", Email="zoe@gmail.com", LastName="Müller")
    streams = [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")},
               {"name": "Lead", "mapping": str(MAPPINGS / "salesforce_lead.toml")}]  # fmt: skip
    settings = sf_settings(fake, tmp_path, str(store.url), streams=streams)
    run_cycle(settings, store)
    assert live(store) == 2
    fake.advance(60)
    fake.convert_lead(lead, contact)
    run_cycle(settings, store)
    assert live(store) == 1


def test_opt_out_and_bounce_reach_the_profile(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    fake.insert("Contact", Email="bob@gmail.com", LastName="Stone", HasOptedOutOfEmail=True,
                EmailBouncedReason="550 mailbox unavailable")  # fmt: skip
    run_cycle(sf_settings(fake, tmp_path, str(store.url)), store)
    with store.connect() as conn:
        attributes = conn.execute(select(P.attributes)).scalar_one()
    assert attributes["email_opt_out"] is True
    assert attributes["email_bounced_reason"] == "550 mailbox unavailable"


def test_expired_session_stops_with_a_clear_message_and_no_secret(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    settings = sf_settings(fake, tmp_path, str(store.url))
    secret = fake.session_id
    fake.expire_session()
    with pytest.raises(AuthError) as info:
        run_cycle(settings, store)
    assert "session" in str(info.value).lower() and secret not in str(info.value)


def test_request_limit_exceeded_is_retried(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    fake.insert("Contact", Email="c@gmail.com", LastName="C")
    body = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    fake.fail_next(1, 403, body=body, path_contains="/query")
    settings = sf_settings(fake, tmp_path, str(store.url), retries=3)
    assert run_cycle(settings, store).totals.inserted == 1


def test_an_answer_that_never_comes_times_out_and_is_retried(
    fake: FakeSalesforce, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """simple-salesforce sets no timeout: without the connector's, a hung query hangs the run."""
    fake.insert("Contact", Email="c@gmail.com", LastName="C")
    real, hung = fake._handle, []

    def slow(method: str, target: str, raw: bytes, headers: Any) -> Any:
        if "/query" in target and not hung:
            hung.append(target)
            time.sleep(3)
        return real(method, target, raw, headers)

    monkeypatch.setattr(fake, "_handle", slow)
    monkeypatch.setattr(fake._server, "handle_error", lambda *_: None)  # the hung reply's pipe
    settings = sf_settings(fake, tmp_path, str(store.url), timeout_s=0.5, retries=2,
                           retry_backoff_s=0)  # fmt: skip
    started = time.monotonic()
    assert run_cycle(settings, store).totals.inserted == 1
    assert hung and time.monotonic() - started < 2.5


def test_run_stops_before_passing_the_daily_api_share(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    fake.insert("Contact", Email="c@gmail.com", LastName="C")
    fake.daily_limit = 10
    fake.api_calls = 9
    with pytest.raises(FatalError, match="daily API requests are used"):
        run_cycle(sf_settings(fake, tmp_path, str(store.url)), store)


def test_invalid_field_fails_with_the_soql_and_salesforce_message(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    mapping = tmp_path / "bad.toml"
    mapping.write_text(
        '[identifiers]\nemail = "Email"\n[attributes]\nscore = "Score__c"\n', encoding="utf-8"
    )
    settings = sf_settings(fake, tmp_path, str(store.url),
                           streams=[{"name": "Contact", "mapping": str(mapping)}])  # fmt: skip
    with pytest.raises(FatalError) as info:
        run_cycle(settings, store)
    assert "INVALID_FIELD" in str(info.value) and "SELECT Id, SystemModstamp" in str(info.value)


def test_large_first_read_goes_through_bulk_api_2(
    fake: FakeSalesforce, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simple_salesforce.bulk2 as bulk2

    monkeypatch.setattr(bulk2, "sleep", lambda *_: None)
    fake.insert_many(
        "Contact", [{"Email": f"b{i}@gmail.com", "LastName": f"B{i}"} for i in range(120)]
    )
    settings = sf_settings(fake, tmp_path, str(store.url), bulk_threshold=100, bulk_poll_s=0)
    report = run_cycle(settings, store)
    assert report.totals.inserted == 120
    assert any("/jobs/query" in r.path for r in fake.requests)
    with store.connect() as conn:
        errors = conn.execute(select(func.count()).select_from(RecordErrorRow)).scalar_one()
    assert errors == 0


def test_login_flow_renews_an_expired_session_transparently(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    c = fake.credentials
    fake.insert("Contact", Email="a@gmail.com", LastName="A")
    data = {
        "store": {"url": str(store.url)},
        "sources": [{"name": "salesforce", "connector": "salesforce", "username": c.username,
                     "password": c.password, "security_token": c.security_token,
                     "domain": fake.login_domain,
                     "streams": [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")}]}],
    }  # fmt: skip
    settings = settings_from(data, tmp_path)
    run_cycle(settings, store)
    fake.expire_session()
    fake.advance(30)
    fake.insert("Contact", Email="b@gmail.com", LastName="B")
    assert run_cycle(settings, store).totals.inserted == 1


def test_won_opportunities_become_events_of_their_contacts(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    contact = fake.insert("Contact", Email="buyer@gmail.com", LastName="Buyer")
    won = fake.insert("Opportunity", Name="Fleet order", StageName="Closed Won", Amount=12000,
                      CloseDate="2026-11-10")  # fmt: skip
    lost = fake.insert("Opportunity", Name="Pilot", StageName="Closed Lost", Amount=500,
                       CloseDate="2026-11-11")  # fmt: skip
    fake.insert(
        "OpportunityContactRole", OpportunityId=won, ContactId=contact, Role="Decision Maker"
    )
    fake.insert("OpportunityContactRole", OpportunityId=lost, ContactId=contact, Role="User")
    streams = [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")},
               {"name": "OpportunityContactRole", "fields": ["Opportunity.IsWon"],
                "mapping": str(MAPPINGS / "salesforce_opportunity_roles.toml")}]  # fmt: skip
    run_cycle(sf_settings(fake, tmp_path, str(store.url), streams=streams), store)
    from syncbridge.store.tables import Event

    with store.connect() as conn:
        events = conn.execute(select(Event.__table__.c.type, Event.__table__.c.properties)).all()
    assert [(t, p["amount"], p["role"]) for t, p in events] == [
        ("opportunity_won", 12000, "Decision Maker")
    ]
    assert live(store) == 1  # the roles joined the contact's profile


def test_campaign_members_become_events_of_their_contacts_and_leads(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    contact = fake.insert("Contact", Email="ana@gmail.com", LastName="Silva")
    lead = fake.insert("Lead", Email="li.wei@outlook.com", LastName="Li", Company="Acme")
    webinar = fake.insert("Campaign", Name="Spring webinar", Type="Webinar")
    fake.insert("CampaignMember", CampaignId=webinar, ContactId=contact, Status="Responded",
                HasResponded=True)  # fmt: skip
    fake.insert("CampaignMember", CampaignId=webinar, LeadId=lead, Status="Sent")
    streams = [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")},
               {"name": "Lead", "mapping": str(MAPPINGS / "salesforce_lead.toml")},
               {"name": "CampaignMember",
                "mapping": str(MAPPINGS / "salesforce_campaign_members.toml")}]  # fmt: skip
    run_cycle(sf_settings(fake, tmp_path, str(store.url), streams=streams), store)
    from syncbridge.store.tables import Event

    e = Event.__table__.c
    with store.connect() as conn:
        rows = conn.execute(select(P.email, e.type, e.properties).join(
            Profile.__table__, Profile.__table__.c.id == e.profile_id)).all()  # fmt: skip
    assert sorted(
        (email, t, p["campaign"], p["status"], p.get("responded")) for email, t, p in rows
    ) == [
        ("ana@gmail.com", "campaign_member", "Spring webinar", "Responded", True),
        ("li.wei@outlook.com", "campaign_member", "Spring webinar", "Sent", False),
    ]
    assert live(store) == 2  # the memberships joined their people; no profile of their own


def cli_config(fake: FakeSalesforce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config.toml for the command line, its session id from the environment."""
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[[sources]]
name = "crm"
connector = "salesforce"
instance_url = "{fake.instance_url}"
session_id = "${{SF_SESSION}}"
[[sources.streams]]
name = "Contact"
mapping = "{MAPPINGS / "salesforce.toml"}"
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("SF_SESSION", fake.session_id)
    return path


def test_connectors_describe_lists_the_objects_fields(
    fake: FakeSalesforce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from syncbridge.cli import app

    cli_config(fake, tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["connectors", "describe", "salesforce", "Contact",
                                      "-c", str(tmp_path / "config.toml")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "HasOptedOutOfEmail" in result.output and "EmailBouncedReason" in result.output
    assert fake.session_id not in result.output


def test_client_credentials_flow_and_a_custom_object(
    fake: FakeSalesforce, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SalesforceConnector, "session_factory",
                        staticmethod(lambda: fake.http_session("acme.my")))  # fmt: skip
    fake.add_object("Membership__c", {"Email__c": "email", "Tier__c": "string"})
    fake.insert("Membership__c", Email__c="member@gmail.com", Tier__c="Gold")
    mapping = tmp_path / "membership.toml"
    mapping.write_text(
        '[identifiers]\nemail = "Email__c"\n[attributes]\ntier = "Tier__c"\n', encoding="utf-8"
    )
    c = fake.credentials
    data = {
        "store": {"url": str(store.url)},
        "sources": [{"name": "salesforce", "connector": "salesforce", "consumer_key": c.consumer_key,
                     "consumer_secret": c.consumer_secret, "domain": "acme.my",
                     "streams": [{"name": "memberships", "object": "Membership__c",
                                  "mapping": str(mapping)}]}],
    }  # fmt: skip
    report = run_cycle(settings_from(data, tmp_path), store)
    assert report.totals.inserted == 1
    with store.connect() as conn:
        assert conn.execute(select(P.attributes)).scalar_one()["tier"] == "Gold"


def test_crash_during_a_bulk_read_repeats_the_job_and_loses_nothing(
    fake: FakeSalesforce, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simple_salesforce.bulk2 as bulk2
    from sqlalchemy import event

    from syncbridge.store.tables import StreamCursor

    monkeypatch.setattr(bulk2, "sleep", lambda *_: None)
    for i in range(150):  # newest first, so an early page holds the highest timestamps
        fake.set_clock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC).replace(minute=59 - i % 60))
        fake.insert("Contact", Email=f"b{i}@gmail.com", LastName=f"B{i}")
    settings = sf_settings(fake, tmp_path, str(store.url), bulk_threshold=100, bulk_page_size=50,
                           bulk_poll_s=0)  # fmt: skip
    calls = 0

    def crash(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal calls
        if statement.replace('"', "").upper().startswith("INSERT INTO SOURCE_RECORD"):
            calls += 1
            if calls == 2:
                raise RuntimeError("power cut")

    event.listen(store, "before_cursor_execute", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        run_cycle(settings, store)
    event.remove(store, "before_cursor_execute", crash)
    with store.connect() as conn:
        assert conn.execute(select(StreamCursor.__table__)).all() == []  # nothing half-saved
    run_cycle(settings, store)
    assert live(store) == 150


def test_jwt_bearer_flow_with_a_signed_assertion(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    fake.credentials.jwt_public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    fake.insert("Contact", Email="jwt@gmail.com", LastName="J")
    c = fake.credentials
    data = {
        "store": {"url": str(store.url)},
        "sources": [{"name": "salesforce", "connector": "salesforce", "username": c.username,
                     "consumer_key": c.consumer_key, "privatekey_file": "server.key",
                     "domain": fake.login_domain,
                     "streams": [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")}]}],
    }  # fmt: skip
    assert run_cycle(settings_from(data, tmp_path), store).totals.inserted == 1


# ---------------------------------------------------------------- logins (issue 11, point 12)

PROXY = "https://sso-proxy.acme.internal:8443"


def login_settings(
    fake: FakeSalesforce, tmp_path: Path, store: Engine, flow: str, **override: Any
) -> Settings:
    """A login flow against the fake at the PROXY login URL."""
    c = fake.credentials
    flows: dict[str, dict[str, Any]] = {
        "soap": {"username": c.username, "password": c.password,
                 "security_token": c.security_token},
        "oauth password": {"username": c.username, "password": c.password,
                           "consumer_key": c.consumer_key, "consumer_secret": c.consumer_secret},
        "jwt": {"username": c.username, "consumer_key": c.consumer_key,
                "privatekey_file": "server.key"},
        "client credentials": {"consumer_key": c.consumer_key,
                               "consumer_secret": c.consumer_secret},
    }  # fmt: skip
    if flow == "jwt":
        write_jwt_key(fake, tmp_path)
    source = {"name": "salesforce", "connector": "salesforce", "login_url": PROXY,
              **flows[flow], **override,
              "streams": [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml")}]}  # fmt: skip
    return settings_from({"store": {"url": str(store.url)}, "sources": [source]}, tmp_path)


def write_jwt_key(fake: FakeSalesforce, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    (tmp_path / "server.key").write_bytes(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fake.credentials.jwt_public_key = public.decode()


@pytest.fixture
def behind_proxy(fake: FakeSalesforce, monkeypatch: pytest.MonkeyPatch) -> FakeSalesforce:
    """Only the proxy's login URL (and the instance) is reachable: no *.salesforce.com."""
    monkeypatch.setattr(SalesforceConnector, "session_factory",
                        staticmethod(lambda: fake.http_session(login_urls=[PROXY],
                                                               default_logins=False)))  # fmt: skip
    return fake


@pytest.mark.parametrize("flow", ["soap", "oauth password", "jwt", "client credentials"])
def test_every_login_flow_logs_in_at_the_login_url(
    behind_proxy: FakeSalesforce, tmp_path: Path, store: Engine, flow: str
) -> None:
    fake = behind_proxy
    fake.insert("Contact", Email="a@gmail.com", LastName="A")
    report = run_cycle(login_settings(fake, tmp_path, store, flow), store)
    assert report.totals.inserted == 1
    logins = [r for r in fake.requests if "/services/Soap/u/" in r.path or "oauth2" in r.path]
    assert logins and all(r.url.startswith(PROXY + "/services/") for r in logins)


@pytest.mark.parametrize(
    ("flow", "wrong", "expected"),
    [
        ("soap", {"password": "not-it"},
         "INVALID_LOGIN: Invalid username, password, security token; or user locked out."),
        ("oauth password", {"password": "not-it"}, "invalid_grant: authentication failure"),
        ("jwt", {"username": "someone@else.com"}, "invalid_grant: authentication failure"),
        ("client credentials", {"consumer_secret": "not-it"},
         "invalid_client: invalid client credentials"),
    ],
)  # fmt: skip
def test_a_refused_login_shows_salesforce_code_and_message_and_no_secret(
    behind_proxy: FakeSalesforce,
    tmp_path: Path,
    store: Engine,
    flow: str,
    wrong: dict[str, str],
    expected: str,
) -> None:
    settings = login_settings(behind_proxy, tmp_path, store, flow, **wrong)
    with pytest.raises(AuthError) as info:
        run_cycle(settings, store)
    message = str(info.value)
    assert expected in message and PROXY in message
    c = behind_proxy.credentials
    for secret in ("not-it", c.password, c.security_token, c.consumer_secret):
        assert secret not in message


# ---------------------------------------------------------------- bulk (issue 11, point 11)


def test_a_bulk_read_survives_30_percent_503s_and_a_session_expiry(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    fake.insert_many(
        "Contact", [{"Email": f"b{i}@gmail.com", "LastName": f"B{i}"} for i in range(450)]
    )
    fake.fail_randomly(0.3, status=503, path_contains="/services/data/", seed=7)
    fake.expire_session_on(3, path_contains="/jobs/query/")  # a poll or a results page
    settings = login_settings(fake, tmp_path, store, "soap", login_url=None,
                              domain=fake.login_domain, bulk_threshold=100, bulk_page_size=100,
                              bulk_poll_s=0, retries=10, retry_backoff_s=0)  # fmt: skip
    report = run_cycle(settings, store)
    assert report.totals.inserted == 450 and live(store) == 450
    bulk = [r for r in fake.requests if "/jobs/query" in r.path]
    assert sum(1 for r in fake.requests if "/services/Soap/u/" in r.path) == 2  # renewed once
    assert len([r for r in bulk if r.path.endswith("/results")]) >= 5
    assert fake.api_usage["bulk2Delete"] == 1 and not fake._api.jobs  # cleaned up


def test_the_daily_usage_guard_applies_to_bulk_calls(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    fake.insert_many(
        "Contact", [{"Email": f"b{i}@gmail.com", "LastName": f"B{i}"} for i in range(150)]
    )
    fake.daily_limit, fake.api_calls = 20, 10  # the COUNT() leaves it at 55 %
    settings = sf_settings(fake, tmp_path, str(store.url), bulk_threshold=100,
                           bulk_page_size=10, bulk_poll_s=0)  # fmt: skip
    with pytest.raises(FatalError, match="daily API requests are used"):
        run_cycle(settings, store)
    assert fake.api_calls <= 16  # stopped at 80 %, not after all 15 result pages


def test_a_rest_read_after_a_bulk_load_rewrites_no_record(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    acme = fake.insert("Account", Name="Acme", NumberOfEmployees=250)
    rows = [{"Email": f"b{i}@gmail.com", "LastName": f"B{i}", "AccountId": acme if i % 2 else None,
             "HasOptedOutOfEmail": i % 3 == 0, "EmailBouncedDate": "2026-10-01T08:30:00Z"
             if i % 5 == 0 else None, "Birthdate": "1990-02-03" if i % 4 == 0 else None}
            for i in range(120)]  # fmt: skip
    fake.insert_many("Contact", rows)
    streams = [{"name": "Contact", "mapping": str(MAPPINGS / "salesforce.toml"),
                "fields": ["EmailBouncedDate", "Birthdate", "Account.NumberOfEmployees"]}]  # fmt: skip
    bulk = sf_settings(fake, tmp_path, str(store.url), streams=streams, bulk_threshold=100,
                       bulk_poll_s=0)  # fmt: skip
    assert run_cycle(bulk, store).totals.inserted == 120
    assert fake.api_usage["bulk2Create"] == 1
    rest = sf_settings(fake, tmp_path, str(store.url), streams=streams)  # all within overlap_s
    again = run_cycle(rest, store).totals
    assert fake.api_usage["query"] >= 2 and again.unchanged == 120
    assert again.updated == 0 and again.inserted == 0


def test_bulk_csv_reads_exactly_like_rest_for_every_field_type(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    from syncbridge.connectors import build_connector

    fake.add_object("Membership__c", {"Score__c": "double", "Visits__c": "int",
                                      "Active__c": "boolean", "Joined__c": "datetime",
                                      "Renews__c": "date", "Fee__c": "currency",
                                      "Account__c": "reference:Account"})  # fmt: skip
    acme = fake.insert("Account", Name="Acme")
    fake.insert("Membership__c", Name="Gold", Score__c=4.5, Visits__c=12, Active__c=True,
                Joined__c="2025-03-04T05:06:07Z", Renews__c="2027-01-31", Fee__c=99,
                Account__c=acme)  # fmt: skip
    fake.insert("Membership__c", Name="Lapsed")  # nulls, false, no account
    mapping = tmp_path / "membership.toml"
    mapping.write_text('[identifiers]\nexternal = { "m" = "Id" }\n', encoding="utf-8")
    streams = [{"name": "Membership__c", "mapping": str(mapping)}]
    settings = sf_settings(fake, tmp_path, str(store.url), streams=streams, bulk_poll_s=0)
    stream: Any = build_connector(settings.config.sources[0], tmp_path).streams()[0]
    soql = ("SELECT Id, SystemModstamp, IsDeleted, Name, Score__c, Visits__c, Active__c, "
            "Joined__c, Renews__c, Fee__c, Account__r.Name FROM Membership__c")  # fmt: skip
    by_rest = [r for page in stream._rest(soql) for r in page.records]
    by_bulk = [r for page in stream._bulk(soql) for r in page.records]
    assert len(by_rest) == 2 and sorted(by_bulk, key=str) == sorted(by_rest, key=str)
    assert {r["Name"]: r["Account__r"] for r in by_bulk} == {"Gold": {"Name": "Acme"},
                                                            "Lapsed": None}  # fmt: skip


def test_batch_size_applies_to_every_rest_page_and_every_bulk_page(
    fake: FakeSalesforce, tmp_path: Path, store: Engine
) -> None:
    fake.insert_many(
        "Contact", [{"Email": f"c{i}@gmail.com", "LastName": f"C{i}"} for i in range(2500)]
    )
    report = run_cycle(sf_settings(fake, tmp_path, str(store.url), batch_size=500), store)
    assert report.totals.inserted == 2500
    assert (fake.api_usage["query"], fake.api_usage["queryMore"]) == (2, 4)  # COUNT() + 5 pages
    from syncbridge.connectors import build_connector

    settings = sf_settings(fake, tmp_path, str(store.url), batch_size=200, bulk_threshold=100,
                           bulk_page_size=1000, bulk_poll_s=0)  # fmt: skip
    connector = build_connector(settings.config.sources[0], tmp_path)
    stream = connector.streams()[0]
    sizes = [len(page.records) for page in stream.read(None)]
    assert sizes and max(sizes) <= 200 and sum(sizes) == 2500


def test_validate_connect_signs_in_and_names_a_refused_source_without_its_secret(
    fake: FakeSalesforce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from syncbridge.cli import app

    cli_config(fake, tmp_path, monkeypatch)
    args = ["validate", "--connect", "-c", str(tmp_path / "config.toml")]
    calls = fake.api_calls
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "source 'crm' answered" in ok.output
    assert fake.api_calls > calls  # it did ask Salesforce
    offline = CliRunner().invoke(app, args[:1] + args[2:])
    assert offline.exit_code == 0 and "answered" not in offline.output
    secret = fake.session_id
    fake.expire_session()
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1
    assert "error: source 'crm':" in refused.output
    assert secret not in refused.output


def test_a_read_tells_the_live_display_its_total_and_how_far_it_is(
    fake: FakeSalesforce, tmp_path: Path, store: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, point 3: the COUNT() that picks REST or Bulk is also the display's total."""
    import simple_salesforce.bulk2 as bulk2

    from syncbridge.store.engine import open_engine

    monkeypatch.setattr(bulk2, "sleep", lambda *_: None)
    fake.insert_many(
        "Contact", [{"Email": f"t{i}@gmail.com", "LastName": f"T{i}"} for i in range(2300)]
    )
    told: list[tuple[int, float | None, int | None]] = []

    def hook(
        label: str, n: int, *, share: float | None = None, expected: int | None = None
    ) -> None:
        if label.endswith("records read"):
            told.append((n, share, expected))

    for threshold in (10_000, 100):  # REST pages, then a Bulk API 2.0 job
        told.clear()
        path = tmp_path / str(threshold)
        path.mkdir()
        settings = sf_settings(fake, path, f"sqlite:///{path / 'c.db'}",
                               bulk_threshold=threshold, bulk_poll_s=0)  # fmt: skip
        run_cycle(settings, open_engine(f"sqlite:///{path / 'c.db'}"), hook)
        assert {expected for _, _, expected in told} == {2300}
        assert told[-1][1] == 1.0 and all(0 < s <= 1 for _, s, _ in told if s is not None)
        assert sum(n for n, _, _ in told) == 2300
