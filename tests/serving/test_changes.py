"""The change feed (app.serving.changes): which users' histories changed since a sequence number, from
SQLite's commit counter and a scan of the new events; none on PostgreSQL."""

import pytest

from app.db.repository import delete_user
from app.serving import changes
from app.serving.changes import ChangeFeed
from tests.serving.support import add_event, seed_database

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def feed(engine, session):
    seed_database(session)
    out = ChangeFeed.open(engine)
    assert out is not None
    yield out
    out.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_has_no_feed(engine):
    assert ChangeFeed.open(engine) is None  # no free commit counter: no response cache, every history read


@SQLITE
def test_a_commit_marks_the_users_whose_events_it_added(feed, session):
    start = feed.sync()
    assert feed.current()
    assert feed.changed_at("u1") <= start and feed.changed_at("u2") <= start
    add_event(session, "u1", "i2")
    assert not feed.current()  # another connection committed: known without a query
    now = feed.sync()
    assert feed.current() and now > start
    assert feed.changed_at("u1") == now
    assert feed.changed_at("u2") <= start
    assert feed.sync() == now  # nothing new: no new sequence


@SQLITE
def test_deleted_events_mark_every_user(feed, session):
    start = feed.sync()
    delete_user(session=session, user_id="u3")
    session.commit()
    now = feed.sync()
    assert now > start and feed.floor == now
    assert feed.changed_at("u2") == now  # whose events went is not scanned: every answer is stale


@SQLITE
def test_a_bulk_load_marks_every_user(feed, session, monkeypatch):
    start = feed.sync()
    monkeypatch.setattr(changes, "MAX_SCANNED_EVENTS", 1)
    add_event(session, "u1", "i2")
    add_event(session, "u2", "i3")
    now = feed.sync()
    assert now > start and feed.changed_at("u9") == now


@SQLITE
def test_marks_beyond_the_bound_raise_the_floor(feed, session):
    feed.max_users = 2
    start = feed.sync()
    for user in ("u1", "u2", "u3"):
        add_event(session, user, "i2")
        feed.sync()
    assert start < feed.floor < feed.changed_at("u3")  # u1's mark went; the floor covers it
    assert feed.changed_at("u1") == feed.floor
    assert feed.changed_at("u9") == feed.floor
