"""Cost model: the memory this process may use, per-model estimates, and refusal before training."""

import pytest

from app.recsys import planning
from app.recsys.models.base import TrainConfig
from app.recsys.models.ease import EASE, EASEConfig
from app.recsys.models.mf import MF
from app.recsys.pipeline import train_models
from app.recsys.planning import ModelTooLarge, Sizes, available_memory, estimate
from tests.recsys.synthetic import taste_data

GIB = 1 << 30


@pytest.fixture
def limits(tmp_path, monkeypatch):
    """A fake cgroup v2, cgroup v1 and /proc/meminfo under tmp_path."""
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir(), v1.mkdir()
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {64 * GIB // 1024} kB\nMemAvailable: {8 * GIB // 1024} kB\n")
    monkeypatch.setattr(planning, "CGROUP_V2", v2)
    monkeypatch.setattr(planning, "CGROUP_V1", v1)
    monkeypatch.setattr(planning, "MEMINFO", meminfo)
    return v2, v1, meminfo


def after_margin(free: int) -> int:
    return int(free * (1 - planning.MARGIN_SHARE)) - planning.MARGIN_BYTES


def test_available_memory_takes_the_smaller_of_cgroup_and_meminfo(limits):
    v2, v1, meminfo = limits
    assert available_memory() == after_margin(8 * GIB)  # no cgroup limit: MemAvailable
    (v2 / "memory.max").write_text("max\n")
    assert available_memory() == after_margin(8 * GIB)
    (v2 / "memory.max").write_text(f"{4 * GIB}\n")
    (v2 / "memory.current").write_text(f"{1 * GIB}\n")
    assert available_memory() == after_margin(3 * GIB)  # the limit less what the cgroup already uses
    (v2 / "memory.max").unlink()
    (v1 / "memory.limit_in_bytes").write_text(f"{2 * GIB}\n")
    (v1 / "memory.usage_in_bytes").write_text("0\n")
    assert available_memory() == after_margin(2 * GIB)
    (v1 / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # v1's "no limit"
    assert available_memory() == after_margin(8 * GIB)


def test_estimates_grow_with_what_they_should():
    small, wide = Sizes(10_000, 1_000, 100_000), Sizes(10_000, 100_000, 100_000)
    # EASE is quadratic in the items: 20 bytes per item pair at the peak.
    assert estimate("ease", wide).peak_bytes >= 20 * 100_000**2
    assert estimate("ease", wide).peak_bytes > 1000 * estimate("ease", small).peak_bytes / 2
    # MF grows with the embedding size and with the users and items.
    mf = estimate("mf", small)
    assert estimate("mf", small, *_with(MF, dim=256)).peak_bytes > mf.peak_bytes
    assert estimate("mf", Sizes(1_000_000, 1_000, 100_000)).resident_bytes > 4 * 64 * 1_000_000
    # Sequence models switch to the sampled softmax above sampled_above: no [N, I] logits.
    big = Sizes(100_000, 1_000_000, 1_000_000)
    assert "sampled" in estimate("gru4rec", big).cost and "full" in estimate("gru4rec", small).cost
    assert estimate("sasrec", big).peak_bytes < 8 * GIB


def _with(cls, **fields):
    from dataclasses import replace

    return replace(cls.config_cls(), **fields), cls.default_train_config()


def test_train_models_refuses_before_fitting_anything(monkeypatch):
    data = taste_data(n_users=40, n_items=30, per_user=10)
    fitted = []
    monkeypatch.setattr(MF, "fit", lambda self, *a, **k: fitted.append("mf"))
    monkeypatch.setattr(planning, "available_memory", lambda: 1 << 20)
    with pytest.raises(ModelTooLarge) as info:
        train_models(data, ["popularity", "mf"])
    assert fitted == []
    err = info.value
    assert err.model == "popularity" and err.available == 1 << 20 and err.estimate > err.available
    message = str(err)
    assert "popularity does not fit" in message and "1.00 MiB" not in message  # GiB, with two decimals
    assert "0.00 GiB is available" in message and "fewer items" in message and "another model" in message


def test_a_run_counts_the_models_it_keeps():
    sizes = Sizes(500_000, 200_000, 2_000_000)
    alone = planning.plan(["gmf"], sizes)[0][1]
    after_mf = planning.plan(["mf", "gmf"], sizes)[1][1]
    assert after_mf - alone == estimate("mf", sizes).resident_bytes  # MF's weights stay while GMF trains
    room = after_mf - 1
    planning.check_fits(["mf"], sizes, available=room)
    planning.check_fits(["gmf"], sizes, available=room)
    with pytest.raises(ModelTooLarge, match="gmf does not fit"):
        planning.check_fits(["mf", "gmf"], sizes, available=room)


def test_ease_refuses_above_max_items():
    data = taste_data(n_users=40, n_items=30, per_user=10)
    with pytest.raises(ValueError, match=r"30 items is above max_items=20.*mf, gru4rec, sasrec"):
        EASE(EASEConfig(max_items=20)).fit(data, None, TrainConfig(epochs=1))
