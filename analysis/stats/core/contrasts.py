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

import numpy as np
import pandas as pd

from analysis.stats.core.inference import Estimate, combine, contrast

Term = tuple[Mapping[str, Any], float]
CONDITION = "condition"


def seeds_by_images(rows: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """One cell's scores as a seeds x images table (rows: seed, columns: image_id, both sorted; the
    mean where a (seed, image) pair has several rows, NaN where it has no finite score).

    Every comparison a study prints builds a few of these per term, so this is numpy, not
    `pivot_table` (about 50 times faster on a study's frames)."""
    seed_codes, seeds = pd.factorize(rows["seed"], sort=True)
    image_codes, images = pd.factorize(rows["image_id"], sort=True)
    values = rows[metric].to_numpy(dtype=float)
    known = np.isfinite(values) & (seed_codes >= 0) & (image_codes >= 0)
    sums = np.zeros((len(seeds), len(images)))
    counts = np.zeros((len(seeds), len(images)))
    np.add.at(sums, (seed_codes[known], image_codes[known]), values[known])
    np.add.at(counts, (seed_codes[known], image_codes[known]), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
    return pd.DataFrame(table, index=pd.Index(seeds, name="seed"), columns=pd.Index(images, name="image_id"))


def select(per_image: pd.DataFrame, where: Mapping[str, Hashable]) -> pd.DataFrame:
    """The rows whose columns equal every value of `where` (a float level matches within 1e-9)."""
    mask = np.ones(len(per_image), dtype=bool)
    for column, value in where.items():
        values = per_image[column]
        if isinstance(value, float):
            numbers = values.to_numpy(dtype=float) if pd.api.types.is_numeric_dtype(values) else (
                pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))
            mask &= np.abs(numbers - value) < 1e-9
        else:
            mask &= (values == value).to_numpy()
    return per_image[mask]


class Tables:
    """A frame's seeds x images tables, each built once: the claims ask for the same cells in several
    contrasts (an arm's own loss, the reference's, their difference), and building a table is most
    of a contrast's cost."""

    def __init__(self, per_image: pd.DataFrame) -> None:
        self.frame = per_image
        self._built: dict[tuple, pd.DataFrame] = {}

    def of(self, where: Mapping[str, Hashable], metric: str) -> pd.DataFrame:
        key = (metric, tuple(sorted((k, type(v).__name__, str(v)) for k, v in where.items())))
        if key not in self._built:
            self._built[key] = seeds_by_images(select(self.frame, where), metric)
        return self._built[key]


def frame_contrast(per_image: pd.DataFrame | Tables, terms: Sequence[Term], *, metric: str = "dice") -> Estimate:
    """The contrast sum_k w_k mean(cell_k) over the images every term scored.

    Args:
        per_image: per-image rows with `seed`, `image_id`, `metric` and the columns the terms name
            (or their `Tables`, to reuse tables across contrasts of one frame).
        terms: (column values selecting one cell's rows, weight) per cell of the comparison; terms
            whose values differ only in `condition` select the same models and are combined.
        metric: the score compared.

    Returns:
        `analysis.stats.core.inference.Estimate` (NaN estimate when a term selects no rows).
    """
    built = per_image if isinstance(per_image, Tables) else Tables(per_image)
    tables = [(where, weight, built.of(where, metric)) for where, weight in terms]
    images = tables[0][2].columns
    for _, _, table in tables[1:]:
        images = images.intersection(table.columns)
    models: dict[tuple, list[tuple[float, pd.DataFrame]]] = {}
    for where, weight, table in tables:
        same = tuple(sorted((k, str(v)) for k, v in where.items() if k != CONDITION))
        models.setdefault(same, []).append((weight, table.reindex(columns=images)))
    combined = [_combined(parts) for parts in models.values()]
    return contrast([t.to_numpy() for t in combined], [1.0] * len(combined))


def blocks_contrast(per_image: pd.DataFrame | Tables, blocks: Sequence[Sequence[Term]], *, metric: str = "dice") -> Estimate:
    """A contrast whose terms fall into blocks of different images (the levels of a factor whose
    levels are other images, e.g. sites): paired within a block, each block its own images.

    Each block is `frame_contrast` over the images its terms share; the blocks are summed by
    `analysis.stats.core.inference.combine`.
    """
    return combine([frame_contrast(per_image, block, metric=metric) for block in blocks])


def _combined(parts: list[tuple[float, pd.DataFrame]]) -> pd.DataFrame:
    """sum_k w_k table_k of one cell's conditions, seed by seed and image by image (NaN where one lacks it)."""
    seeds = parts[0][1].index
    for _, table in parts[1:]:
        seeds = seeds.union(table.index)
    total = sum(weight * table.reindex(index=seeds) for weight, table in parts)
    return total


__all__ = ["Tables", "Term", "blocks_contrast", "frame_contrast", "seeds_by_images", "select"]
