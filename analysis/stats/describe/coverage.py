"""Coverage of the conformal Dice bounds across a study: measured per arm and stratum, not assumed.

Each confirm trial bounded its own test images (study.training.evaluation.calibrated); here the `covered`
flags of per_image.csv are pooled over seeds per arm, stratum of the other factors and condition,
and compared with the target 1 - alpha by an exact one-sided binomial test.
"""

from __future__ import annotations

import pandas as pd

from study.conformal import coverage_table
from study.conformal.calibrate import COVERED


def coverage_summary(
    per_image: pd.DataFrame, *, arm: str, within: list[str], alpha: float, fnr_alpha: float
) -> pd.DataFrame | None:
    """One row per (within..., arm, condition): n, target, coverage, mean bound, p, warning, FNR.

    Returns None when the trials logged no bounds (studies run before calibration existed).
    """
    if COVERED not in per_image.columns or per_image[COVERED].isna().all():
        return None
    frames = []
    for key, group in per_image.groupby([*within, arm], sort=True):
        table = coverage_table(group.assign(**{COVERED: group[COVERED].astype(bool)}), alpha=alpha, fnr_alpha=fnr_alpha)
        for name, value in zip([*within, arm], key if isinstance(key, tuple) else (key,)):
            table.insert(0, name, value)
        frames.append(table)
    columns = [*within, arm]
    out = pd.concat(frames, ignore_index=True)
    return out[[*columns, *[c for c in out.columns if c not in columns]]]


def shortfalls(summary: pd.DataFrame, *, arm: str, within: list[str]) -> list[str]:
    """One sentence per stratum whose coverage falls short of its target beyond sampling noise."""
    lines = []
    for row in summary[summary["exchangeability_warning"]].itertuples(index=False):
        values = row._asdict()
        where = ", ".join(f"{k}={values[k]}" for k in within)
        lines.append(
            f"{values[arm]}{f' ({where})' if where else ''}, {values['condition']}: coverage {values['coverage']:.2f} "
            f"< target {values['target']:.2f} over {values['n']} images (binomial p = {values['p_value']:.2g}); "
            "calibration and test images are not exchangeable here: recalibrate on data like these or abstain"
        )
    return lines
