"""Per-image segmentation metrics with a declared policy for empty and missed structures: one
`Metric` entry per score in `METRICS`."""

from __future__ import annotations

from study.metrics.segmentation import METRICS, EmptyPolicy, Metric, score_images

__all__ = ["METRICS", "EmptyPolicy", "Metric", "score_images"]
