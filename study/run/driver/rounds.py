"""The confirm phase as rounds, for a spec whose confirm seeds are a budget (`analysis.stats.statements.sequential`).

Round 1 trains every cell under seeds 0..min-1. After each round the driver replays the sequential
procedure over every confirm trial that ended and runs the seeds it asks for next, one `Tuner.fit`
per round (`study.run.driver.fit`, so a stop ends the round and no later one starts), until every
declared claim is resolved or closed, or the open ones' cells have `max` seeds.

What a decision reads is kept in the study folder (`confirm_scores.jsonl`: one line per ended
confirm trial, its per-image Dice under every condition it was tested in (clean, perturbed,
shifted), its training patches' foreground quantiles and the learning gate's verdict), written by
the driver before the trial's MLflow run is closed. So rounds are decided without reading MLflow (a
tracking server that is away only fills the outbox), and a resumed driver re-derives its round from
the trials that are done: lines of trials `reconcile` did not count as done are dropped (those
trials run again), and a done trial without a line is read back from its MLflow run.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from analysis.read.study_spec import settings_of_spec
from analysis.stats.statements.findings import reference_arm
from analysis.stats.statements.sequential import CENSORED, FUTILE, NOT_LEARNED, Observed, SequentialState, design_of, replay
from analysis.stats.statements.study import declared_claims
from study import metrics_names as M
from study.run.record.reconcile import Reconciled, study_trial_runs
from study.run.tune.stopping import full_disk_stops
from study.run.tune.tune_report import checkpoint_files, failure_of
from study.spec import ARCHITECTURE, StudySpec
from study.spec.cells import Cell, cell_key
from study.tracking import StudyTracker
from study.training import TrialPlan
from study.training.plan import confirm_trial_of

SCORES_FILE = "confirm_scores.jsonl"
TAG_LIMIT = 5000  # characters of the round-state tag (MLflow's limit is larger; the tag is a summary)

# fit(trials, stage, open comparisons) runs one round and returns (trials ended, trials failed).
FitRound = Callable[[list[dict[str, Any]], str, Sequence[str]], tuple[int, int]]


@dataclass(frozen=True)
class Ended:
    """One ended confirm trial: its per-image rows, columns by name (condition, image_id, dice, and
    fbr and test_<factor> where the trial has them; None: failed, nothing scored), its training
    patches' foreground quantiles (patch studies) and the learning gate's verdict (None: no verdict).
    `scores` (clean Dice per image) is how lines written before per-condition rows read back."""

    key: str
    cell: str
    seed: int
    rows: dict[str, list[Any]] | None = None
    learned: bool | None = None
    patches: dict[str, float] | None = None
    scores: dict[str, float] | None = None

    def frame(self) -> pd.DataFrame:
        """The rows as a frame (with cell, seed and the trial key as run_id); empty when failed."""
        if self.rows is not None:
            frame = pd.DataFrame(self.rows)
        elif self.scores:
            frame = pd.DataFrame({"condition": M.CLEAN, "image_id": list(self.scores), "dice": list(self.scores.values())})
        else:
            return pd.DataFrame()
        return frame.assign(cell=self.cell, seed=self.seed, run_id=self.key)


class ConfirmScores:
    """`confirm_scores.jsonl` in a study folder: appended one line per ended trial, flushed to
    disk at once (and `saved`: pushed to the bucket of a study in one) before the trial's MLflow
    run is closed; a line cut by a kill is skipped when read."""

    def __init__(self, folder: Path, *, saved: Callable[..., None] = lambda *paths: None) -> None:
        self.path = folder / SCORES_FILE
        self.saved = saved

    def record(self, ended: Ended) -> None:
        line = (json.dumps(asdict(ended)) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                os.write(fd, line)
                os.fsync(fd)
            except OSError:  # a full disk: no half line left for the next one to run into
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
        self.saved(self.path)

    def read(self) -> dict[str, Ended]:
        """Trial key -> its line (the last, if a trial that ran again wrote two)."""
        if not self.path.is_file():
            return {}
        out = {}
        for line in self.path.read_text().splitlines():
            try:
                ended = Ended(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # the tail of a line a kill cut
            out[ended.key] = ended
        return out

    def keep(self, ended: Iterable[Ended]) -> None:
        """Rewrite the file with these lines only (atomically: a kill leaves the old file)."""
        tmp = self.path.with_name(f".{SCORES_FILE}.tmp")
        tmp.write_text("".join(json.dumps(asdict(e)) + "\n" for e in ended))
        os.replace(tmp, self.path)
        self.saved(self.path)


class ScoresCallback(tune.Callback):
    """Tune driver callback: records each ended confirm trial in `ConfirmScores`. Put it before
    the tracking callback, so a trial whose run is closed always has its line."""

    def __init__(self, store: ConfirmScores, spec: StudySpec) -> None:
        self.store, self.spec = store, spec

    @full_disk_stops(lambda self: self.store.path)
    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        final = trial.last_result or {}
        rows, learned = None, None
        if not failure_of(final):
            with checkpoint_files(trial) as directory:
                if directory is not None and (directory / M.PER_IMAGE_FILE).is_file():
                    rows = trial_rows(pd.read_csv(directory / M.PER_IMAGE_FILE))
            learned = bool(final[M.LEARNED]) if M.LEARNED in final else None
        self._record(trial, rows, learned, patch_quantiles(final))

    @full_disk_stops(lambda self: self.store.path)
    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, None, None, None)

    def _record(self, trial: Any, rows: dict[str, list[Any]] | None, learned: bool | None,
                patches: dict[str, float] | None) -> None:
        plan = TrialPlan.from_config(self.spec, trial.config)
        self.store.record(Ended(plan.key, plan.cell_key, plan.seed, rows, learned, patches))


KEPT_COLUMNS = ("condition", "image_id", "dice", "fbr")  # and every test_<factor> column


def trial_rows(per_image: pd.DataFrame) -> dict[str, list[Any]]:
    """What the claims read of one trial's per_image.csv: its rows under every condition, by column."""
    keep = [c for c in per_image.columns if c in KEPT_COLUMNS or c.startswith(M.TEST_PREFIX)]
    table = per_image[keep].astype(object).where(per_image[keep].notna(), None)
    return {c: table[c].tolist() for c in keep}


def patch_quantiles(metrics: dict[str, Any]) -> dict[str, float] | None:
    """The training patches' foreground quantiles of a finished patch trial (None otherwise)."""
    found = {k: float(v) for k, v in metrics.items() if str(k).startswith(M.PATCH_FG_PREFIX) and k != M.PATCH_FG_MEAN}
    return found or None


def observed(ended: Iterable[Ended], cells: Mapping[str, Cell]) -> Observed:
    """The ended trials as the sequential procedure reads them: every row with its cell's factor values."""
    ended = list(ended)
    frames = [e.frame() for e in ended]
    rows = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else (
        pd.DataFrame(columns=["cell", "seed", "run_id", "image_id", "condition", "dice"]))
    factors = sorted({name for values in cells.values() for name in values})
    for name in factors:
        rows[name] = rows["cell"].map(lambda c, name=name: cells[c][name] if c in cells else None)
    rows.attrs["factors"] = factors
    patches = pd.DataFrame([{"run_id": e.key, **e.patches} for e in ended if e.patches])
    return Observed.of(rows, ended=[(e.cell, e.seed) for e in ended],
                       not_learned=[(e.cell, e.seed) for e in ended if e.learned is False], patches=patches)


def restore(store: ConfirmScores, done: Reconciled, *, tracker: StudyTracker, study_run: str) -> dict[str, Ended]:
    """The ended confirm trials a (resumed) study starts from: its lines of trials that are done,
    done trials without a line read back from MLflow, and the file rewritten to just these."""
    lines = store.read()
    keys = {key for key in done.done if confirm_trial_of(key) is not None}
    kept = {key: lines[key] for key in keys if key in lines}
    if keys - kept.keys():
        kept.update(_from_mlflow(tracker, study_run, keys - kept.keys()))
    store.keep(kept.values())
    return kept


def _from_mlflow(tracker: StudyTracker, study_run: str, keys: set[str]) -> dict[str, Ended]:
    out = {}
    with tempfile.TemporaryDirectory(prefix="segstudy-rounds-") as tmp:
        for run in study_trial_runs(tracker, study_run):
            key = run.data.tags.get(M.TRIAL_KEY_TAG)
            if key not in keys:
                continue
            cell, seed = confirm_trial_of(key)  # type: ignore[misc]
            rows, learned, patches = None, None, None
            if run.info.status == "FINISHED":
                local = tracker.client.download_artifacts(run.info.run_id, M.PER_IMAGE_FILE, str(Path(tmp) / run.info.run_id))
                rows = trial_rows(pd.read_csv(local))
                verdict = run.data.tags.get(M.LEARNED_TAG)
                learned = None if verdict is None else verdict == "true"
                patches = patch_quantiles(run.data.metrics)
            out[key] = Ended(key, cell, seed, rows, learned, patches)
    return out


@dataclass(frozen=True)
class RoundsOutcome:
    """What the rounds of this driver did, and where the procedure stands."""

    completed: int
    failed: int
    state: SequentialState
    stalled: bool = False  # a round ended with trials it needed neither finished nor failed


def confirm_rounds(
    spec: StudySpec,
    cells: Sequence[Cell],
    chosen: Mapping[str, dict[str, Any]],
    ended: dict[str, Ended],
    *,
    store: ConfirmScores,
    slots: int,
    fit: FitRound,
    announce: Callable[[SequentialState], None],
) -> RoundsOutcome:
    """Run rounds until the procedure is finished (every comparison decided, or max seeds).

    Args:
        cells: the study's cells; those without a chosen configuration (`chosen`) are left out.
        ended: the confirm trials that ended before (`restore`).
        store: where the rounds' trials record themselves (`ScoresCallback`).
        slots: trials the cluster runs at once (a short round is filled with later looks' seeds).
        fit: runs one round's trials (raises `process_state.Interrupted` after a stop).
        announce: told the state after every decision (console, study run tag).
    """
    settings = settings_of_spec(spec)
    design = design_of(spec.confirm, alpha=spec.statistics.alpha)
    assert design is not None, "confirm_rounds needs a seed budget"
    by_key = {cell_key(c): c for c in cells if cell_key(c) in chosen}
    arms = sorted({str(c[ARCHITECTURE]) for c in by_key.values()})
    reference = reference_arm(arms, spec.evaluation.reference_arm)
    completed = failed = 0
    before: SequentialState | None = None
    while True:
        state = replay(design, observed(ended.values(), by_key),
                       lambda obs: declared_claims(obs, settings=settings, reference=reference), cells=sorted(by_key))
        announce(state)
        if state.finished:
            return RoundsOutcome(completed, failed, state)
        if before is not None and (before.round, before.missing) == (state.round, state.missing):
            cut = ", ".join(f"{cell} seed={seed}" for cell, seeds in sorted(state.missing.items()) for seed in seeds)
            warnings.warn(f"sequential confirm, round {state.round}: {cut} ended neither finished nor failed; "
                          "no further round was started (segstudy resume runs them again)", stacklevel=2)
            return RoundsOutcome(completed, failed, state, stalled=True)
        todo = [
            TrialPlan.config(by_key[cell], seed=seed, phase=M.PHASE_CONFIRM, hparams=chosen[cell])["trial"]
            for cell, seed in state.next_trials(slots=slots)
        ]
        ran, lost = fit(todo, stage_text(state), [d.statement.label for d in state.open] if state.round > 1 else [])
        completed, failed = completed + ran, failed + lost
        ended.update(store.read())
        before = state


def announce(state: SequentialState, *, tracker: StudyTracker, study_run: str, console: Any) -> None:
    """A state after a decision: the study run's tag (`round_tag`) and the console: the design
    before round 1, then what each round resolved, and every decision at the end."""
    tracker.set_tags(study_run, round_tag(state))
    if state.round == 1 and not state.finished:
        console.note(f"sequential confirm: {state.design.describe()}")
        return
    console.note(f"sequential confirm, {state.summary()}")
    if state.finished:
        for decision in state.decisions:
            console.note(f"  {decision.line()}")


def stage_text(state: SequentialState) -> str:
    """'round 2 of up to 8, 4 seeds per cell'."""
    looks = state.design.looks
    return f"round {state.round} of up to {len(looks)}, {looks[state.round - 1]} seeds per cell"


def round_tag(state: SequentialState) -> dict[str, str]:
    """The study run's tag with the round state (`segstudy status` shows it), within TAG_LIMIT:
    the seeds asked per cell and the open comparisons are left out first when it would not fit."""
    value: dict[str, Any] = {
        "round": state.round, "rounds": len(state.design.looks), "seeds": state.design.looks[state.round - 1],
        "finished": state.finished, "claims": len(state.decisions), "resolved": len(state.resolved),
        "not_learned": sum(d.outcome == NOT_LEARNED for d in state.decisions),
        "futile": sum(d.outcome == FUTILE for d in state.decisions),
        "censored": sum(d.outcome == CENSORED for d in state.decisions),
        "open": [d.statement.label for d in state.open], "due": state.due,
    }
    text = json.dumps(value, sort_keys=True)
    if len(text) > TAG_LIMIT:
        del value["due"]
    while len(text := json.dumps(value, sort_keys=True)) > TAG_LIMIT and value["open"]:
        value["open"] = value["open"][:-1]
        value["more_open"] = len(state.open) - len(value["open"])
    return {M.ROUNDS_TAG: text}


__all__ = ["ConfirmScores", "Ended", "RoundsOutcome", "ScoresCallback", "announce", "confirm_rounds", "observed",
           "patch_quantiles", "restore", "round_tag", "stage_text", "trial_rows"]
