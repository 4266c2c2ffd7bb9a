"""The robustness claims of the two reference studies, as sentences with their evidence.

Each claim is one contrast of cell means (`analysis.stats.core.contrasts`), so each comes with its
interval and p-value from the study's one inference (seeds the replicates, images repeated
measures), and each is made only when the study has the factors for it:

(a) complexity: how an arm's difference from the reference arm changes from the easiest to the
    hardest complexity level, (arm - ref at hardest) - (arm - ref at easiest) (Kamath et al.,
    MICCAI 2023: skip connections help least, or hurt, where the task is hard);
(b) out of domain: each arm's loss relative to the reference arm's, (arm in-domain - arm shifted)
    - (ref in-domain - ref shifted), under each perturbation at its highest severity and under
    each train/test shift (models trained at the easiest level, tested on the same images rendered
    at every other level of the factor, the loss averaged over those levels);
(c) context: how each arm's Dice changes from the smallest to the largest patch size (Kamath et
    al., MedNeurIPS 2022: every arm prefers more context);
(d) FBR shift: each arm's loss on test volumes whose FBR lies outside its training patches' range,
    relative to the reference arm's. Object size is held fixed by the pairing the 3D data has: the
    same test object sits in volumes of several sizes (ids ``test0003_s48``, ``test0003_s64``), so
    the loss is Dice(object's volume inside the range) - Dice(same object's volume outside it).

Factor levels not in a claim (e.g. patch size in (b)) are averaged with equal weights, so a claim
speaks for the whole study; the sentence says over how many levels.

A loss out of domain means something only while the model still segments there. A model that
falls to the trivial answer under a perturbation or shift, or on the volumes outside its FBR range
(its mean Dice no more than `trivial_gain` above predicting every pixel foreground, the learning
gate's `min_gain`), has lost all it had, so its loss is its in-domain Dice minus a constant: an
arm's loss minus the reference's is then their in-domain difference, not robustness. Such a (b) or
(d) claim is censored: it names the models (`censored`) and is never resolved
(analysis.stats.core.decisions).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.read.runs import factor_names, not_learned_trials
from analysis.stats.describe.context import INSIDE
from analysis.stats.describe.shift import paired_across_levels
from analysis.stats.describe.summary import level_text
from analysis.stats.core.contrasts import Tables, Term, blocks_contrast, frame_contrast
from analysis.stats.core.inference import Estimate
from analysis.stats.core.statement import statement_line
from study import metrics_names as M
from study.spec.cells import cell_key
from study.spec import LearningGate
from study.spec.statistics import CLAIM_KINDS

ARM = "architecture"
COMPLEXITY = "alpha"  # larger = foreground texture more like the background = harder
PATCH = "patch_size"
CLAIM_COLUMNS = (
    "claim", "kind", "arm", "reference", "about", "estimate", "ci_low", "ci_high", "p", "se", "df", "n_seeds", "n_images",
    "seed_variance", "image_variance", "not_learned", "censored", "cells", "text", "tail", "line",
)
KIND = {kind.letter: name for name, kind in CLAIM_KINDS.items()}  # "a" -> "complexity"
TRIVIAL_GAIN = float(LearningGate.model_fields["min_gain"].default)
OUTSIDE = "FBR outside the training range"  # claim (d)'s condition, as `at_trivial` names it
_OBJECT = re.compile(r"^(?P<object>.+)_s\d+$")  # synthetic3d test ids: one object, several volume sizes


def claims(
    per_image: pd.DataFrame,
    *,
    reference: str,
    fbr_positions: pd.DataFrame | None = None,
    shift_rows: pd.DataFrame | None = None,
    trials: pd.DataFrame | None = None,
    metric: str = "dice",
    design: Mapping[str, Sequence[Any]] | None = None,
    trivial_gain: float = TRIVIAL_GAIN,
) -> pd.DataFrame:
    """Every claim the study's factors allow, one row (and sentence) each; see the module docstring.

    Args:
        per_image: confirm per-image rows (`analysis.read.runs.load_per_image`), every condition.
        reference: the reference arm.
        fbr_positions: `analysis.stats.describe.context.fbr_shift(per_image, trials)` for claim (d) (None: no (d)).
        shift_rows: `analysis.read.runs.read_per_image(...).shift` for the train/test shift part of (b).
        trials: the trials frame, for the learning gate's verdicts: a claim resting on a model that
            did not learn says so, as a finding does.
        metric: the score (Dice).
        design: the study's factor levels (the spec's `factors`). A claim is about the levels the
            study was designed with, so a level whose trials all failed leaves the claim without an
            estimate rather than quietly averaged over the levels that are left (None: the levels
            the rows hold).
        trivial_gain: a model whose mean Dice under a (b) claim's condition is at most this above
            the all-foreground Dice of those images is at the trivial answer there (the spec's
            `evaluation.learning.min_gain`); the claim is censored.

    Returns:
        Columns CLAIM_COLUMNS; empty when the study has one arm and no patch-size factor.
    """
    factors = Grid(tuple(c for c in factor_names(per_image) if c != ARM), dict(design or {}))
    arms = sorted(per_image[ARM].dropna().unique()) if ARM in per_image.columns else []
    others = [a for a in arms if a != reference] if reference in arms else []
    rows = [
        *_complexity(per_image, others, reference, factors, metric),
        *_out_of_domain(per_image, others, reference, factors, metric, trivial_gain),
        *_shifted(shift_rows, others, reference, factors, metric, trivial_gain),
        *_context(per_image, arms, factors, metric),
    ]
    if fbr_positions is not None:
        rows += _fbr(fbr_positions, others, reference, factors, metric, trivial_gain)
    bad = {r.run_id: f"{r.cell} seed={r.seed}" for r in not_learned_trials(trials).itertuples()} if trials is not None else {}
    for row in rows:
        row["not_learned"] = "; ".join(sorted(bad[r] for r in row.pop("_runs") if r in bad))
        row["censored"] = "; ".join(row.pop("_censored", []))
        row["line"] = statement_line(row, noun="claim")
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def _complexity(frame: pd.DataFrame, arms: list[str], ref: str, factors: Grid, metric: str) -> list[dict]:
    """(a): (arm - ref at the hardest level) - (arm - ref at the easiest)."""
    if COMPLEXITY not in factors or frame[COMPLEXITY].nunique() < 2:
        return []
    clean = frame[frame["condition"] == M.CLEAN]
    easy, hard = (float(v) for v in factors.extremes(clean, COMPLEXITY))
    rest = factors.without(COMPLEXITY)
    tables = Tables(clean)
    rows = []
    for arm in arms:
        at = {level: _averaged(tables, rest, lambda w, level=level: [({ARM: arm, COMPLEXITY: level, **w}, 1.0),
                                                                    ({ARM: ref, COMPLEXITY: level, **w}, -1.0)])
              for level in (easy, hard)}
        est = _averaged(tables, rest, lambda w: [({ARM: arm, COMPLEXITY: hard, **w}, 1.0), ({ARM: ref, COMPLEXITY: hard, **w}, -1.0),
                                                ({ARM: arm, COMPLEXITY: easy, **w}, -1.0), ({ARM: ref, COMPLEXITY: easy, **w}, 1.0)])
        text = (f"(a) complexity: {arm} - {ref} went from {at[easy].estimate:+.3f} Dice at {COMPLEXITY} {easy:g} to "
                f"{at[hard].estimate:+.3f} at {COMPLEXITY} {hard:g}, a change of")
        rows.append(_row("a", arm, ref, f"{COMPLEXITY} {easy:g} -> {hard:g}", est, text, _over(clean, rest), clean,
                         design=factors.cells([arm, ref], **{COMPLEXITY: [easy, hard]})))
    return rows


def _out_of_domain(frame: pd.DataFrame, arms: list[str], ref: str, factors: Grid, metric: str, gain: float) -> list[dict]:
    """(b): each arm's loss under a perturbation at its highest severity, minus the reference's."""
    rows = []
    for condition in _worst_conditions(frame):
        used = frame[frame["condition"].isin([M.CLEAN, condition])]
        tables = Tables(used)
        for arm in arms:
            def terms(w: dict, arm: str = arm) -> list[Term]:
                return [({ARM: arm, "condition": M.CLEAN, **w}, 1.0), ({ARM: arm, "condition": condition, **w}, -1.0),
                        ({ARM: ref, "condition": M.CLEAN, **w}, -1.0), ({ARM: ref, "condition": condition, **w}, 1.0)]
            est = _averaged(tables, factors, terms)
            own = _averaged(tables, factors, lambda w, arm=arm: [({ARM: arm, "condition": M.CLEAN, **w}, 1.0),
                                                               ({ARM: arm, "condition": condition, **w}, -1.0)])
            base = _averaged(tables, factors, lambda w: [({ARM: ref, "condition": M.CLEAN, **w}, 1.0),
                                                       ({ARM: ref, "condition": condition, **w}, -1.0)])
            text = (f"(b) out of domain, {condition}: {arm} loses {own.estimate:.3f} Dice, {ref} {base.estimate:.3f}; "
                    f"{arm}'s loss minus {ref}'s =")
            rows.append(_row("b", arm, ref, condition, est, text, _over(used, factors), used, design=factors.cells([arm, ref]),
                             censored=at_trivial(used, [condition], [arm, ref], gain=gain, metric=metric)))
    return rows


def _shifted(rows: pd.DataFrame | None, arms: list[str], ref: str, factors: Grid, metric: str, gain: float) -> list[dict]:
    """(b) under train/test shift: models trained at the easiest level (each level, for a factor
    whose levels are names: sites), tested at every other level (the reference study's
    out-of-domain experiment), their loss averaged over those levels; each arm's loss minus the
    reference's.

    Where the levels are other images (`paired_across_levels` is False: a folder per site), the
    arms are paired within each level's test images but not across levels: the loss is a
    difference of means over different images (`blocks_contrast`), and the sentence says so."""
    if rows is None or rows.empty:
        return []
    out = []
    for factor in sorted({M.parse_shift(c)[0] for c in rows["condition"] if M.is_shift(c)}):
        shifted = rows[rows["condition"].str.startswith(f"{M.SHIFT}:{factor}=")]
        numeric = pd.api.types.is_numeric_dtype(shifted[factor])
        trained_at = [factors.extremes(shifted, factor)[0]] if numeric else sorted(shifted[factor].unique(), key=str)
        paired = paired_across_levels(rows, factor=factor)
        for trained in trained_at:
            out += _shifted_from(rows, factor, trained, arms, ref, factors.without(factor), paired=paired, gain=gain, metric=metric)
    return out


def _shifted_from(
    rows: pd.DataFrame, factor: str, trained: Hashable, arms: list[str], ref: str, rest: Grid, *, paired: bool,
    gain: float, metric: str,
) -> list[dict]:
    """(b) for the models trained at one level of a shifted factor."""
    column = M.test_level_column(factor)
    shifted = rows[rows["condition"].str.startswith(f"{M.SHIFT}:{factor}=")]
    match = (shifted[factor] - trained).abs() < 1e-9 if isinstance(trained, float) else shifted[factor] == trained
    tested = shifted[match].drop_duplicates("condition").sort_values(column)
    conditions = tested["condition"].tolist()
    at = (rows[factor] - trained).abs() < 1e-9 if isinstance(trained, float) else rows[factor] == trained
    used = rows[at & rows["condition"].isin([M.CLEAN, *conditions])]
    tables = Tables(used)

    def blocks(arm: str, sign: float, w: dict) -> list[list[Term]]:
        """The loss as one block per test level: the clean (training-level) images, each shifted level's."""
        return [[({ARM: arm, "condition": M.CLEAN, **w}, sign)]] + [
            [({ARM: arm, "condition": c, **w}, -sign / len(conditions))] for c in conditions]

    def loss(*parts: tuple[str, float]) -> Estimate:
        if paired:
            return _averaged(tables, rest, lambda w: [t for a, s in parts for block in blocks(a, s, w) for t in block])
        levels = rest.levels(used)
        merged = [[(where, weight / len(levels)) for level in levels for where, weight in
                   [t for a, s in parts for t in blocks(a, s, level)[k]]] for k in range(1 + len(conditions))]
        return blocks_contrast(tables, merged)

    base = loss((ref, 1.0))
    levels = ", ".join(level_text(v) for v in tested[column])
    pairing = "" if paired else " (other images: paired within a level, not across)"
    out = []
    for arm in arms:
        est, own = loss((arm, 1.0), (ref, -1.0)), loss((arm, 1.0))
        text = (f"(b) out of domain, trained at {factor} {level_text(trained)}, tested at {levels} (mean){pairing}: "
                f"{arm} loses {own.estimate:.3f} Dice, {ref} {base.estimate:.3f}; {arm}'s loss minus {ref}'s =")
        out.append(_row("b", arm, ref, f"{factor} {level_text(trained)} -> {levels}", est, text, _over(used, rest), used,
                        design=Grid((*rest.names, factor), rest.design).cells([arm, ref], **{factor: [trained]}),
                        censored=at_trivial(used, conditions, [arm, ref], gain=gain, metric=metric)))
    return out


def _context(frame: pd.DataFrame, arms: list[str], factors: Grid, metric: str) -> list[dict]:
    """(c): each arm's Dice at the largest patch minus at the smallest."""
    if PATCH not in factors or frame[PATCH].nunique() < 2:
        return []
    clean = frame[frame["condition"] == M.CLEAN]
    small, large = factors.extremes(clean, PATCH)
    rest = factors.without(PATCH)
    rows = []
    for arm in arms:
        est = _averaged(clean, rest, lambda w, arm=arm: [({ARM: arm, PATCH: large, **w}, 1.0), ({ARM: arm, PATCH: small, **w}, -1.0)])
        text = f"(c) context: {arm} Dice at patch {large:g} minus at patch {small:g} ="
        rows.append(_row("c", arm, "", f"{PATCH} {small:g} -> {large:g}", est, text, _over(clean, rest), clean,
                         design=factors.cells([arm], **{PATCH: [small, large]})))
    return rows


def _fbr(positions: pd.DataFrame, arms: list[str], ref: str, factors: Grid, metric: str, gain: float) -> list[dict]:
    """(d): per object, Dice inside the training FBR range minus outside it; arm minus reference.

    Which objects have volumes on both sides of the range depends on the level (the training
    patches' FBR range moves with patch size and foreground share), so levels do not share their
    objects and a contrast per level, averaged, would keep no image that every term scored. The
    levels are pooled instead: each (level, object) pair is one repeated measure, scored by every
    arm and seed (the split is agreed per level), and seed s of an arm stands for its training runs
    with seed s at every level, which are independent of its other seeds' runs. Each pair counts
    once, so a level weighs by its number of such objects.
    """
    losses = fbr_losses(positions, factors=list(factors), metric=metric)
    if losses.empty:
        return []
    levels = [f for f in factors if f in losses.columns]
    pooled = losses.copy()
    if levels:
        level_key = pooled[levels].astype(str).agg("|".join, axis=1)
        pooled["image_id"] = level_key + "|" + pooled["image_id"].astype(str)
    over = _over(losses, Grid(factors.names), how="pooled", note=" (an object once per level)")  # the levels with pairs
    outside = positions[(positions["condition"] == M.CLEAN) & positions["fbr_position"].notna()
                        & (positions["fbr_position"] != INSIDE)].assign(condition=OUTSIDE)
    rows = []
    for arm in arms:
        est = frame_contrast(pooled, [({ARM: arm}, 1.0), ({ARM: ref}, -1.0)], metric=metric)
        own = frame_contrast(pooled, [({ARM: arm}, 1.0)], metric=metric)
        base = frame_contrast(pooled, [({ARM: ref}, 1.0)], metric=metric)
        text = (f"(d) FBR outside the training range: on the same objects {arm} loses {own.estimate:.3f} Dice, "
                f"{ref} {base.estimate:.3f}; {arm}'s loss minus {ref}'s =")
        rows.append(_row("d", arm, ref, "fbr outside vs inside", est, text, over, losses, unit="objects",
                         censored=at_trivial(outside, [OUTSIDE], [arm, ref], gain=gain, metric=metric)))
    return rows


def fbr_losses(positions: pd.DataFrame, *, factors: Sequence[str], metric: str = "dice") -> pd.DataFrame:
    """Per (cell, seed, object): Dice of the object's volume inside the training FBR range minus the
    mean Dice of its volumes outside it, for objects that have both.

    A volume's position is the one most of the level's trials (every arm and seed at the same other
    factors) give it, so every arm is scored on the same split of volumes.

    Returns:
        Rows with the factor columns, `architecture`, seed, image_id (the object) and `metric` (the loss).
    """
    clean = positions[(positions["condition"] == M.CLEAN) & positions["fbr_position"].notna()].copy()
    clean["object"] = clean["image_id"].astype(str).str.extract(_OBJECT, expand=False)
    clean = clean.dropna(subset=["object"])
    if clean.empty:
        return pd.DataFrame()
    levels = [f for f in factors if f in clean.columns]
    agreed = clean.groupby([*levels, "image_id"], dropna=False)["fbr_position"].agg(lambda s: s.mode().iloc[0])
    clean = clean.drop(columns="fbr_position").join(agreed.rename("fbr_position"), on=[*levels, "image_id"])
    clean["outside"] = clean["fbr_position"] != INSIDE
    keys = [*levels, ARM, "seed", *(["run_id"] if "run_id" in clean.columns else []), "object"]
    means = clean.groupby([*keys, "outside"], dropna=False)[metric].mean().unstack("outside")
    if True not in means.columns or False not in means.columns:
        return pd.DataFrame()
    loss = (means[False] - means[True]).dropna().rename(metric).reset_index()
    return loss.rename(columns={"object": "image_id"})


def at_trivial(rows: pd.DataFrame, conditions: Sequence[str], arms: Sequence[str], *, gain: float, metric: str = "dice") -> list[str]:
    """The models (one line each) whose mean Dice under one of `conditions` is at most `gain` above
    the trivial answer on the same images: every pixel foreground, Dice 2f / (1 + f) for an image
    whose foreground share is f (from its foreground-to-background ratio `fbr`)."""
    if metric != "dice" or not {"fbr", "run_id", ARM}.issubset(rows.columns):
        return []
    used = rows[rows["condition"].isin(conditions) & rows[ARM].isin(arms)]
    share = used["fbr"].astype(float) / (1.0 + used["fbr"].astype(float))
    share = share.where(np.isfinite(used["fbr"].astype(float)), 1.0)
    scored = used.assign(trivial_dice=2.0 * share / (1.0 + share))
    where = [c for c in ("cell", "seed") if c in scored.columns]
    means = scored.groupby(["run_id", "condition", *where], dropna=False)[[metric, "trivial_dice"]].mean().reset_index()
    low = means[means[metric] <= means["trivial_dice"] + gain]
    return [f"{getattr(r, 'cell', r.run_id)} seed={getattr(r, 'seed', '?')} under {r.condition}: Dice "
            f"{getattr(r, metric):.3f}, trivial {r.trivial_dice:.3f}" for r in low.sort_values([*where, "condition"]).itertuples()]


def _worst_conditions(frame: pd.DataFrame) -> list[str]:
    """Each perturbation at the highest severity the study evaluated."""
    worst: dict[str, int] = {}
    for condition in frame["condition"].dropna().unique():
        name, severity = M.parse_condition(str(condition))
        if name is not None:
            worst[name] = max(worst.get(name, 0), severity)
    return [M.condition_name(name, severity) for name, severity in sorted(worst.items())]


@dataclass(frozen=True)
class Grid:
    """The factors a claim may average over (every factor but the architecture), with the study's
    designed levels when known."""

    names: tuple[str, ...]
    design: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def without(self, factor: str) -> Grid:
        return Grid(tuple(f for f in self.names if f != factor), self.design)

    def extremes(self, frame: pd.DataFrame, factor: str) -> tuple[Any, Any]:
        """The smallest and largest level of `factor`: the design's, else the rows'."""
        values = list(self.design.get(factor) or frame[factor].dropna().tolist())
        return min(values), max(values)

    def cells(self, arms: Sequence[str], **fixed: Sequence[Any]) -> set[str]:
        """The canonical keys of the design's cells of `arms` at the `fixed` levels (every level of
        the other factors): the cells a claim rests on, whether or not their trials scored
        (empty when the design is unknown)."""
        if not self.design or any(not self.design.get(f) for f in self.names):
            return set()
        choices = {ARM: list(arms), **{f: list(fixed.get(f, self.design[f])) for f in self.names}}
        names = sorted(choices)
        return {cell_key(dict(zip(names, combo))) for combo in itertools.product(*(choices[n] for n in names))}

    def levels(self, frame: pd.DataFrame) -> list[dict[str, Hashable]]:
        """Every combination of the factors' levels: the design's (so a level without rows is still
        one), else the ones the frame holds."""
        present = [f for f in self.names if f in frame.columns]
        if not present:
            return [{}]
        if all(self.design.get(f) for f in present):
            return [dict(zip(present, combo, strict=True)) for combo in itertools.product(*(self.design[f] for f in present))]
        combos = frame[present].dropna().drop_duplicates().sort_values(present)
        return [dict(zip(present, row, strict=True)) for row in combos.itertuples(index=False)]


def _averaged(frame: pd.DataFrame | Tables, factors: Grid, terms_at) -> Estimate:
    """The contrast `terms_at(level values)` averaged with equal weights over every level of `factors`."""
    levels = factors.levels(frame.frame if isinstance(frame, Tables) else frame)
    terms = [(where, weight / len(levels)) for level in levels for where, weight in terms_at(level)]
    return frame_contrast(frame, terms)


def _over(frame: pd.DataFrame, factors: Grid, *, how: str = "averaged", note: str = "") -> str:
    levels = factors.levels(frame)
    named = [f for f in factors if f in frame.columns and len({str(level[f]) for level in levels}) > 1]
    return f", {how} over {len(levels)} levels of {', '.join(named)}{note}" if len(levels) > 1 else ""


def _row(
    claim: str, arm: str, ref: str, about: str, est: Estimate, text: str, over: str, used: pd.DataFrame, *,
    unit: str = "images", design: set[str] = frozenset(), censored: Sequence[str] = (),
) -> dict:
    """One claim's numbers, the words around them, and the cells and runs it rests on: the cells its
    rows came from and, with a known design, every cell it was designed to rest on (a cell whose
    trials all failed is one: more seeds there are what the claim needs)."""
    compared = used[used[ARM].isin([arm, ref])]
    runs = set(compared["run_id"]) if "run_id" in used.columns else set()
    cells = sorted(set(compared["cell"].astype(str)) | set(design)) if "cell" in used.columns else sorted(design)
    return {"claim": claim, "kind": KIND[claim], "arm": arm, "reference": ref, "about": about, "estimate": est.estimate,
            "ci_low": est.ci_low, "ci_high": est.ci_high, "p": est.p, "se": est.se, "df": est.df, "n_seeds": est.n_seeds,
            "n_images": est.n_images, "seed_variance": est.seed_variance, "image_variance": est.image_variance,
            "cells": ";".join(cells), "text": text,
            "tail": f"{est.n_seeds} seeds x {est.n_images} {unit}{over}", "_runs": runs, "_censored": list(censored)}


__all__ = ["CLAIM_COLUMNS", "COMPLEXITY", "KIND", "PATCH", "TRIVIAL_GAIN", "at_trivial", "claims", "fbr_losses"]
