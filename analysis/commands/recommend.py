"""`segstudy recommend`: which architecture won where the user's own data lie.

The user's labelled images are measured the way the study measured its own: texture disparity
(the complexity axis, docs/ARCHITECTURE.md 4.1) and a noise estimate (placed on the Gaussian-noise severity
axis). The nearest studied complexity level and severity pick the condition; the arms' paired
per-image Dice there says who won, by how much and whether the win is significant: the interval
and p-value of the winner minus the runner-up come from the study's one inference
(`analysis.stats.core.inference`: seeds the replicates, images repeated measures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from skimage import io as skio
from skimage.restoration import estimate_sigma

from analysis.read.runs import load_per_image, load_trials, not_learned_trials
from analysis.stats.core.contrasts import frame_contrast
from study import metrics_names as M
from study.data import texture_disparity
from study.errors import SegstudyError, first_line
from study.perturbations import get_perturbation

NOISE = "gaussian_noise"
SUFFIXES = (".png", ".nii.gz", ".nii")


@dataclass(frozen=True)
class Measured:
    n_images: int
    td: float
    noise_sigma: float


def _read(path: Path) -> np.ndarray:
    """The image as float32, 2D or 3D; a file that is not what its name says is the user's to fix."""
    kind = "NIfTI" if path.name.endswith((".nii.gz", ".nii")) else "PNG"
    try:
        if kind == "NIfTI":
            image = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        else:
            image = np.asarray(skio.imread(str(path)), dtype=np.float32)
            image = image if image.ndim == 2 else image[..., :3].mean(axis=-1)
    except Exception as exc:  # noqa: BLE001 - every reader error means "not a readable image"
        first = first_line(exc, limit=150)
        raise SegstudyError(f"--data {path}: cannot read as {kind} ({first})") from None
    if image.ndim not in (2, 3) or not np.isfinite(image).all():
        raise SegstudyError(f"--data {path}: need a finite 2D or 3D image, got shape {image.shape}")
    return image


def _as_2d(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3D volume is measured on its slice with the most foreground."""
    if image.ndim == 3:
        z = int(np.argmax(mask.reshape(-1, mask.shape[-1]).sum(axis=0)))
        return image[..., z], mask[..., z]
    return image, mask


def measure_folder(folder: Path) -> Measured:
    """Mean TD and noise sigma of every `<id>_image.*` / `<id>_mask.*` pair in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SegstudyError(f"--data {folder}: not a folder")
    pairs = []
    for image_path in sorted(folder.rglob("*_image*")):
        suffix = next((s for s in SUFFIXES if image_path.name.endswith(s)), None)
        if suffix is None:
            continue
        mask_path = image_path.with_name(image_path.name.replace("_image", "_mask"))
        if not mask_path.is_file():
            raise SegstudyError(f"{image_path}: no mask beside it (expected {mask_path.name})")
        pairs.append((image_path, mask_path))
    if not pairs:
        raise SegstudyError(
            f"--data {folder}: no labelled images found; expected pairs <id>_image.png|.nii.gz and <id>_mask.png|.nii.gz"
        )
    tds, sigmas = [], []
    for image_path, mask_path in pairs:
        image, mask = _as_2d(_read(image_path), _read(mask_path) > 0)
        if image.shape != mask.shape:
            raise SegstudyError(f"{image_path}: image shape {image.shape} differs from its mask's {mask.shape}")
        lo, hi = np.percentile(image, [0.5, 99.5])
        scaled = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)  # the study's intensity range
        tds.append(texture_disparity(scaled, mask))
        sigmas.append(float(estimate_sigma(scaled)))
    return Measured(n_images=len(pairs), td=float(np.nanmean(tds)), noise_sigma=float(np.median(sigmas)))


def noise_severity(sigma: float) -> int:
    """The Gaussian-noise severity whose std is nearest the estimate (0 = below half of level 1)."""
    levels = np.asarray(get_perturbation(NOISE).levels, dtype=float)
    if sigma < levels[0] / 2:
        return 0
    return int(np.argmin(np.abs(levels - sigma))) + 1


def recommend(experiment: str, *, data: Path, tracking_uri: str) -> dict:
    """Place the user's data on the study's axes and report the winning arm there.

    Returns:
        A dict with the measurements, the matched condition, the winner, its margin over the
        runner-up with its 95% interval and p-value, and any warnings.
    """
    measured = measure_folder(data)
    trials = load_trials(experiment, tracking_uri=tracking_uri)
    per_image = load_per_image(trials, tracking_uri=tracking_uri)
    warnings: list[str] = []
    clean = per_image[per_image["condition"] == M.CLEAN]
    level_cols = [c for c in ("alpha",) if c in per_image.columns]
    if level_cols and clean["td"].notna().any():
        td_by_level = clean.groupby("alpha")["td"].mean()
        alpha = float((td_by_level - measured.td).abs().idxmin())
        lo, hi = float(td_by_level.min()), float(td_by_level.max())
        if not lo <= measured.td <= hi:
            warnings.append(f"your texture disparity {measured.td:.2f} lies outside the study's range [{lo:.2f}, {hi:.2f}]")
        subset = per_image[per_image["alpha"] == alpha]
    else:
        alpha, subset = None, per_image
        warnings.append("the study has no complexity factor with measured texture disparity; complexity not matched")
    severity = noise_severity(measured.noise_sigma)
    condition = M.CLEAN if severity == 0 else M.condition_name(NOISE, severity)
    if condition not in set(subset["condition"]):
        parsed = (M.parse_condition(c) for c in set(subset["condition"]))
        studied = sorted(s for name, s in parsed if name == NOISE)
        if severity > 0 and studied:
            nearest = min(studied, key=lambda s: abs(s - severity))
            warnings.append(f"noise severity {severity} was not studied; using the nearest, {nearest}")
            condition = M.condition_name(NOISE, nearest)
        else:
            warnings.append(f"the study has no {NOISE} conditions; your noise (sigma {measured.noise_sigma:.3f}) is not matched")
            condition = M.CLEAN
    if severity == 5 and measured.noise_sigma > get_perturbation(NOISE).levels[-1] * 1.5:
        warnings.append(f"your noise (sigma {measured.noise_sigma:.3f}) exceeds the strongest studied level")
    rows = subset[subset["condition"] == condition]
    not_learned = _not_learned(trials, rows)
    if not_learned:
        warnings.append(
            f"{len(not_learned)} trial(s) behind this ranking did not learn ({', '.join(not_learned)}); "
            "the winner below is not a finding"
        )
    return {
        "experiment": experiment,
        "measured": {"n_images": measured.n_images, "td": measured.td, "noise_sigma": measured.noise_sigma},
        "matched": {"alpha": alpha, "condition": condition},
        **_winner(rows),
        "not_learned": not_learned,
        "warnings": warnings,
    }


def _not_learned(trials: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """'cell seed=S' of the trials behind `rows` that the learning gate rejected."""
    bad = not_learned_trials(trials)
    used = bad[bad["run_id"].isin(set(rows["run_id"]))]
    return [f"{r.cell} seed={r.seed}" for r in used.itertuples()]


def _winner(rows: pd.DataFrame) -> dict:
    ranking = rows.groupby(["architecture", "image_id"])["dice"].mean().groupby("architecture").mean()
    ranking = ranking.sort_values(ascending=False)
    if len(ranking) < 2:
        return {"winner": str(ranking.index[0]), "dice": float(ranking.iloc[0]), "runner_up": None}
    best, second = str(ranking.index[0]), str(ranking.index[1])
    est = frame_contrast(rows, [({"architecture": best}, 1.0), ({"architecture": second}, -1.0)])
    return {
        "winner": best,
        "dice": float(ranking.iloc[0]),
        "runner_up": second,
        "margin": est.estimate,
        "margin_ci95": [est.ci_low, est.ci_high],
        "p": est.p,
        "n_seeds": est.n_seeds,
        "significant": est.significant,
    }