"""Job endpoints on SQLite and PostgreSQL: validation, dedupe, listing, cancel, auth; a job run end to end."""

from __future__ import annotations

from app.config import Settings
from app.jobs.worker import Worker
from tests.jobs.support import FAST, seed_database


def test_train_validates_and_names_the_field(client) -> None:
    r = client.post("/v1/train", json={"models": ["mf", "nope"]})
    assert r.status_code == 422
    body = r.json()
    assert body["errors"][0]["field"] == "models[1]" and body["errors"][0]["index"] == 1
    assert "unknown model 'nope'" in body["detail"] and "valid:" in body["detail"] and "popularity" in body["detail"]

    r = client.post("/v1/train", json={"models": ["mf"], "params": {"epoks": 1}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params" and "epoks" in r.json()["detail"]
    r = client.post("/v1/train", json={"models": ["mf"], "params": {"epochs": "ten"}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params.epochs"
    r = client.post("/v1/train", json={"models": ["mf"], "params": {"mf": {"lr": "fast"}}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params.mf.lr"
    r = client.post("/v1/train", json={"models": ["mf"], "promote": "sometimes"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "promote"
    for body in ({"models": []}, {}, {"models": ["mf"], "extra": 1}):
        assert client.post("/v1/train", json=body).status_code == 422
    assert client.get("/v1/jobs").json() == {"jobs": []}  # nothing was queued


def test_train_queues_dedupes_lists_and_cancels(client) -> None:
    r = client.post("/v1/train", json={"models": ["mf", "popularity"], "params": {"epochs": 3}})
    assert r.status_code == 202
    job = r.json()
    assert job["status"] == "queued" and not job["deduplicated"] and set(job["models"]) == {"mf", "popularity"}
    assert r.headers["location"] == f"/v1/jobs/{job['job_id']}"
    again = client.post("/v1/train", json={"models": ["popularity", "mf"], "params": {"epochs": 3}}).json()
    assert again["job_id"] == job["job_id"] and again["deduplicated"]
    other = client.post("/v1/train", json={"models": ["popularity"], "promote": "never"}).json()
    assert other["job_id"] != job["job_id"]
    differs = client.post("/v1/train", json={"models": ["popularity", "mf"]}).json()  # other params: its own job
    assert differs["job_id"] not in (job["job_id"], other["job_id"]) and not differs["deduplicated"]
    assert client.post(f"/v1/jobs/{differs['job_id']}/cancel").status_code == 200

    got = client.get(f"/v1/jobs/{job['job_id']}").json()
    assert got["status"] == "queued" and got["params"] == {"epochs": 3} and got["promote"] == "auto"
    assert got["progress"] is None and got["error"] is None and got["timings"]["started_at"] is None
    listed = client.get("/v1/jobs").json()["jobs"]
    assert [j["job_id"] for j in listed] == [differs["job_id"], other["job_id"], job["job_id"]]
    assert [j["job_id"] for j in client.get("/v1/jobs?status=queued&limit=1").json()["jobs"]] == [other["job_id"]]
    assert client.get("/v1/jobs?status=lost").status_code == 422

    r = client.post(f"/v1/jobs/{job['job_id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["timings"]["finished_at"]
    assert client.post(f"/v1/jobs/{job['job_id']}/cancel").status_code == 409
    assert client.get("/v1/jobs/999999").status_code == 404
    assert client.post("/v1/jobs/999999/cancel").status_code == 404
    assert client.post("/v1/train", json={"models": ["mf", "popularity"]}).json()["job_id"] != job["job_id"]


def test_job_endpoints_need_the_admin_key(make_client) -> None:
    c = make_client(api_key="secret", api_keys="read:r,write:w")
    assert c.post("/v1/train", json={"models": ["mf"]}).status_code == 401
    assert c.post("/v1/train", json={"models": ["mf"]}, headers={"X-API-Key": "w"}).status_code == 403
    job_id = c.post("/v1/train", json={"models": ["mf"]}, headers={"X-API-Key": "secret"}).json()["job_id"]
    assert c.get(f"/v1/jobs/{job_id}").status_code == 401  # jobs show parameters, errors and hosts
    assert c.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": "r"}).status_code == 403
    assert c.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": "secret"}).status_code == 200
    assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 401
    assert c.post("/v1/models/mf/versions/x/activate").status_code == 401
    assert c.post(f"/v1/jobs/{job_id}/cancel", headers={"X-API-Key": "secret"}).status_code == 200


def test_job_runs_end_to_end_and_models_reflect_the_table(client, settings: Settings, session) -> None:
    seed_database(session)
    job_id = client.post("/v1/train", json={"models": ["popularity", "mf"], "params": FAST}).json()["job_id"]
    worker = Worker(settings)
    assert worker.run_once() == "succeeded"
    worker.engine.dispose()

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["error"] is None
    assert job["progress"]["model"] == "mf" and job["progress"]["stage"] == "done"
    assert job["progress"]["epochs"] == 2 and job["progress"]["metric_name"] == "ndcg@10"
    assert job["timings"]["running_s"] > 0 and job["timings"]["finished_at"] is not None
    versions = {v["model"]: v for v in job["result"]["versions"]}
    assert set(versions) == {"popularity", "mf"}
    assert all(v["promoted"] and v["reason"] == "no active version yet" for v in versions.values())
    assert job["result"]["snapshot"]["max_id"] > 0

    client.app.state.version_poller.check()  # what the poll thread does every DEEPREC_MODEL_POLL_INTERVAL_S
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["mf"]["active_version"] == versions["mf"]["version"] and models["mf"]["loaded"]
    listed = client.get("/v1/models/mf/versions").json()
    assert listed["active_version"] == versions["mf"]["version"]
    assert [v["version"] for v in listed["versions"]] == [versions["mf"]["version"]]
    rec = client.get("/v1/users/u1/recommendations", params={"model": "mf", "n": 3}).json()
    assert rec["version"] == versions["mf"]["version"]


def test_rating_job_trains_the_rating_hybrid_and_predict_rates_with_it(client, settings: Settings, session) -> None:
    seed_database(session)
    params = {**FAST, "objective": "rating"}
    r = client.post("/v1/train", json={"models": ["hybrid"], "params": params, "promote": "always"})
    # The hybrid ranks: a rating run trains the rating stack, hybrid-rating, after its rating members.
    assert r.status_code == 202 and r.json()["models"] == ["mf", "content", "gmf", "hybrid-rating"]
    worker = Worker(settings)
    assert worker.run_once() == "succeeded"
    worker.engine.dispose()
    published = [v["model"] for v in client.get("/v1/jobs").json()["jobs"][0]["result"]["versions"]]
    assert published == ["mf-rating", "content-rating", "gmf-rating", "hybrid-rating"]  # beside the ranking ones
    client.app.state.version_poller.check()
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert not models["hybrid"]["loaded"] and models["hybrid"]["active_version"] is None
    rating = ("mf-rating", "content-rating", "gmf-rating", "hybrid-rating")
    raters = {n: models[n]["metrics"]["valid_rmse"] for n in rating}
    assert min(raters, key=raters.__getitem__) == "hybrid-rating", raters
    body = client.post("/v1/predict", json={"user_id": "u1", "item_ids": ["i1", "i2"]}).json()
    assert body["model"] == "hybrid-rating"  # only rating versions: the default falls back to the rating stack
    assert all(p["rating"] is not None for p in body["predictions"])
    via_mf = client.post("/v1/predict", json={"user_id": "u1", "item_ids": ["i1", "i2"], "model": "mf-rating"}).json()
    assert via_mf["model"] == "mf-rating"
    assert [p["rating"] for p in via_mf["predictions"]] != [p["rating"] for p in body["predictions"]]  # mf rates itself


def test_train_accepts_the_rating_stack_by_name(client) -> None:
    """hybrid-rating is a model of its own: asked for in any run, it trains on ratings with its own members."""
    r = client.post("/v1/train", json={"models": ["hybrid-rating"], "params": {"epochs": 1}})
    assert r.status_code == 202, r.text
    assert r.json()["models"] == ["hybrid-rating"]
    r = client.post("/v1/train", json={"models": ["hybrid-rating"], "params": {"hybrid-rating": {"members": ["mf"]}}})
    assert r.status_code == 202, r.text
    r = client.post("/v1/train", json={"models": ["hybrid-ratings"]})
    assert r.status_code == 422 and "hybrid-rating" in r.text
