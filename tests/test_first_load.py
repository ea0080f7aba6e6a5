"""A first load resolved at once (`first_load.py`) equals the incremental path on the same data:
the same profiles, ids, attributes, sources, join keys, record and event placements, journal."""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from syncbridge import first_load
from syncbridge.config.mapping import Mapping
from syncbridge.config.models import IdentityConfig
from syncbridge.identity import Resolver, ResolveStats, resolve_pending
from syncbridge.ingest import StreamIngest, ingest_stream
from syncbridge.store import journal
from syncbridge.store.engine import create_store_engine, open_engine
from syncbridge.store.tables import Event, Identity, Profile, SourceRecord, metadata
from syncbridge.transform import RecordTransformer

from .conftest import POSTGRES_URL, _reset_postgres
from .streams import ListStream, deleted, partition

MAPPING = Mapping.model_validate(
    tomllib.loads(
        """
[record]
timestamp = { field = "updated", type = "datetime" }
[identifiers]
email = "email"
phone = "phone"
external = { "crm" = "crm_id", "shop" = "shop_id" }
[attributes]
first_name = "first_name"
city = "city"
[[events]]
type = "seen"
time = { field = "updated", type = "datetime" }
"""
    )
)
CONFIG = IdentityConfig(source_priority=["crm", "shop"])
SOURCES = ("crm", "shop", "web")


def _ingest(engine: Engine, source: str, records: list[dict[str, Any]]) -> None:
    job = StreamIngest(
        source, ListStream("s", records, page_size=3), RecordTransformer(MAPPING, "US")
    )
    ingest_stream(engine, job)


def _load(engine: Engine, records: list[dict[str, Any]]) -> None:
    for source in SOURCES:
        rows = [
            {k: v for k, v in r.items() if k != "source"} for r in records if r["source"] == source
        ]
        if rows:
            _ingest(engine, source, rows)


def state(engine: Engine) -> dict[str, Any]:
    """Everything resolution writes, ids included."""
    p, i, r, e = (t.__table__.c for t in (Profile, Identity, SourceRecord, Event))
    with engine.connect() as conn:

        def rows(query: Any) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in conn.execute(query)]

        return {
            "profiles": rows(
                select(
                    p.id,
                    p.email,
                    p.attributes,
                    p.attribute_sources,
                    p.record_count,
                    p.dirty,
                    p.deleted,
                    p.merged_into,
                ).order_by(p.id)
            ),
            "identities": rows(select(i.kind, i.value, i.profile_id).order_by(i.kind, i.value)),
            "records": rows(select(r.id, r.profile_id, r.pending).order_by(r.id)),
            "events": rows(select(e.id, e.profile_id).order_by(e.id)),
            "journal": sorted(conn.execute(journal.subjects([journal.PROFILE], 0, 10**12))),
        }


Fresh = Callable[[], Engine]


@pytest.fixture
def fresh(store_url: str, tmp_path: Path) -> Iterator[Fresh]:
    """Makes an empty, migrated cache on the test's backend (PostgreSQL: the one database,
    emptied again, so take the state of one before making the next)."""
    made: list[Engine] = []

    def make() -> Engine:
        for engine in made:
            engine.dispose()
        if store_url.startswith("postgresql"):
            assert POSTGRES_URL
            _reset_postgres(POSTGRES_URL)
            url = POSTGRES_URL
        else:
            url = f"sqlite:///{tmp_path / f'cache{len(made)}.db'}"
        made.append(open_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def run_both(
    fresh: Fresh,
    first: list[dict[str, Any]],
    later: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> tuple[list[dict[str, Any]], list[ResolveStats]]:
    """Load `first` and resolve it with the first-load path, then with the incremental path in
    one batch and in batches of 2; then load `later` onto each and resolve incrementally.
    Returns each run's state after each step, and the first resolution's stats."""
    states: list[dict[str, Any]] = []
    stats: list[ResolveStats] = []
    for at_once, batch in ((True, 10_000), (False, 10_000), (False, 2)):
        engine = fresh()
        _load(engine, first)
        stats.append(resolve_pending(engine, CONFIG, batch_size=batch, first_load=at_once))
        after_first = {**state(engine), "partition": partition(engine)}
        _load(engine, later)
        resolve_pending(engine, CONFIG, batch_size=batch)
        states.append(
            {"first": after_first, "later": {**state(engine), "partition": partition(engine)}}
        )
    return states, stats


def person(id_: str, source: str, **values: Any) -> dict[str, Any]:
    return {"id": id_, "source": source, "updated": "2026-01-01T00:00:00Z", **values}


SCENARIO = [
    # one person in three sources, joined by email and by the shop id the web record carries
    person("c1", "crm", email="Ann@Yahoo.com", crm_id="c1", first_name="Ann", city="Boston"),
    person("s1", "shop", email="ann@yahoo.com", shop_id="s1", city="Cambridge"),
    person("w1", "web", shop_id="s1", first_name="Annie", updated="2026-05-01T00:00:00Z"),
    # two people bridged by a web record holding both of their ids
    person("c2", "crm", email="bob@example.com", crm_id="c2", first_name="Bob"),
    person("s2", "shop", email="robert@example.com", shop_id="s2", first_name="Robert"),
    person("w2", "web", crm_id="c2", shop_id="s2"),
    # conflicting identifiers: one email, two crm ids (joined); an invalid email joins nothing
    person("c3", "crm", email="zoe@example.com", crm_id="c3", city="Köln"),
    person(
        "c4",
        "crm",
        email="zoe@example.com",
        crm_id="c4",
        city="Berlin",
        updated="2026-02-01T00:00:00Z",
    ),
    person("s3", "shop", email="not-an-email", shop_id="s3", first_name="X"),
    person("s4", "shop", email="not-an-email", shop_id="s4", first_name="Y"),
    # phones do not join unless enabled
    person("c5", "crm", phone="+1 415 555 0100", crm_id="c5"),
    person("s5", "shop", phone="+1 415 555 0100", shop_id="s5"),
    # a record deleted before the first resolution, and one whose deletion splits a bridge
    person("w3", "web", email="gone@example.com"),
    person("c6", "crm", email="li@example.com", crm_id="c6"),
    person("s6", "shop", email="sam@example.com", shop_id="s6"),
    person("w4", "web", email="li@example.com", shop_id="s6"),
]


def test_first_load_equals_the_incremental_path(fresh: Fresh) -> None:
    first = [*SCENARIO, {**deleted(person("w3", "web")), "source": "web"}]
    later = [
        {**deleted(person("w4", "web")), "source": "web"},  # splits li from sam
        person("w5", "web", email="zoe@example.com", shop_id="s3"),  # merges zoe and s3
        person("c7", "crm", email="new@example.com", crm_id="c7"),
    ]
    states, stats = run_both(fresh, first, later)
    fast, one_batch, small_batches = states
    assert fast == one_batch  # ids and all
    assert fast["first"]["partition"] == small_batches["first"]["partition"]
    assert fast["later"]["partition"] == small_batches["later"]["partition"]
    assert stats[0].as_dict() == stats[1].as_dict()
    groups = {frozenset(k.split("/")[2] for k in keys) for keys in fast["first"]["partition"]}
    assert {"c1", "s1", "w1"} in groups and {"c2", "s2", "w2"} in groups
    assert {"c3", "c4"} in groups and {"s3"} in groups and {"c5"} in groups
    assert {"c6", "s6", "w4"} in groups
    assert all(pid is not None for _, pid in fast["first"]["events"][:3])


def test_first_load_makes_no_closure_lookups(fresh: Fresh, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = fresh()
    _load(engine, SCENARIO)

    def refuse(*_: Any) -> None:
        raise AssertionError("a first load needs no look-ups")

    monkeypatch.setattr(Resolver, "_close_over_profiles", refuse)
    stats = resolve_pending(engine, CONFIG)
    assert stats.records == len(SCENARIO) and stats.profiles_created == 9
    _load(engine, [person("c8", "crm", email="ann@yahoo.com", crm_id="c8")])
    with pytest.raises(AssertionError, match="no look-ups"):  # profiles exist: incremental
        resolve_pending(engine, CONFIG)


def test_a_first_load_killed_midway_leaves_nothing_and_reruns_to_the_same_result(
    fresh: Fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = fresh()
    _load(engine, SCENARIO)
    before = state(engine)

    def killed(*_: Any) -> None:
        raise SystemExit("killed")  # after the profiles, before the records are written

    monkeypatch.setattr(first_load, "_write_records", killed)
    with pytest.raises(SystemExit):
        resolve_pending(engine, CONFIG, batch_size=2)
    assert state(engine) == before  # one transaction: rolled back whole
    monkeypatch.undo()
    resolve_pending(engine, CONFIG, batch_size=2)
    expected = partition(engine)  # (PostgreSQL's sequence does not roll back: ids may differ)
    reference = fresh()
    _load(reference, SCENARIO)
    resolve_pending(reference, CONFIG, batch_size=2)
    assert partition(reference) == expected


def test_first_load_of_only_deleted_records_places_nothing(fresh: Fresh) -> None:
    engine = fresh()
    _load(engine, [person("c1", "crm", email="a@example.com")])
    _load(engine, [{**deleted(person("c1", "crm")), "source": "crm"}])
    stats = resolve_pending(engine, CONFIG)
    assert stats.records == 1 and stats.profiles_created == 0
    assert state(engine)["records"] == [(1, None, False)]


record_strategy = st.fixed_dictionaries(
    {
        "email": st.sampled_from(["ann@yahoo.com", "ANN@yahoo.com", "bob@x.com", "bad", ""]),
        "crm_id": st.sampled_from(["", "c1", "c2", "c3"]),
        "shop_id": st.sampled_from(["", "s1", "s2", "s3"]),
        "phone": st.sampled_from(["", "+14155550100"]),
        "first_name": st.sampled_from(["", "Ann", "Bob", "Zoë"]),
        "city": st.sampled_from(["", "Boston", "Köln"]),
        "updated": st.sampled_from(["2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"]),
        "source": st.sampled_from(SOURCES),
    }
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(record_strategy, min_size=1, max_size=14),
    gone=st.lists(st.booleans(), min_size=14, max_size=14),
)
def test_first_load_equals_incremental_on_any_data(
    records: list[dict[str, Any]], gone: list[bool]
) -> None:
    keyed = [{**r, "id": f"r{n}"} for n, r in enumerate(records)]
    doomed = [{**deleted(r), "source": r["source"]} for r, g in zip(keyed, gone, strict=False) if g]
    with tempfile.TemporaryDirectory() as tmp:
        made = iter(range(3))

        def fresh() -> Engine:  # SQLite files with the schema (no migrations: many examples)
            engine = create_store_engine(f"sqlite:///{Path(tmp) / f'{next(made)}.db'}")
            metadata.create_all(engine)
            return engine

        states, stats = run_both(
            fresh, keyed + doomed[: len(doomed) // 2], doomed[len(doomed) // 2 :]
        )
    assert states[0] == states[1]
    assert states[0]["first"]["partition"] == states[2]["first"]["partition"]
    assert states[0]["later"]["partition"] == states[2]["later"]["partition"]
    assert stats[0].as_dict() == stats[1].as_dict()
