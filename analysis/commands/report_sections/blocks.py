"""What the report's sections are made of: tables of text cells, figures, and the CSV files beside the page."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

ARM = "architecture"  # the factor whose levels the report compares


@dataclass(frozen=True)
class Table:
    """A table ready for the template: text cells, and which rows to highlight."""

    columns: list[str]
    rows: list[list[str]]
    marked: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report: its PNG, or the note saying why it is missing."""

    title: str
    caption: str = ""
    path: Path | None = None
    note: str = ""

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode("ascii") if self.path else ""


def wide_table(frame: pd.DataFrame, rows: list[str], columns: str) -> Table:
    """Long estimates -> one row per `rows`, one column per `columns` value: "value [ci_low, ci_high]"."""
    text = frame.assign(_text=[ci_text(*v) for v in frame[["value", "ci_low", "ci_high"]].itertuples(index=False)])
    wide = text.pivot_table(index=rows, columns=columns, values="_text", aggfunc="first", sort=False)
    return table_of(wide[list(pd.unique(frame[columns]))].reset_index())


def table_of(frame: pd.DataFrame, *, mark: str | None = None) -> Table:
    """A frame as a template table; `mark`: the boolean column whose true rows are highlighted."""
    rows = [[cell_text(v) for v in row] for row in frame.itertuples(index=False)]
    marked = [bool(v) for v in frame[mark]] if mark else []
    return Table([str(c) for c in frame.columns], rows, marked)


def cell_text(value: Any) -> str:
    """One table cell: floats to 4 significant digits, missing values as a dash."""
    if isinstance(value, float):
        return "\u2013" if math.isnan(value) else f"{value:.4g}"
    return "\u2013" if value is None else str(value)


def ci_text(value: float, low: float, high: float) -> str:
    """"value [low, high]", or the value alone when there is no interval."""
    return f"{value:.3f}" if math.isnan(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def write_csv(out_dir: Path, **tables: pd.DataFrame | None) -> None:
    """Each table given as `name=frame` to out_dir/name.csv (None: skipped)."""
    for name, table in tables.items():
        if table is not None:
            table.to_csv(out_dir / f"{name}.csv", index=False)


__all__ = ["ARM", "ReportFigure", "Table", "cell_text", "ci_text", "table_of", "wide_table", "write_csv"]
