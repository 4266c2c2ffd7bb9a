"""Contrasts of per-image frames: pick the cells of a comparison, align their images, infer.

A term is the rows of one cell (and condition) with a weight; `frame_contrast` turns the terms
into seeds x images tables over the images every term scored and hands them to
`analysis.stats.core.inference.contrast`. Findings, pairwise tables and the study's claims all go
through here, so every comparison a study prints is the same procedure.

Terms that differ only in the condition (a claim's clean and perturbed scores of one arm) are
scores of the same trained models: they are combined per seed and image before the inference, so
each model's loss is one repeated measure of its seed (a seed that does well clean and perturbed
alike adds no spread to its loss). Treating them as separate cells would count each model twice
and overstate the between-seed variance.

Example:
    >>> frame_contrast(per_image, [({"architecture": "noskip_unet", "alpha": 0.9}, 1.0),
    ...                            ({"architecture": "unet", "alpha": 0.9}, -1.0)])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import pandas as pd

from analysis.stats.core.inference import Estimate, contrast

Term = tuple[Mapping[str, Any], float]
CONDITION = "condition"


def seeds_by_images(rows: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """One cell's scores as a seeds x images table (rows: seed, columns: image_id)."""
    return rows.pivot_table(index="seed", columns="image_id", values=metric, aggfunc="mean", dropna=False)


def select(per_image: pd.DataFrame, where: Mapping[str, Hashable]) -> pd.DataFrame:
    """The rows whose columns equal every value of `where` (a float level matches within 1e-9)."""
    mask = pd.Series(True, index=per_image.index)
    for column, value in where.items():
        values = per_image[column]
        if isinstance(value, float):
            mask &= (pd.to_numeric(values, errors="coerce") - value).abs() < 1e-9
        else:
            mask &= values == value
    return per_image[mask]


def frame_contrast(per_image: pd.DataFrame, terms: Sequence[Term], *, metric: str = "dice") -> Estimate:
    """The contrast sum_k w_k mean(cell_k) over the images every term scored.

    Args:
        per_image: per-image rows with `seed`, `image_id`, `metric` and the columns the terms name.
        terms: (column values selecting one cell's rows, weight) per cell of the comparison; terms
            whose values differ only in `condition` select the same models and are combined.
        metric: the score compared.

    Returns:
        `analysis.stats.core.inference.Estimate` (NaN estimate when a term selects no rows).
    """
    tables = [(where, weight, seeds_by_images(select(per_image, where), metric)) for where, weight in terms]
    images = tables[0][2].columns
    for _, _, table in tables[1:]:
        images = images.intersection(table.columns)
    models: dict[tuple, list[tuple[float, pd.DataFrame]]] = {}
    for where, weight, table in tables:
        same = tuple(sorted((k, str(v)) for k, v in where.items() if k != CONDITION))
        models.setdefault(same, []).append((weight, table.reindex(columns=images)))
    combined = [_combined(parts) for parts in models.values()]
    return contrast([t.to_numpy() for t in combined], [1.0] * len(combined))


def _combined(parts: list[tuple[float, pd.DataFrame]]) -> pd.DataFrame:
    """sum_k w_k table_k of one cell's conditions, seed by seed and image by image (NaN where one lacks it)."""
    seeds = parts[0][1].index
    for _, table in parts[1:]:
        seeds = seeds.union(table.index)
    total = sum(weight * table.reindex(index=seeds) for weight, table in parts)
    return total


__all__ = ["Term", "frame_contrast", "seeds_by_images", "select"]
