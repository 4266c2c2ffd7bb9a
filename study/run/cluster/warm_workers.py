"""Let trials start in Ray workers that have already imported torch, MONAI and the trainable.

A fresh Python worker spends 5-7 s importing `study.run.tune.trainable` (MONAI imports all its
submodules, mlflow and matplotlib among them) before its first epoch; Tune then waits for it.
Ray starts one idle worker per trial slot when a node starts, and can import modules in them
right away (`preload_python_modules`), while the driver builds the data and sets up MLflow.

Two things stand between Tune and those warm workers:
- Ray hands a prestarted worker only to an actor whose runtime_env is empty, and Tune gives every
  trainable actor `env_vars={"PL_DISABLE_FORK": "1"}` (a PyTorch Lightning switch segstudy never
  needs), so each trial got a fresh worker and paid the import again
  (`study.process_state.let_tune_use_prestarted_workers` removes it);
- the preload must be part of the node's system config, so it applies to a Ray started here; a
  cluster's head gets it with `ray start --system-config`.
"""

from __future__ import annotations

from typing import Any

# warm_cuda: on a node with one GPU, the CUDA context and cuDNN are ready before the first trial
# is placed (issue 17: ~18 s per worker on an H200); a no-op elsewhere.
PRELOAD = ("study.run.tune.trainable", "study.run.cluster.warm_cuda")


def local_ray_config(trials_at_once: int) -> dict[str, Any]:
    """`_system_config` for a Ray started by segstudy: preload the trainable in the idle workers,
    and keep only as many idle workers as trials can run at once (each holds ~0.5 GB once loaded)."""
    return {"preload_python_modules": list(PRELOAD), "num_workers_soft_limit": max(1, trials_at_once)}


__all__ = ["PRELOAD", "local_ray_config"]
