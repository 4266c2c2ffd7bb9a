"""Validation-Dice curves of a study's trials, read back from MLflow (one point per trial and epoch)."""

from __future__ import annotations

import pandas as pd

from study import metrics_names as M
from study.tracking import reading_client

CURVE_COLUMNS = ("cell", "seed", "epoch", M.VAL_DICE)


def load_val_curves(trials: pd.DataFrame, *, tracking_uri: str) -> pd.DataFrame:
    """One row per (trial, epoch): cell, seed, epoch, val_dice, for the finished trials given."""
    client = reading_client(tracking_uri)
    rows = []
    for trial in trials[trials["status"] == "FINISHED"].itertuples():
        for point in client.get_metric_history(trial.run_id, M.VAL_DICE):
            rows.append({"cell": trial.cell, "seed": trial.seed, "epoch": point.step, M.VAL_DICE: point.value})
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


__all__ = ["CURVE_COLUMNS", "load_val_curves"]
