"""Per-cell tuning without a cluster: the searcher's budgets and tells, the per-cell scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.spec.cells import cell_key
from study.run.tune.scheduler import PerCellScheduler
from study.run.tune.searcher import CellSearcher
from study.spec.space import parse_distribution

CELLS = [{"architecture": "unet", "alpha": 0.2}, {"architecture": "noskip_unet", "alpha": 0.9}]
SPACE = {"lr": parse_distribution("lr", {"loguniform": [1e-4, 1e-1]})}


def searcher(tmp_path, **overrides) -> CellSearcher:
    tmp_path.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        cells=CELLS, space=SPACE, trials_per_cell=3, storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        prefix="t", sampler="tpe", seed=0, trial_seed=5, metric="best_val_dice", max_t=10, epoch_key="epoch",
    )
    return CellSearcher(**{**kwargs, **overrides})


def test_round_robin_equal_budget_then_finished(tmp_path):
    s = searcher(tmp_path)
    configs = [s.suggest(f"t{i}") for i in range(6)]
    cells = [cell_key(c["trial"]["cell"]) for c in configs]
    assert cells == [cell_key(CELLS[0]), cell_key(CELLS[1])] * 3
    assert all(c["trial"]["phase"] == "tune" and c["trial"]["seed"] == 5 for c in configs)
    assert all(1e-4 <= c["trial"]["hparams"]["lr"] <= 1e-1 for c in configs)
    assert s.suggest("t6") == Searcher.FINISHED


def test_tells_complete_pruned_and_fail(tmp_path):
    s = searcher(tmp_path, trials_per_cell=4)
    for i in range(8):
        s.suggest(f"t{i}")
    s.on_trial_result("t0", {"epoch": 1, "best_val_dice": 0.3})
    s.on_trial_complete("t0", {"epoch": 10, "best_val_dice": 0.8})      # cell 0: full run
    s.on_trial_complete("t2", {"epoch": 3, "best_val_dice": 0.95})      # cell 0: stopped early
    s.on_trial_complete("t4", None, error=True)                         # cell 0: crashed
    s.on_trial_complete("t6", {"epoch": 10, "best_val_dice": float("nan")})  # cell 0: diverged
    s.on_trial_complete("t1", {"epoch": 10, "best_val_dice": 0.4})      # cell 1
    study = optuna.load_study(study_name=f"t/{cell_key(CELLS[0])}", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert study.trials[0].value == pytest.approx(0.8) and study.trials[0].intermediate_values == {1: 0.3}
    best = s.best()
    # The pruned trial's higher partial score does not win: only full runs are chosen.
    assert best[cell_key(CELLS[0])] == study.trials[0].params
    assert set(best) == {cell_key(CELLS[0]), cell_key(CELLS[1])}


def test_same_seed_same_suggestions(tmp_path):
    a = [searcher(tmp_path / "a").suggest(f"t{i}") for i in range(2)]
    b = [searcher(tmp_path / "b").suggest(f"t{i}") for i in range(2)]
    c = [searcher(tmp_path / "c", seed=1).suggest(f"t{i}") for i in range(2)]
    assert a == b and a != c


@dataclass
class FakeTrial:
    trial_id: str
    config: dict = field(default_factory=dict)


def drive(scheduler, trials: dict[str, list[float]]) -> dict[str, int]:
    """Feed epoch results round-robin; return the epoch each trial was stopped at (or ran to)."""
    ended: dict[str, int] = {}
    objs = {tid: FakeTrial(tid, {"trial": {"cell": {"architecture": tid.split("-")[0]}}}) for tid in trials}
    for t in objs.values():
        scheduler.on_trial_add(None, t)
    for epoch in range(1, 11):
        for tid, t in objs.items():
            if tid in ended:
                continue
            action = scheduler.on_trial_result(None, t, {"epoch": epoch, "best_val_dice": trials[tid][epoch - 1]})
            if action == TrialScheduler.STOP:
                ended[tid] = epoch
                scheduler.on_trial_complete(None, t, {"epoch": epoch, "best_val_dice": trials[tid][epoch - 1]})
    return ended


def curves() -> dict[str, list[float]]:
    # "easy" cell scores ~0.8-0.9; "hard" cell ~0.1-0.3, and hard-best is clearly the best hard trial.
    return {
        "easy-a": [0.80 + e / 100 for e in range(10)],
        "easy-b": [0.82 + e / 100 for e in range(10)],
        "hard-best": [0.20 + e / 100 for e in range(10)],
        "hard-worse": [0.10 + e / 200 for e in range(10)],
    }


def test_per_cell_scheduler_lets_the_hard_cells_best_trial_reach_max_t():
    scheduler = PerCellScheduler(
        cell_of=lambda config: cell_key(config["trial"]["cell"]), metric="best_val_dice", time_attr="epoch",
        max_t=10, grace_period=1, reduction_factor=2,
    )
    ended = drive(scheduler, curves())
    assert ended["hard-best"] == 10  # ran to max_t
    assert ended["hard-worse"] < 10  # stopped, by its own cell's standard
    assert set(scheduler.cells) == {"architecture=easy", "architecture=hard"}


def test_a_global_asha_would_have_stopped_it():
    """The failure mode PerCellScheduler exists for, shown with Ray's plain ASHA."""
    scheduler = AsyncHyperBandScheduler(
        time_attr="epoch", metric="best_val_dice", mode="max", max_t=10, grace_period=1, reduction_factor=2
    )
    ended = drive(scheduler, curves())
    assert ended["hard-best"] < 10
