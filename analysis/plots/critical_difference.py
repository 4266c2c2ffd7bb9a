"""Critical-difference diagram: arms placed by mean rank, joined where no test separates them.

Drawn by scikit-posthocs on an object-oriented `Figure` (Agg canvas), so plotting never switches
the process-wide matplotlib backend nor leaves figures open in a long-lived service.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import scikit_posthocs as sp
from matplotlib.figure import Figure

from analysis.stats.statements.pairwise import pairwise_p_matrix
from study.errors import SegstudyError


def plot_critical_difference(
    ranks: Mapping[str, float] | pd.Series,
    pairwise_p: pd.DataFrame,
    out: Path,
    *,
    alpha: float = 0.05,
    title: str | None = None,
) -> Path:
    """Write a critical-difference diagram (Demsar 2006) of one family of comparisons as a PNG.

    Args:
        ranks: mean rank per arm, 1 = best (`friedman(...).set_index(by)["mean_rank"]`).
        pairwise_p: a square p-value matrix indexed by arm (`pairwise_p_matrix`), or one family of
            `pairwise_tests` rows, whose Holm-corrected p-values are used.
        out: the PNG to write; parent folders are created.
        alpha: arms whose p-value is >= alpha are joined by a bar (not significantly different).
        title: figure title; a default explains how to read the diagram.

    Returns:
        `out`.

    Raises:
        SegstudyError: the ranks and the p-value matrix name different arms.

    Example:
        >>> ranks = friedman(per_image, condition="clean").set_index("architecture")["mean_rank"]  # doctest: +SKIP
        >>> tests = pairwise_tests(per_image, condition="clean")  # doctest: +SKIP
        >>> plot_critical_difference(ranks, tests, Path("cd.png"))  # doctest: +SKIP
    """
    ranks = pd.Series(ranks, dtype=float)
    ranks.index = ranks.index.map(str)
    square = set(map(str, pairwise_p.index)) == set(map(str, pairwise_p.columns))
    matrix = pairwise_p.copy() if square else pairwise_p_matrix(pairwise_p)
    matrix.index, matrix.columns = matrix.index.map(str), matrix.columns.map(str)
    if set(matrix.index) != set(ranks.index) or set(matrix.columns) != set(ranks.index):
        raise SegstudyError(
            f"plot_critical_difference: ranks name {', '.join(sorted(ranks.index))} but the p-values name "
            f"{', '.join(sorted(matrix.index))}; pass both for the same arms"
        )
    matrix = matrix.loc[ranks.index, ranks.index].astype(float).fillna(1.0)

    fig = Figure(figsize=(8.0, 1.6 + 0.35 * len(ranks)), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    sp.critical_difference_diagram(ranks, matrix, alpha=alpha, ax=ax)
    fig.suptitle(
        title or f"Mean rank per arm (1 = best); bars join arms not significantly different (p >= {alpha:g})",
        fontsize=10,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", pad_inches=0.15)  # labels sit outside the axes: keep them in the PNG
    return out


__all__ = ["plot_critical_difference"]
