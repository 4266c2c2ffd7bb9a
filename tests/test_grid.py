"""Large grids are said, not silent: counted by arithmetic, refused above max_trials before any data
is built unless --allow-large-grid, and validate prints the trial count with a time estimate."""

from __future__ import annotations

import re

import pytest

from conftest import SMOKE, SMOKE_TUNING, run_app
from study.errors import SegstudyError
from study.spec import DEFAULT_MAX_TRIALS, check_grid_size, count_trials, load_spec

LR_100 = [round(0.001 * (i + 1), 6) for i in range(100)]
WD_100 = [round(1e-6 * i, 9) for i in range(100)]


@pytest.fixture
def grid_10k(write_spec):
    """10,000 cells whose data could not be built (an MSD root that does not exist): a refusal
    that names the grid proves nothing was built first."""
    return write_spec(
        factors={"architecture": ["unet"], "lr": LR_100, "weight_decay": WD_100},
        data={"dataset": "msd", "root": "/nonexistent/Task09", "as_2d": True, "slice_size": 32},
    )


def test_counts_without_expanding(write_spec):
    spec = load_spec(write_spec(factors={"architecture": ["unet", "noskip_unet"], "alpha": [0.1, 0.2, 0.3],
                                         "lr": LR_100}, seeds=[0, 1, 2]))
    count = count_trials(spec)
    assert (count.cells, count.confirm, count.tune, count.total) == (600, 1800, 0, 1800)
    tuned = count_trials(load_spec(SMOKE_TUNING))
    assert tuned.tune == tuned.cells * load_spec(SMOKE_TUNING).tuning.trials_per_cell
    assert tuned.describe().startswith(f"{tuned.total} trials ({tuned.cells} cells x ")


@pytest.mark.parametrize("command", ["validate", "run", "submit"])
def test_10k_cell_grid_is_refused_before_any_data_or_store(grid_10k, command):
    extra = ["--address", "http://127.0.0.1:1"] if command == "submit" else []
    proc = run_app(command, str(grid_10k), *extra, cwd=grid_10k.parent)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "10000 trials (10000 cells x 1 seeds) is more than 1000" in line and "--allow-large-grid" in line
    assert sorted(p.name for p in grid_10k.parent.iterdir()) == ["spec.yaml"]


def test_10k_seeds_likewise(write_spec):
    path = write_spec(seeds=list(range(10_000)))
    proc = run_app("validate", str(path), cwd=path.parent)
    assert proc.returncode == 2 and "40000 trials (4 cells x 10000 seeds)" in proc.stderr


def test_with_the_flag_the_grid_check_passes_on_to_the_next(grid_10k):
    """--allow-large-grid lets the grid through: the next check (the data) is what refuses now."""
    proc = run_app("validate", str(grid_10k), "--allow-large-grid", cwd=grid_10k.parent)
    assert proc.returncode == 2 and "dataset root folder not found" in proc.stderr


def test_shift_levels_count_towards_the_limit_and_the_estimate(write_spec):
    """Each shifted test set is a test run of a confirm model: 1000 levels are refused before any
    data is built (validate took 53 s to build them, then said "about 0s")."""
    levels = [round(i / 1000, 3) for i in range(1000)]
    path = write_spec(evaluation__shift={"alpha": levels})
    count = count_trials(load_spec(path))
    assert count.total == 4 and count.shift_tests == 4 * 1000 - 4  # each model's own level is not a shift
    proc = run_app("validate", str(path), cwd=path.parent)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        "error: study 'smoke': 4 trials (4 cells x 1 seeds) and 3996 shifted test sets (evaluation.shift), 4000 in all, "
        "are more than 1000 (the default limit; raise it with max_trials in the spec); pass --allow-large-grid to run "
        "them all, or shrink the factors, seeds, tuning.trials_per_cell or evaluation.shift")

    from study.run.driver.preflight import estimate_seconds, preflight
    from study.training.inputs.study_data import build_study_data

    few = load_spec(write_spec("few.yaml", evaluation__shift={"alpha": [0.1, 0.5, 0.9]}))
    none = load_spec(write_spec("none.yaml"))
    data_few, data_none = build_study_data(few), build_study_data(none)
    checked = preflight(none, data_none)
    assert estimate_seconds(few, data_few, checked) > estimate_seconds(none, data_none, checked)


def test_spec_max_trials_sets_the_limit(write_spec):
    spec = load_spec(write_spec(max_trials=3))
    with pytest.raises(SegstudyError, match=r"4 trials \(4 cells x 1 seeds\) is more than 3 \(max_trials of the spec\)"):
        check_grid_size(spec, allow_large=False)
    assert check_grid_size(spec, allow_large=True).total == 4
    big = load_spec(write_spec(factors={"architecture": ["unet"], "alpha": [0.2], "lr": LR_100, "weight_decay": WD_100},
                               max_trials=20_000))
    assert check_grid_size(big, allow_large=False).total == 10_000 > DEFAULT_MAX_TRIALS
    proc = run_app("validate", str(write_spec(max_trials=0)), cwd=SMOKE.parent)
    assert proc.returncode == 2 and "max_trials" in proc.stderr


def test_validate_prints_the_trial_count_and_an_estimate():
    proc = run_app("validate", str(SMOKE), cwd=SMOKE.parent)
    assert proc.returncode == 0, proc.stderr
    plan = next(line for line in proc.stdout.splitlines() if line.startswith("plan: "))
    match = re.fullmatch(r"plan: 4 trials \(4 cells x 1 seeds\); about (\d+h\d+m|\d+m\d+s|\d+s) at (\d+) trial\(s\) at once "
                         r"on this machine \(estimated from the preflight's CPU step time\)", plan)
    assert match, plan
    assert 1 <= int(match.group(2)) <= 4


def test_a_dataset_factor_the_data_need_is_required(write_spec):
    proc = run_app("validate", str(write_spec(factors={"architecture": ["unet"]})), cwd=SMOKE.parent)
    assert proc.returncode == 2 and "factors: synthetic2d data need the factor(s) alpha" in proc.stderr


def test_a_trials_estimate_orders_the_confirm_trials_longest_first(write_spec):
    """`trial_seconds` (what `confirm_fit` starts longest first by) adds up to the study's estimate,
    and a smaller batch (more steps per epoch) costs more. (Which network costs more is the
    preflight's measurement: not pinned.)"""
    from study.run.driver.preflight import estimate_seconds, preflight, trial_seconds
    from study.spec.cells import expand_cells
    from study.training.inputs.study_data import build_study_data

    spec = load_spec(write_spec(factors={"architecture": ["unet", "nested_unet"], "alpha": [0.2]}))
    data = build_study_data(spec)
    checked = preflight(spec, data)
    cells = expand_cells(spec)
    assert sum(trial_seconds(spec, data, checked, cell) for cell in cells) * len(spec.confirm_seeds) == pytest.approx(
        estimate_seconds(spec, data, checked))
    unet, nested = sorted(cells, key=lambda c: c["architecture"] == "nested_unet")
    assert trial_seconds(spec, data, checked, unet, {"batch_size": 2}) > trial_seconds(spec, data, checked, unet, {"batch_size": 8})
    assert trial_seconds(spec, data, checked, unet, epochs=1, tested=False) < trial_seconds(spec, data, checked, unet)
    assert trial_seconds(spec, data, checked, nested) == trial_seconds(spec, data, checked, nested, {})  # cell alone


def test_the_estimate_counts_the_tuning_seeds_confirm_trial_as_testing_only(write_spec):
    """With per-cell tuning, each cell's confirm trial of the tuning seed restores its winning
    tune trial's training (study.training.reuse): the estimate counts only its testing."""
    from study.run.driver.preflight import estimate_seconds, preflight, trial_seconds
    from study.spec.cells import expand_cells
    from study.training.inputs.study_data import build_study_data

    tuning = {"trials_per_cell": 2, "sampler": "random", "seed": 0, "early_stopping": {"kind": "none"}}
    spec = load_spec(write_spec(factors={"architecture": ["unet"], "alpha": [0.2]}, tuning=tuning,
                                hyperparameters={"lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": 4},
                                seeds=[0, 1, 2]))
    data = build_study_data(spec)
    checked = preflight(spec, data)
    (cell,) = expand_cells(spec)
    confirm, testing = trial_seconds(spec, data, checked, cell), trial_seconds(spec, data, checked, cell, epochs=0)
    tune = 2 * trial_seconds(spec, data, checked, cell, tested=False)
    assert 0 < testing < confirm
    assert estimate_seconds(spec, data, checked) == pytest.approx(2 * confirm + testing + tune)
    other_seed = spec.model_copy(update={"tuning": spec.tuning.model_copy(update={"seed": 7})})
    assert estimate_seconds(other_seed, data, checked) == pytest.approx(3 * confirm + tune)
    assert estimate_seconds(spec, data, checked, tuned=True) == pytest.approx(3 * confirm)  # a replicate: none kept
