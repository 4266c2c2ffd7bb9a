"""The study's findings as sentences: each arm against the reference arm, level by level.

For every level of the study's other factors (complexity alpha, patch size, ...), on the clean
test images: the mean Dice difference arm - reference with a 95% bootstrap interval that
resamples training seeds (per arm) and test images, the paired Wilcoxon signed-rank p-value over
seed-averaged images, Holm-corrected over the arm pairs of that level (`analysis.stats.pairwise`), and
the seeds and images behind it. A comparison that involves a cell whose model did not learn
(the learning gate, `study.training.learning`) is printed, but marked as meaningless.

Example line:
    at alpha 0.9, attention_unet - unet = +0.081 Dice [+0.030, +0.130], p = 0.004, 3 seeds x 20 images
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.read.runs import not_learned_trials
from analysis.stats.pairwise import pairwise_wilcoxon
from study import metrics_names as M

ARM = "architecture"
FINDING_COLUMNS = (
    "level", "arm", "reference", "diff", "ci_low", "ci_high", "p", "p_holm", "n_seeds", "n_images", "not_learned", "line",
)
_N_BOOT = 2000


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
    seed: int = 0,
) -> pd.DataFrame:
    """One row (and sentence) per level and non-reference arm; see the module docstring.

    Args:
        per_image: `analysis.read.runs.load_per_image` rows of confirm trials (any conditions; clean is used).
        trials: the matching trials frame (for the learning gate's verdict per run).
        levels: the factor columns that define a level (every factor but the architecture).
        reference: the reference arm (default: 'unet' if studied, else the first arm).
        seed: the bootstrap's seed; the same inputs give the same intervals.

    Returns:
        Columns FINDING_COLUMNS; `line` is the sentence. Empty when there is one arm.
    """
    clean = per_image[per_image["condition"] == M.CLEAN]
    arms = sorted(clean[ARM].dropna().unique())
    if len(arms) < 2:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    ref = reference_arm(arms, reference)
    tests = pairwise_wilcoxon(clean, by=ARM, metric="dice", within=list(levels), condition=M.CLEAN)
    unlearned = _unlearned_cells(trials)
    rng = np.random.default_rng(seed)
    rows = []
    for key, block in clean.groupby(list(levels), sort=True) if levels else [((), clean)]:
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(levels, key))
        ref_scores = _seed_by_image(block[block[ARM] == ref])
        for arm in arms:
            if arm == ref:
                continue
            scores = _seed_by_image(block[block[ARM] == arm])
            images = ref_scores.columns.intersection(scores.columns)
            if images.empty:
                continue
            a, b = scores[images].to_numpy(), ref_scores[images].to_numpy()
            diff = float(np.nanmean(a.mean(axis=0) - b.mean(axis=0)))
            low, high = _bootstrap(a, b, rng)
            test = _test_row(tests, where, arm, ref)
            bad = sorted({label for values, label in unlearned if _cell_matches(values, where, (arm, ref))})
            rows.append(
                {
                    "level": _level_text(where),
                    "arm": arm,
                    "reference": ref,
                    "diff": diff,
                    "ci_low": low,
                    "ci_high": high,
                    "p": test.get("p", np.nan),
                    "p_holm": test.get("p_holm", np.nan),
                    "n_seeds": int(min(a.shape[0], b.shape[0])),
                    "n_images": int(len(images)),
                    "not_learned": "; ".join(bad),
                }
            )
    frame = pd.DataFrame(rows, columns=[c for c in FINDING_COLUMNS if c != "line"])
    frame["line"] = [finding_line(r) for r in frame.to_dict("records")]
    return frame


def finding_line(row: dict) -> str:
    """'at alpha 0.9, attention_unet - unet = +0.081 Dice [+0.030, +0.130], p = 0.004, 3 seeds x 20 images'."""
    where = f"at {row['level']}, " if row["level"] else ""
    line = (
        f"{where}{row['arm']} - {row['reference']} = {row['diff']:+.3f} Dice [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], "
        f"p {_p(row['p_holm'])}, {row['n_seeds']} seeds x {row['n_images']} images"
    )
    if row["not_learned"]:
        line += f"  [NOT LEARNED: {row['not_learned']}; this comparison means nothing]"
    return line


def _seed_by_image(rows: pd.DataFrame) -> pd.DataFrame:
    """Dice as a seeds x images table."""
    return rows.pivot_table(index="seed", columns="image_id", values="dice", aggfunc="mean")


def _bootstrap(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of mean(a) - mean(b), resampling each arm's seeds and the shared images."""
    n_img = a.shape[1]
    sa = rng.integers(0, a.shape[0], size=(_N_BOOT, a.shape[0]))
    sb = rng.integers(0, b.shape[0], size=(_N_BOOT, b.shape[0]))
    im = rng.integers(0, n_img, size=(_N_BOOT, n_img))
    per_a = a[sa].mean(axis=1)  # (boot, images): seed-resampled image means
    per_b = b[sb].mean(axis=1)
    diffs = np.nanmean(np.take_along_axis(per_a - per_b, im, axis=1), axis=1)
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def _test_row(tests: pd.DataFrame, where: dict, arm: str, ref: str) -> dict:
    mask = pd.Series(True, index=tests.index)
    for name, value in where.items():
        mask &= tests[name] == value
    pair = mask & (((tests["a"] == arm) & (tests["b"] == ref)) | ((tests["a"] == ref) & (tests["b"] == arm)))
    found = tests[pair]
    return found.iloc[0].to_dict() if len(found) else {}


def _unlearned_cells(trials: pd.DataFrame) -> list[tuple[dict, str]]:
    """(factor values, "cell seed=S") of every trial the learning gate failed."""
    bad = not_learned_trials(trials)
    factors = [c for c in trials.attrs.get("factors", []) if c in trials.columns]
    return [({f: r[f] for f in factors}, f"{r['cell']} seed={r['seed']}") for r in bad.to_dict("records")]


def _cell_matches(bad: dict, where: dict, arms: tuple[str, str]) -> bool:
    return bad.get(ARM) in arms and all(bad.get(k) == v for k, v in where.items())


def _level_text(where: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in where.items())


def _p(value: float) -> str:
    """'= 0.004', '< 0.001' or '= n/a' (no paired images to test)."""
    if not np.isfinite(value):
        return "= n/a"
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


__all__ = ["FINDING_COLUMNS", "finding_line", "findings", "reference_arm"]
