"""Trials must be able to start in Ray's prestarted, preloaded workers (study.run.cluster.warm_workers)."""

from __future__ import annotations

import importlib.util

import pytest
from ray.tune.execution import class_cache

from study.run.cluster.capacity import local_trials_at_once
from study.spec import StudySpec, load_spec
from study.process_state import let_tune_use_prestarted_workers
from study.run.cluster.warm_workers import PRELOAD, local_ray_config
from conftest import SMOKE, SMOKE_TUNING


def test_tune_actors_get_an_empty_runtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray only hands a prestarted worker to an actor with an empty runtime_env; a Ray upgrade that
    # renames Tune's variables or adds one must fail here, not silently cost 5-7 s per study.
    for name in class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(name, raising=False)
    let_tune_use_prestarted_workers()

    class Trainable:
        pass

    actor_cls = class_cache._ActorClassCache().get(Trainable)
    assert not actor_cls._default_options["runtime_env"].get("env_vars")


def test_local_ray_preloads_the_trainable_and_keeps_one_idle_worker_per_slot() -> None:
    config = local_ray_config(trials_at_once=0)
    assert config["num_workers_soft_limit"] == 1
    assert config["preload_python_modules"] == list(PRELOAD)
    assert all(importlib.util.find_spec(name) is not None for name in PRELOAD)
    assert local_ray_config(trials_at_once=4)["num_workers_soft_limit"] == 4


def _with(spec: StudySpec, **changes: object) -> StudySpec:
    return spec.model_copy(update=changes)


def test_trials_at_once_follows_cpus_per_trial_and_max_concurrent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    plain = load_spec(SMOKE)
    assert local_trials_at_once(_with(plain, resources=plain.resources.model_copy(update={"cpu": 2.0}))) == 8
    assert local_trials_at_once(_with(plain, resources=plain.resources.model_copy(update={"cpu": 32.0}))) == 1
    # GPUs are not known before Ray starts: a GPU request leaves the CPU count to decide.
    gpu = _with(plain, resources=plain.resources.model_copy(update={"cpu": 2.0, "gpu": 0.25}))
    assert local_trials_at_once(gpu) == 8
    tuned = load_spec(SMOKE_TUNING)
    assert tuned.tuning is not None
    capped = _with(tuned, tuning=tuned.tuning.model_copy(update={"max_concurrent": 3}))
    assert local_trials_at_once(_with(capped, resources=capped.resources.model_copy(update={"cpu": 1.0}))) == 3
