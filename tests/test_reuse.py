"""A tune trial's training, kept and restored by the confirm trial of its seed (study.training.reuse):
the restored trial gives the numbers a second training would; anything else is trained again."""

from __future__ import annotations

import errno
import io

import pandas as pd
import pytest
import torch
import yaml
from pyarrow import fs as pafs

from conftest import SMOKE, SMOKE_3D
from study.run.tune import kept_training
from study.spec import parse_spec
from study.training import TrialPlan
from study.training.inputs.study_data import build_study_data
from study.training.reuse import identity, pack, restore, restores, unpack
from study.training.trial import run_plan, train_plan


TUNING = {"trials_per_cell": 2, "sampler": "random", "seed": 0, "early_stopping": {"kind": "none"}}


def _setup(base, tuning=None, **training):
    raw = yaml.safe_load(base.read_text())
    raw["training"] = {**raw["training"], **training}
    if tuning is not None:  # the lr searched, tune trials trained under `tuning.seed`
        raw["tuning"] = tuning
        raw["hyperparameters"] = {**raw["hyperparameters"], "lr": {"loguniform": [1e-3, 1e-2]}}
    spec = parse_spec(raw)
    return spec, build_study_data(spec)


@pytest.fixture(scope="module")
def setup():
    return _setup(SMOKE, epochs=3)


def plan(spec, *, phase: str, seed: int = 0, lr: float | None = None, optuna_trial: int | None = None, cell=None, **levels):
    cell = cell or {"alpha": 0.2, "architecture": "unet", **levels}
    hparams = {} if lr is None else {"lr": lr}
    return TrialPlan.from_config(spec, TrialPlan.config(cell, seed=seed, phase=phase, hparams=hparams, optuna_trial=optuna_trial))


def _trained(spec, data, tune_plan):
    epochs = []
    return train_plan(tune_plan, spec=spec, data=data, on_epoch=epochs.append), epochs


def test_a_confirm_trial_restoring_the_tune_training_gives_the_numbers_of_training_again(setup):
    spec, data = setup
    tune_plan = plan(spec, phase="tune", optuna_trial=4)
    confirm_plan = plan(spec, phase="confirm")
    trained, epochs = _trained(spec, data, tune_plan)
    name, blob = pack(trained, plan=tune_plan, spec=spec, epochs=epochs)
    assert name == identity(confirm_plan, spec)  # the phase and the Optuna trial are not part of the name
    kept = unpack(blob, name=name, epochs=spec.training.epochs)
    assert kept.key == tune_plan.key and kept.epochs == epochs and kept.val_curve == trained.val_curve
    restored = run_plan(confirm_plan, spec=spec, data=data, trained=restore(kept, confirm_plan, spec=spec, data=data))
    again = run_plan(confirm_plan, spec=spec, data=data)
    pd.testing.assert_frame_equal(restored.per_image, again.per_image)
    drop = lambda m: {k: v for k, v in m.items() if k != "peak_memory_mb"}  # noqa: E731
    assert drop(restored.metrics) == drop(again.metrics)
    assert restored.verdict == again.verdict


def test_patches_keep_their_foreground_shares_and_a_3d_network_its_layout():
    spec, data = _setup(SMOKE_3D, epochs=2)
    cell = {k: v[0] for k, v in spec.factors.items()}
    tune_plan = plan(spec, phase="tune", optuna_trial=0, cell=cell)
    trained, epochs = _trained(spec, data, tune_plan)
    name, blob = pack(trained, plan=tune_plan, spec=spec, epochs=epochs)
    confirm_plan = plan(spec, phase="confirm", cell=cell)
    back = restore(unpack(blob, name=name, epochs=2), confirm_plan, spec=spec, data=data)
    assert back.inputs.patch_foreground == trained.inputs.patch_foreground and back.inputs.patch_foreground
    restored = run_plan(confirm_plan, spec=spec, data=data, trained=back)
    pd.testing.assert_frame_equal(restored.per_image, run_plan(confirm_plan, spec=spec, data=data).per_image)


def test_the_name_changes_with_whatever_changes_the_training(setup):
    spec, _ = setup
    base = identity(plan(spec, phase="confirm"), spec)
    assert identity(plan(spec, phase="tune", optuna_trial=7), spec) == base
    others = [
        identity(plan(spec, phase="confirm", seed=1), spec),
        identity(plan(spec, phase="confirm", lr=0.002), spec),
        identity(plan(spec, phase="confirm", alpha=0.8), spec),
        identity(plan(spec, phase="confirm"), spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 4})})),
    ]
    assert len({base, *others}) == 5


def test_a_training_that_is_not_this_plans_or_not_whole_is_refused(setup):
    spec, data = setup
    tune_plan = plan(spec, phase="tune", optuna_trial=0)
    trained, epochs = _trained(spec, data, tune_plan)
    name, blob = pack(trained, plan=tune_plan, spec=spec, epochs=epochs)
    with pytest.raises(ValueError, match="another format or training"):
        unpack(blob, name=identity(plan(spec, phase="confirm", seed=1), spec), epochs=3)
    with pytest.raises(ValueError, match="unreadable"):
        unpack(blob[: len(blob) // 2], name=name, epochs=3)  # a write cut short
    with pytest.raises(ValueError, match="3 of 5 epochs"):
        unpack(blob, name=name, epochs=5)
    payload = torch.load(io.BytesIO(blob), weights_only=True)
    for broken in ({k: v for k, v in payload.items() if k != "val_curve"}, {**payload, "epochs": 3}):
        buffer = io.BytesIO()
        torch.save(broken, buffer)
        with pytest.raises(ValueError, match="malformed"):
            unpack(buffer.getvalue(), name=name, epochs=3)


@pytest.fixture(scope="module")
def tuned():
    """A tuned study whose confirm seed 0 is the tuning seed: its tune trials keep their trainings."""
    return _setup(SMOKE, tuning=TUNING, epochs=3)


def test_only_a_study_whose_confirm_seeds_include_the_tuning_seed_restores(tuned, setup):
    spec, _ = tuned
    assert restores(spec) and not restores(setup[0])  # the second does not tune
    other = spec.model_copy(update={"tuning": spec.tuning.model_copy(update={"seed": 7})})
    cut = spec.model_copy(update={"tuning": spec.tuning.model_copy(
        update={"early_stopping": spec.tuning.early_stopping.model_copy(update={"max_t": 2})})})
    assert not restores(other) and not restores(cut)  # seed 7 is no confirm seed; tune trials cut at epoch 2


@pytest.fixture
def local_storage(tmp_path, monkeypatch):
    """The study's storage as a trial sees it, on a local folder (no Ray needed)."""
    monkeypatch.setattr(kept_training, "study_storage", lambda: (pafs.LocalFileSystem(), str(tmp_path)))
    return tmp_path


def test_kept_in_the_study_storage_and_found_by_the_confirm_trial_or_trained_again(tuned, local_storage, caplog):
    spec, data = tuned
    tune_plan, confirm_plan = plan(spec, phase="tune", optuna_trial=2, lr=0.005), plan(spec, phase="confirm", lr=0.005)
    assert kept_training.kept_for(confirm_plan, spec=spec, data=data) is None  # nothing kept: it trains
    trained, epochs = _trained(spec, data, tune_plan)
    kept_training.keep(trained, plan=tune_plan, spec=spec, epochs=epochs)
    (file,) = (local_storage / kept_training.FOLDER).iterdir()  # whole, under its name; no temporary left
    assert file.name == f"{identity(confirm_plan, spec)}.pt"
    found = kept_training.kept_for(confirm_plan, spec=spec, data=data)
    assert found is not None and found.kept.key == "tune|alpha=0.2,architecture=unet|optuna=2"
    assert kept_training.kept_for(plan(spec, phase="confirm", seed=1, lr=0.005), spec=spec, data=data) is None
    file.write_bytes(file.read_bytes()[:100])  # a partial file (another writer's crash, a copy cut short)
    assert kept_training.kept_for(confirm_plan, spec=spec, data=data) is None
    assert "kept training" in caplog.text and "not used (unreadable" in caplog.text


class _FullDisk(pafs.LocalFileSystem):
    """Fills up after the first bytes of a file, as a real disk does."""

    def open_output_stream(self, path, *args, **kwargs):
        stream = super().open_output_stream(path, *args, **kwargs)
        stream.write(b"part")
        stream.close()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_keeping_is_raised_and_other_write_errors_only_warn(tuned, tmp_path, monkeypatch, caplog):
    spec, data = tuned
    tune_plan = plan(spec, phase="tune", optuna_trial=0, lr=0.005)
    trained, epochs = _trained(spec, data, tune_plan)
    monkeypatch.setattr(kept_training, "study_storage", lambda: (_FullDisk(), str(tmp_path)))
    with pytest.raises(OSError, match="No space left"):
        kept_training.keep(trained, plan=tune_plan, spec=spec, epochs=epochs)
    assert list((tmp_path / kept_training.FOLDER).iterdir()) == []  # nothing half-written left
    (tmp_path / "file").write_text("")  # a file where the folder should be: the write fails, the trial goes on
    monkeypatch.setattr(kept_training, "study_storage", lambda: (pafs.LocalFileSystem(), str(tmp_path / "file")))
    kept_training.keep(trained, plan=tune_plan, spec=spec, epochs=epochs)
    assert "training not kept" in caplog.text


def test_nothing_is_kept_where_no_confirm_trial_will_look(tuned, local_storage):
    spec, data = tuned
    other = spec.model_copy(update={"tuning": spec.tuning.model_copy(update={"seed": 7})})
    tune_plan = plan(other, phase="tune", seed=7, optuna_trial=0, lr=0.005)
    trained, epochs = _trained(other, data, tune_plan)
    kept_training.keep(trained, plan=tune_plan, spec=other, epochs=epochs)
    assert not (local_storage / kept_training.FOLDER).exists()
