"""A cluster without a shared disk, for real: a study whose folder is in a bucket of a real
S3-compatible server (moto's server mode, signatures checked: tests/s3_server.py), its tuning state
and driver lock in a real PostgreSQL, its MLflow artifacts in the same bucket through a real
`segstudy tracking serve --artifacts s3://...`. The driver is SIGKILLed mid-tune on one "machine"
and the study resumed from the bucket on another (its own working folder and cache, nothing
shared but the bucket, the database, the tracking server and the Ray cluster): no trial lost, none
run twice. Then its registered model predicts from the bucket, its report is rebuilt into the
bucket, and no secret appears in any output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import BIN, TrackingServer, held, run_app, run_cli, trial_workers
from study import metrics_names as M
from study.serving.mlflow_model import registered_model_name
from study.run.driver.replicate import plan_replicate
from study.run.record.bucket_study import find_study
from study.storage.state_db import optuna_url
from study.tracking import StudyTracker, reading_client

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*confirmation seed"),
              pytest.mark.filterwarnings("ignore:.*at least 3 seeds")]

NAME = "bucketstudy"
SPEC = f"""
name: {NAME}
data: {{dataset: synthetic2d, image_size: 32, n_images: 40, seed: 0, split: {{train: 0.6, val: 0.1, calib: 0.1, test: 0.2}}}}
model: {{unet: {{channels: [8, 16, 32], strides: [2, 2], num_res_units: 0}}}}
factors: {{architecture: [unet], alpha: [0.2, 0.8]}}
hyperparameters: {{lr: {{loguniform: [1.0e-3, 3.0e-2]}}, batch_size: 8, optimizer: adam}}
training: {{epochs: 4, loss: dice}}
evaluation: {{perturbations: []}}
tuning: {{trials_per_cell: 2, sampler: random, seed: 0, early_stopping: {{kind: none}}}}
confirm: {{seeds: [0]}}
resources: {{cpu: 1, gpu: 0}}
"""
CELLS = ("alpha=0.2,architecture=unet", "alpha=0.8,architecture=unet")


def trial_runs(client: MlflowClient, phase: str | None = None, status: str | None = None) -> list:
    exp = client.get_experiment_by_name(NAME)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")
    return [r for r in runs if (phase is None or r.data.tags[M.PHASE_TAG] == phase)
            and (status is None or r.info.status == status)]


def kill_mid_tune(driver: subprocess.Popen, client: MlflowClient, workers, held) -> dict[str, str]:
    """SIGKILL the driver once a tune trial has finished and another is running, the moment held
    (trial workers paused) while it is checked again and the driver killed; returns the finished
    trials' keys and run ids."""
    def moment() -> bool:
        tune = trial_runs(client, M.PHASE_TUNE)
        return any(r.info.status == "FINISHED" for r in tune) and any(r.info.status == "RUNNING" for r in tune)

    deadline = time.monotonic() + 300
    while True:
        assert driver.poll() is None, "the study ended before it could be killed"
        assert time.monotonic() < deadline, "the moment never came"
        if moment():
            with held(workers()):
                if moment() and driver.poll() is None:
                    os.killpg(driver.pid, signal.SIGKILL)
                    driver.wait(timeout=30)
                    return {r.data.tags[M.TRIAL_KEY_TAG]: r.info.run_id for r in trial_runs(client, status="FINISHED")}
        time.sleep(0.2)


def test_study_in_a_bucket_killed_and_resumed_on_another_machine(ray_head, bucket, s3_server, postgres, tmp_path,
                                                                  monkeypatch):

    (tmp_path / "server").mkdir()
    server = TrackingServer(tmp_path / "server", artifacts=f"s3://{bucket}/mlflow")
    server.start()
    try:
        _study_in_a_bucket(ray_head, bucket, s3_server, postgres, server, tmp_path, monkeypatch,
                           workers=lambda: trial_workers(ray_head.pid), held=held)
    finally:
        server.stop()


def _study_in_a_bucket(ray_head, bucket, s3_server, state_db, server, tmp_path, monkeypatch, *, workers, held) -> None:
    storage = f"s3://{bucket}/studies"
    spec = tmp_path / f"{NAME}.yaml"
    spec.write_text(SPEC)
    client = reading_client(server.uri)  # with segstudy's defaults: artifacts read through the server
    secrets = (s3_server.secret_key, os.environ["PGPASSWORD"])

    def machine(name: str) -> tuple[Path, dict[str, str]]:
        """A working folder and cache of its own: what two machines share is only what is remote."""
        home = tmp_path / name
        (home / "cache").mkdir(parents=True)
        env = {**ray_head.env, **s3_server.env(), "PGPASSWORD": os.environ["PGPASSWORD"], "XDG_CACHE_HOME": str(home / "cache")}
        env.pop("SEGSTUDY_STATE_DB", None)
        return home, env

    first, env_first = machine("first")
    with (first / "run.out").open("w") as out, (first / "run.err").open("w") as err:
        driver = subprocess.Popen(
            [str(BIN / "segstudy"), "run", str(spec), "--address", ray_head.gcs_address, "--storage", storage,
             "--state-db", state_db, "--tracking-uri", server.uri],
            cwd=first, env=env_first, stdout=out, stderr=err, start_new_session=True,
        )
        try:
            before = kill_mid_tune(driver, client, workers, held)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
    assert before, "no trial had finished before the kill"

    # Another machine: no folder of the first; the study is found by name in the bucket, its state
    # database is the one it recorded (the password from PGPASSWORD).
    second, env_second = machine("second")
    resumed = run_cli("resume", NAME, "--storage", storage, "--address", ray_head.gcs_address, cwd=second, env=env_second,
                      timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    ((folder_uri, manifest),) = [(u, m) for u, m in bucket_manifests(s3_server, bucket).items()]
    assert "6/6 trials finished" in resumed.stdout and f"results in {folder_uri}" in resumed.stdout

    # 0 lost, 0 doubled: every cell spent exactly its tuning budget and has each confirm seed once;
    # trials that had finished before the kill kept their runs.
    finished = trial_runs(client, status="FINISHED")
    keys = [r.data.tags[M.TRIAL_KEY_TAG] for r in finished]
    assert len(keys) == len(set(keys)) == 2 * 2 + 2 * 1  # tune: 2 per cell; confirm: 1 seed per cell
    assert all(dict(zip(keys, (r.info.run_id for r in finished)))[k] == run_id for k, run_id in before.items())
    for cell in CELLS:
        states = [t.state.name for t in optuna.load_study(study_name=f"{folder_uri}/{cell}", storage=optuna_url(state_db)).trials]
        assert states.count("COMPLETE") == 2, (cell, states)  # a cut trial is FAIL, its re-run COMPLETE
    assert manifest["state_db"] == state_db and manifest["storage"] == folder_uri and "chosen" in manifest

    # The study folder is in the bucket: the study's own files, Tune's experiments (one tune attempt
    # per driver), summary and report; the working copies are each machine's own.
    objects = s3_server.keys(bucket)
    prefix = folder_uri.removeprefix(f"s3://{bucket}/")
    names = {k.removeprefix(f"{prefix}/").split("/")[0] for k in objects if k.startswith(f"{prefix}/")}
    assert {"study.json", "spec.yaml", "segstudy.log", "tune", "tune-2", "confirm", "summary", "report"} <= names, names
    assert any(k.startswith("mlflow/") and k.endswith(M.PER_IMAGE_FILE) for k in objects)  # MLflow's artifacts
    # Each cell's confirm trial of the tuning seed restored its winning tune trial's training from
    # the bucket (study.training.reuse), whichever driver ran that trial.
    assert "kept_training" in names
    confirm_runs = [r for r in finished if r.data.tags[M.PHASE_TAG] == M.PHASE_CONFIRM]
    assert sorted(r.data.tags[M.TRAINED_IN_TAG].split("|")[1] for r in confirm_runs) == sorted(CELLS)
    for home in (first, second):
        assert not (home / "s3:").exists() and not (home / "ray_results").exists()
    assert (second / "cache" / "segstudy" / "studies" / bucket / prefix / "study.json").is_file()

    # In this process from here: the second machine's cache, its AWS and PostgreSQL environment.
    monkeypatch.setenv("XDG_CACHE_HOME", env_second["XDG_CACHE_HOME"])
    outputs = [resumed.stdout, resumed.stderr]

    # Status from the bucket alone: its study folder names the study run and the tracking server.
    status = run_app("status", NAME, "--storage", storage, cwd=second)
    assert status.returncode == 0, status.stderr
    stands, where_line = status.stdout.splitlines()[:2]  # where the study stands, then where it is
    assert stands.startswith(f"study run {folder_uri.rsplit('/', 1)[1]}: finished at "), status.stdout
    assert where_line == f"study folder: {folder_uri}", status.stdout
    confirm = [line.split() for line in status.stdout.splitlines() if line.split()[1:2] == [M.PHASE_CONFIRM]]
    assert sorted(row[0] for row in confirm) == sorted(CELLS) and all(row[2] == "1" for row in confirm), status.stdout
    outputs += [status.stdout, status.stderr]

    # The registered model predicts from the bucket, through the server; recommend reads the
    # per-image tables there.
    outputs += check_predict(client, server.uri, spec, second)
    outputs += check_recommend(client, server.uri, second)

    # The report is rebuilt into the study's folder in the bucket.
    s3_server.client().delete_object(Bucket=bucket, Key=f"{prefix}/report/report.html")
    report = run_app("report", "--experiment", NAME, "--storage", storage, "--tracking-uri", server.uri, cwd=second)
    assert report.returncode == 0, report.stderr
    assert f"report: {folder_uri}/report/report.html" in report.stdout
    html = s3_server.client().get_object(Bucket=bucket, Key=f"{prefix}/report/report.html")["Body"].read()
    assert b'id="findings"' in html
    outputs += [report.stdout, report.stderr]

    # A replicate of the study in the bucket is made beside it, in the bucket, under its state database
    # (driven like any study in a bucket, which the resume above was).
    found = find_study(folder_uri, writing=False)
    replica = plan_replicate(found, [2], tracker=StudyTracker(server.uri, NAME)).maker(None, tracking_uri=server.uri)()
    assert replica.location.startswith(f"{storage}/{NAME}-") and replica.location != folder_uri
    assert replica.state_db == state_db and replica.manifest["replicate_of"]["folder"] == folder_uri
    assert bucket_manifests(s3_server, bucket)[replica.location]["chosen"] == manifest["chosen"]

    # No secret anywhere: the bucket, every output, every file either machine wrote, the server's log.
    files = [p for home in (first, second, tmp_path / "server") for p in home.rglob("*") if p.is_file()]
    holders = [*(f"s3://{bucket}/{k}" for k, body in s3_server.objects(bucket).items() if has_secret(body, secrets)),
               *(str(p) for p in files if has_secret(p.read_bytes(), secrets)),
               *(text[:200] for text in outputs if has_secret(text.encode(), secrets))]
    assert not holders


def has_secret(data: bytes, secrets: tuple[str, ...]) -> bool:
    return any(secret.encode() in data for secret in secrets)


def bucket_manifests(s3_server, bucket: str) -> dict[str, dict]:
    return {f"s3://{bucket}/{k.removesuffix('/study.json')}": json.loads(body)
            for k, body in s3_server.objects(bucket, suffix="/study.json").items()}


def check_predict(client: MlflowClient, uri: str, spec: Path, home: Path) -> list[str]:
    """`segstudy predict` with a registered model whose files are in the bucket: the score its trial
    gave. Returns what it printed."""
    cell = CELLS[1]
    version = client.search_model_versions(f"name = '{registered_model_name(NAME, cell)}'")[0]
    run = client.get_run(version.run_id)
    table = pd.read_csv(client.download_artifacts(run.info.run_id, M.PER_IMAGE_FILE, str(home / "dl")))
    exported = home / "images"
    assert run_app("data", "synth", str(spec), "--out", str(exported), "--format", "nifti", cwd=home).returncode == 0
    row = table[table["condition"] == M.CLEAN].iloc[0]
    image = exported / "alpha=0.8" / "test" / f"{row['image_id']}_image.nii.gz"
    proc = run_app("predict", "--model", f"models:/{version.name}/{version.version}", "--input", str(image),
                   "--output", str(home / "mask.nii.gz"), "--tracking-uri", uri, cwd=home)
    assert proc.returncode == 0, proc.stderr
    # In this process torch may sum in another order than the trial did: equal up to that.
    assert json.loads(proc.stdout)["quality_score"] == pytest.approx(row["quality_score"], abs=1e-5)
    return [proc.stdout, proc.stderr]


def check_recommend(client: MlflowClient, uri: str, home: Path) -> list[str]:
    """`segstudy recommend` on the test images check_predict exported: matched to their level, the
    clean Dice of that cell's confirm trials, read from their per-image tables in the bucket.
    Returns what it printed."""
    cell = CELLS[1]
    tables = [pd.read_csv(client.download_artifacts(r.info.run_id, M.PER_IMAGE_FILE, str(home / "dl" / r.info.run_id)))
              for r in trial_runs(client, M.PHASE_CONFIRM, "FINISHED") if r.data.tags[M.CELL_TAG] == cell]
    clean = pd.concat(tables).query(f"condition == '{M.CLEAN}'")
    proc = run_app("recommend", "--experiment", NAME, "--data", str(home / "images" / "alpha=0.8" / "test"),
                   "--tracking-uri", uri, cwd=home)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(tables) == 1 and result["matched"] == {"alpha": 0.8, "condition": M.CLEAN} and result["winner"] == "unet"
    assert result["dice"] == pytest.approx(clean.groupby("image_id")["dice"].mean().mean(), abs=1e-9)
    return [proc.stdout, proc.stderr]
