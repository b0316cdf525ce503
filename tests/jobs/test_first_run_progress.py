"""The first start's pieces that need no process: quick caps, the job clock, what is still training."""

from __future__ import annotations

from types import SimpleNamespace

from app.jobs.first_run import REUSED, TRIGGER, JobClock, quick_params, still_training


def test_quick_caps_apply_to_the_quick_models_and_yield_to_explicit_ones() -> None:
    assert quick_params(["popularity"], {"epochs": 2}) == {"epochs": 2}
    capped = quick_params(["popularity", "mf"], {"epochs": 2, "mf": {"max_seconds": 1.0}})
    assert capped["epochs"] == 2 and capped["mf"]["max_seconds"] == 1.0 and capped["mf"]["num_negatives"] == 1


def test_the_clock_counts_models_left_and_rescales_by_the_models_done() -> None:
    clock = JobClock(now=0.0)
    start = clock.update({"model": "mf", "stage": "start", "pending": ["ease", "hybrid"]}, now=0.0)
    assert start["models_left"] == 3 and start["eta_s"] > 0
    epoch = clock.update({"model": "mf", "stage": "epoch", "epoch": 2, "epochs": 10, "pending": ["ease", "hybrid"]},
                         now=4.0)  # fmt: skip
    done = clock.update({"model": "mf", "stage": "done", "pending": ["ease", "hybrid"]}, now=8.0)
    assert done["models_left"] == 2 and done["pending"] == ["ease", "hybrid"]
    assert epoch["eta_s"] >= 16.0  # 8 epochs left at 2 s each, then the rest
    # mf ran 8 s: the models after it are scaled from their typical times by the same ratio
    from app.jobs.first_run import TYPICAL_S

    expected = (TYPICAL_S["ease"] + TYPICAL_S["hybrid"]) * 8.0 / TYPICAL_S["mf"]
    assert abs(done["eta_s"] - expected) < 0.2
    last = clock.update({"model": "hybrid", "stage": "done", "pending": []}, now=20.0)
    assert last["models_left"] == 0 and last["eta_s"] == 0.0


def job(id: int, status: str, models: list[str], trigger: str = "api", progress: dict | None = None, **params):
    return SimpleNamespace(id=id, status=status, models=models, trigger=trigger, progress=progress, params=params)


def test_still_training_names_the_open_jobs_models() -> None:
    running = job(1, "running", ["default"], TRIGGER, {"model": "gru4rec", "stage": "epoch",
                                                       "pending": ["content", "hybrid"]})  # fmt: skip
    assert still_training([running]) == {"gru4rec": 1, "content": 1, "hybrid": 1}
    queued = job(2, "queued", ["default"], TRIGGER)
    names = still_training([queued])
    assert "hybrid" in names and not set(REUSED) & set(names)
    assert still_training([job(3, "queued", ["mf"])]) == {"mf": 3}
    assert still_training([running, job(4, "queued", ["mf", "hybrid"])])["hybrid"] == 1  # the first to publish it


def test_still_training_names_what_a_rating_job_publishes() -> None:
    queued = still_training([job(5, "queued", ["mf", "hybrid"], objective="rating")])
    assert queued["mf-rating"] == 5 and queued["hybrid-rating"] == 5 and "mf" not in queued
    running = job(6, "running", ["mf"], progress={"model": "mf", "stage": "epoch", "pending": []}, objective="rating")
    assert still_training([running]) == {"mf-rating": 6}
    assert still_training([job(7, "queued", ["popularity"], objective="rating")]) == {"popularity": 7}
