"""The smoke study end to end on a real Ray head: trials, MLflow runs, artifacts, analysis."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMOKE, run_app, run_cli
from study import metrics_names as M
from study.run.driver.engine import run_study
from study.conformal.calibrate import BOUND, BOUND_COLUMNS, COVERED
from study.errors import SegstudyError
from study.serving.mlflow_model import registered_model_name
from study.serving.predict import registered_source

pytestmark = pytest.mark.slow

CELLS = {
    "alpha=0.2,architecture=noskip_unet",
    "alpha=0.2,architecture=unet",
    "alpha=0.6,architecture=noskip_unet",
    "alpha=0.6,architecture=unet",
}


def trial_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")


def per_image(client: MlflowClient, run_id: str, tmp_path) -> pd.DataFrame:
    local = client.download_artifacts(run_id, M.PER_IMAGE_FILE, str(tmp_path))
    return pd.read_csv(local)


def check_bounds(client: MlflowClient, run, full: pd.DataFrame, tmp_path) -> None:
    """Conformal columns, per-stratum coverage, and the run's registered model."""
    assert full[BOUND].between(0, 1).all() and list(full[COVERED]) == list(full["dice"] >= full[BOUND] - 1e-12)
    coverage = pd.read_csv(client.download_artifacts(run.info.run_id, M.COVERAGE_FILE, str(tmp_path)))
    assert len(coverage) == 10 and (coverage["target"] == 0.9).all() and (coverage["n"] == 8).all()
    clean = coverage.set_index("condition").loc[M.CLEAN]
    assert clean["coverage"] == pytest.approx(full[full["condition"] == M.CLEAN][COVERED].mean())
    assert run.data.metrics["coverage/clean"] == pytest.approx(clean["coverage"])
    assert "coverage/gaussian_noise/5" in run.data.metrics and "test_fnr/clean" in run.data.metrics
    name = registered_model_name("smoke", run.data.tags[M.CELL_TAG])
    versions = client.search_model_versions(f"name='{name}'")
    assert [v.run_id for v in versions] == [run.info.run_id] and versions[0].tags[M.SEED_TAG] == "0"
    assert {"MLmodel", "artifacts"} <= {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "model")}


def check_smoke_runs(uri: str, tmp_path) -> list:
    """Assertions shared by the local and the job-submission run of the smoke study."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    studies = client.search_runs([exp.experiment_id], filter_string=f"tags.`{M.ROLE_TAG}` = '{M.ROLE_STUDY}'")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"
    parent = studies[0].info.run_id
    import torch  # noqa: PLC0415 - only for the version check

    assert json.loads(studies[0].data.tags[M.VERSIONS_TAG])["torch"] == torch.__version__
    assert studies[0].data.params["data_seed"] == "0" and studies[0].data.params["perturbation_seed"] == "0"
    data = pd.read_csv(client.download_artifacts(parent, "data_summary.csv", str(tmp_path)))
    assert len(data) == 8 and set(data["alpha"]) == {0.2, 0.6}  # 4 splits x 2 levels
    test_td = data[data["split"] == "test"].set_index("alpha")["td_mean"]
    assert test_td[0.2] > test_td[0.6]
    runs = trial_runs(client, "smoke")
    assert {r.data.tags[M.CELL_TAG] for r in runs} == CELLS
    frames = {}
    for r in runs:
        tags, params, metrics = r.data.tags, r.data.params, r.data.metrics
        assert r.info.status == "FINISHED"
        assert tags[M.PARENT_TAG] == parent
        assert tags[M.PHASE_TAG] == M.PHASE_CONFIRM and tags[M.SEED_TAG] == "0"
        assert tags[M.TRIAL_KEY_TAG] == f"confirm|{tags[M.CELL_TAG]}|seed=0"
        assert set(json.loads(tags[M.VERSIONS_TAG])) >= {"python", "torch", "monai", "ray", "optuna", "mlflow"}
        assert json.loads(tags[M.FACTORS_TAG]) == ["alpha", "architecture"]
        assert params["architecture"] in {"unet", "noskip_unet"} and params["alpha"] in {"0.2", "0.6"}
        assert params["lr"] == "0.01" and params["batch_size"] == "6" and params["seed"] == "0"
        history = client.get_metric_history(r.info.run_id, M.VAL_DICE)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 31))
        assert 0.0 <= metrics[M.TEST_DICE] <= 1.0 and 0.0 <= metrics[M.TEST_NSD] <= 1.0
        assert metrics[M.TEST_HD95] >= 0.0 and metrics[M.TEST_TD] > 0.0
        # The learning gate's verdict on every confirm run; a "false" always says why.
        assert tags[M.LEARNED_TAG] in {"true", "false"}
        assert (M.LEARNING_ISSUE_TAG in tags) == (tags[M.LEARNED_TAG] == "false")
        full = per_image(client, r.info.run_id, tmp_path / r.info.run_id)
        assert list(full.columns) == [*M.PER_IMAGE_COLUMNS, M.PERTURBATION_PARAMS, *BOUND_COLUMNS]
        assert len(full) == 8 * (1 + 3 * 3)  # clean + 3 perturbations x 3 severities
        check_bounds(client, r, full, tmp_path / r.info.run_id)
        table = full[full["condition"] == M.CLEAN]
        # Final metrics are exactly the means of the per-image table (no NaN silently dropped).
        assert table["dice"].mean() == pytest.approx(metrics[M.TEST_DICE], abs=1e-6)
        assert full["hd95"].notna().all() and full["assd"].notna().all()
        noisy = full[full["condition"] == "gaussian_noise:5"]
        assert metrics["test_dice/gaussian_noise/5"] == pytest.approx(noisy["dice"].mean(), abs=1e-6)
        frames[tags[M.CELL_TAG]] = full
    # Paired test sets: both arms at one alpha saw the same images with the same TD.
    for alpha in ("0.2", "0.6"):
        a = frames[f"alpha={alpha},architecture=unet"]
        b = frames[f"alpha={alpha},architecture=noskip_unet"]
        assert list(a["image_id"]) == list(b["image_id"]) and list(a["td"]) == list(b["td"])
        assert list(a[M.PERTURBATION_PARAMS]) == list(b[M.PERTURBATION_PARAMS])  # identical corruptions
    clean = {k: v[v["condition"] == M.CLEAN] for k, v in frames.items()}
    assert clean["alpha=0.2,architecture=unet"]["td"].mean() > clean["alpha=0.6,architecture=unet"]["td"].mean()
    return runs


# What the issue tracker listed from a 2-core run: none of it may reach a study's console.
NOISE = (
    "Configuration for experiment", "View detailed results here", "Trial status", "FileNotFoundError",
    "Add type hints", "Token authentication", "Checkpoint successfully created", "Downloading artifacts",
    "Creating initial MLflow database tables", "Traceback",
)


def check_readme_searches(uri: str) -> None:
    """The README's MLflow UI search strings are valid filters that find what they say (the UI's
    search box takes MLflow's search_runs grammar)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("three searches that\ncompare cells directly:")[1].split("\n\n")[1]
    searches = [line.strip() for line in block.splitlines()]
    assert len(searches) == 3
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke").experiment_id
    level, cell, not_learned = (s.replace("0.9", "0.6") for s in searches)  # smoke's hard level is 0.6
    assert {r.data.tags[M.CELL_TAG] for r in client.search_runs([exp], level)} == {
        "alpha=0.6,architecture=unet", "alpha=0.6,architecture=noskip_unet"}
    assert [r.data.tags[M.CELL_TAG] for r in client.search_runs([exp], cell)] == ["alpha=0.6,architecture=noskip_unet"]
    # The filter finds the runs the learning gate rejected: every smoke model learned, so one run is
    # marked rejected for the search (and marked back), or the check could never fail.
    runs = client.search_runs([exp], level)
    marked = runs[0].info.run_id
    client.set_tag(marked, M.LEARNED_TAG, "false")
    try:
        assert [r.info.run_id for r in client.search_runs([exp], not_learned)] == [marked]
    finally:
        client.set_tag(marked, M.LEARNED_TAG, runs[0].data.tags[M.LEARNED_TAG])


def test_smoke_study_local(ray_head, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_app("run", str(SMOKE), "--address", ray_head.gcs_address, "--tracking-uri", uri,
                   "--storage", str(tmp_path / "results"), "--verbose", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "study 'smoke': 4/4 trials finished" in proc.stdout
    assert "Configuration for experiment" in proc.stdout and "Trial status" in proc.stdout  # --verbose: Tune's tables
    check_readme_searches(uri)
    study_run_id = re.search(r"MLflow run:\s+(\w+)", proc.stdout).group(1)  # the summary names it
    # MLflow 3 opens an experiment on its GenAI view unless the address asks for the runs.
    browse = re.search(r"browse:\s+(.*)", proc.stdout).group(1)
    assert browse.endswith(f"/runs/{study_run_id}?workflowType=machine_learning"), browse
    status = run_app("status", "smoke", "--tracking-uri", uri, cwd=tmp_path)
    assert f"/runs/{study_run_id}?workflowType=machine_learning" in status.stdout, status.stdout
    # Tune reads every trial's result.json when fit returns; without it, it logs a FileNotFoundError per trial.
    assert len(list((tmp_path / "results").rglob("result.json"))) == 4
    check_smoke_runs(uri, tmp_path)

    out = tmp_path / "analysis"
    proc = run_app("analyze", "--experiment", "smoke", "--out", str(out), "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and set(trials["architecture"]) == {"unet", "noskip_unet"}
    assert trials["learned"].all(), trials.to_string()  # smoke's levels are learnable: no statement is void
    # Findings: one sentence per alpha level (noskip_unet against the reference arm unet), printed too.
    found = pd.read_csv(out / "findings.csv")
    assert list(found["level"]) == ["alpha 0.2", "alpha 0.6"] and set(found["arm"]) == {"noskip_unet"}
    assert (found["n_seeds"] == 1).all() and (found["n_images"] == 8).all()
    # One seed per arm: a difference, but no interval or p-value (seeds are the replicates).
    assert found["ci_low"].isna().all() and found["p"].isna().all()
    assert all("(no interval or p-value: needs >= 2 seeds per cell)" in line for line in found["line"])
    for line in found["line"]:
        assert line.split("  [NOT LEARNED")[0] in proc.stdout
    png = (out / "dice_vs_complexity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # The report: every section, figures embedded, logged to the study run.
    proc = run_app("report", "--experiment", "smoke", "--out", str(tmp_path / "report"), "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "report" / "report.html").read_text()
    for section in ("findings", "design", "versions", "perturbations", "conditions", "statistics", "plots", "confidence"):
        assert f'id="{section}"' in html
    assert html.index('id="findings"') < html.index('id="design"')  # the report opens with its findings
    assert 'id="findings-lines"' in html and (tmp_path / "report" / "learning_curves.png").is_file()
    assert "Measured coverage (images) on the" in html  # the section has its table, not the empty note
    coverage = pd.read_csv(tmp_path / "report" / "coverage.csv")
    assert len(coverage) == 2 * 2 * 10 and (coverage["target"] == 0.9).all()  # alpha x arm x condition
    assert html.count("data:image/png;base64,") >= 4
    assert re.search(r'id="mlflow-link">[^<]*#/experiments/\d+/runs/\w+\?workflowType=machine_learning', html)
    arms = re.search(r'<table id="arms">(.*?)</table>', html, flags=re.S).group(1)  # the design lists every arm's size
    assert re.search(r"<td>noskip_unet</td>\s*<td>unet</td>\s*<td>[\d,]+</td>", arms), arms
    client = MlflowClient(tracking_uri=uri)
    assert "report/report.html" in [a.path for a in client.list_artifacts(study_run_id, "report")]

    # Recommend for "user data": the study's own alpha=0.2 images exported as PNG pairs.
    exported = tmp_path / "user_data"
    assert run_app("data", "synth", str(SMOKE), "--out", str(exported), cwd=tmp_path).returncode == 0
    proc = run_app("recommend", "--experiment", "smoke", "--data", str(exported / "alpha=0.2" / "test"),
                   "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    advice = json.loads(proc.stdout)
    assert advice["matched"]["alpha"] == 0.2 and advice["winner"] in {"unet", "noskip_unet"}
    # One seed per arm: a margin, but no interval and no significance (seeds are the replicates).
    assert math.isfinite(advice["margin"]) and all(math.isnan(v) for v in advice["margin_ci95"])
    assert advice["significant"] is False and advice["n_seeds"] == 1

    check_predict_2d(uri, tmp_path)


def check_predict_2d(uri: str, tmp_path) -> None:
    """`segstudy predict` on a study image: the mask the trial scored, its bound, the registry URI."""
    client = MlflowClient(tracking_uri=uri)
    run = next(r for r in trial_runs(client, "smoke") if r.data.tags[M.CELL_TAG] == "alpha=0.2,architecture=unet")
    table = per_image(client, run.info.run_id, tmp_path / "p2d")
    exported = tmp_path / "nifti_data"
    assert run_app("data", "synth", str(SMOKE), "--out", str(exported), "--format", "nifti", cwd=tmp_path).returncode == 0
    image_id = table["image_id"].iloc[0]
    image = exported / "alpha=0.2" / "test" / f"{image_id}_image.nii.gz"
    out = tmp_path / "pred" / "mask.nii.gz"
    proc = run_cli("predict", "--model", run.info.run_id, "--input", str(image), "--output", str(out),
                   "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    row = table[(table["image_id"] == image_id) & (table["condition"] == M.CLEAN)].iloc[0]
    assert result["level"] == pytest.approx(0.9)
    # The same model, preprocessing and calibration as in the trial: the same score and bound.
    assert result["quality_score"] == pytest.approx(row["quality_score"], abs=1e-6)
    assert result["dice_lower_bound"] == pytest.approx(row[BOUND], abs=1e-6)
    mask = np.asarray(nib.load(out).dataobj)
    truth = np.asarray(nib.load(str(image).replace("_image", "_mask")).dataobj) > 0
    assert mask.shape == truth.shape and set(np.unique(mask)) <= {0, 1}
    dice = 2 * np.sum((mask > 0) & truth) / max(np.sum(mask > 0) + np.sum(truth), 1)
    assert dice == pytest.approx(row["dice"], abs=1e-6)
    assert np.allclose(nib.load(out).affine, nib.load(image).affine)

    name = registered_model_name("smoke", "alpha=0.2,architecture=unet")
    proc = run_app("predict", "--model", f"models:/{name}/1", "--input", str(image), "--output", str(tmp_path / "m2.nii.gz"),
                   "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # In this process torch may use other thread counts than the CLI did: equal up to float summation order.
    assert json.loads(proc.stdout)["dice_lower_bound"] == pytest.approx(result["dice_lower_bound"], abs=1e-6)
    # The registry was read through a client, not MLflow's process-wide registry URI: a client of
    # another store still sees its own (empty) registry.
    assert MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}").search_registered_models() == []
    client.set_registered_model_alias(name, "champion", "1")
    assert registered_source(f"models:/{name}@champion", tracking_uri=uri) == f"runs:/{run.info.run_id}/model"
    proc = run_app("predict", "--model", run.info.run_id, "--input", str(image), "--output", str(tmp_path / "m.png"),
                   "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--output" in proc.stderr and ".nii.gz" in proc.stderr

    # Images the model cannot take: every refusal names the input file (issue 22).
    from PIL import Image

    odd = tmp_path / "odd.png"
    Image.fromarray(np.zeros((33, 31), np.uint8)).save(odd)
    two = tmp_path / "two_channels.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 1, 2), np.float32), np.eye(4)), two)
    for bad, expected in ((odd, "image of spatial size [33, 31]: this U-Net needs every patch/image dimension to be "
                                "a multiple of 4"), (two, "does not suit a 2D model with 1 input channel(s)")):
        out_path = tmp_path / ("bad.png" if bad.suffix == ".png" else "bad.nii.gz")
        proc = run_app("predict", "--model", run.info.run_id, "--input", str(bad), "--output", str(out_path),
                       "--tracking-uri", uri, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert proc.stderr.startswith(f"error: --input {bad}: ") and expected in proc.stderr, proc.stderr
        assert not out_path.exists()


def test_gpu_request_on_cpu_cluster_is_refused_before_any_run(ray_head, write_spec, tmp_path):
    spec = write_spec(resources__gpu=1)
    uri = f"sqlite:///{tmp_path / 'gpu.db'}"
    with pytest.raises(SegstudyError, match=r"resources.gpu: 1 per trial requested, but the largest node .* has 0 GPU"):
        run_study(spec, address=ray_head.gcs_address, tracking_uri=uri, storage=tmp_path / "r")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    assert exp is None or client.search_runs([exp.experiment_id]) == []
    assert not (tmp_path / "r").exists()


def test_submit_smoke_study_as_ray_job(ray_head, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(
        "submit", "search_spaces/smoke.yaml", "--address", ray_head.dashboard_url,
        "--tracking-uri", uri, "--storage", str(tmp_path / "results"),
        cwd=ROOT, env=ray_head.env, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SUCCEEDED" in proc.stdout
    assert "4/4 trials finished" in proc.stdout  # the job's own log, streamed back
    check_smoke_runs(uri, tmp_path)
    # The job's log is what a researcher reads: a line per trial and the summary, no library noise.
    log = proc.stdout + proc.stderr
    for cell in CELLS:
        assert f"{cell} seed=0: done, val " in log
    assert "[confirm 4/4] " in log
    assert "study 'smoke': mean clean test Dice per cell over confirm seeds" in log
    for line in ("findings per level, exploratory (", "report:       ", "MLflow run:   ", "study folder: ", "browse:       mlflow ui"):
        assert line in log
    for noise in NOISE:
        assert noise not in log, noise
    folder = next((tmp_path / "results").glob("smoke-*"))
    assert (folder / "segstudy.log").stat().st_size > 0  # ... it went to the study's log file instead
    # The study run carries the summary table, the plots and the report as soon as the study ends.
    client = MlflowClient(tracking_uri=uri)
    study_run = client.search_runs([client.get_experiment_by_name("smoke").experiment_id],
                                   filter_string=f"tags.`{M.ROLE_TAG}` = '{M.ROLE_STUDY}'")[0]
    summary = {f.path for f in client.list_artifacts(study_run.info.run_id, "summary")}
    assert {"summary/study_summary.csv", "summary/dice_vs_complexity.png", "summary/findings.csv"} <= summary
    assert "report/report.html" in {f.path for f in client.list_artifacts(study_run.info.run_id, "report")}


def test_smoke_tuning_study_tunes_each_cell_then_confirms_and_replicates(ray_head, tmp_path):
    import optuna

    from analysis.read.runs import load_trials
    from analysis.commands.status import study_status
    from conftest import SMOKE_TUNING

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(SMOKE_TUNING, address=ray_head.gcs_address, tracking_uri=uri, storage=tmp_path / "results")
    assert result.ok and result.n_trials == 4 * 4 + 4 * 3
    client = MlflowClient(tracking_uri=uri)
    study_run = client.get_run(result.study_run_id)
    chosen = json.loads(study_run.data.tags["segstudy.chosen"])
    assert set(chosen) == CELLS and all(set(v) == {"lr", "batch_size"} for v in chosen.values())

    runs = trial_runs(client, "smoke_tuning")
    tune_runs = [r for r in runs if r.data.tags[M.PHASE_TAG] == M.PHASE_TUNE]
    confirm_runs = [r for r in runs if r.data.tags[M.PHASE_TAG] == M.PHASE_CONFIRM]
    assert len(tune_runs) == 16 and len(confirm_runs) == 12
    assert any(r.data.tags["segstudy.stopped_early"] == "true" for r in tune_runs)
    assert all(M.TEST_DICE not in r.data.metrics for r in tune_runs)  # the test split is for confirm only
    for r in confirm_runs:  # every seed of a cell retrains exactly the chosen configuration
        cell = r.data.tags[M.CELL_TAG]
        assert float(r.data.params["lr"]) == pytest.approx(chosen[cell]["lr"])
        assert int(r.data.params["batch_size"]) == chosen[cell]["batch_size"]
    assert sorted(r.data.tags[M.SEED_TAG] for r in confirm_runs) == sorted(["0", "1", "2"] * 4)

    storage = f"sqlite:///{result.storage_path / 'optuna.db'}"
    summaries = optuna.get_all_study_summaries(storage)
    assert sorted(s.study_name for s in summaries) == sorted(f"smoke_tuning/{c}" for c in CELLS)
    assert all(s.n_trials == 4 for s in summaries)
    history = lambda run: [m.value for m in client.get_metric_history(run.info.run_id, M.VAL_DICE)]  # noqa: E731
    for cell, params in chosen.items():  # the chosen config is that cell's best full-length trial
        study = optuna.load_study(study_name=f"smoke_tuning/{cell}", storage=storage)
        assert study.best_trial.params == params
        # ... whose training the confirm trial of the tuning seed restores instead of repeating it
        # (study.training.reuse): the same epochs in MLflow, tagged with the trial that trained them.
        (seed0,) = [r for r in confirm_runs if r.data.tags[M.CELL_TAG] == cell and r.data.tags[M.SEED_TAG] == "0"]
        key = f"tune|{cell}|optuna={study.best_trial.number}"
        assert seed0.data.tags[M.TRAINED_IN_TAG] == key
        (tuned,) = [r for r in tune_runs if r.data.tags[M.TRIAL_KEY_TAG] == key]
        assert history(seed0) == history(tuned) and len(history(seed0)) == 20
    assert sum(M.TRAINED_IN_TAG in r.data.tags for r in confirm_runs) == 4  # seeds 1 and 2 train
    full_length = [r for r in tune_runs if r.data.tags["segstudy.stopped_early"] == "false"]
    assert len(list((result.storage_path / "kept_training").glob("*.pt"))) == len(full_length)

    status = study_status("smoke_tuning", tracking_uri=uri)
    tune_rows = status[status["phase"] == "tune"]
    assert list(tune_rows["done"] + tune_rows["stopped_early"]) == [4, 4, 4, 4]
    assert (status[status["phase"] == "confirm"]["done"] == 3).all()
    assert len(load_trials("smoke_tuning", tracking_uri=uri)) == 12  # analysis reads confirm runs only

    # A replicate: the confirm phase again under new seeds, with the chosen hyperparameters, as a
    # study of its own in the same experiment; refused (exit 2, one line) with a seed already trained.
    env = {**ray_head.env, "MLFLOW_TRACKING_URI": uri}
    folder = str(result.storage_path)
    refused = run_cli("replicate", folder, "--seeds", "2,5", "--address", ray_head.gcs_address, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--seeds: 2 already trained in smoke_tuning-" in refused.stderr and "e.g. --seeds 3,4" in refused.stderr
    proc = run_cli("replicate", folder, "--seeds", "3,4", "--address", ray_head.gcs_address, cwd=tmp_path, env=env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    experiment = client.get_experiment_by_name("smoke_tuning").experiment_id
    studies = client.search_runs([experiment], filter_string=f"tags.`{M.ROLE_TAG}` = '{M.ROLE_STUDY}'")
    (replica,) = [r for r in studies if r.info.run_id != result.study_run_id]
    assert replica.data.tags[M.REPLICATE_OF_TAG] == result.study_run_id and replica.info.status == "FINISHED"
    assert json.loads(replica.data.tags["segstudy.chosen"]) == chosen
    again = [r for r in trial_runs(client, "smoke_tuning") if r.data.tags[M.PARENT_TAG] == replica.info.run_id]
    assert sorted(r.data.tags[M.SEED_TAG] for r in again) == sorted(["3", "4"] * 4)  # no tuning, new seeds
    assert re.search(r"^8 trials \(4 cells x 2 seeds\); about ", proc.stdout, re.M), proc.stdout[:2000]  # no tuning planned
    for r in again:
        assert float(r.data.params["lr"]) == pytest.approx(chosen[r.data.tags[M.CELL_TAG]]["lr"])
    heading = f"replication (study run {replica.info.run_id}, seeds 3, 4) of study run {result.study_run_id}:"
    assert heading in proc.stdout
    assert re.search(r"\n  \d+ of \d+ statements the original resolved were resolved again.*, \d+ contradictions?, ", proc.stdout)
    replica_folder = Path(replica.data.tags[M.STUDY_DIR_TAG])
    assert replica_folder.parent == result.storage_path.parent and replica_folder != result.storage_path
    agreement = pd.read_csv(replica_folder / "summary" / "replication.csv")
    assert set(agreement["agreement"]) <= {"both", "contradiction", "original only", "replicate only", "neither"}
    assert {"declared claim", "finding"} <= set(agreement["family"])
    # The original stays "the study": a replicate is read by its own run id, never as the latest.
    assert sorted(load_trials("smoke_tuning", tracking_uri=uri)["seed"].unique()) == [0, 1, 2]
    assert 'class="replication"' in (replica_folder / "report" / "report.html").read_text()


def test_smoke_3d_study_patches_and_sliding_window(ray_head, tmp_path):
    from conftest import SMOKE_3D

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(SMOKE_3D, address=ray_head.gcs_address, tracking_uri=uri, storage=tmp_path / "results")
    assert result.ok and result.n_trials == 8
    client = MlflowClient(tracking_uri=uri)
    runs = {r.data.tags[M.CELL_TAG]: r for r in trial_runs(client, "smoke_3d")}
    assert len(runs) == 8
    tables = {}
    for cell, r in runs.items():
        m = r.data.metrics
        assert {"patch_fg_q05", "patch_fg_q50", "patch_fg_q95", "patch_fg_mean", M.PEAK_MEMORY} <= set(m)
        assert m[M.PEAK_MEMORY] > 0 and M.TEST_TD not in m
        table = per_image(client, r.info.run_id, tmp_path / r.info.run_id)
        assert len(table) == 6 and (table["fbr"] > 0).all()  # 3 objects x 2 volume sizes
        patches = pd.read_csv(client.download_artifacts(r.info.run_id, M.PATCH_FG_FILE, str(tmp_path / r.info.run_id)))
        # 4 training volumes x 4 crops per epoch x 4 epochs; a 32^3 patch covers the 32^3 volume: one crop
        crops = 4 * (1 if "patch_size=32" in cell else 4) * 4
        assert len(patches) == crops
        assert np.quantile(patches["foreground_fraction"], 0.5) == pytest.approx(m["patch_fg_q50"])
        hist = pd.read_csv(client.download_artifacts(r.info.run_id, M.PATCH_FG_HIST_FILE, str(tmp_path / r.info.run_id)))
        assert hist["count"].sum() == crops and len(hist) == 20
        tables[cell] = table
    fbrs = {tuple(t["fbr"].round(9)) for t in tables.values()}
    assert len(fbrs) == 1  # every cell tested on the very same volumes
    # Same object in a larger volume: lower FBR (object size and FBR are separated).
    first = next(iter(tables.values()))
    assert first["fbr"].iloc[:3].min() > 0 and first["fbr"].max() / first["fbr"].min() > 2
    lo = runs["architecture=unet,patch_size=16,pos_fraction=0.25"].data.metrics["patch_fg_mean"]
    hi = runs["architecture=unet,patch_size=16,pos_fraction=0.75"].data.metrics["patch_fg_mean"]
    assert hi > lo  # more foreground-centred crops, more foreground seen in training
    run = runs["architecture=unet,patch_size=16,pos_fraction=0.75"]
    check_predict_3d(uri, run, tables["architecture=unet,patch_size=16,pos_fraction=0.75"], tmp_path)


def check_predict_3d(uri: str, run, table: pd.DataFrame, tmp_path) -> None:
    """A test volume saved left-right flipped (non-RAS affine, scaled header) goes through
    `segstudy predict`: the mask comes back on the input's grid, affine and header, and equals
    what the trial scored; a package whose weights do not fit its architecture is refused."""
    from conftest import SMOKE_3D

    from study.spec import load_spec
    from study.training.inputs.study_data import build_study_data

    test = build_study_data(load_spec(SMOKE_3D))[()].test
    i = 3  # test0000 in the 48^3 volume
    image, truth = test.volume(i)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = 40.0
    source = nib.Nifti1Image(image[0][::-1].copy(), affine)  # voxel axis 0 runs right-to-left
    source.header["descrip"] = b"segstudy predict round trip"
    path = tmp_path / "vol.nii.gz"
    nib.save(source, path)
    out = tmp_path / "vol_mask.nii.gz"
    proc = run_app("predict", "--model", run.info.run_id, "--input", str(path), "--output", str(out),
                   "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    written = nib.load(out)
    assert written.shape == image.shape[1:] and np.array_equal(written.affine, affine)
    assert written.header["descrip"] == source.header["descrip"] and written.get_data_dtype() == np.uint8
    mask = np.asarray(written.dataobj)[::-1] > 0  # back to the study's RAS grid
    gt = truth[0] > 0
    dice = 2 * np.sum(mask & gt) / max(np.sum(mask) + np.sum(gt), 1)
    row = table[(table["image_id"] == test.ids[i]) & (table["condition"] == M.CLEAN)].iloc[0]
    assert dice == pytest.approx(row["dice"], abs=1e-6)
    assert result["dice_lower_bound"] == pytest.approx(row[BOUND], abs=1e-6) and result["level"] == pytest.approx(0.8)

    # The same package with an architecture record that does not fit its weights.
    client = MlflowClient(tracking_uri=uri)
    local = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path / "dl")))
    arch_file = local / "artifacts" / "package" / "architecture.json"
    arch = json.loads(arch_file.read_text())
    arch["channels"] = [c * 2 for c in arch["channels"]]
    arch_file.write_text(json.dumps(arch))
    tampered = client.create_run(run.info.experiment_id).info.run_id
    client.log_artifacts(tampered, str(local), artifact_path="model")
    proc = run_app("predict", "--model", tampered, "--input", str(path), "--output", str(tmp_path / "x.nii.gz"),
                   "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "weights do not match the unet architecture" in proc.stderr and "shape" in proc.stderr
    assert not (tmp_path / "x.nii.gz").exists()
