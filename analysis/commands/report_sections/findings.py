"""Section 0: what the study states, as it declared: the claims (declared, then exploratory), the
sequential confirm's decisions, the breakdown per cell, the findings per level, the trials that did
not learn and the learning curves. Every statement comes from `analysis.stats.statements.study`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.commands.report_sections.blocks import ReportFigure, table_of, write_csv
from analysis.plots.learning_curves import plot_learning_curves
from analysis.read.curves import load_val_curves
from analysis.read.runs import not_learned_trials
from analysis.read.study_spec import StudyRecord
from analysis.stats.core.decisions import DECLARED, EXPLORATORY, family_heading
from analysis.stats.statements.replication import NEITHER
from analysis.stats.statements.sequential import decision_table, seeds_table
from analysis.stats.statements.study import StudyStatements


def findings_section(
    said: StudyStatements, trials: pd.DataFrame, record: StudyRecord, *, tracking_uri: str, out_dir: Path,
) -> dict[str, Any]:
    """Section 0 (module docstring)."""
    not_learned = [f"{r.cell} seed={r.seed}: {r.learning_issue}" for r in not_learned_trials(trials).itertuples()]
    write_csv(out_dir, findings=said.findings if not said.findings.empty else None,
              claims=said.claims if not said.claims.empty else None, breakdown=said.breakdown)
    curves = load_val_curves(trials, tracking_uri=tracking_uri)
    title = "Validation Dice per epoch, one panel per cell, one line per seed"
    if curves.empty:
        figure = ReportFigure(title, note="no confirm trial logged val_dice per epoch")
    else:
        figure = ReportFigure(
            title, "A flat curve near the bottom is a model that did not learn (red panels: the learning gate "
            "rejected at least one seed).", plot_learning_curves(curves, trials, out_dir / "learning_curves.png"),
        )
    return {
        "lines": said.findings["line"].tolist() if not said.findings.empty else [],
        "findings_family": family_heading(said.findings),
        "claims": _claims(said.claims),
        "breakdown": _breakdown(said.breakdown, record.settings.breakdown),
        "sequential": _sequential(said, out_dir),
        "not_learned": not_learned, "curves": figure,
    }


def _claims(table: pd.DataFrame) -> dict[str, Any]:
    """The claims, declared first: each group's lines and the sentence saying how they were decided."""
    if table.empty:
        return {"declared": [], "exploratory": [], "declared_family": "", "exploratory_family": ""}
    declared, rest = table[table["family"] == DECLARED], table[table["family"] == EXPLORATORY]
    return {
        "declared": declared["line"].tolist(), "exploratory": rest["line"].tolist(),
        "declared_family": family_heading(declared), "exploratory_family": family_heading(rest),
    }


def _breakdown(table: pd.DataFrame, threshold: float) -> dict[str, Any] | None:
    if table.empty:
        return None
    shown = table.assign(share=[f"{b} of {m}" for b, m in zip(table["broke_down"], table["models"])])
    shown = shown.rename(columns={"share": f"broke down (Dice < {threshold:g})", "worst_dice": "worst seed's Dice",
                                  "not_learned": "did not learn"})
    return {"threshold": threshold, "table": table_of(shown.drop(columns=["broke_down", "models"]))}


def _sequential(said: StudyStatements, out_dir: Path) -> dict[str, Any] | None:
    """A sequential confirm phase (a seed budget in the spec): the looking decisions, the seeds each
    cell got and why, the claims left unresolved, replayed from the ended trials as the driver decided."""
    state = said.sequential
    if state is None:
        return None
    decisions, seeds = decision_table(state), seeds_table(state)
    write_csv(out_dir, sequential_decisions=decisions, seeds_per_cell=seeds)
    return {
        "design": state.design.describe(state.statements), "summary": state.summary(), "finished": state.finished,
        "lines": decisions["line"].tolist(), "unresolved": [d.line() for d in state.open if state.finished],
        "seeds": table_of(seeds.rename(columns={"seeds": "seeds ended", "asked": "seeds asked"})),
    }


def replication_section(replications: list[Any], out_dir: Path) -> list[dict[str, Any]]:
    """Each replication the study takes part in (`analysis.commands.replication`): its heading, the
    counts, and the statements resolved in either study."""
    out = []
    for i, found in enumerate(replications):
        write_csv(out_dir, **{f"replication{'' if i == 0 else i + 1}": found.table})
        shown = found.table[found.table["agreement"] != NEITHER]
        out.append({"heading": found.heading(), "summary": found.summary.line(), "table": table_of(shown)})
    return out


__all__ = ["findings_section", "replication_section"]
