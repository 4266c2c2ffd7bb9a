"""Section 0: the findings as sentences, the sequential confirm's decisions, the robustness claims,
the trials that did not learn and the learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Run
from pydantic import ValidationError

from analysis.commands.report_sections.blocks import ARM, ReportFigure, table_of, write_csv
from analysis.plots.learning_curves import plot_learning_curves
from analysis.read.curves import load_val_curves
from analysis.read.runs import factor_names, load_trials, not_learned_trials
from analysis.stats.claims import PATCH, claims
from analysis.stats.context import fbr_shift, with_patch_metrics
from analysis.stats.findings import findings, reference_arm
from analysis.stats.pairwise import resolve_within
from analysis.stats.sequential import Observed, comparisons, decision_table, design_of, replay, seeds_table
from study import metrics_names as M
from study.spec.tuning import Confirm


def findings_section(
    per_image: pd.DataFrame, trials: pd.DataFrame, evaluation: dict, *, tracking_uri: str, out_dir: Path
) -> dict[str, Any]:
    """Section 0: the findings sentences, the trials that did not learn, the learning curves."""
    not_learned = [f"{r.cell} seed={r.seed}: {r.learning_issue}" for r in not_learned_trials(trials).itertuples()]
    lines: list[str] = []
    if not per_image.empty and ARM in per_image.columns and per_image[ARM].nunique() > 1:
        within = resolve_within(per_image, by=ARM, within=None)
        table = findings(per_image, trials, levels=within, reference=evaluation.get("reference_arm"))
        write_csv(out_dir, findings=table)
        lines = table["line"].tolist()
    curves = load_val_curves(trials, tracking_uri=tracking_uri)
    title = "Validation Dice per epoch, one panel per cell, one line per seed"
    if curves.empty:
        figure = ReportFigure(title, note="no confirm trial logged val_dice per epoch")
    else:
        figure = ReportFigure(
            title, "A flat curve near the bottom is a model that did not learn (red panels: the learning gate "
            "rejected at least one seed).", plot_learning_curves(curves, trials, out_dir / "learning_curves.png"),
        )
    return {"lines": lines, "not_learned": not_learned, "curves": figure}


def sequential_findings(
    per_image: pd.DataFrame, trials: pd.DataFrame, runs: list[Run], spec: dict[str, Any], *, experiment: str,
    tracking_uri: str, study: str, out_dir: Path,
) -> dict[str, Any] | None:
    """A sequential confirm phase (a seed budget in the spec): its decisions at the adjusted level,
    the seeds each cell got and why, the comparisons left unresolved (`analysis.stats.sequential`,
    replayed from the ended trials exactly as the driver decided)."""
    try:
        design = design_of(Confirm.model_validate(spec.get("confirm") or {}))
    except ValidationError:
        return None
    if design is None or per_image.empty:
        return None
    every = load_trials(experiment, tracking_uri=tracking_uri, include_failed=True, study=study)  # cells whose trials all failed too
    factors = factor_names(every)
    cells = {row["cell"]: {f: row[f] for f in factors} for row in every.drop_duplicates("cell").to_dict("records")}
    ended = [(r.data.tags.get(M.CELL_TAG), int(r.data.tags.get(M.SEED_TAG, -1))) for r in runs
             if r.data.tags.get(M.PHASE_TAG) == M.PHASE_CONFIRM and (r.info.status == "FINISHED" or (
                 r.info.status == "FAILED" and r.data.tags.get(M.RETRIED_TAG) != "true"))]
    not_learned = [(r.cell, r.seed) for r in not_learned_trials(trials).itertuples()]
    observed = Observed.from_rows(per_image, ended=ended, not_learned=not_learned)
    comps = comparisons(cells, reference=(spec.get("evaluation") or {}).get("reference_arm"))
    state = replay(design, comps, observed, cells=sorted(cells))
    decisions, seeds = decision_table(state), seeds_table(state, observed)
    write_csv(out_dir, sequential_decisions=decisions, seeds_per_cell=seeds)
    return {
        "design": design.describe(), "summary": state.summary(), "finished": state.finished,
        "lines": decisions["line"].tolist(), "unresolved": [d.line(design) for d in state.open if state.finished],
        "seeds": table_of(seeds.rename(columns={"seeds": "seeds ended", "asked": "seeds asked"})),
    }


def claim_findings(
    per_image: pd.DataFrame, trials: pd.DataFrame, evaluation: dict, *, experiment: str, shift: pd.DataFrame,
    tracking_uri: str, study: str, out_dir: Path,
) -> list[str]:
    """The robustness claims the study's factors allow (`analysis.stats.claims`), as sentences."""
    if per_image.empty or ARM not in per_image.columns:
        return []
    positions = None
    if PATCH in factor_names(trials) and "fbr" in per_image.columns and per_image["fbr"].notna().any():
        patched = with_patch_metrics(trials, experiment=experiment, tracking_uri=tracking_uri, study=study)
        positions = fbr_shift(per_image, patched)
    reference = reference_arm(sorted(per_image[ARM].dropna().unique()), evaluation.get("reference_arm"))
    table = claims(per_image, reference=reference, fbr_positions=positions, shift_rows=shift, trials=trials)
    write_csv(out_dir, claims=table)
    return table["line"].tolist()


__all__ = ["claim_findings", "findings_section", "sequential_findings"]
