"""The study's findings as sentences: each arm against the reference arm, level by level.

For every level of the study's other factors (complexity alpha, patch size, ...), on the clean
test images: the mean Dice difference arm - reference, its interval and p-value from the one
inference (`analysis.stats.core.inference`: training seeds the replicates, test images repeated
measures), and the seeds and images behind it. The findings are exploratory: they are one family
under the false-discovery-rate procedure the spec names (`statistics.fdr`, Benjamini-Hochberg by
default; `analysis.stats.core.decisions`), and each line shows the adjusted p-value, the interval at the
level that matches the decision, and whether it is resolved. A comparison that involves a cell whose
model did not learn (the learning gate, `study.training.evaluation.learning`) is printed, but marked
as meaningless.

Example line:
    at alpha 0.9, attention_unet - unet = +0.081 Dice [+0.022, +0.140] (98.33% interval), p = 0.004, Benjamini-Hochberg p = 0.012: resolved, 3 seeds x 20 images
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.read.runs import not_learned_trials
from analysis.stats.core.contrasts import Tables, frame_contrast
from analysis.stats.core.decisions import DECISION_COLUMNS, decide_exploratory
from analysis.stats.core.statement import p_text, statement_line
from study import metrics_names as M

ARM = "architecture"
DICE = " Dice"
FINDING_COLUMNS = (
    "level", "arm", "reference", "diff", "ci_low", "ci_high", "p", "se", "df", "n_seeds", "n_images", "not_learned",
    *DECISION_COLUMNS, "line",
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
    q: float = 0.05,
    method: str = "bh",
    margin: float | None = None,
) -> pd.DataFrame:
    """One row (and sentence) per level and non-reference arm; see the module docstring.

    Args:
        per_image: `analysis.read.runs.load_per_image` rows of confirm trials (any conditions; clean is used).
        trials: the matching trials frame (for the learning gate's verdict per run).
        levels: the factor columns that define a level (every factor but the architecture).
        reference: the reference arm (default: 'unet' if studied, else the first arm).
        q, method: the false-discovery rate and its procedure (bh, by) over every finding.
        margin: an interval inside +-margin resolves as no difference that matters (None: never).

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
        tables = Tables(block)
        for arm in arms:
            if arm == ref:
                continue
            est = frame_contrast(tables, [({ARM: arm}, 1.0), ({ARM: ref}, -1.0)])
            if est.n_images == 0:
                continue
            bad = sorted({label for values, label in unlearned if _cell_matches(values, where, (arm, ref))})
            level = level_text(where)
            rows.append({
                "level": level, "arm": arm, "reference": ref, "diff": est.estimate, "estimate": est.estimate,
                "ci_low": est.ci_low, "ci_high": est.ci_high, "p": est.p, "se": est.se, "df": est.df,
                "n_seeds": est.n_seeds, "n_images": est.n_images, "not_learned": "; ".join(bad),
                "text": f"{'at ' + level + ', ' if level else ''}{arm} - {ref} =",
                "tail": f"{est.n_seeds} seeds x {est.n_images} images",
            })
    if not rows:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    frame = pd.DataFrame(rows)
    frame["line"] = [statement_line(r, measure=DICE, noun="comparison") for r in frame.to_dict("records")]
    decided = decide_exploratory(frame, q=q, method=method, margin=margin, measure=DICE)
    return decided[list(FINDING_COLUMNS)]


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


__all__ = ["FINDING_COLUMNS", "findings", "level_text", "p_text", "reference_arm"]
