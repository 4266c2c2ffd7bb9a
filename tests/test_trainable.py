"""The trainable without Ray: same spec and seed give the same numbers on CPU; seeds matter."""

from __future__ import annotations

import pandas as pd
import torch
import pytest
import yaml

from conftest import SMOKE
from study.spec import parse_spec
from study.training.inputs.study_data import build_study_data
from study.training.trial import run_plan
from study.training import TrialPlan


@pytest.fixture(scope="module")
def setup():
    raw = yaml.safe_load(SMOKE.read_text())
    raw["training"]["epochs"] = 3
    spec = parse_spec(raw)
    return spec, build_study_data(spec)


def plan(spec, *, seed: int, arch: str = "unet", alpha: float = 0.2) -> TrialPlan:
    return TrialPlan.from_config(spec, TrialPlan.config({"alpha": alpha, "architecture": arch}, seed=seed, phase="confirm"))


def test_same_seed_same_per_image_metrics(setup):
    spec, data = setup
    epochs_a, epochs_b = [], []
    r1 = run_plan(plan(spec, seed=1), spec=spec, data=data, on_epoch=epochs_a.append)
    r2 = run_plan(plan(spec, seed=1), spec=spec, data=data, on_epoch=epochs_b.append)
    pd.testing.assert_frame_equal(r1.per_image, r2.per_image)
    drop = lambda m: {k: v for k, v in m.items() if k != "peak_memory_mb"}  # noqa: E731
    assert drop(r1.metrics) == drop(r2.metrics) and epochs_a == epochs_b and [e["epoch"] for e in epochs_a] == [1, 2, 3]


def test_other_seed_other_numbers(setup):
    spec, data = setup
    t1 = run_plan(plan(spec, seed=1), spec=spec, data=data).per_image
    t2 = run_plan(plan(spec, seed=2), spec=spec, data=data).per_image
    assert list(t1["image_id"]) == list(t2["image_id"])  # same paired test images
    assert not t1["dice"].equals(t2["dice"])


def test_hyperparameter_factor_overrides_spec_value(setup):
    spec, _ = setup
    cell = {"alpha": 0.2, "architecture": "unet", "lr": 0.1}
    p = TrialPlan.from_config(spec, TrialPlan.config(cell, seed=0, phase="confirm", hparams={"lr": 0.5, "batch_size": 3}))
    assert p.hparams.lr == 0.1 and p.params()["lr"] == 0.1 and p.cell_key == "alpha=0.2,architecture=unet,lr=0.1"
    assert p.hparams.batch_size == 3 and p.hparams.optimizer == "adam"  # sampled value, then spec default


class _Payload:
    """An object whose unpickling would run code: what weights_only=True must refuse."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_weights_round_trip_and_code_in_a_checkpoint_is_refused(setup, tmp_path):
    import torch

    from study.training.checkpoints import load_weights, save_weights
    from study.errors import SegstudyError

    spec, data = setup
    result = run_plan(plan(spec, seed=1), spec=spec, data=data)
    save_weights(result.state_dict, tmp_path / "model.pt")
    loaded = load_weights(tmp_path / "model.pt")
    assert loaded.keys() == result.state_dict.keys()
    assert all(torch.equal(loaded[k], result.state_dict[k]) for k in loaded)
    torch.save({"weight": torch.zeros(1), "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(SegstudyError, match=r"evil.pt: refused, not a plain weights file"):
        load_weights(tmp_path / "evil.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SegstudyError, match=r"broken.pt: (cannot read checkpoint|refused)"):
        load_weights(tmp_path / "broken.pt")


def _rates(schedule, opt, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return rates


def test_cosine_schedule_decays_to_zero_per_step_and_constant_keeps_the_rate():
    from study.spec import Training
    from study.training import build_schedule

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    assert build_schedule(opt, Training(epochs=5), steps_per_epoch=4) is None
    schedule = build_schedule(opt, Training(epochs=5, schedule="cosine"), steps_per_epoch=4)
    rates = _rates(schedule, opt, 20)
    assert rates[0] == 0.01 and rates == sorted(rates, reverse=True) and len(set(rates)) == 20
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind", ["constant", "cosine"])
def test_warm_up_ramps_per_step_from_a_tenth_of_the_rate_then_follows_the_schedule(kind):
    from study.spec import Training
    from study.training import build_schedule

    opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=0.01)
    schedule = build_schedule(opt, Training(epochs=10, schedule=kind, warmup_epochs=2), steps_per_epoch=5)
    rates = _rates(schedule, opt, 50)
    ramp = rates[:10]
    assert ramp[0] == pytest.approx(0.001) and ramp == sorted(ramp) and len(set(ramp)) == 10  # a ramp, not epochs
    assert rates[10] == pytest.approx(0.01)
    if kind == "constant":
        assert rates[10:] == pytest.approx([0.01] * 40)
    else:
        assert rates[10:] == sorted(rates[10:], reverse=True) and rates[-1] < 0.0001


def test_warm_up_must_end_before_the_last_epoch():
    from pydantic import ValidationError

    from study.spec import Training

    with pytest.raises(ValidationError, match=r"warmup_epochs must be fewer than epochs \(5\), got 5"):
        Training(epochs=5, warmup_epochs=5)


def test_grad_clip_bounds_each_step_of_plain_sgd():
    from study.training.loop import train_one_epoch

    def step_size(clip):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 1)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        batch = (torch.full((4, 8), 100.0), torch.zeros(4, 1))
        train_one_epoch(model, opt, torch.nn.MSELoss(), [batch], device=torch.device("cpu"), grad_clip=clip)
        return float(torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in model.parameters()]) - before))

    assert step_size(None) > 10.0
    assert step_size(0.5) == pytest.approx(0.5, rel=1e-4)


def test_an_error_of_the_trials_own_code_ends_it_failed_without_a_retry(monkeypatch):
    """Raised, Tune would retry it max_failures times; reported as the last result, it is FAILED once."""
    import study.run.tune.trainable as trainable

    failed: list[str] = []
    monkeypatch.setattr(trainable.EpochReporter, "failed", lambda self, reason, metrics: failed.append(reason))

    def shape_mismatch(*args, **kwargs):
        raise RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input to have 3 channels, but got 1\nmore")

    monkeypatch.setattr(trainable, "run_plan", shape_mismatch)
    spec = parse_spec(yaml.safe_load(SMOKE.read_text()))
    config = TrialPlan.config({"architecture": "unet", "alpha": 0.2}, seed=0, phase="confirm")
    trainable.train_trial(config, spec=spec, data={})
    assert failed == ["RuntimeError: Given groups=1, weight of size [8, 3, 3, 3], expected input to have 3 channels, but got 1"]

    monkeypatch.setattr(trainable, "run_plan", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
    with pytest.raises(SystemExit):  # Ray's way of stopping a trial must pass through
        trainable.train_trial(config, spec=spec, data={})
