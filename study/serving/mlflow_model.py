"""Turn a trial's package folder into an MLflow Model, and name its registry entry."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from study.serving.package import PACKAGE_FILES

MODEL_ARTIFACT_PATH = "model"
PACKAGE_ARTIFACT = "package"
_CODE = Path(__file__).with_name("pyfunc_model.py")


def save_mlflow_model(package: Path, destination: Path) -> Path:
    """An MLflow pyfunc model at `destination` holding a copy of `package` (returned path)."""
    import mlflow.pyfunc

    shutil.rmtree(destination, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / PACKAGE_ARTIFACT
        staged.mkdir()
        for name in PACKAGE_FILES:
            shutil.copy2(package / name, staged / name)
        # Requirements given, not inferred: inference imports the model and takes seconds per trial.
        mlflow.pyfunc.save_model(
            path=str(destination),
            python_model=str(_CODE),
            artifacts={PACKAGE_ARTIFACT: str(staged)},
            pip_requirements=["segstudy"],
        )
    return destination


def package_dir(model_dir: Path) -> Path:
    """Where a downloaded MLflow model keeps its segstudy package."""
    return model_dir / "artifacts" / PACKAGE_ARTIFACT


def registered_model_name(study: str, cell: str) -> str:
    """One registry entry per study cell; each confirm seed is a version of it.

    MLflow's SQL registry stores names with '=' or ',' but cannot look them up again, so the
    canonical cell key is spelled with '-' and '.' instead.

    Example:
        >>> registered_model_name("smoke", "alpha=0.2,architecture=unet")
        'smoke.alpha-0.2.architecture-unet'
    """
    text = f"{study}.{cell}".replace("=", "-").replace(",", ".")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
