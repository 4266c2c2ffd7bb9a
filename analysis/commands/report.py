"""`segstudy report`: one self-contained HTML page saying what a study did and what it found.

The page has nine sections with stable ids (findings, design, versions, perturbations,
conditions, statistics, plots, confidence, shift); each is present even when it has nothing to show, and
then says why. It opens with what the study states (`analysis.stats.statements.study`): the declared
claims (one Holm family), the exploratory claims and findings (false-discovery rate), the
breakdown per cell, the sequential confirm's decisions, the trials whose models did not learn, and
the validation-Dice learning curves of every cell. Figures
are embedded as base64 PNG so the file can be mailed or archived alone; the figures and every
table also land beside it as PNG and CSV for reuse. The report is logged back to the study's MLflow
run (the trials' `mlflow.parentRunId`): the one MLflow write the analysis package makes.

Numbers come from the analysis modules unchanged: `condition_summary` and `robustness_summary`
(bootstrap CIs, descriptions of these models), `pairwise_tests` (the one inference, exploratory) and
`mean_ranks` (a description; docs/ARCHITECTURE.md 5). Each section is built in
`analysis.commands.report_sections`; this module reads the study, assembles and renders the page.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from mlflow.entities import Run

from analysis.commands.output import output_dir
from analysis.commands.report_sections.confidence import confidence_section
from analysis.commands.report_sections.design import design_section
from analysis.commands.replication import Replication, replications_of
from analysis.commands.report_sections.findings import findings_section, replication_section
from analysis.commands.report_sections.results import result_sections
from analysis.commands.report_sections.shift import shift_section
from analysis.read.runs import factor_names, load_trials, read_per_image
from analysis.read.study_spec import read_study
from analysis.stats.describe.context import with_patch_metrics
from analysis.stats.statements.claims import PATCH
from analysis.stats.statements.study import study_statements
from study import library_versions
from study.metrics_names import MIN_SEEDS
from study.paths import output_folder
from study.redact import mask_uri
from study.tracking import StudyTracker
from study.tracking.ui_links import browse as ui_browse

SECTIONS = ("findings", "design", "versions", "perturbations", "conditions", "statistics", "plots", "confidence", "shift")
ARTIFACT_DIR = "report"


def build_report(
    experiment: str,
    *,
    out_dir: Path,
    tracking_uri: str,
    study: str = "latest",
    n_boot: int = 500,
    log_to_mlflow: bool = True,
    replications: list[Replication] | None = None,
) -> Path:
    """Write out_dir/report.html (plus its figures and CSV tables) for one study run.

    Args:
        experiment: MLflow experiment name (= the study spec's `name`).
        out_dir: created if missing; files of the same names are overwritten.
        tracking_uri: the MLflow store the study logged to.
        study: "latest" study run (default), "all", or a study run id (see `load_trials`).
        n_boot: bootstrap draws for the confidence intervals (0: none).
        log_to_mlflow: also log report.html and the figures under `report/` of the study run.
        replications: the study's replications, when the caller has them (None: read from MLflow).

    Returns:
        The path of report.html.

    Raises:
        SegstudyError: unknown experiment or no finished confirm trials.

    Example:
        >>> build_report("skip_vs_complexity", out_dir=Path("report"),
        ...              tracking_uri="sqlite:////data/mlflow.db")  # doctest: +SKIP
    """
    output_folder(out_dir, option="--out")  # a file in the way is refused before MLflow is read; nothing made yet
    trials = load_trials(experiment, tracking_uri=tracking_uri, study=study)
    record = read_study(experiment, tracking_uri=tracking_uri, study=study)
    runs, study_run, spec = record.trial_runs, record.run, record.spec
    rows = read_per_image(trials, tracking_uri=tracking_uri)
    out_dir = output_dir(out_dir)  # made only now that every check has passed
    per_image = rows.in_domain
    if PATCH in factor_names(trials) and "fbr" in per_image.columns and per_image["fbr"].notna().any():
        trials = with_patch_metrics(trials, experiment=experiment, tracking_uri=tracking_uri, study=study)
    evaluation = spec.get("evaluation") or {}
    statistics = record.settings.statistics
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        said = study_statements(per_image, trials, settings=record.settings, shift_rows=rows.shift,
                                ended=record.ended_confirm())
        results = result_sections(per_image, trials, evaluation=evaluation, n_boot=n_boot, out_dir=out_dir,
                                  q=statistics.fdr, method=statistics.fdr_method, own=spec.get("perturbations") or {})
        results["confidence"] = confidence_section(per_image, spec.get("conformal") or {}, out_dir)
        results["shift"] = shift_section(rows.shift, factor_names(trials), spec.get("conformal") or {}, out_dir)
        results["findings"] = findings_section(said, trials, record, tracking_uri=tracking_uri, out_dir=out_dir)
        if replications is None and study_run is not None:
            replications = replications_of(experiment, tracking_uri=tracking_uri, study_run_id=study_run.info.run_id)
        results["findings"]["replication"] = replication_section(replications or [], out_dir)
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    for note in notes:  # each once: the analysis functions repeat them per call
        warnings.warn(note, stacklevel=2)
    html = _render({
        "experiment": experiment, "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "study_run_id": study_run.info.run_id if study_run else None, "tracking_uri": mask_uri(tracking_uri),
        "browse": ui_browse(tracking_uri, study_run.info.experiment_id, study_run.info.run_id) if study_run else None,
        "design": design_section(experiment, spec, record.spec_text, study_run, trials, runs), "versions": versions(),
        "notes": notes, "min_seeds": MIN_SEEDS, **results,
    })
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    if log_to_mlflow:
        cd = results["statistics"]["cd"] if results["statistics"] else []
        curves = results["findings"]["curves"]
        shifted = [f for block in (results["shift"] or []) for f in block["figures"]]
        paths = [path, *(f.path for f in [*cd, *results["figures"], curves, *shifted] if f.path)]
        _log(study_run, paths, tracking_uri=tracking_uri, experiment=experiment)
    return path


def versions() -> list[tuple[str, str]]:
    """Python, segstudy and the libraries every run is tagged with, as installed where the report
    is built."""
    return list(library_versions().items())


def _render(context: dict[str, Any]) -> str:
    env = Environment(loader=PackageLoader("analysis", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(sections=SECTIONS, **context)


def _log(run: Run | None, paths: list[Path], *, tracking_uri: str, experiment: str) -> None:
    """Attach the report to the study run through the one MLflow writer (study/tracking/writer.py)."""
    if run is None:
        warnings.warn("report: the trials name no study run (mlflow.parentRunId); the report was not logged",
                      stacklevel=3)
        return
    StudyTracker(tracking_uri, experiment).log_artifacts(run.info.run_id, paths, artifact_path=ARTIFACT_DIR)


__all__ = ["SECTIONS", "build_report", "versions"]
