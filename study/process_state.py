"""Every change segstudy makes to process-wide state, in one place.

Environment defaults, library log levels, thread counts and warning formats outlive the call that
sets them and reach every module of the process, so each one is a small named function here with
the reason it exists; the code that needs the state calls the function where the state used to be
set. Libraries are imported inside the function that touches them, so importing this module costs
nothing (it is rank 0 of docs/ARCHITECTURE.md 2: everyone may call it).

Environment defaults use `setdefault`: a user who sets the variable keeps their value.
"""

from __future__ import annotations

import os
import warnings
from typing import Any


def fail_fast_http() -> None:
    """MLflow retries a refused connection for minutes by default; segstudy fails fast instead
    (a study keeps its writes in the outbox, a reading command says the server is away)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def quiet_artifact_downloads() -> None:
    """MLflow draws a progress bar per artifact download on stderr; `segstudy predict` keeps stderr
    to one line per problem."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def quiet_tune_loggers() -> None:
    """Tune's own CSV/JSON/TensorBoard loggers duplicate what MLflow records and cost driver CPU on
    every result; a user can turn them back on by setting the variable to 0."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def let_tune_use_prestarted_workers() -> None:
    """Drop Tune's fixed PL_DISABLE_FORK actor variable so trainable actors can take Ray's
    prestarted workers (see study/run/warm_workers.py for why that matters).

    Ray hands a prestarted worker only to an actor whose runtime_env is empty; PL_DISABLE_FORK is a
    PyTorch Lightning switch segstudy never needs. Variables Tune propagates from the driver's
    environment (AWS credentials and Train settings) are kept: with them set, trials still run, in
    fresh workers. This edits a private Ray class cache, hence its place among the process state.
    """
    from ray.tune.execution import class_cache

    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; one line per trial per cell buries segstudy's own output,
    and the study's record is MLflow."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def set_torch_threads(n: int) -> None:
    """A trial uses as many intra-op threads as the CPUs its spec reserves (at least one):
    torch's default of every core oversubscribes a node running several trials at once."""
    import torch

    torch.set_num_threads(max(1, int(n)))


def _warning_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"warning: {message}\n"


def format_warnings() -> None:
    """Python prints a warning as file:line plus the source line; the CLI prints one readable
    `warning: ...` line instead, like its errors."""
    warnings.formatwarning = _warning_line


__all__ = [
    "fail_fast_http",
    "format_warnings",
    "let_tune_use_prestarted_workers",
    "quiet_artifact_downloads",
    "quiet_optuna",
    "quiet_tune_loggers",
    "set_torch_threads",
]
