"""segstudy: distributed ablation studies of segmentation robustness on Ray Tune."""

from __future__ import annotations

__version__ = "0.1.0"
