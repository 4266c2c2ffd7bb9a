"""Section 8: train/test shift, per shifted factor its Dice and coverage tables, heatmaps and curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.commands.report_sections.blocks import ARM, ReportFigure, table_of, write_csv
from analysis.plots.shift import plot_shift_degradation, plot_shift_heatmaps
from analysis.stats.describe.shift import paired_across_levels, shift_factors, shift_matrix, shift_table
from study.spec import Conformal


def shift_section(rows: pd.DataFrame, factors: list[str], conformal: dict[str, Any], out_dir: Path) -> list[dict[str, Any]] | None:
    """Section 8: per shifted factor, the train x test Dice and coverage tables, heatmaps and curves."""
    if rows.empty:
        return None
    target = 1.0 - float(conformal.get("alpha", Conformal.model_fields["alpha"].default))
    blocks = []
    for factor in shift_factors(rows):
        within = [f for f in factors if f not in (ARM, factor)]
        table = shift_table(rows, factor=factor, arm=ARM, within=within)
        dice = shift_matrix(table, factor=factor, arm=ARM, within=within)
        coverage = shift_matrix(table, factor=factor, arm=ARM, within=within, value="coverage")
        write_csv(out_dir, **{f"shift_{factor}": dice, f"shift_{factor}_coverage": coverage})
        blocks.append({
            "factor": factor,
            "paired": paired_across_levels(rows, factor=factor),
            "dice": table_of(dice),
            "coverage": table_of(coverage) if table["coverage"].notna().any() else None,
            "target": target,
            "figures": [
                ReportFigure(f"Train/test shift along {factor}: heatmaps", "One panel per arm; framed: tested where "
                             "trained.", plot_shift_heatmaps(table, out_dir / f"shift_heatmap_{factor}.png",
                                                            factor=factor, arm=ARM, within=within)),
                ReportFigure(f"Train/test shift along {factor}: degradation curves", "One panel per training level, "
                             "one line per arm.", plot_shift_degradation(table, out_dir / f"shift_degradation_{factor}.png",
                                                                        factor=factor, arm=ARM, within=within)),
            ],
        })
    return blocks


__all__ = ["shift_section"]
