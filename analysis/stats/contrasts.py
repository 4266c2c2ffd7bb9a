"""Contrasts of per-image frames: pick the cells of a comparison, align their images, infer.

A term is the rows of one cell (and condition) with a weight; `frame_contrast` turns the terms
into seeds x images tables over the images every term scored and hands them to
`analysis.stats.inference.contrast`. Findings, pairwise tables and the study's claims all go
through here, so every comparison a study prints is the same procedure.

Example:
    >>> frame_contrast(per_image, [({"architecture": "noskip_unet", "alpha": 0.9}, 1.0),
    ...                            ({"architecture": "unet", "alpha": 0.9}, -1.0)])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import pandas as pd

from analysis.stats.inference import Estimate, combine, contrast

Term = tuple[Mapping[str, Any], float]


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
        terms: (column values selecting one cell's rows, weight) per cell of the comparison.
        metric: the score compared.

    Returns:
        `analysis.stats.inference.Estimate` (NaN estimate when a term selects no rows).
    """
    tables = [seeds_by_images(select(per_image, where), metric) for where, _ in terms]
    images = tables[0].columns
    for table in tables[1:]:
        images = images.intersection(table.columns)
    return contrast([t.reindex(columns=images).to_numpy() for t in tables], [w for _, w in terms])


def blocks_contrast(per_image: pd.DataFrame, blocks: Sequence[Sequence[Term]], *, metric: str = "dice") -> Estimate:
    """A contrast whose terms fall into blocks of different images (the levels of a factor whose
    levels are other images, e.g. sites): paired within a block, each block its own images.

    Each block is `frame_contrast` over the images its terms share; the blocks are summed by
    `analysis.stats.inference.combine`.
    """
    return combine([frame_contrast(per_image, block, metric=metric) for block in blocks])


__all__ = ["Term", "blocks_contrast", "frame_contrast", "seeds_by_images", "select"]
