"""The summary a study prints when it ends, and attaches to its MLflow study run.

Per cell (arm x level): mean test Dice with its 95% t-interval over seeds and the hyperparameters
tuning chose; the findings lines; and where the report, the MLflow run and the study folder are.
It runs the same `analyze` and `build_report` a user would run by hand, into the study folder,
so the study run carries its tables, plots and report as soon as the study ends.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.commands.analyze import analyze
from analysis.commands.replication import replications_of
from analysis.commands.report import build_report
from analysis.stats.core.decisions import DECLARED, family_heading
from analysis.stats.statements.replication import agreement_lines
from analysis.stats.statements.findings import ARM
from analysis.stats.describe.summary import summarise
from study import metrics_names as M
from study.errors import SegstudyError, first_line
from study.tracking import StudyTracker, reading_client
from study.redact import mask_uri
from study.tracking.ui_links import browse as ui_browse

SUMMARY_DIR = "summary"  # in the study folder and in the study run's artifacts
REPORT_DIR = "report"  # likewise
TABLE_FILE = "study_summary.csv"
REPLICATION_FILE = "replication.csv"
COLUMNS = ("arm", "level", "test_dice", "ci_low", "ci_high", "n", "broke_down", "worst_dice", "chosen")
CLAIMS_HEADING = "claims the study is for ({family}; Dice, training seeds the replicates, each interval at its decision's level):"
EXPLORATORY_HEADING = "other claims, exploratory ({family}):"
FINDINGS_HEADING = "findings per level, exploratory ({family}; clean test Dice):"


@dataclass
class StudySummary:
    """What `segstudy run` and `resume` print at the end."""

    experiment: str
    study_run_id: str
    tracking_uri: str
    study_folder: Path
    location: str = ""  # where the study folder lives, when not here (a bucket URI); its files are copied there
    experiment_id: str = "<id>"  # for the UI address; known once the study run has been read
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(COLUMNS)))
    said: list[str] = field(default_factory=list)  # the claims and findings, under headings (`statement_lines`)
    replication: list[str] = field(default_factory=list)  # a replicate's agreement with its original
    report: Path | None = None
    gpu: dict[str, float] = field(default_factory=dict)  # the study run's study-wide GPU figures (CUDA only)
    problems: list[str] = field(default_factory=list)  # steps that could not be done, and why

    @property
    def browse(self) -> str:
        """The command (or address) that shows the study run in the MLflow UI."""
        return ui_browse(self.tracking_uri, self.experiment_id, self.study_run_id)


def summarise_study(experiment: str, *, study_run_id: str, tracking_uri: str, study_folder: Path,
                    location: str = "") -> StudySummary:
    """Analyse the finished study, build its report, attach both to the study run, and return the
    summary. Each step that fails is named in `problems` instead of failing the study.
    `location`: where the study folder lives when `study_folder` is a local copy of it (a bucket),
    for the lines the summary prints."""
    study_run = reading_client(tracking_uri).get_run(study_run_id)
    out = StudySummary(experiment, study_run_id, tracking_uri, study_folder, location=location,
                       experiment_id=study_run.info.experiment_id)
    out.gpu = {k: v for k, v in study_run.data.metrics.items() if k in M.GPU_METRICS}
    folder = study_folder / SUMMARY_DIR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the run already warned about seeds and learning
            paths = analyze(experiment, out_dir=folder, tracking_uri=tracking_uri, study=study_run_id)
    except SegstudyError as exc:
        out.problems.append(f"analysis: {exc}")
        return out
    broke = pd.read_csv(paths["breakdown"]) if "breakdown" in paths else None
    out.table = cell_table(pd.read_csv(paths["trials"]), chosen_hparams(study_run.data.tags), breakdown=broke)
    out.table.to_csv(folder / TABLE_FILE, index=False)
    out.said = statement_lines(paths)
    found = []
    if study_run.data.tags.get(M.REPLICATE_OF_TAG):  # a replicate: which of its original's statements hold
        found = replications_of(experiment, tracking_uri=tracking_uri, study_run_id=study_run_id)
    for one in found:
        paths["replication"] = folder / REPLICATION_FILE
        one.table.to_csv(paths["replication"], index=False)
        out.replication = [one.heading(), f"  {one.summary.line()}", *(f"  {line}" for line in agreement_lines(one.table))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.report = build_report(experiment, out_dir=study_folder / REPORT_DIR, tracking_uri=tracking_uri,
                                      study=study_run_id, replications=found if found else None)
    except (SegstudyError, ValueError, RuntimeError) as exc:
        out.problems.append(f"report: {first_line(exc)}")
    tracker = StudyTracker(tracking_uri, experiment)
    for path in [folder / TABLE_FILE, *(p for p in paths.values() if p.suffix in {".csv", ".png"})]:
        tracker.log_file(study_run_id, path, artifact_path=SUMMARY_DIR)
    tracker.flush()
    return out


def chosen_hparams(tags: dict[str, str]) -> dict[str, dict[str, object]]:
    """Each cell's chosen hyperparameters, from the study run's tags (empty for untuned studies)."""
    tag = tags.get(M.CHOSEN_TAG)
    try:
        return json.loads(tag) if tag else {}
    except json.JSONDecodeError:  # the tag is cut at 5000 characters for very large grids
        return {}


def statement_lines(paths: Mapping[str, Path]) -> list[str]:
    """The claims (declared, then exploratory) and the findings of `analyze`'s claims.csv and
    findings.csv, each group under a heading that says how it was decided."""
    lines: list[str] = []
    claimed = pd.read_csv(paths["claims"]) if "claims" in paths else pd.DataFrame(columns=["family"])
    found = pd.read_csv(paths["findings"]) if "findings" in paths else pd.DataFrame()
    groups = ((CLAIMS_HEADING, claimed[claimed["family"] == DECLARED]),
              (EXPLORATORY_HEADING, claimed[claimed["family"] != DECLARED]), (FINDINGS_HEADING, found))
    for heading, table in groups:
        if not table.empty:
            lines.append(heading.format(family=family_heading(table)))
            lines += [f"  {line}" for line in table["line"].astype(str)]
    return lines


def cell_table(
    trials: pd.DataFrame, chosen: dict[str, dict[str, object]], *, breakdown: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per cell: arm, level (the other factors), mean test Dice, its CI, n, the models that
    broke down ("1/3", `analysis.stats.statements.breakdown`) and the worst seed's Dice, chosen hparams.

    Example:
        >>> t = pd.DataFrame({"cell": ["alpha=0.2,architecture=unet"] * 3, "architecture": ["unet"] * 3,
        ...                   "alpha": [0.2] * 3, "test_dice": [0.9, 0.92, 0.94]})
        >>> row = cell_table(t, {"alpha=0.2,architecture=unet": {"lr": 0.01}}).iloc[0]
        >>> row["arm"], row["level"], round(float(row["test_dice"]), 2), row["chosen"], round(float(row["worst_dice"]), 2)
        ('unet', 'alpha=0.2', 0.92, 'lr=0.01', 0.9)
    """
    if trials.empty or M.TEST_DICE not in trials.columns:
        return pd.DataFrame(columns=list(COLUMNS))
    stats = summarise(trials, by=["cell"], metric=M.TEST_DICE).set_index("cell")
    broke = breakdown.set_index("cell") if breakdown is not None and not breakdown.empty else None
    worst = trials.groupby("cell")[M.TEST_DICE].min()
    rows = []
    for cell, row in stats.iterrows():
        factors = dict(part.split("=", 1) for part in str(cell).split(",") if "=" in part)
        arm = factors.pop(ARM, "")
        hparams = chosen.get(str(cell), {})
        rows.append({
            "arm": arm or str(cell),
            "level": ",".join(f"{k}={v}" for k, v in factors.items()) if arm else "",
            "test_dice": row["mean"], "ci_low": row["ci_low"], "ci_high": row["ci_high"], "n": int(row["n"]),
            "broke_down": f"{broke.at[cell, 'broke_down']}/{broke.at[cell, 'models']}" if broke is not None and cell in broke.index else "",
            "worst_dice": float(broke.at[cell, "worst_dice"]) if broke is not None and cell in broke.index else float(worst[cell]),
            "chosen": ", ".join(f"{k}={_short(v)}" for k, v in sorted(hparams.items())),
        })
    return pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(["level", "arm"]).reset_index(drop=True)


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def table_lines(table: pd.DataFrame) -> list[str]:
    """The cell table as aligned text lines (what a log or a terminal shows)."""
    if table.empty:
        return []
    def ci(r: pd.Series) -> str:
        if math.isnan(r["ci_low"]):
            return f"{r['test_dice']:.3f}"
        return f"{r['test_dice']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    shown = pd.DataFrame({
        "level": table["level"], "arm": table["arm"], "test Dice [95% CI]": table.apply(ci, axis=1),
        "seeds": table["n"], "broke down": table["broke_down"].replace("", "-"),
        "worst seed": table["worst_dice"].map(lambda v: f"{v:.3f}"),
        "chosen hyperparameters": table["chosen"].replace("", "-"),
    })
    return shown.to_string(index=False).splitlines()


def summary_lines(s: StudySummary) -> list[str]:
    """The whole end-of-study summary as text lines."""
    lines = [f"study '{s.experiment}': mean clean test Dice per cell over confirm seeds"]
    lines += [f"  {line}" for line in table_lines(s.table)] or ["  (no confirm trial logged a test Dice)"]
    lines += s.said
    lines += s.replication
    if M.GPU_UTIL_MEAN in s.gpu:
        peak = s.gpu.get(M.GPU_PEAK_MEMORY)
        lines.append(f"GPU:          {s.gpu[M.GPU_UTIL_MEAN]:.0f}% mean utilisation while trials ran"
                     + (f", largest trial peak {peak:.0f} MB" if peak is not None else ""))
    if s.report is not None:
        there = f"{s.location}/{s.report.relative_to(s.study_folder).as_posix()}" if s.location else ""
        lines.append(f"report:       {there} (a copy in {s.report})" if there else f"report:       {s.report}")
    lines.append(f"MLflow run:   {s.study_run_id} in experiment '{s.experiment}' at {mask_uri(s.tracking_uri)}")
    lines.append(f"study folder: {s.location or s.study_folder} (segstudy.log holds what Ray, Tune and MLflow said)")
    lines.append(f"browse:       {s.browse}")
    lines += [f"note: {p}" for p in s.problems]
    return lines


__all__ = [
    "CLAIMS_HEADING", "EXPLORATORY_HEADING", "FINDINGS_HEADING", "REPORT_DIR", "SUMMARY_DIR", "StudySummary", "cell_table", "statement_lines",
    "summarise_study", "summary_lines", "table_lines",
]
