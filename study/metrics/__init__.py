"""Per-image segmentation metrics with a declared policy for empty and missed structures."""

from __future__ import annotations

from study.metrics.segmentation import METRICS, EmptyPolicy, score_images

__all__ = ["METRICS", "EmptyPolicy", "score_images"]
