"""Section 7: measured coverage of the conformal Dice lower bounds per arm and condition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.commands.report_sections.blocks import ARM, Table, table_of, write_csv
from analysis.stats.describe.coverage import coverage_summary, shortfalls
from analysis.stats.core.frames import resolve_within
from study.spec import Conformal


def confidence_section(per_image: pd.DataFrame, conformal: dict[str, Any], out_dir: Path) -> dict[str, Any] | None:
    """Section 7: measured coverage of the Dice lower bounds per arm and condition, with warnings."""
    if per_image.empty:
        return None
    alpha = float(conformal.get("alpha", Conformal.model_fields["alpha"].default))
    fnr_alpha = float(conformal.get("fnr_alpha", Conformal.model_fields["fnr_alpha"].default))
    within = resolve_within(per_image, by=ARM, within=None)
    summary = coverage_summary(per_image, arm=ARM, within=within, alpha=alpha, fnr_alpha=fnr_alpha)
    if summary is None:
        return None
    write_csv(out_dir, coverage=summary)
    rows = [*within, ARM]

    def wide(text: list[str]) -> Table:
        frame = summary.assign(_text=text).pivot_table(index=rows, columns="condition", values="_text", aggfunc="first", sort=False)
        return table_of(frame[list(pd.unique(summary["condition"]))].reset_index())

    return {
        "level": 1.0 - alpha,
        "fnr_alpha": fnr_alpha,
        "coverage": wide([f"{c:.2f} ({n})" for c, n in zip(summary["coverage"], summary["n"])]),
        "fnr": wide([f"{v:.3f}" for v in summary["fnr"]]),
        "warnings": shortfalls(summary, arm=ARM, within=within),
    }


__all__ = ["confidence_section"]
