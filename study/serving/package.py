"""A model package: weights, architecture, preprocessing and conformal calibration in one folder.

Everything `segstudy predict` needs travels with the weights, so a model from the registry is
applied exactly as it was trained and tested: same network, same intensity normalisation, same
sliding window, same threshold, same calibration. Weights load with `weights_only=True`
(study.training.checkpoints) and must match the recorded architecture key for key and shape for shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from torch import nn

from study.training.checkpoints import WEIGHTS_FILE, load_weights, save_weights
from study.conformal import Calibration
from study.errors import SegstudyError
from study.strict import StrictRecord
from study.models import CONFIG_CLASSES, build_network

ARCHITECTURE_FILE = "architecture.json"
PREPROCESSING_FILE = "preprocessing.json"
CALIBRATION_FILE = "calibration.json"
PACKAGE_FILES = (WEIGHTS_FILE, ARCHITECTURE_FILE, PREPROCESSING_FILE, CALIBRATION_FILE)


class Preprocessing(StrictRecord):
    """How the model saw its images: shape, normalisation, inference window, threshold."""

    spatial_dims: Literal[2, 3]
    in_channels: int = Field(gt=0)
    img_size: list[int] = Field(description="network input size the model was built for")
    intensity: str = Field(description="study.data.intensity.INTENSITY name")
    patch_size: int | None = Field(None, description="sliding-window inference when set, else whole images")
    sw_batch_size: int = 4
    overlap: float = 0.25
    threshold: float = Field(gt=0, lt=1)
    td_defined: bool = Field(description="texture disparity is measured (2D texture data)")
    spacing: list[float]


@dataclass
class ModelPackage:
    network: nn.Module
    architecture: Any
    preprocessing: Preprocessing
    calibration: Calibration
    directory: Path


def write_package(
    directory: Path,
    *,
    state_dict: dict[str, Any],
    architecture: BaseModel,
    preprocessing: Preprocessing,
    calibration: Calibration,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(state_dict, directory / WEIGHTS_FILE)
    (directory / ARCHITECTURE_FILE).write_text(json.dumps(architecture.model_dump(mode="json"), indent=2))
    (directory / PREPROCESSING_FILE).write_text(preprocessing.model_dump_json(indent=2))
    (directory / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict(), indent=2))


def load_package(directory: Path) -> ModelPackage:
    """Read and check a package folder and build its network with the saved weights.

    Raises:
        SegstudyError: naming the file when one is missing or malformed, or when the weights do
            not fit the architecture recorded beside them.
    """
    missing = [name for name in PACKAGE_FILES if not (directory / name).is_file()]
    if missing:
        raise SegstudyError(f"{directory}: not a segstudy model package, missing {', '.join(missing)}")
    architecture = _architecture(directory / ARCHITECTURE_FILE)
    preprocessing = _parse(Preprocessing, directory / PREPROCESSING_FILE)
    calibration = Calibration.from_json((directory / CALIBRATION_FILE).read_text(), where=str(directory / CALIBRATION_FILE))
    try:
        network = build_network(
            architecture,
            spatial_dims=preprocessing.spatial_dims,
            in_channels=preprocessing.in_channels,
            out_channels=1,
            img_size=preprocessing.img_size,
        )
    except ValueError as exc:
        raise SegstudyError(f"{directory / PREPROCESSING_FILE}: cannot build the network ({exc})") from None
    state = load_weights(directory / WEIGHTS_FILE)
    problem = _mismatch(network, state)
    if problem:
        raise SegstudyError(
            f"{directory / WEIGHTS_FILE}: weights do not match the {architecture.kind} architecture in "
            f"{ARCHITECTURE_FILE} ({problem}); the checkpoint belongs to another model"
        )
    network.load_state_dict(state)
    network.eval()
    return ModelPackage(network, architecture, preprocessing, calibration, directory)


def _architecture(path: Path) -> Any:
    try:
        raw = json.loads(path.read_text())
        cls = CONFIG_CLASSES[raw["kind"]]
    except (ValueError, KeyError, TypeError):
        raise SegstudyError(
            f"{path}: not an architecture record; accepted kinds: {', '.join(sorted(CONFIG_CLASSES))}"
        ) from None
    return _validate(cls, raw, path)


def _parse(cls: type[BaseModel], path: Path) -> Any:
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise SegstudyError(f"{path}: not JSON ({exc})") from None
    return _validate(cls, raw, path)


def _validate(cls: type[BaseModel], raw: Any, path: Path) -> Any:
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise SegstudyError(f"{path}: {where}: {err['msg']}") from None


def _mismatch(network: nn.Module, state: dict[str, Any]) -> str | None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        return "; ".join(parts)
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            return f"{key}: checkpoint shape {tuple(state[key].shape)}, architecture needs {tuple(tensor.shape)}"
    return None
