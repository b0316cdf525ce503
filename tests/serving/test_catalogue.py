"""The catalogue kept current on SQLite and PostgreSQL: new events and new items are read alone, changed
or deleted rows make it read everything again, and at every step it equals a catalogue loaded afresh."""

from types import SimpleNamespace

import numpy as np
from sqlalchemy import text

from app.db.repository import ItemUpsert, upsert_items
from app.db.session import make_sessionmaker
from app.serving.catalogue import CatalogueKeeper
from tests.serving.support import add_event, seed_database


def test_the_catalogue_follows_writes_and_reads_only_what_changed(engine, session):
    seed_database(session)
    sessions = make_sessionmaker(engine)
    keeper = CatalogueKeeper(sessions)

    def same():
        keeper.refresh()
        got, fresh = keeper.current(), CatalogueKeeper(sessions).current()
        assert list(got.item_ids) == list(fresh.item_ids) and list(got.db_ids) == list(fresh.db_ids)
        np.testing.assert_array_equal(got.active, fresh.active)
        np.testing.assert_array_equal(got.popularity, fresh.popularity)
        assert {c: list(r) for c, r in got.category_rows.items()} == {
            c: list(r) for c, r in fresh.category_rows.items()
        }
        assert list(got.popular_rows()) == list(fresh.popular_rows())
        return got

    first = same()
    assert keeper.loads == 1 and not keeper.refresh()  # nothing written: nothing read again
    for user, item in (("u1", "i3"), ("u2", "i3"), ("u4", "i5")):
        add_event(session, user, item)
    after = same()
    assert after.popularity[after.rows_of(["i3"])[0]] == first.popularity[first.rows_of(["i3"])[0]] + 2
    assert (keeper.loads, keeper.updates) == (1, 1)
    upsert_items(session=session, items=[ItemUpsert("fresh", "Fresh", ["Drama", "Brand-new"], {})])
    session.commit()
    add_event(session, "u3", "fresh")
    grown = same()
    assert (keeper.loads, keeper.appends) == (1, 1) and grown.rows_of(["fresh"])[0] == first.size
    assert grown.popularity[-1] == 1 and list(grown.category_rows["Brand-new"]) == [first.size]
    upsert_items(session=session, items=[ItemUpsert("i5", active=False)])
    session.commit()
    assert not same().active[first.rows_of(["i5"])[0]] and keeper.loads == 2  # a changed item: read again
    session.execute(text("DELETE FROM interaction WHERE id = (SELECT max(id) FROM interaction)"))
    session.commit()
    same()
    assert keeper.loads == 3  # an event deleted: counted again


def test_an_id_the_catalogue_lacks_is_found_in_the_database(svc, session):
    """A new item is never unknown: predict and similar look it up before answering 404."""
    svc.current()  # loaded before the item arrives, and not refreshed after
    upsert_items(session=session, items=[ItemUpsert("just-added", "Comedy", ["Comedy"], {"year": 2001})])
    session.commit()
    out = svc.predict("u1", ["i1", "just-added"], "mf")
    assert [p.model for p in out["predictions"]] == ["mf", "content"]
    assert svc.similar("just-added", n=3).strategy == "content"


def test_a_model_loaded_before_the_catalogue_read_its_items_finds_them_later(engine, session):
    """A version trained on items the catalogue had not read yet (it refreshes each interval) is aligned
    on the old catalogue; once the items are appended, its items map to their rows."""
    sessions = make_sessionmaker(engine)
    keeper = CatalogueKeeper(sessions)
    upsert_items(session=session, items=[ItemUpsert("old", "Old", ["Drama"], {})])
    session.commit()
    before = keeper.current()
    lm = SimpleNamespace(name="mf", version="v1", item_ids=np.array(["new-b", "old", "new-a"], dtype=object))
    rows, cols = before.aligned(lm)
    assert list(rows) == [-1, 0, -1] and list(cols) == [1]
    upsert_items(session=session, items=[ItemUpsert(i, i, ["Drama"], {}) for i in ("new-a", "new-b")])
    session.commit()
    assert keeper.refresh() and keeper.appends == 1
    after = keeper.current()
    rows, cols = after.aligned(lm)
    assert list(after.item_ids[rows]) == ["new-b", "old", "new-a"]
    assert list(lm.item_ids[cols]) == list(after.item_ids)
