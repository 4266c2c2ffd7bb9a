"""`segstudy report`: one self-contained HTML page saying what a study did and what it found.

The page has nine sections with stable ids (findings, design, versions, perturbations,
conditions, statistics, plots, confidence, shift); each is present even when it has nothing to show, and
then says why. It opens with the findings as sentences (`analysis.stats.findings`), the trials whose
models did not learn, and the validation-Dice learning curves of every cell. Figures
are embedded as base64 PNG so the file can be mailed or archived alone; the figures and every
table also land beside it as PNG and CSV for reuse. The report is logged back to the study's MLflow
run (the trials' `mlflow.parentRunId`): the one MLflow write the analysis package makes.

Numbers come from the analysis modules unchanged: `condition_summary` and `robustness_summary`
(bootstrap CIs), `pairwise_tests` and `friedman` (docs/ARCHITECTURE.md 5).
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError
from jinja2 import Environment, PackageLoader, StrictUndefined
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from analysis.stats.coverage import coverage_summary, shortfalls
from analysis.stats.claims import PATCH, claims
from analysis.stats.context import fbr_shift, with_patch_metrics
from analysis.stats.findings import findings, reference_arm
from analysis.stats.sequential import Observed, comparisons, decision_table, design_of, replay, seeds_table
from analysis.commands.output import output_dir
from analysis.plots.learning_curves import plot_learning_curves
from analysis.read.curves import load_val_curves
from analysis.plots.trade_offs import plot_dice_vs_complexity
from analysis.stats.robustness import condition_summary, parse_condition, robustness_summary
from analysis.plots.robustness import plot_accuracy_robustness, plot_dice_vs_severity, plot_winner_map, winners
from analysis.read.runs import factor_names, load_trials, not_learned_trials, read_per_image, trial_runs
from analysis.stats.pairwise import MIN_SEEDS, friedman, pairwise_tests, resolve_within
from analysis.plots.critical_difference import plot_critical_difference
from analysis.plots.shift import plot_shift_degradation, plot_shift_heatmaps
from analysis.stats.shift import shift_factors, shift_matrix, shift_table
from analysis.stats.summary import summarise
from study import library_versions
from study import metrics_names as M
from study import process_state
from study.errors import SegstudyError
from study.tracking import StudyTracker, reading_client
from study.redact import mask_uri
from study.tracking.ui_links import browse as ui_browse
from study.perturbations import describe
from study.models import parameter_count, resolve_architecture
from study.spec import Conformal, Evaluation, parse_spec
from study.spec.tuning import Confirm

ARM = "architecture"
COMPLEXITY = "alpha"
DEFAULT_TAU = float(Evaluation.model_fields["failure_threshold"].default)  # when the spec is missing
SECTIONS = ("findings", "design", "versions", "perturbations", "conditions", "statistics", "plots", "confidence", "shift")
ARTIFACT_DIR = "report"


@dataclass(frozen=True)
class Table:
    """A table ready for the template: text cells, and which rows to highlight."""

    columns: list[str]
    rows: list[list[str]]
    marked: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report: its PNG, or the note saying why it is missing."""

    title: str
    caption: str = ""
    path: Path | None = None
    note: str = ""

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode("ascii") if self.path else ""


def build_report(
    experiment: str,
    *,
    out_dir: Path,
    tracking_uri: str,
    study: str = "latest",
    n_boot: int = 500,
    log_to_mlflow: bool = True,
) -> Path:
    """Write out_dir/report.html (plus its figures and CSV tables) for one study run.

    Args:
        experiment: MLflow experiment name (= the study spec's `name`).
        out_dir: created if missing; files of the same names are overwritten.
        tracking_uri: the MLflow store the study logged to.
        study: "latest" study run (default), "all", or a study run id (see `load_trials`).
        n_boot: bootstrap draws for the confidence intervals (0: none).
        log_to_mlflow: also log report.html and the figures under `report/` of the study run.

    Returns:
        The path of report.html.

    Raises:
        SegstudyError: unknown experiment or no finished confirm trials.

    Example:
        >>> build_report("skip_vs_complexity", out_dir=Path("report"),
        ...              tracking_uri="sqlite:////data/mlflow.db")  # doctest: +SKIP
    """
    out_dir = output_dir(out_dir)
    trials = load_trials(experiment, tracking_uri=tracking_uri, study=study)
    runs = trial_runs(experiment, tracking_uri=tracking_uri, study=study)
    client = reading_client(tracking_uri)
    study_run = _study_run(client, runs)
    spec_text, spec = _spec(client, study_run)
    rows = read_per_image(trials, tracking_uri=tracking_uri)
    per_image = rows.in_domain
    evaluation = spec.get("evaluation") or {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _results(per_image, trials, evaluation=evaluation, n_boot=n_boot, out_dir=out_dir)
        results["confidence"] = _confidence(per_image, spec.get("conformal") or {}, out_dir)
        results["shift"] = _shift(rows.shift, factor_names(trials), spec.get("conformal") or {}, out_dir)
        results["findings"] = _findings(per_image, trials, evaluation, tracking_uri=tracking_uri, out_dir=out_dir)
        results["findings"]["sequential"] = _sequential(per_image, trials, runs, spec, experiment=experiment,
                                                        tracking_uri=tracking_uri, study=study, out_dir=out_dir)
        results["findings"]["claims"] = _claims(per_image, trials, evaluation, experiment=experiment, shift=rows.shift,
                                                tracking_uri=tracking_uri, study=study, out_dir=out_dir)
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    for note in notes:  # each once: the analysis functions repeat them per call
        warnings.warn(note, stacklevel=2)
    html = _render({
        "experiment": experiment, "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "study_run_id": study_run.info.run_id if study_run else None, "tracking_uri": mask_uri(tracking_uri),
        "browse": ui_browse(tracking_uri, study_run.info.experiment_id, study_run.info.run_id) if study_run else None,
        "design": _design(experiment, spec, spec_text, study_run, trials, runs), "versions": versions(),
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


def _study_run(client: MlflowClient, runs: list[Run]) -> Run | None:
    """The parent run of the newest trial (several only with study="all")."""
    children = [r for r in runs if r.data.tags.get(M.PARENT_TAG)]
    if not children:
        return None
    parent = max(children, key=lambda r: r.info.start_time or 0).data.tags[M.PARENT_TAG]
    return client.get_run(parent)


def _spec(client: MlflowClient, run: Run | None) -> tuple[str, dict[str, Any]]:
    """The spec YAML logged on the study run: its text, and its mapping ({} if absent or unreadable)."""
    if run is None:
        return "", {}
    names = [f.path for f in client.list_artifacts(run.info.run_id) if f.path.endswith((".yaml", ".yml"))]
    if not names:
        return "", {}
    process_state.quiet_artifact_downloads()
    with tempfile.TemporaryDirectory(prefix="segstudy-report-") as tmp:
        text = Path(client.download_artifacts(run.info.run_id, names[0], tmp)).read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raw = None
    return text, raw if isinstance(raw, dict) else {}


def _design(
    experiment: str, spec: dict, spec_text: str, run: Run | None, trials: pd.DataFrame, runs: list[Run]
) -> dict[str, Any]:
    params = run.data.params if run else {}
    factors = spec.get("factors") or _json(params.get("factors")) or {
        f: sorted(trials[f].dropna().unique().tolist()) for f in factor_names(trials)
    }
    phases = Counter((r.data.tags.get(M.PHASE_TAG, "?"), r.info.status) for r in runs)
    hparams = spec.get("hyperparameters") or {}
    names = trials.attrs.get("hyperparameters", [])
    used = {h: ", ".join(map(_text, sorted(trials[h].dropna().unique()))) for h in names}
    chosen = _json(run.data.tags.get(M.CHOSEN_TAG)) if run else None
    data = spec.get("data") or {}
    return {
        "name": spec.get("name", experiment),
        "description": spec.get("description") or "",
        "factors": Table(["factor", "levels"], [[k, ", ".join(map(str, v))] for k, v in factors.items()]),
        "n_cells": math.prod(len(v) for v in factors.values()),
        "seeds": ", ".join(map(str, sorted(trials["seed"].unique()))),
        "phases": Table(["phase", "status", "trials"], [[p, s, str(n)] for (p, s), n in sorted(phases.items())]),
        "dataset": _dataset(data) if data else params.get("dataset", "not recorded"),
        "hyperparameters": Table(
            ["hyperparameter", "spec (fixed value or search space)", "values in confirm trials"],
            [[h, json.dumps(hparams[h]) if h in hparams else "default", v] for h, v in used.items()],
        ),
        "chosen": _chosen_table(chosen) if isinstance(chosen, dict) and chosen else None,
        "arms": _arms_table(spec),
        "spec_text": spec_text,
    }


def _arms_table(spec: dict[str, Any]) -> Table | None:
    """Each arm: its family, what makes it that arm, and its parameter count at the study's input size
    (the patch in patch mode, else the image); None for a study logged without a readable spec."""
    try:
        parsed = parse_spec(spec)
    except SegstudyError:
        return None
    dims = parsed.data.spatial_dims
    size = max(int(v) for v in parsed.factors.get("patch_size", [parsed.patch_defaults.size])) if parsed.patch_mode \
        else parsed.data.image_size
    rows = []
    for name in parsed.factors.get(ARM, []):
        cfg = resolve_architecture(str(name), family_overrides=parsed.model, custom=parsed.architectures)
        settings = ", ".join(f"{k}={_text(v)}" for k, v in cfg.model_dump().items() if k != "kind")
        count = parameter_count(cfg, spatial_dims=dims, in_channels=1, out_channels=1, img_size=[size] * dims)
        rows.append([str(name), cfg.kind, f"{count:,}", settings])
    return Table(["arm", "family", f"parameters (input {size}^{dims})", "settings"], rows) if rows else None


def _dataset(data: dict[str, Any]) -> str:
    """"synthetic2d (image_size=64, ...)": the dataset's name, then the spec's settings for it."""
    rest = ", ".join(f"{k}={v}" for k, v in data.items() if k != "dataset")
    return f"{data.get('dataset', '?')} ({rest})" if rest else str(data.get("dataset", "?"))


def _chosen_table(chosen: dict[str, dict[str, Any]]) -> Table:
    """Tuned studies: the hyperparameters the search chose for each cell."""
    names = sorted({name for values in chosen.values() for name in values})
    return Table(["cell", *names], [[cell, *(str(v.get(n, "")) for n in names)] for cell, v in sorted(chosen.items())])


def _results(
    per_image: pd.DataFrame, trials: pd.DataFrame, *, evaluation: dict, n_boot: int, out_dir: Path
) -> dict[str, Any]:
    """Sections 3-6: perturbations, per-condition tables, statistics and plots."""
    figures = [_complexity_figure(trials, out_dir)]
    if per_image.empty or per_image["dice"].isna().all():
        why = "no confirm trial logged per-image Dice (per_image.csv)"
        figures.append(ReportFigure("Robustness plots", note=why))
        return {"perturbations": None, "tau": DEFAULT_TAU, "reference": None, "why_empty": why, "conditions": None,
                "statistics": None, "figures": figures}
    within = resolve_within(per_image, by=ARM, within=None)
    tau = float(evaluation.get("failure_threshold", DEFAULT_TAU))
    reference = evaluation.get("reference_arm")
    reference = reference if reference in set(per_image[ARM]) else None
    perturbed = sorted({parse_condition(c)[0] for c in per_image["condition"].unique()} - {None})
    cond = condition_summary(per_image, arm=ARM, tau=tau, n_boot=n_boot)
    robust, robust_note = None, "no perturbations in this study, so there is no severity curve to summarise"
    if perturbed:
        try:
            robust = robustness_summary(per_image, arm=ARM, reference=reference, n_boot=n_boot)
        except SegstudyError as exc:  # e.g. a stratum without clean scores: the rest of the report still stands
            robust_note = str(exc)
    pairwise = pairwise_tests(per_image, by=ARM)
    ranks = friedman(per_image, by=ARM)
    _csv(out_dir, condition_summary=cond, robustness_summary=robust, pairwise_tests=pairwise, friedman=ranks)
    rows = [*within, ARM]
    conditions = {
        "mean": _pivot(cond[cond["statistic"] == "mean"], rows, "condition"),
        "failure_rate": _pivot(cond[cond["statistic"] == "failure_rate"], rows, "condition"),
        "robustness": _pivot(robust, [*rows, "perturbation"], "summary") if robust is not None else None,
        "robustness_note": robust_note,
    }
    seeds = per_image.groupby([*within, ARM])["seed"].nunique()
    statistics = {
        "pairwise": _table(pairwise, mark="significant"),
        "friedman": _friedman_table(ranks, within),
        "few_seeds": int(seeds.min()) if seeds.min() < MIN_SEEDS else None,
        "cd": _cd_figures(per_image, within, perturbed, out_dir),
    }
    win = winners(cond, pairwise, arm=ARM, within=within)
    _csv(out_dir, winners=win)
    figures += _robustness_figures(per_image, within, perturbed, tau=tau, n_boot=n_boot, win=win, out_dir=out_dir)
    return {
        "perturbations": _perturbation_table(per_image, perturbed), "tau": tau, "reference": reference,
        "why_empty": "", "conditions": conditions, "statistics": statistics, "figures": figures,
    }


def _confidence(per_image: pd.DataFrame, conformal: dict[str, Any], out_dir: Path) -> dict[str, Any] | None:
    """Section 7: measured coverage of the Dice lower bounds per arm and condition, with warnings."""
    if per_image.empty:
        return None
    alpha = float(conformal.get("alpha", Conformal.model_fields["alpha"].default))
    fnr_alpha = float(conformal.get("fnr_alpha", Conformal.model_fields["fnr_alpha"].default))
    within = resolve_within(per_image, by=ARM, within=None)
    summary = coverage_summary(per_image, arm=ARM, within=within, alpha=alpha, fnr_alpha=fnr_alpha)
    if summary is None:
        return None
    _csv(out_dir, coverage=summary)
    rows = [*within, ARM]

    def wide(text: list[str]) -> Table:
        frame = summary.assign(_text=text).pivot_table(index=rows, columns="condition", values="_text", aggfunc="first", sort=False)
        return _table(frame[list(pd.unique(summary["condition"]))].reset_index())

    return {
        "level": 1.0 - alpha,
        "fnr_alpha": fnr_alpha,
        "coverage": wide([f"{c:.2f} ({n})" for c, n in zip(summary["coverage"], summary["n"])]),
        "fnr": wide([f"{v:.3f}" for v in summary["fnr"]]),
        "warnings": shortfalls(summary, arm=ARM, within=within),
    }


def _shift(rows: pd.DataFrame, factors: list[str], conformal: dict[str, Any], out_dir: Path) -> list[dict[str, Any]] | None:
    """Section 8: per shifted factor, the train x test Dice and coverage tables, heatmaps and curves."""
    if rows.empty:
        return None
    target = 1.0 - float(conformal.get("alpha", Conformal.model_fields["alpha"].default))
    blocks = []
    for factor in shift_factors(rows):
        within = [f for f in factors if f not in (ARM, factor)]
        table = shift_table(rows, factor=factor, arm=ARM, within=within)
        dice = shift_matrix(table, factor=factor, arm=ARM, within=within)
        coverage = shift_matrix(table, factor=factor, arm=ARM, within=within, value="coverage")
        _csv(out_dir, **{f"shift_{factor}": dice, f"shift_{factor}_coverage": coverage})
        blocks.append({
            "factor": factor,
            "dice": _table(dice),
            "coverage": _table(coverage) if table["coverage"].notna().any() else None,
            "target": target,
            "figures": [
                ReportFigure(f"Train/test shift along {factor}: heatmaps", "One panel per arm; framed: tested where "
                             "trained.", plot_shift_heatmaps(table, out_dir / f"shift_heatmap_{factor}.png",
                                                            factor=factor, arm=ARM, within=within)),
                ReportFigure(f"Train/test shift along {factor}: degradation curves", "One panel per training level, "
                             "one line per arm.", plot_shift_degradation(table, out_dir / f"shift_degradation_{factor}.png",
                                                                        factor=factor, arm=ARM, within=within)),
            ],
        })
    return blocks


def _perturbation_table(per_image: pd.DataFrame, names: list[str]) -> Table | None:
    """Each perturbation used: its physical parameter, levels, severities run and one realised example."""
    if not names:
        return None
    registry = {row["name"]: row for row in describe()}
    rows = []
    for name in names:
        info = registry.get(name, {"parameter": "not in this segstudy's registry", "levels": []})
        mine = per_image[per_image["condition"].map(lambda c: parse_condition(c)[0] == name)]
        severities = sorted({parse_condition(c)[1] for c in mine["condition"]})
        example = ""
        if M.PERTURBATION_PARAMS in mine.columns and mine[M.PERTURBATION_PARAMS].notna().any():
            row = mine.dropna(subset=[M.PERTURBATION_PARAMS]).iloc[-1]
            example = f"{row['condition']}, image {row['image_id']}: {row[M.PERTURBATION_PARAMS]}"
        rows.append([name, info["parameter"], ", ".join(f"{v:g}" for v in info["levels"]),
                     ", ".join(map(str, severities)), example or "not recorded"])
    return Table(["perturbation", "physical parameter", "levels (severity 1-5)", "severities evaluated",
                  "example of realised parameters"], rows)


def _friedman_table(ranks: pd.DataFrame, within: list[str]) -> Table:
    rows = []
    for key, group in ranks.groupby([*within, "condition"], sort=False, dropna=False):
        first = group.iloc[0]
        order = "; ".join(f"{a}: {r:.2f}" for a, r in sorted(zip(group[ARM], group["mean_rank"]), key=lambda t: t[1]))
        test = f"chi2 = {first['statistic']:.3g}, p = {first['p']:.3g}"
        if math.isnan(first["statistic"]):
            test = "not computable: needs >= 3 arms and >= 2 images"
        rows.append([*map(str, key), order, test, str(first["n_blocks"])])
    return Table([*within, "condition", "mean rank (1 = best)", "Friedman test", "images"], rows)


def _cd_figures(per_image: pd.DataFrame, within: list[str], perturbed: list[str], out_dir: Path) -> list[ReportFigure]:
    """One critical-difference diagram per condition group: clean, then each perturbation (severities pooled)."""
    if per_image[ARM].nunique() < 2:
        return [ReportFigure("Critical difference", note=f"one {ARM} only: nothing to rank")]
    frame = _pooled(per_image, within)
    frame["image_id"] = frame["image_id"] + "|" + frame["condition"]
    frame["condition"] = [parse_condition(c)[0] or M.CLEAN for c in frame["condition"]]
    figures = []
    for group in [M.CLEAN, *perturbed]:
        ranks = friedman(frame, by=ARM, within=[], condition=group)
        tests = pairwise_tests(frame, by=ARM, within=[], condition=group)
        path = plot_critical_difference(ranks.set_index(ARM)["mean_rank"], tests, out_dir / f"cd_{group}.png",
                                        title=f"{group}{'' if group == M.CLEAN else ' (severities pooled)'}: "
                                              f"mean rank per {ARM} (1 = best); bars join arms with Holm p >= 0.05")
        blocks = "images" if group == M.CLEAN else "image x severity pairs"
        figures.append(ReportFigure(f"Critical difference: {group}", f"Blocks: {ranks['n_blocks'].iloc[0]} {blocks}"
                              f"{' over every ' + ', '.join(within) + ' level' if within else ''}.", path))
    return figures


def _findings(
    per_image: pd.DataFrame, trials: pd.DataFrame, evaluation: dict, *, tracking_uri: str, out_dir: Path
) -> dict[str, Any]:
    """Section 0: the findings sentences, the trials that did not learn, the learning curves."""
    not_learned = [f"{r.cell} seed={r.seed}: {r.learning_issue}" for r in not_learned_trials(trials).itertuples()]
    lines: list[str] = []
    if not per_image.empty and ARM in per_image.columns and per_image[ARM].nunique() > 1:
        within = resolve_within(per_image, by=ARM, within=None)
        table = findings(per_image, trials, levels=within, reference=evaluation.get("reference_arm"))
        _csv(out_dir, findings=table)
        lines = table["line"].tolist()
    curves = load_val_curves(trials, tracking_uri=tracking_uri)
    title = "Validation Dice per epoch, one panel per cell, one line per seed"
    if curves.empty:
        figure = ReportFigure(title, note="no confirm trial logged val_dice per epoch")
    else:
        figure = ReportFigure(
            title, "A flat curve near the bottom is a model that did not learn (red panels: the learning gate "
            "rejected at least one seed).", plot_learning_curves(curves, trials, out_dir / "learning_curves.png"),
        )
    return {"lines": lines, "not_learned": not_learned, "curves": figure}


def _sequential(
    per_image: pd.DataFrame, trials: pd.DataFrame, runs: list[Run], spec: dict[str, Any], *, experiment: str,
    tracking_uri: str, study: str, out_dir: Path,
) -> dict[str, Any] | None:
    """A sequential confirm phase (a seed budget in the spec): its decisions at the adjusted level,
    the seeds each cell got and why, the comparisons left unresolved (`analysis.stats.sequential`,
    replayed from the ended trials exactly as the driver decided)."""
    try:
        design = design_of(Confirm.model_validate(spec.get("confirm") or {}))
    except ValidationError:
        return None
    if design is None or per_image.empty:
        return None
    every = load_trials(experiment, tracking_uri=tracking_uri, include_failed=True, study=study)  # cells whose trials all failed too
    factors = factor_names(every)
    cells = {row["cell"]: {f: row[f] for f in factors} for row in every.drop_duplicates("cell").to_dict("records")}
    ended = [(r.data.tags.get(M.CELL_TAG), int(r.data.tags.get(M.SEED_TAG, -1))) for r in runs
             if r.data.tags.get(M.PHASE_TAG) == M.PHASE_CONFIRM and (r.info.status == "FINISHED" or (
                 r.info.status == "FAILED" and r.data.tags.get(M.RETRIED_TAG) != "true"))]
    not_learned = [(r.cell, r.seed) for r in not_learned_trials(trials).itertuples()]
    observed = Observed.from_rows(per_image, ended=ended, not_learned=not_learned)
    comps = comparisons(cells, reference=(spec.get("evaluation") or {}).get("reference_arm"))
    state = replay(design, comps, observed, cells=sorted(cells))
    decisions, seeds = decision_table(state), seeds_table(state, observed)
    _csv(out_dir, sequential_decisions=decisions, seeds_per_cell=seeds)
    return {
        "design": design.describe(), "summary": state.summary(), "finished": state.finished,
        "lines": decisions["line"].tolist(), "unresolved": [d.line(design) for d in state.open if state.finished],
        "seeds": _table(seeds.rename(columns={"seeds": "seeds ended", "asked": "seeds asked"})),
    }


def _claims(
    per_image: pd.DataFrame, trials: pd.DataFrame, evaluation: dict, *, experiment: str, shift: pd.DataFrame,
    tracking_uri: str, study: str, out_dir: Path,
) -> list[str]:
    """The robustness claims the study's factors allow (`analysis.stats.claims`), as sentences."""
    if per_image.empty or ARM not in per_image.columns:
        return []
    positions = None
    if PATCH in factor_names(trials) and "fbr" in per_image.columns and per_image["fbr"].notna().any():
        patched = with_patch_metrics(trials, experiment=experiment, tracking_uri=tracking_uri, study=study)
        positions = fbr_shift(per_image, patched)
    reference = reference_arm(sorted(per_image[ARM].dropna().unique()), evaluation.get("reference_arm"))
    table = claims(per_image, reference=reference, fbr_positions=positions, shift_rows=shift, trials=trials)
    _csv(out_dir, claims=table)
    return table["line"].tolist()


def _complexity_figure(trials: pd.DataFrame, out_dir: Path) -> ReportFigure:
    title = "(a) Dice vs task complexity"
    factors = factor_names(trials)
    if COMPLEXITY not in factors:
        return ReportFigure(title, note=f"skipped: the study has no '{COMPLEXITY}' (complexity) factor")
    dice, td = (summarise(trials, by=factors, metric=m) for m in (M.TEST_DICE, M.TEST_TD))
    return ReportFigure(title, "Mean test Dice over seeds with 95% t-interval, against the complexity level and the "
                  "measured texture disparity.", plot_dice_vs_complexity(dice, td, out_dir / "dice_vs_complexity.png"))


def _robustness_figures(
    per_image: pd.DataFrame, within: list[str], perturbed: list[str], *, tau: float, n_boot: int,
    win: pd.DataFrame, out_dir: Path,
) -> list[ReportFigure]:
    """Plots (b)-(d); (b) and (c) pool the strata so each arm is one line or point."""
    over = f"{', '.join(within)} levels" if within else ""
    titles = ("(b) Dice vs severity", "(c) Accuracy vs robustness")
    figures = [ReportFigure(t, note="skipped: no perturbations in this study") for t in titles]
    if perturbed:
        pooled = _pooled(per_image, within)
        cond = condition_summary(pooled, arm=ARM, within=[], tau=tau, n_boot=n_boot)
        robust = robustness_summary(pooled, arm=ARM, within=[], n_boot=n_boot)
        parameters = {p["name"]: (p["parameter"], p["levels"]) for p in describe()}
        clean = cond[(cond["condition"] == M.CLEAN) & (cond["statistic"] == "mean")]
        figures = [
            ReportFigure(titles[0], "One panel per perturbation; severity 0 is the clean image.",
                   plot_dice_vs_severity(cond, out_dir / "dice_vs_severity.png", arm=ARM, parameters=parameters,
                                         pooled_over=over)),
            ReportFigure(titles[1], "Clean Dice against ROOD-MRI degradation; ringed arms form the Pareto front.",
                   plot_accuracy_robustness(clean, robust[robust["summary"] == "degradation"],
                                            out_dir / "accuracy_vs_robustness.png", arm=ARM, pooled_over=over)),
        ]
    figures.append(ReportFigure("(d) Which arm wins where", "Winner per (stratum, severity); table in winners.csv.",
                          plot_winner_map(win, out_dir / "winner_map.png", within=within)))
    return figures


def _pooled(per_image: pd.DataFrame, within: list[str]) -> pd.DataFrame:
    """Strata folded into the image id, so `within=[]` pools them without merging different images."""
    frame = per_image.copy()
    frame["image_id"] = frame["image_id"].astype(str)
    for name in within:
        frame["image_id"] = f"{name}=" + frame[name].astype(str) + "|" + frame["image_id"]
    return frame


def _pivot(frame: pd.DataFrame, rows: list[str], columns: str) -> Table:
    """Long estimates -> one row per `rows`, one column per `columns` value: "value [ci_low, ci_high]"."""
    text = frame.assign(_text=[_ci(*v) for v in frame[["value", "ci_low", "ci_high"]].itertuples(index=False)])
    wide = text.pivot_table(index=rows, columns=columns, values="_text", aggfunc="first", sort=False)
    return _table(wide[list(pd.unique(frame[columns]))].reset_index())


def _table(frame: pd.DataFrame, *, mark: str | None = None) -> Table:
    rows = [[_text(v) for v in row] for row in frame.itertuples(index=False)]
    marked = [bool(v) for v in frame[mark]] if mark else []
    return Table([str(c) for c in frame.columns], rows, marked)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return "\u2013" if math.isnan(value) else f"{value:.4g}"
    return "\u2013" if value is None else str(value)


def _ci(value: float, low: float, high: float) -> str:
    return f"{value:.3f}" if math.isnan(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:  # e.g. a tag cut at MLflow's length limit
        return None


def _csv(out_dir: Path, **tables: pd.DataFrame | None) -> None:
    for name, table in tables.items():
        if table is not None:
            table.to_csv(out_dir / f"{name}.csv", index=False)


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
