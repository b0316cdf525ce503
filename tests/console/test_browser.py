"""The console in headless Chromium against a real service, on SQLite and on PostgreSQL (see conftest.py)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.db.session import make_engine, make_sessionmaker
from app.db.tables import Interaction, Item, User
from tests.console.conftest import Console, Service
from tests.jobs.support import wait_for

pytestmark = pytest.mark.slow
PAGES = ["overview", "models", "jobs", "try", "evaluation"]


def shown_ids(console: Console, selector: str) -> list[str]:
    return console.page.eval_on_selector_all(f"{selector} li[data-item-id]", "els => els.map(e => e.dataset.itemId)")


def test_every_page_loads_without_errors_at_desk_and_phone_sizes(console: Console) -> None:
    for name in PAGES:
        console.open(name)
        console.page.wait_for_timeout(300)  # let charts draw
        console.screenshot(name)
        assert console.page.locator("#errors .error").count() == 0, console.page.inner_text("#errors")
    console.page.set_viewport_size({"width": 390, "height": 844})
    for name in PAGES:
        console.open(name)
        overflow = console.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} scrolls sideways on a phone by {overflow}px"
        console.screenshot(f"phone-{name}")
    assert console.errors == []


def test_docs_and_home_need_nothing_from_outside(console: Console) -> None:
    requested: list[str] = []
    console.page.on("request", lambda r: requested.append(r.url))
    console.page.goto(f"{console.service.url}/")
    links = console.page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))")
    assert {"/console/", "/docs", "/healthz", "/readyz"} <= set(links)
    console.page.goto(f"{console.service.url}/docs")
    console.page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "DeepRec" in console.page.inner_text(".swagger-ui .info .title")
    console.page.wait_for_selector(".opblock-summary-path[data-path='/v1/users/{user_id}/recommendations']")
    console.screenshot("docs")
    assert requested and all(url.startswith(console.service.url) for url in requested), requested
    assert console.errors == []


def test_overview_shows_the_real_counts(console: Console, service: Service) -> None:
    engine = make_engine(service.settings)
    with make_sessionmaker(engine)() as session:
        real = {name: session.scalar(select(func.count()).select_from(t)) for name, t in
                (("users", User), ("items", Item), ("interactions", Interaction))}  # fmt: skip
    engine.dispose()
    assert real["interactions"] > 500
    page = console.open("overview")
    for name, count in real.items():
        assert page.inner_text(f"[data-stat={name}] .value").replace(",", "") == str(count)
    assert page.locator("#events-chart canvas").count() == 1
    rows = page.locator("#overview-models tbody tr").all_inner_texts()
    assert {r.split()[0] for r in rows} >= {"popularity", "mf", "gru4rec", "sasrec"}
    assert "alive" in page.inner_text("#overview-service")  # the embedded worker


def test_a_retrain_from_the_console_ends_with_a_new_active_version(console: Console, service: Service) -> None:
    with service.client() as api:
        before = {m["name"]: m["active_version"] for m in api.get("/v1/models").json()["models"]}
    page = console.open("jobs")
    page.check("#train-form input[value=mf]")
    page.fill("#train-params", json.dumps({"epochs": 3, "batch_size": 128}))
    page.select_option("#train-promote", "always")
    page.click("#train-start")
    page.wait_for_selector("#train-status:has-text('queued')")
    job_id = int(page.inner_text("#train-status").split("#")[1].split()[0])
    row = f"#jobs-table tr[data-job='{job_id}']"
    page.wait_for_selector(f"{row}[data-status=succeeded]", timeout=120_000)
    assert "epoch 3/3" in page.inner_text(row)  # the progress the worker reported, shown without a reload
    page.click(row)
    # The versions table by its id: the loss curves drawn above it, when the console saw the job's epochs
    # while it trained, are charts whose legends are tables too.
    page.wait_for_selector(f"#job-detail[data-job='{job_id}'] #job-versions")
    version = page.inner_text(f"#job-detail[data-job='{job_id}'] #job-versions tbody tr td:nth-child(2)")
    assert version != before["mf"]

    with service.client() as api:

        def mf() -> dict:
            return next(m for m in api.get("/v1/models").json()["models"] if m["name"] == "mf")

        # A hang guard, not a timing. On a timeout the message holds what the database and the job say, to
        # tell a version never activated from one activated but not swapped in.
        try:
            wait_for(lambda: mf()["active_version"] == version and mf()["loaded"], 90, 0.2, "the new mf")
        except AssertionError as exc:
            versions = api.get("/v1/models/mf/versions").json()
            job = api.get(f"/v1/jobs/{job_id}").json()
            raise AssertionError(
                f"{exc}; before {before['mf']}, page {version}; mf: {mf()}; versions: {versions}; job: {job}; "
                f"server log:\n{service.log_tail()}"
            ) from None
    page = console.open("models")
    assert page.inner_text(f"[data-model=mf] tr[data-version='{version}']").count("active") >= 1
    roll_back = page.locator(f"[data-model=mf] tr[data-version='{before['mf']}'] button")
    assert roll_back.inner_text() == "Roll back"
    roll_back.click()
    assert before["mf"] in page.inner_text("#confirm-text")
    page.click("#confirm-yes")
    page.wait_for_selector(f"#page[data-ready=true] [data-model=mf] tr[data-version='{before['mf']}'] .badge.active")
    with service.client() as api:
        wait_for(lambda: mf()["active_version"] == before["mf"] and mf()["loaded"], 30, 0.2, "the rollback")
    assert console.errors == []


def test_try_it_shows_what_the_api_returns(console: Console, service: Service) -> None:
    page = console.open("try?user=u1")
    page.wait_for_selector("#try-recs[data-user=u1]")
    with service.client() as api:
        loaded = [m["name"] for m in api.get("/v1/models").json()["models"] if m["loaded"]]
        assert len(loaded) >= 4
        for model in loaded:
            want = api.get("/v1/users/u1/recommendations", params={"n": 10, "model": model, "exclude_seen": True})
            assert shown_ids(console, f"#try-recs [data-model={model}]") == [i["item_id"] for i in want.json()["items"]]
        history = api.get("/v1/users/u1/interactions", params={"limit": 10}).json()["interactions"]
    titles = page.locator("#try-history tbody tr .item-title").all_inner_texts()
    assert len(titles) == len(history) and all(t and not t.startswith("i") for t in titles)  # titles, not ids
    assert console.errors == []


def test_clicking_items_in_the_session_builder_changes_the_next_items(console: Console, service: Service) -> None:
    page = console.open("try")
    first, second = page.locator("#session-found button[data-item-id]").evaluate_all(
        "els => els.slice(0, 2).map(e => e.dataset.itemId)"
    )
    page.click(f"#session-found button[data-item-id='{first}']")
    page.wait_for_selector(f"#session-next[data-session='{first}']")
    after_one = {m: shown_ids(console, f"#session-next [data-model={m}]") for m in ("gru4rec", "sasrec")}
    page.click(f"#session-found button[data-item-id='{second}']")
    page.wait_for_selector(f"#session-next[data-session='{first},{second}']")
    after_two = {m: shown_ids(console, f"#session-next [data-model={m}]") for m in ("gru4rec", "sasrec")}
    assert after_one["gru4rec"] and after_one != after_two
    with service.client() as api:
        for model in ("gru4rec", "sasrec"):
            want = api.post("/v1/sessions/next-items", json={"item_ids": [first, second], "n": 10, "model": model})
            assert after_two[model] == [i["item_id"] for i in want.json()["items"]]
    assert console.errors == []


def test_a_wrong_key_shows_an_error(console: Console) -> None:
    page = console.open("jobs", key="not-the-key")  # reads need a key too: the page's first call is refused
    error = page.wait_for_selector("#errors .error")
    assert "401" in error.inner_text() and "X-API-Key" in error.inner_text()
    assert page.locator("#errors .error button", has_text="Change key").count() >= 1
