"""Publishing: the promotion gate, activation and rollback through the API, corrupt versions, pruning."""

from __future__ import annotations

import logging
import shutil

from sqlalchemy import update

from app.db.tables import ModelVersion
from app.jobs.publish import promotion
from app.jobs.versions import gate_metric, list_versions
from tests.jobs.support import FAST, run_job, seed_database


def served(client, name: str) -> dict:
    return next(m for m in client.get("/v1/models").json()["models"] if m["name"] == name)


def test_gate_rules() -> None:
    assert promotion("auto", new=0.1, active=None, active_version=None, tolerance=0).promote
    assert promotion("auto", new=0.30, active=0.30, active_version="v", tolerance=0).promote
    assert promotion("auto", new=0.29, active=0.30, active_version="v", tolerance=0.02).promote
    worse = promotion("auto", new=0.25, active=0.30, active_version="v1", tolerance=0.02)
    assert not worse.promote and "worse than active version v1" in worse.reason and "0.2500" in worse.reason
    assert promotion("always", new=0.0, active=1.0, active_version="v", tolerance=0).promote
    assert not promotion("never", new=1.0, active=0.0, active_version="v", tolerance=0).promote


def test_rating_versions_are_gated_on_validation_rmse() -> None:
    """Lower is better: a rating version with a higher RMSE than the active one stays a candidate."""
    assert gate_metric("mf-rating", {"valid_ndcg@10": 0.1, "valid_rmse": 0.93}) == ("valid_rmse", 0.93)
    assert gate_metric("hybrid-rating", {"valid_rmse": 0.80, "valid_rmse_cv": 0.91}) == ("valid_rmse_cv", 0.91)
    assert gate_metric("mf", {"valid_ndcg@10": 0.1, "valid_rmse": 0.93}) == ("valid_ndcg@10", 0.1)
    assert gate_metric("mf-rating", {}) == ("valid_rmse", None)
    better = promotion("auto", new=0.90, active=0.93, active_version="v", tolerance=0, metric="valid_rmse")
    assert better.promote and "0.9000 <= active 0.9300" in better.reason
    assert promotion("auto", new=0.94, active=0.93, active_version="v", tolerance=0.02, metric="valid_rmse").promote
    worse = promotion("auto", new=0.96, active=0.93, active_version="v1", tolerance=0.02, metric="valid_rmse")
    assert not worse.promote and "valid_rmse 0.9600 is worse than active version v1" in worse.reason
    close = promotion("auto", new=0.032512, active=0.032547, active_version="v1", tolerance=0)
    assert "0.03251 is worse than active version v1 (0.03255)" in close.reason  # digits enough to differ


def test_worse_version_stays_candidate_unless_tolerated(settings, session) -> None:
    seed_database(session)
    first = run_job(settings, session)["mf"]
    assert first["promoted"]
    # Pretend the active version validated perfectly: any new one is worse.
    session.execute(update(ModelVersion).where(ModelVersion.version == first["version"]).values(metric_value=1.0))
    session.commit()
    second = run_job(settings, session)["mf"]
    assert not second["promoted"] and "worse than active version" in second["reason"]
    assert second["previous_version"] == first["version"]
    rows = {r.version: r for r in list_versions(session=session, name="mf")}
    assert rows[first["version"]].status == "active" and rows[second["version"]].status == "candidate"
    assert "worse" in rows[second["version"]].note
    third = run_job(settings, session, promotion_tolerance=1.0)["mf"]
    assert third["promoted"]
    rows = {r.version: r for r in list_versions(session=session, name="mf")}
    assert rows[first["version"]].status == "retired" and rows[third["version"]].status == "active"


def test_activate_promotes_and_rolls_back(client, settings, session) -> None:
    seed_database(session)
    v1 = run_job(settings, session)["mf"]["version"]
    v2 = run_job(settings, session, promote="never")["mf"]["version"]
    poller = client.app.state.version_poller
    poller.check()
    assert client.get("/v1/users/u1/recommendations?model=mf").json()["version"] == v1

    r = client.post(f"/v1/models/mf/versions/{v2}/activate")
    assert r.status_code == 200
    assert r.json() == {"name": "mf", "version": v2, "status": "active", "previous_version": v1}
    poller.check()
    assert client.get("/v1/users/u1/recommendations?model=mf").json()["version"] == v2
    listed = client.get("/v1/models/mf/versions").json()
    assert listed["active_version"] == v2
    assert {v["version"]: v["status"] for v in listed["versions"]} == {v1: "retired", v2: "active"}

    assert client.post(f"/v1/models/mf/versions/{v1}/activate").json()["previous_version"] == v2  # roll back
    poller.check()
    assert served(client, "mf")["active_version"] == v1

    r = client.post(f"/v1/models/nope/versions/{v1}/activate")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name" and "valid:" in r.json()["detail"]
    assert client.post("/v1/models/mf/versions/20990101T000000000000Z-abcdef/activate").status_code == 404
    assert client.post("/v1/models/mf/versions/not-a-version/activate").status_code == 404


def test_corrupt_or_missing_version_is_refused_and_old_keeps_serving(client, settings, session, caplog) -> None:
    seed_database(session)
    good = run_job(settings, session)["mf"]["version"]
    bad = run_job(settings, session, promote="never")["mf"]["version"]
    poller = client.app.state.version_poller
    poller.check()
    weights = settings.models_dir / "mf" / bad / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])  # truncated

    with caplog.at_level(logging.ERROR):
        r = client.post(f"/v1/models/mf/versions/{bad}/activate")
    assert r.status_code == 409 and "truncated" in r.json()["detail"]
    assert any("activation refused" in rec.getMessage() for rec in caplog.records)

    # Another process marks it active anyway: this process refuses it, logs, keeps serving the old one.
    from app.jobs.versions import activate_version

    activate_version(session=session, name="mf", version=bad)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        poller.check()
    assert any("refused" in rec.getMessage() for rec in caplog.records)
    rec = client.get("/v1/users/u1/recommendations?model=mf")
    assert rec.status_code == 200 and rec.json()["version"] == good
    mf = served(client, "mf")
    assert mf["active_version"] == good and "truncated" in mf["error"]
    assert not poller.check()  # refused once, not reloaded on every poll

    missing = run_job(settings, session, promote="never")["mf"]["version"]
    shutil.rmtree(settings.models_dir / "mf" / missing)
    assert client.post(f"/v1/models/mf/versions/{missing}/activate").status_code == 404
    activate_version(session=session, name="mf", version=missing)
    poller.check()
    assert client.get("/v1/users/u1/recommendations?model=mf").json()["version"] == good


def test_prune_keeps_the_newest(settings, session) -> None:
    keep = 2
    seed_database(session)
    made = [run_job(settings, session, promote="always", keep_versions=keep)["mf"]["version"] for _ in range(3)]
    rows = [r.version for r in list_versions(session=session, name="mf")]
    assert rows == made[-keep:]
    assert sorted(p.name for p in (settings.models_dir / "mf").iterdir() if p.is_dir()) == made[-keep:]


def test_rating_job_publishes_and_gates_under_the_rating_name(client, settings, session) -> None:
    seed_database(session)
    ranking = run_job(settings, session)["mf"]
    rating = run_job(settings, session, params={**FAST, "objective": "rating"})
    assert list(rating) == ["mf-rating"]  # not a new version of the ranking mf
    first = rating["mf-rating"]
    assert first["promoted"] and first["reason"] == "no active version yet" and first["previous_version"] is None
    assert first["gate_metric"] == "valid_rmse" and first["gate_value"] > 0
    row = next(r for r in list_versions(session=session, name="mf-rating") if r.version == first["version"])
    assert (row.metric_name, row.metric_value) == ("valid_rmse", first["gate_value"])
    # The gate compares validation RMSE with the active mf-rating's, never with the ranking mf.
    session.execute(update(ModelVersion).where(ModelVersion.version == first["version"]).values(metric_value=0.0))
    session.commit()
    second = run_job(settings, session, params={**FAST, "objective": "rating"})["mf-rating"]
    assert not second["promoted"] and second["previous_version"] == first["version"]
    assert "valid_rmse" in second["reason"] and "worse than active" in second["reason"]
    assert [r.version for r in list_versions(session=session, name="mf")] == [ranking["version"]]
    client.app.state.version_poller.check()
    assert served(client, "mf")["active_version"] == ranking["version"]
    assert served(client, "mf-rating")["active_version"] == first["version"] and served(client, "mf-rating")["loaded"]
    versions = client.get("/v1/models/mf-rating/versions").json()
    assert [(v["version"], v["active"]) for v in versions["versions"]] == [(first["version"], True),
                                                                           (second["version"], False)]  # fmt: skip
    r = client.post(f"/v1/models/mf-rating/versions/{second['version']}/activate")  # promote the candidate
    assert r.status_code == 200 and r.json()["previous_version"] == first["version"]
    client.app.state.version_poller.check()
    assert served(client, "mf-rating")["active_version"] == second["version"]
    assert served(client, "mf")["active_version"] == ranking["version"]
