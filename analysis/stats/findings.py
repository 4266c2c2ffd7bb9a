"""The study's findings as sentences: each arm against the reference arm, level by level.

For every level of the study's other factors (complexity alpha, patch size, ...), on the clean
test images: the mean Dice difference arm - reference with a 95% bootstrap interval that
resamples training seeds (per arm) and test images, the paired Wilcoxon signed-rank p-value over
seed-averaged images, Holm-corrected over the arm pairs of that level (`analysis.stats.pairwise`), and
the seeds and images behind it. A comparison that involves a cell whose model did not learn
(the learning gate, `study.training.evaluation.learning`) is printed, but marked as meaningless.

Example line:
    at alpha 0.9, attention_unet - unet = +0.081 Dice [+0.030, +0.130], p = 0.004, 3 seeds x 20 images
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.read.runs import not_learned_trials
from analysis.stats.contrasts import frame_contrast
from analysis.stats.pairwise import holm
from study import metrics_names as M

ARM = "architecture"
FINDING_COLUMNS = (
    "level", "arm", "reference", "diff", "ci_low", "ci_high", "p", "p_holm", "n_seeds", "n_images", "not_learned", "line",
)


def reference_arm(arms: Sequence[str], preferred: str | None = None) -> str:
    """The arm everything is compared with: `preferred` if present, else 'unet', else the first."""
    for name in (preferred, "unet"):
        if name in arms:
            return str(name)
    return str(sorted(arms)[0])


def findings(
    per_image: pd.DataFrame,
    trials: pd.DataFrame,
    *,
    levels: Sequence[str],
    reference: str | None = None,
) -> pd.DataFrame:
    """One row (and sentence) per level and non-reference arm; see the module docstring.

    Args:
        per_image: `analysis.read.runs.load_per_image` rows of confirm trials (any conditions; clean is used).
        trials: the matching trials frame (for the learning gate's verdict per run).
        levels: the factor columns that define a level (every factor but the architecture).
        reference: the reference arm (default: 'unet' if studied, else the first arm).

    Returns:
        Columns FINDING_COLUMNS; `line` is the sentence. Empty when there is one arm.
    """
    clean = per_image[per_image["condition"] == M.CLEAN]
    arms = sorted(clean[ARM].dropna().unique())
    if len(arms) < 2:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    ref = reference_arm(arms, reference)
    unlearned = _unlearned_cells(trials)
    rows = []
    for key, block in clean.groupby(list(levels), sort=True) if levels else [((), clean)]:
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(levels, key))
        family = []
        for arm in arms:
            if arm == ref:
                continue
            est = frame_contrast(block, [({ARM: arm}, 1.0), ({ARM: ref}, -1.0)])
            if est.n_images == 0:
                continue
            bad = sorted({label for values, label in unlearned if _cell_matches(values, where, (arm, ref))})
            family.append(
                {
                    "level": level_text(where),
                    "arm": arm,
                    "reference": ref,
                    "diff": est.estimate,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                    "p": est.p,
                    "n_seeds": est.n_seeds,
                    "n_images": est.n_images,
                    "not_learned": "; ".join(bad),
                }
            )
        for row, corrected in zip(family, holm([row["p"] for row in family]), strict=True):
            row["p_holm"] = corrected
        rows.extend(family)
    frame = pd.DataFrame(rows, columns=[c for c in FINDING_COLUMNS if c != "line"])
    frame["line"] = [finding_line(r) for r in frame.to_dict("records")]
    return frame


def finding_line(row: dict) -> str:
    """'at alpha 0.9, attention_unet - unet = +0.081 Dice [+0.030, +0.130], p = 0.004, 3 seeds x 20 images'."""
    where = f"at {row['level']}, " if row["level"] else ""
    if np.isfinite(row["ci_low"]):
        inference = f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], p {p_text(row['p'])}"
    else:  # one training run per arm says nothing about how much training runs differ
        inference = "no interval or p-value (needs >= 2 seeds per arm)"
    line = (
        f"{where}{row['arm']} - {row['reference']} = {row['diff']:+.3f} Dice {inference}, "
        f"{row['n_seeds']} seeds x {row['n_images']} images"
    )
    if row["not_learned"]:
        line += f"  [NOT LEARNED: {row['not_learned']}; this comparison means nothing]"
    return line


def _unlearned_cells(trials: pd.DataFrame) -> list[tuple[dict, str]]:
    """(factor values, "cell seed=S") of every trial the learning gate failed."""
    bad = not_learned_trials(trials)
    factors = [c for c in trials.attrs.get("factors", []) if c in trials.columns]
    return [({f: r[f] for f in factors}, f"{r['cell']} seed={r['seed']}") for r in bad.to_dict("records")]


def _cell_matches(bad: dict, where: dict, arms: tuple[str, str]) -> bool:
    return bad.get(ARM) in arms and all(bad.get(k) == v for k, v in where.items())


def level_text(where: dict) -> str:
    """'alpha 0.9, patch_size 64': a level of the non-architecture factors, as the findings say it."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in where.items())


def p_text(value: float) -> str:
    """'= 0.004', '< 0.001' or '= n/a' (fewer than 2 seeds or images: nothing to test)."""
    if not np.isfinite(value):
        return "= n/a"
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


__all__ = ["FINDING_COLUMNS", "finding_line", "findings", "level_text", "p_text", "reference_arm"]
