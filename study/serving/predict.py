"""`segstudy predict`: segment one image with a confirmed model and say how far to trust it.

The model comes from MLflow (a run id, runs:/ or models:/ URI). The printed JSON carries the
Dice lower bound at level 1 - alpha from the model's clean calibration stratum, and flags the
image out of domain when its noise (or, on texture data, its texture disparity) lies outside
what the calibration images showed: there the bound is not backed by calibration.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from study import metrics_names as M
from study import process_state
from study.conformal import image_noise, quality_score
from study.data import texture_disparity
from study.data.intensity import INTENSITY
from study.errors import SegstudyError, first_line
from study.paths import output_file
from study.serving.image_files import file_kind, read_input
from study.serving.inference import probabilities
from study.serving.mlflow_model import MODEL_ARTIFACT_PATH, package_dir
from study.serving.package import ModelPackage, load_package
from study.redact import mask_text, mask_uri
from study.tracking import reading_client

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def model_uri(model: str) -> str:
    """A bare run id becomes runs:/<id>/model; runs:/ and models:/ URIs pass through."""
    if _RUN_ID.match(model):
        return f"runs:/{model}/{MODEL_ARTIFACT_PATH}"
    if model.startswith(("runs:/", "models:/")):
        return model
    raise SegstudyError(
        f"--model {model!r}: accepted: a run id (32 hex digits), runs:/RUN_ID/model, models:/NAME/VERSION or models:/NAME@ALIAS"
    )


def fetch_package(model: str, *, tracking_uri: str) -> ModelPackage:
    """Download the model from MLflow and load it (weights checked against the architecture)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = model_uri(model)
    process_state.quiet_artifact_downloads()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            source = registered_source(uri, tracking_uri=tracking_uri)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri))
        except (MlflowException, OSError) as exc:
            first = first_line(exc)
            raise SegstudyError(
                f"--model {model}: no logged model at {uri} in {mask_uri(tracking_uri)} ({mask_text(first, tracking_uri)}); "
                "confirm runs log one under 'model'"
            ) from None
        folder = package_dir(local)
        if not folder.is_dir():
            raise SegstudyError(f"--model {model}: {uri} is not a segstudy model (no artifacts/package)")
        return load_package(folder)


def registered_source(uri: str, *, tracking_uri: str) -> str:
    """The runs:/ URI behind models:/NAME/VERSION (or models:/NAME@ALIAS) in this server's registry.

    MLflow resolves models:/ against its process-global registry URI and ignores the
    `tracking_uri` argument; setting the global from a library call would redirect every later
    MlflowClient in the caller's process, so the version is looked up with a client instead.
    """
    if not uri.startswith("models:/"):
        return uri
    client = reading_client(tracking_uri)
    name_version = uri.removeprefix("models:/")
    if "@" in name_version:
        name, alias = name_version.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, _, number = name_version.rpartition("/")
        version = client.get_model_version(name, number)
    # A version is only a confirmed model if its run finished: a driver killed between
    # registering and closing the run leaves a version whose run resume discards.
    run = client.get_run(version.run_id) if version.run_id else None
    if run is None or run.info.lifecycle_stage == "deleted" or run.info.status != "FINISHED":
        state = "missing" if run is None else f"{run.info.status}, {run.info.lifecycle_stage}"
        raise SegstudyError(
            f"--model {uri}: version {version.version} belongs to run {version.run_id} ({state}), not a finished "
            "confirm run; pick another version"
        )
    return version.source


def predict(model: str, input_path: Path, output_path: Path, *, tracking_uri: str, risk_controlled: bool = False) -> dict[str, Any]:
    """Segment `input_path` into `output_path`; return the JSON-ready confidence record."""
    model_uri(model)  # a malformed --model fails first, before any file is read
    output_file(output_path, option="--output", what="mask file")  # not a folder; its folder can be made
    in_kind = file_kind(input_path, option="--input")
    if file_kind(output_path, option="--output") != in_kind:
        suffix = ".nii.gz" if in_kind == "nifti" else ".png"
        raise SegstudyError(f"--output {output_path}: write the mask of --input {input_path} in its format ({suffix})")
    source = read_input(input_path)  # bad input fails before anything is downloaded
    package = fetch_package(model, tracking_uri=tracking_uri)
    prep, calibration = package.preprocessing, package.calibration
    if source.spatial_dims != prep.spatial_dims:
        raise SegstudyError(
            f"--input {input_path}: a {source.spatial_dims}D image for a {prep.spatial_dims}D model; "
            + ("accepted: a PNG or a one-slice NIfTI" if prep.spatial_dims == 2 else "accepted: a 3D NIfTI volume")
        )
    image = INTENSITY[prep.intensity](source.image)
    prob = probabilities(package, image, where=f"--input {input_path}")
    clean = calibration.stratum(M.CLEAN)
    threshold = prep.threshold
    if risk_controlled:
        if clean.fnr_threshold is None:
            raise SegstudyError(f"--risk-controlled: model {model} has no FNR threshold (its calibration masks were empty)")
        threshold = clean.fnr_threshold
    mask = prob[0] > threshold
    output_path.parent.mkdir(parents=True, exist_ok=True)
    source.write_mask(mask, output_path)

    score = quality_score(prob, threshold=prep.threshold)
    noise = image_noise(image)
    reasons = []
    if not clean.noise_range[0] <= noise <= clean.noise_range[1]:
        reasons.append(f"noise sigma {noise:.4g} outside calibrated [{clean.noise_range[0]:.4g}, {clean.noise_range[1]:.4g}]")
    td = None
    hard = prob[0] > prep.threshold
    if prep.td_defined and clean.td_range is not None and 0 < hard.sum() < hard.size:
        td = texture_disparity(image[0], hard.astype(np.uint8))
        if not clean.td_range[0] <= td <= clean.td_range[1]:
            reasons.append(f"texture disparity {td:.4g} outside calibrated [{clean.td_range[0]:.4g}, {clean.td_range[1]:.4g}]")
    return {
        "model": model,
        "input": str(input_path),
        "output": str(output_path),
        "dice_lower_bound": calibration.bound(score, M.CLEAN),
        "level": calibration.level,
        "quality_score": score,
        "calibration_images": clean.n,
        "out_of_domain": bool(reasons),
        "out_of_domain_reasons": reasons,
        "noise_sigma": noise,
        "texture_disparity": td,
        "mask_threshold": threshold,
        "fnr_threshold": clean.fnr_threshold,
        "fnr_alpha": calibration.fnr_alpha,
        "foreground_voxels": int(mask.sum()),
    }
