"""The spec a study ran with, read back from its MLflow study run, and the analysis settings in it.

The study run carries the spec file as an artifact; the analysis reads from it what decides how
a study's statements are judged (the reference arm, the declared claims and error rates, the
breakdown threshold, a seed budget's looks and margin), so `analyze`, `report`, the end-of-study
summary and `replicate` judge a study the same way, and the way it was declared before it ran.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from analysis.read.runs import LATEST, trial_runs
from study import metrics_names as M
from study import process_state
from study.errors import SegstudyError
from study.spec import Evaluation, LearningGate, StudySpec, parse_spec
from study.spec.statistics import DEFAULT_KINDS, Declared, Statistics, statistics_of
from study.spec.tuning import Confirm
from study.tracking import reading_client

DEFAULT_BREAKDOWN = float(Evaluation.model_fields["breakdown"].default)
DEFAULT_TRIVIAL_GAIN = float(LearningGate.model_fields["min_gain"].default)


@dataclass(frozen=True)
class Settings:
    """How a study's statements are judged (see the module docstring)."""

    reference: str | None = None
    declared: Declared | None = None  # None: the spec could not be read; every claim (a)-(d) counts as declared
    statistics: Statistics = Statistics()
    breakdown: float = DEFAULT_BREAKDOWN
    confirm: Confirm = Confirm()
    factors: dict[str, list[Any]] = field(default_factory=dict)  # the designed levels claims (a)-(d) are made over
    trivial_gain: float = DEFAULT_TRIVIAL_GAIN  # the learning gate's min_gain: at or below it out of domain, a (b) claim is censored

    @property
    def margin(self) -> float | None:
        """A seed budget's margin of no difference that matters; None for a fixed seed list."""
        return self.confirm.resolution.margin if self.confirm.budget is not None else None

    def declared_or_default(self) -> Declared:
        return self.declared if self.declared is not None else Declared({k: None for k in DEFAULT_KINDS})


def logged_spec(client: MlflowClient, run: Run | None) -> tuple[str, dict[str, Any]]:
    """The spec YAML logged on a study run: its text, and its mapping ({} if absent or unreadable)."""
    if run is None:
        return "", {}
    names = [f.path for f in client.list_artifacts(run.info.run_id) if f.path.endswith((".yaml", ".yml"))]
    if not names:
        return "", {}
    process_state.quiet_artifact_downloads()
    with tempfile.TemporaryDirectory(prefix="segstudy-spec-") as tmp:
        text = Path(client.download_artifacts(run.info.run_id, names[0], tmp)).read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raw = None
    return text, raw if isinstance(raw, dict) else {}


def settings_of(raw: dict[str, Any]) -> Settings:
    """The analysis settings of a logged spec mapping: from the validated spec when it still
    parses, else field by field with the defaults for what cannot be read."""
    try:
        spec = parse_spec(raw, source="the study's spec")
    except SegstudyError:
        evaluation = raw.get("evaluation") if isinstance(raw.get("evaluation"), dict) else {}
        try:
            confirm = Confirm.model_validate(raw.get("confirm") or {})
        except ValueError:
            confirm = Confirm()
        threshold = evaluation.get("breakdown", DEFAULT_BREAKDOWN)
        return Settings(reference=evaluation.get("reference_arm"), statistics=statistics_of(raw.get("statistics")),
                        breakdown=float(threshold) if isinstance(threshold, int | float) else DEFAULT_BREAKDOWN,
                        confirm=confirm)  # no designed levels: a spec that does not parse may not hold them right
    return settings_of_spec(spec)


def settings_of_spec(spec: StudySpec) -> Settings:
    """The analysis settings of a validated spec (what the driver's rounds decide by)."""
    return Settings(reference=spec.evaluation.reference_arm, declared=spec.declared_claims(), statistics=spec.statistics,
                    breakdown=spec.evaluation.breakdown, confirm=spec.confirm,
                    factors=spec.claim_design(), trivial_gain=spec.evaluation.learning.min_gain)


@dataclass(frozen=True)
class StudyRecord:
    """One study run as the analysis reads it: the run, its spec, its settings and its trial runs."""

    run: Run | None
    spec_text: str
    spec: dict[str, Any]
    settings: Settings
    trial_runs: list[Run]

    def ended_confirm(self) -> list[tuple[str, int]]:
        """(cell, seed) of every confirm trial that ended: finished, or failed and not retried."""
        return [
            (r.data.tags.get(M.CELL_TAG, ""), int(r.data.tags.get(M.SEED_TAG, -1))) for r in self.trial_runs
            if r.data.tags.get(M.PHASE_TAG) == M.PHASE_CONFIRM and (r.info.status == "FINISHED" or (
                r.info.status == "FAILED" and r.data.tags.get(M.RETRIED_TAG) != "true"))
        ]


def read_study(experiment: str, *, tracking_uri: str, study: str = LATEST) -> StudyRecord:
    """The study run of `experiment` (`analysis.read.runs.load_trials`'s `study`), its spec and settings."""
    runs = trial_runs(experiment, tracking_uri=tracking_uri, study=study)
    client = reading_client(tracking_uri)
    run = parent_run(client, runs)
    text, raw = logged_spec(client, run)
    return StudyRecord(run, text, raw, settings_of(raw), runs)


def parent_run(client: MlflowClient, runs: list[Run]) -> Run | None:
    """The study run of the newest trial among `runs` (several only with study="all")."""
    children = [r for r in runs if r.data.tags.get(M.PARENT_TAG)]
    if not children:
        return None
    parent = max(children, key=lambda r: r.info.start_time or 0).data.tags[M.PARENT_TAG]
    return client.get_run(parent)


__all__ = ["DEFAULT_BREAKDOWN", "Settings", "StudyRecord", "logged_spec", "parent_run", "read_study", "settings_of",
           "settings_of_spec"]
