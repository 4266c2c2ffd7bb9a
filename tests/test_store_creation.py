"""Creating a fresh SQLite store from several processes at once: one migration, a usable store."""

from __future__ import annotations

import subprocess
import sys

from mlflow.tracking import MlflowClient

SNIPPET = """
import sys, time
from study.tracking import StudyTracker
start = float(sys.argv[2])
while time.time() < start:
    pass
tracker = StudyTracker(sys.argv[1], "same_name")
tracker.check_reachable()
print(tracker.experiment_id())
"""


def test_three_processes_create_one_store_at_once(tmp_path):
    import time

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    start = str(time.time() + 6)  # after every interpreter has imported MLflow: the first accesses collide
    procs = [
        subprocess.Popen([sys.executable, "-c", SNIPPET, uri, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-1500:]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment, found by all three
    client = MlflowClient(tracking_uri=uri)  # and the store works afterwards
    run = client.create_run(outs[0][0].strip())
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
