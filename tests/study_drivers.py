"""Real `segstudy` drivers of one small study, and what its MLflow store and folder say: the
shared helpers of the tests that stop, kill or starve a running study (test_interrupt,
test_disk_full, test_sequential).

A moment of a running study (a trial running, a phase ended) is acted on with the moment held:
the study's trial workers (or its driver) are paused while it is checked again and the signal
sent (`Driver.signal_when`, `conftest.held`), so a trial that ends meanwhile cannot make the
test fail on one machine and pass on another.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import BIN, ROOT, held, run_app, trial_workers
from study import metrics_names as M

# Two cells, two tune trials each (random sampler, no early stopping: the choices do not depend on
# the order trials end in, so a resumed tune phase chooses what an uninterrupted one does), two
# confirm seeds; a trial is a few seconds on a CPU.
SPEC = """
name: {name}
data: {{dataset: synthetic2d, image_size: 32, n_images: 40, seed: 0,
       split: {{train: 0.6, val: 0.1, calib: 0.1, test: 0.2}}}}
model: {{unet: {{channels: [8, 16, 32], strides: [2, 2], num_res_units: 0}}}}
factors: {{architecture: [unet], alpha: [0.2, 0.8]}}
hyperparameters: {{lr: {{loguniform: [1.0e-3, 3.0e-2]}}, batch_size: 8, optimizer: adam}}
training: {{epochs: 12, loss: dice}}
evaluation: {{perturbations: []}}
tuning: {{trials_per_cell: 2, sampler: random, seed: 0, early_stopping: {{kind: none}}}}
confirm: {{seeds: [0, 1]}}
resources: {{cpu: 1, gpu: 0}}
"""
CELLS = ("alpha=0.2,architecture=unet", "alpha=0.8,architecture=unet")
TRIALS_PER_CELL = 2


def write_spec(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name))
    return path


class Driver:
    """One real `segstudy` process in its own session, its output in files.

    `workers`: the pids of the trial workers of the test's Ray head (`conftest.trial_workers`),
    paused while a moment of the study is checked and acted on (`conftest.held`).
    """

    def __init__(self, args: list[str], *, env: dict[str, str], out: Path, workers: Callable[[], list[int]] = list) -> None:
        self.stdout, self.stderr = out.with_suffix(".out"), out.with_suffix(".err")
        self.workers = workers
        self.proc = subprocess.Popen(
            [str(BIN / "segstudy"), *args], cwd=ROOT, env=env, start_new_session=True,
            stdout=self.stdout.open("w"), stderr=self.stderr.open("w"),
        )

    def wait_for(self, ready: Callable[[], bool], *, timeout: float = 240) -> None:
        """Return once `ready()` holds, with the driver still alive."""
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"the driver ended before the moment came:\n{self.output()}"
            assert time.monotonic() < deadline, f"the moment never came:\n{self.output()}"
            time.sleep(0.1)
        assert self.proc.poll() is None, "the driver ended before it could be interrupted"

    def signal_when(self, ready: Callable[[], bool], sig: int, *, again_after: float | None = None) -> None:
        """Send `sig` at the moment `ready()` says, with the moment held until the driver took the
        stop: the trial workers are paused, the moment checked again once the driver took in what
        they had sent, and only then the signal sent; the workers go on once the driver has said it
        is stopping (or ended). A moment that passed meanwhile is waited for again."""
        while True:
            self.wait_for(ready)
            with held(self.workers()):
                if not ready() or self.proc.poll() is not None:
                    continue  # the moment passed before the workers stopped: wait for the next one
                os.kill(self.proc.pid, sig)
                if again_after is not None:
                    time.sleep(again_after)
                    os.kill(self.proc.pid, sig)
                self._stop_taken()
                return

    def signal_while_paused(self, ready: Callable[[], bool], sig: int, *, group: bool = False,
                            workers: bool = False) -> None:
        """Send `sig` at a moment of the driver (its own output or state), with the driver paused
        while the moment is checked and the signal sent: it takes the signal as it goes on.
        `group`: to the driver's whole process group (a SIGKILL that leaves no child behind);
        `workers`: the trial workers paused too, for a moment that names what trials have done."""
        while True:
            self.wait_for(ready)
            with held([self.proc.pid, *(self.workers() if workers else [])], settle_s=0):
                if ready() and self.proc.poll() is None:
                    (os.killpg if group else os.kill)(self.proc.pid, sig)
                    return

    def _stop_taken(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "stopping (" not in self.stdout.read_text() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack to its stderr
            time.sleep(3)
            raise AssertionError(f"the driver did not end within {timeout} s:\n{self.stderr.read_text()[-12000:]}") from None
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def output(self) -> str:
        return self.stdout.read_text()[-3000:] + self.stderr.read_text()[-3000:]

    def last_line(self) -> str:
        return self.stderr.read_text().strip().splitlines()[-1]


class Store:
    """What one study's MLflow store and folder say."""

    def __init__(self, uri: str, name: str, storage: Path) -> None:
        self.client = MlflowClient(tracking_uri=uri)
        self.uri, self.name, self.storage = uri, name, storage

    def runs(self, role: str, view: int = ViewType.ACTIVE_ONLY) -> list:
        exp = self.client.get_experiment_by_name(self.name)
        if exp is None:
            return []
        return self.client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{role}'", run_view_type=view)

    def trials(self, phase: str, status: str | None = None) -> list:
        return [r for r in self.runs(M.ROLE_TRIAL) if r.data.tags[M.PHASE_TAG] == phase
                and (status is None or r.info.status == status)]

    def study_run(self):
        (run,) = self.runs(M.ROLE_STUDY)
        return run

    def folder(self) -> Path:
        (folder,) = self.storage.glob(f"{self.name}-*")
        return folder

    def manifest(self) -> dict:
        folders = list(self.storage.glob(f"{self.name}-*/study.json"))
        return json.loads(folders[0].read_text()) if folders else {}

    def optuna_states(self) -> dict[str, list[str]]:
        storage = f"sqlite:///{self.folder() / 'optuna.db'}"
        return {cell: [t.state.name for t in optuna.load_study(study_name=f"{self.name}/{cell}", storage=storage).trials]
                for cell in CELLS}

    def confirm_results(self, tmp: Path) -> dict[str, pd.DataFrame]:
        out = {}
        for run in self.trials(M.PHASE_CONFIRM, "FINISHED"):
            key = run.data.tags[M.TRIAL_KEY_TAG]
            assert key not in out, f"two finished runs of {key}"
            local = self.client.download_artifacts(run.info.run_id, M.PER_IMAGE_FILE, str(tmp / run.info.run_id))
            out[key] = pd.read_csv(local)
        return out


def start_study(ray_head, tmp_path: Path, name: str, *, storage: Path | None = None) -> tuple[Store, dict[str, str], Driver]:
    """`segstudy run` of the test spec named `name` on the test head, with a store of its own
    (study folders under `storage`, default tmp_path/r)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = Store(uri, name, storage or tmp_path / "r")
    env = {**ray_head.env, "MLFLOW_TRACKING_URI": uri, "PYTHONFAULTHANDLER": "1"}
    args = ["run", str(write_spec(tmp_path, name)), "--address", ray_head.gcs_address, "--storage", str(store.storage)]
    return store, env, Driver(args, env=env, out=tmp_path / "run", workers=lambda: trial_workers(ray_head.pid))


def resume_driver(store: Store, ray_head, env: dict[str, str], out: Path) -> Driver:
    """`segstudy resume` of the study's folder, as the stop message names it."""
    return Driver(["resume", str(store.folder()), "--address", ray_head.gcs_address], env=env, out=out,
                  workers=lambda: trial_workers(ray_head.pid))


WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def stands(store: Store, where: str) -> pd.DataFrame:
    """`segstudy status` says where the study stands in its first line (`where`, a pattern), and,
    with no live driver, no trial is counted running: a cut one is interrupted, never failed."""
    from analysis.commands.status import study_status

    status = run_app("status", store.name, "--tracking-uri", store.uri, cwd=ROOT)
    assert status.returncode == 0, status.stderr
    first = status.stdout.splitlines()[0]
    assert re.fullmatch(rf"study run {re.escape(store.folder().name)}: {where}", first), first
    table = study_status(store.name, tracking_uri=store.uri)
    if not where.startswith("running"):
        assert table["running"].sum() == 0, table
        cut = [r for r in store.runs(M.ROLE_TRIAL) if r.info.status in {"KILLED", "RUNNING"}
               or r.data.tags.get(M.FAULT_TAG) == M.FAULT_MACHINE]  # a trial whose own writes met a full disk
        assert table["interrupted"].sum() == len(cut), table
    assert table["failed"].sum() == 0, table
    return table
