"""Whether a study's statements hold in its replicates (`segstudy replicate`), read from MLflow.

A replicate's study run carries `segstudy.replicate_of` (the original's study run id). Each study's
statements are made and decided by `analysis.stats.statements.study` under its own spec's error
control; `analysis.stats.statements.replication` lines them up.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.read.runs import load_trials, read_per_image, replicate_runs
from analysis.read.study_spec import read_study
from analysis.stats.statements.replication import AgreementSummary, agreement, agreement_summary, statement_table
from analysis.stats.statements.study import study_statements
from study import metrics_names as M
from study.tracking import reading_client


@dataclass(frozen=True)
class Replication:
    """One original and one replicate: their agreement per statement, and the counts."""

    original_run_id: str
    replicate_run_id: str
    seeds: tuple[int, ...]
    table: pd.DataFrame
    summary: AgreementSummary

    def heading(self) -> str:
        seeds = ", ".join(map(str, self.seeds))
        return f"replication (study run {self.replicate_run_id}, seeds {seeds}) of study run {self.original_run_id}:"


def decided_statements(experiment: str, *, tracking_uri: str, study: str) -> pd.DataFrame:
    """One study run's decided claims and findings as a `statement_table`."""
    trials = load_trials(experiment, tracking_uri=tracking_uri, study=study)
    record = read_study(experiment, tracking_uri=tracking_uri, study=study)
    rows = read_per_image(trials, tracking_uri=tracking_uri)
    said = study_statements(rows.in_domain, trials, settings=record.settings, shift_rows=rows.shift,
                            ended=record.ended_confirm())
    return statement_table(said.claims, said.findings)


def replication(experiment: str, *, tracking_uri: str, original: str, replicate: str) -> Replication:
    """The agreement of one replicate with its original (both study run ids)."""
    first = decided_statements(experiment, tracking_uri=tracking_uri, study=original)
    again = decided_statements(experiment, tracking_uri=tracking_uri, study=replicate)
    table = agreement(first, again)
    trials = load_trials(experiment, tracking_uri=tracking_uri, study=replicate)
    return Replication(original, replicate, tuple(sorted(int(s) for s in trials["seed"].unique())), table,
                       agreement_summary(table))


def replications_of(experiment: str, *, tracking_uri: str, study_run_id: str) -> list[Replication]:
    """Every replication a study run takes part in: itself against its original when it is a
    replicate, else each of its replicates against it."""
    client = reading_client(tracking_uri)
    run = client.get_run(study_run_id)
    replicates = replicate_runs(client, run.info.experiment_id)
    if study_run_id in replicates:
        pairs = [(replicates[study_run_id], study_run_id)]
    else:
        pairs = [(study_run_id, r) for r, of in sorted(replicates.items()) if of == study_run_id]
    return [replication(experiment, tracking_uri=tracking_uri, original=o, replicate=r) for o, r in pairs
            if _finished(client, r)]


def _finished(client: MlflowClient, run_id: str) -> bool:
    run = client.get_run(run_id)
    return run.info.status == "FINISHED" or run.data.tags.get(M.STATE_TAG) == M.STATE_FINISHED


__all__ = ["Replication", "decided_statements", "replication", "replications_of"]
