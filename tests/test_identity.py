"""Identity resolution: merges, splits, deletes, email changes, survivorship, order independence."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from syncbridge.config.models import IdentityConfig
from syncbridge.store.engine import create_store_engine
from syncbridge.store.tables import Identity, Profile, ProfileMerge, metadata

from .streams import deleted, ingest, partition, profile_of, resolve

P = Profile.__table__.c


def crm(id_: str, email: str = "", **kw: Any) -> dict[str, Any]:
    return {"id": id_, "crm_id": id_, "email": email, **kw}


def shop(id_: str, email: str = "", **kw: Any) -> dict[str, Any]:
    return {"id": id_, "shop_id": id_, "email": email, **kw}


def live_profiles(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(Profile.__table__).where(P.deleted.is_(False)).order_by(P.id)
            ).mappings()
        ]


def test_same_email_in_two_sources_is_one_profile(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [crm("c1", "Ann@Yahoo.com ", first_name="Ann")])
    ingest(engine, "shop", "customers", [shop("s1", "ann@yahoo.com", city="Boston")])
    resolve(engine)
    profiles = live_profiles(engine)
    assert len(profiles) == 1
    assert profiles[0]["email"] == "ann@yahoo.com"
    assert profiles[0]["attributes"]["first_name"] == "Ann"
    assert profiles[0]["attributes"]["city"] == "Boston"
    assert profiles[0]["record_count"] == 2


def test_record_linking_two_profiles_merges_them_and_older_id_survives(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [crm("c1", "ann@yahoo.com")])
    ingest(engine, "shop", "customers", [shop("s1", "ann.lee@gmail.com")])
    resolve(engine)
    older = profile_of(engine, "crm", "contacts", "c1")
    newer = profile_of(engine, "shop", "customers", "s1")
    assert older is not None and newer is not None and older < newer
    # a web record carrying both the CRM id and the shop id bridges the two
    ingest(engine, "web", "identifies", [{"id": "w1", "crm_id": "c1", "shop_id": "s1"}])
    stats = resolve(engine)
    assert stats.merges == 1
    assert {
        profile_of(engine, s, t, k)
        for s, t, k in [
            ("crm", "contacts", "c1"),
            ("shop", "customers", "s1"),
            ("web", "identifies", "w1"),
        ]
    } == {older}
    with engine.connect() as conn:
        merge = conn.execute(select(ProfileMerge.__table__)).mappings().one()
        gone = conn.execute(select(Profile.__table__).where(P.id == newer)).mappings().one()
    assert (merge["survivor_id"], merge["merged_id"]) == (older, newer)
    assert gone["deleted"] and gone["merged_into"] == older


def test_deleting_the_bridge_splits_the_profile_again(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [crm("c1", "ann@yahoo.com"), crm("c2", "ann@yahoo.com")])
    ingest(engine, "shop", "customers", [shop("s1", "ann.lee@gmail.com")])
    ingest(engine, "web", "identifies", [{"id": "w1", "crm_id": "c1", "shop_id": "s1"}])
    resolve(engine)
    assert len(live_profiles(engine)) == 1
    survivor = profile_of(engine, "crm", "contacts", "c1")
    ingest(engine, "web", "identifies", [deleted({"id": "w1", "crm_id": "c1", "shop_id": "s1"})])
    stats = resolve(engine)
    assert stats.splits == 1
    assert len(live_profiles(engine)) == 2
    assert profile_of(engine, "crm", "contacts", "c1") == survivor  # the larger part keeps the id
    assert profile_of(engine, "shop", "customers", "s1") not in (None, survivor)
    assert profile_of(engine, "web", "identifies", "w1") is None


def test_deleted_record_leaves_profile_only_when_nothing_else_holds_it(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [crm("c1", "ann@yahoo.com"), crm("c2", "bob@gmail.com")])
    ingest(engine, "shop", "customers", [shop("s1", "ann@yahoo.com")])
    resolve(engine)
    ann = profile_of(engine, "crm", "contacts", "c1")
    bob = profile_of(engine, "crm", "contacts", "c2")
    ingest(
        engine,
        "crm",
        "contacts",
        [deleted(crm("c1", "ann@yahoo.com")), deleted(crm("c2", "bob@gmail.com"))],
    )
    stats = resolve(engine)
    assert stats.profiles_deleted == 1
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(P.id, P.deleted, P.record_count))}
        holders = dict(
            conn.execute(select(Identity.__table__.c.value, Identity.__table__.c.profile_id)).all()
        )
    assert not rows[ann].deleted and rows[ann].record_count == 1  # the shop record still holds it
    assert rows[bob].deleted
    assert holders == {"ann@yahoo.com": ann, "s1": ann}


def test_email_change_moves_record_with_its_other_identifiers(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [crm("c1", "ann@yahoo.com", first_name="Ann")])
    ingest(engine, "web", "identifies", [{"id": "w1", "crm_id": "c1"}])
    ingest(engine, "shop", "customers", [shop("s1", "ann@yahoo.com")])
    resolve(engine)
    assert len(live_profiles(engine)) == 1
    ingest(engine, "crm", "contacts", [crm("c1", "ann.new@outlook.com", first_name="Ann")])
    resolve(engine)
    crm_profile = profile_of(engine, "crm", "contacts", "c1")
    assert profile_of(engine, "web", "identifies", "w1") == crm_profile
    assert profile_of(engine, "shop", "customers", "s1") != crm_profile
    with engine.connect() as conn:
        holders = dict(
            conn.execute(
                select(Identity.__table__.c.value, Identity.__table__.c.profile_id).where(
                    Identity.__table__.c.kind == "email"
                )
            ).all()
        )
    assert holders["ann.new@outlook.com"] == crm_profile
    assert holders["ann@yahoo.com"] == profile_of(engine, "shop", "customers", "s1")


def test_invalid_emails_never_join_records(engine: Engine) -> None:
    ingest(
        engine, "crm", "contacts", [crm("c1", "bob at gmail.com"), crm("c2", "bob at gmail.com")]
    )
    resolve(engine)
    profiles = live_profiles(engine)
    assert len(profiles) == 2
    assert all(p["attributes"]["email_valid"] is False for p in profiles)


def test_phone_joins_only_when_enabled(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [crm("c1", "ann@yahoo.com", phone="(415) 555-0132")])
    ingest(engine, "shop", "customers", [shop("s1", "ann.lee@gmail.com", phone="+1 415 555 0132")])
    resolve(engine)
    assert len(live_profiles(engine)) == 2
    ingest(engine, "shop", "customers", [shop("s2", "x@gmail.com", phone="415.555.0132")])
    resolve(engine, IdentityConfig(match_on_phone=True))
    assert len(live_profiles(engine)) == 1


def test_survivorship_priority_then_recency(engine: Engine) -> None:
    ingest(
        engine,
        "crm",
        "contacts",
        [
            crm(
                "c1",
                "ann@yahoo.com",
                first_name="Ann",
                city="Boston",
                updated="2026-01-01T00:00:00Z",
            )
        ],
    )
    ingest(
        engine,
        "shop",
        "customers",
        [
            shop(
                "s1",
                "ann@yahoo.com",
                first_name="Annie",
                city="NYC",
                updated="2026-06-01T00:00:00Z",
            )
        ],
    )
    ingest(
        engine,
        "shop",
        "customers",
        [shop("s2", "ANN@yahoo.com", first_name="A.", updated="2026-09-01T00:00:00Z")],
    )
    config = IdentityConfig(source_priority=["crm", "shop"], attribute_priority={"city": ["shop"]})
    resolve(engine, config)
    [profile] = live_profiles(engine)
    assert profile["attributes"]["first_name"] == "Ann"  # crm outranks shop
    assert profile["attributes"]["city"] == "NYC"  # per-attribute priority: shop first
    assert profile["attribute_sources"]["city"] == "shop/customers/s1"
    resolve(engine)  # nothing pending: nothing changes
    ingest(engine, "crm", "contacts", [crm("c1", "ann@yahoo.com", updated="2026-01-02T00:00:00Z")])
    resolve(engine, IdentityConfig())  # no priorities: newest source timestamp wins
    [profile] = live_profiles(engine)
    assert profile["attributes"]["first_name"] == "A."


def test_valid_email_beats_invalid_for_the_profile_email(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [crm("c1", "ann at yahoo.com", shop_id="s1")])
    ingest(engine, "shop", "customers", [shop("s1", "ann@yahoo.com")])
    resolve(engine, IdentityConfig(source_priority=["crm", "shop"]))
    [profile] = live_profiles(engine)
    assert profile["email"] == "ann@yahoo.com"
    assert profile["attributes"]["email_valid"] is True


def test_only_touched_profiles_become_dirty(engine: Engine) -> None:
    ingest(engine, "crm", "contacts", [crm(f"c{i}", f"person{i}@gmail.com") for i in range(50)])
    resolve(engine)
    with engine.begin() as conn:
        conn.execute(update(Profile.__table__).values(dirty=False))
    ingest(
        engine,
        "crm",
        "contacts",
        [crm("c7", "person7@gmail.com", first_name="Seven")]
        + [crm(f"c{i}", f"person{i}@gmail.com") for i in range(50) if i != 7],
    )
    stats = resolve(engine)
    with engine.connect() as conn:
        dirty = conn.execute(select(P.email).where(P.dirty.is_(True))).scalars().all()
    assert dirty == ["person7@gmail.com"]
    assert stats.records == 1


# -- order independence -------------------------------------------------------------------------

EMAILS = ["ann@yahoo.com", "bob@gmail.com", "Cy@Outlook.com", "dee@web.de", "bad at mail"]
record_strategy = st.fixed_dictionaries(
    {
        "email": st.sampled_from([*EMAILS, ""]),
        "crm_id": st.sampled_from(["", "c1", "c2", "c3"]),
        "shop_id": st.sampled_from(["", "s1", "s2", "s3"]),
        "first_name": st.sampled_from(["", "Ann", "Bob", "Zoë"]),
        "city": st.sampled_from(["", "Boston", "Köln"]),
        "updated": st.sampled_from(["", "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"]),
        "source": st.sampled_from(["crm", "shop", "web"]),
    }
)


def _fresh_engine(directory: str, name: str) -> Engine:
    engine = create_store_engine(f"sqlite:///{Path(directory) / name}")
    metadata.create_all(engine)
    return engine


def _load(
    engine: Engine, records: list[dict[str, Any]], chunks: int, config: IdentityConfig
) -> None:
    size = max(1, -(-len(records) // chunks))
    for start in range(0, len(records), size):
        part = records[start : start + size]
        for source in ("crm", "shop", "web"):
            rows = [
                {k: v for k, v in r.items() if k != "source"} for r in part if r["source"] == source
            ]
            if rows:
                ingest(engine, source, "s", rows, page_size=3)
        resolve(engine, config, batch=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(record_strategy, min_size=1, max_size=18),
    order=st.randoms(use_true_random=False),
    chunks=st.integers(1, 4),
    delete_mask=st.lists(st.booleans(), min_size=18, max_size=18),
)
def test_resolution_does_not_depend_on_arrival_order(
    records: list[dict[str, Any]], order: Any, chunks: int, delete_mask: list[bool]
) -> None:
    config = IdentityConfig(source_priority=["crm", "shop"])
    keyed = [{**r, "id": f"r{i}"} for i, r in enumerate(records)]
    survivors = [r for r, gone in zip(keyed, delete_mask, strict=False) if not gone]
    with tempfile.TemporaryDirectory() as tmp:
        reference = _fresh_engine(tmp, "reference.db")
        _load(reference, survivors, 1, config)
        shuffled = _fresh_engine(tmp, "shuffled.db")
        arrival = list(keyed)
        order.shuffle(arrival)
        _load(shuffled, arrival, chunks, config)
        doomed = [deleted(r) for r, gone in zip(keyed, delete_mask, strict=False) if gone]
        order.shuffle(doomed)
        _load(shuffled, doomed, chunks, config)
        assert partition(shuffled) == partition(reference)
        reference.dispose()
        shuffled.dispose()
