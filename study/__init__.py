"""segstudy: distributed ablation studies of segmentation robustness on Ray Tune."""

from __future__ import annotations

__version__ = "0.1.0"

# Libraries whose versions identify a result: tagged on every run (segstudy.versions, by the
# tracking writer) and listed in the report, from this one list.
VERSIONED_PACKAGES = ("torch", "monai", "ray", "optuna", "mlflow", "numpy", "nibabel", "scikit-image")


def library_versions() -> dict[str, str]:
    """python, segstudy and VERSIONED_PACKAGES as installed here, in that order ("not installed"
    for a package that is absent, e.g. nibabel on a host that only reads results)."""
    import importlib.metadata as md
    import platform

    versions = {"python": platform.python_version()}
    for dist in ("segstudy", *VERSIONED_PACKAGES):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions
