"""The sequential confirm phase (analysis/stats/sequential.py, study/run/driver/rounds.py): which cells get
the next seed on known numbers, the error rate under optional stopping by simulation with the same
inference, and a real study stopped and killed in the middle of its rounds, then resumed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from analysis.stats.sequential import (
    DIFFERENCE, NO_DIFFERENCE, NOT_LEARNED, OPEN, UNRESOLVED, Design, Observed, comparisons, replay,
)
from conftest import BIN, ROOT
from study import metrics_names as M
from study.run.driver.rounds import ConfirmScores, Ended, confirm_rounds, observed
from study.spec import load_spec
from study.spec.cells import cell_key, expand_cells

pytestmark = pytest.mark.filterwarnings("ignore:.*confirmation seed")

IMAGES = [f"img{i}" for i in range(10)]
EASY, HARD = 0.2, 0.8
CELLS = {
    cell_key({"architecture": arm, "alpha": alpha}): {"architecture": arm, "alpha": alpha}
    for arm in ("unet", "noskip_unet", "attention_unet") for alpha in (EASY, HARD)
}


def key(arm: str, alpha: float) -> str:
    return cell_key({"architecture": arm, "alpha": alpha})


def known_scores(seeds: int) -> dict[str, pd.DataFrame]:
    """Scores chosen so the first look decides each comparison one way:
    at alpha 0.2 noskip_unet is 0.2 Dice below unet with seeds that agree (a difference) and
    attention_unet 0.001 above it (no difference beyond 0.05); at alpha 0.8 noskip_unet's seeds
    swing by +-0.3 (open)."""
    image = np.linspace(-0.05, 0.05, len(IMAGES))
    steady = np.array([0.001, -0.001, 0.0005, -0.0005, 0.0])[:seeds, None]
    swing = np.array([0.3, -0.3, 0.25, -0.25, 0.3])[:seeds, None]
    arrays = {
        key("unet", EASY): 0.9 + image + steady,
        key("noskip_unet", EASY): 0.7 + image + steady,
        key("attention_unet", EASY): 0.901 + image + steady,
        key("unet", HARD): 0.6 + image + steady,
        key("noskip_unet", HARD): 0.55 + image + swing,
        key("attention_unet", HARD): 0.3 + image + steady,
    }
    return {cell: pd.DataFrame(a, index=pd.Index(range(seeds), name="seed"), columns=IMAGES) for cell, a in arrays.items()}


def observed_of(scores: dict[str, pd.DataFrame], *, failed=(), not_learned=()) -> Observed:
    ended = {cell: frozenset(table.index) | {s for c, s in failed if c == cell} for cell, table in scores.items()}
    kept = {cell: table.drop(index=[s for c, s in failed if c == cell], errors="ignore") for cell, table in scores.items()}
    by_cell: dict[str, set[int]] = {}
    for cell, seed in not_learned:
        by_cell.setdefault(cell, set()).add(seed)
    return Observed(kept, ended, {c: frozenset(s) for c, s in by_cell.items()})


DESIGN = Design(looks=(2, 3, 4), margin=0.05)
COMPS = comparisons(CELLS)


def outcomes(state) -> dict[str, str]:
    return {d.comparison.label: d.outcome for d in state.decisions}


def test_comparisons_are_the_findings_each_arm_minus_the_reference_per_level():
    assert [c.label for c in COMPS] == [
        "alpha 0.2: attention_unet - unet", "alpha 0.2: noskip_unet - unet",
        "alpha 0.8: attention_unet - unet", "alpha 0.8: noskip_unet - unet",
    ]
    assert comparisons(CELLS, reference="noskip_unet")[0].label == "alpha 0.2: attention_unet - noskip_unet"
    assert comparisons({k: v for k, v in CELLS.items() if v["architecture"] == "unet"}) == []


def test_round_one_asks_every_cell_for_the_first_seeds():
    state = replay(DESIGN, COMPS, observed_of({c: t.iloc[:1] for c, t in known_scores(2).items()}), cells=sorted(CELLS))
    assert state.round == 1 and not state.finished
    assert state.missing == {cell: (1,) for cell in CELLS}
    assert all(d.outcome == OPEN and d.estimate is None for d in state.decisions)


def test_after_round_one_only_the_cells_of_open_comparisons_get_the_next_seed():
    state = replay(DESIGN, COMPS, observed_of(known_scores(2)), cells=sorted(CELLS))
    assert outcomes(state) == {
        "alpha 0.2: attention_unet - unet": NO_DIFFERENCE,
        "alpha 0.2: noskip_unet - unet": DIFFERENCE,
        "alpha 0.8: attention_unet - unet": DIFFERENCE,
        "alpha 0.8: noskip_unet - unet": OPEN,
    }
    assert state.round == 2 and not state.finished
    assert state.missing == {key("noskip_unet", HARD): (2,), key("unet", HARD): (2,)}
    assert state.due[key("unet", HARD)] == 3 and state.due[key("unet", EASY)] == 2
    assert state.kept_by[key("unet", HARD)] == ("alpha 0.8: noskip_unet - unet",)
    assert state.next_trials(slots=1) == [(key("noskip_unet", HARD), 2), (key("unet", HARD), 2)]
    # Free slots take the next look's seeds of the same cells (they change no decision).
    assert state.next_trials(slots=4) == [
        (key("noskip_unet", HARD), 2), (key("unet", HARD), 2), (key("noskip_unet", HARD), 3), (key("unet", HARD), 3),
    ]
    interval = next(d for d in state.decisions if d.outcome == DIFFERENCE).estimate
    assert interval.ci_high - interval.ci_low > 0  # at the adjusted level, wider than a 95% one would be


def test_decisions_are_frozen_and_rederived_from_whatever_ended():
    """Extra seeds (look-ahead, or other comparisons' rounds) never reopen a decision; the state is
    a function of the ended trials alone, so a resumed driver finds the same round."""
    first = replay(DESIGN, COMPS, observed_of(known_scores(2)), cells=sorted(CELLS))
    every = replay(DESIGN, COMPS, observed_of(known_scores(4)), cells=sorted(CELLS))
    assert every.finished and every.round == 3
    resolved_first = {d.comparison: d for d in first.decisions if d.outcome != OPEN}
    for d in every.decisions:
        if d.comparison in resolved_first:
            assert d == resolved_first[d.comparison]  # round 1's decision and interval, not the 4-seed one
    assert outcomes(every)["alpha 0.8: noskip_unet - unet"] == UNRESOLVED
    assert every.due[key("noskip_unet", HARD)] == 4 and every.due[key("attention_unet", EASY)] == 2
    assert [d.comparison.label for d in every.open] == ["alpha 0.8: noskip_unet - unet"]


def test_a_model_that_did_not_learn_closes_its_comparisons_without_more_seeds():
    state = replay(DESIGN, COMPS, observed_of(known_scores(2), not_learned=[(key("unet", HARD), 1)]), cells=sorted(CELLS))
    assert outcomes(state)["alpha 0.8: noskip_unet - unet"] == NOT_LEARNED
    assert outcomes(state)["alpha 0.8: attention_unet - unet"] == NOT_LEARNED
    assert state.finished and state.round == 1 and state.missing == {}
    assert "2 closed (a model did not learn)" in state.summary()


def test_a_failed_seed_leaves_the_comparison_open_for_the_next_seed():
    state = replay(DESIGN, COMPS, observed_of(known_scores(2), failed=[(key("attention_unet", EASY), 1)]),
                   cells=sorted(CELLS))
    assert outcomes(state)["alpha 0.2: attention_unet - unet"] == OPEN  # one finished seed: no interval
    assert state.missing[key("attention_unet", EASY)] == (2,)


def test_rounds_run_the_seeds_asked_under_each_cells_chosen_configuration(write_spec, tmp_path):
    """confirm_rounds on a real store: each round's trials are the replay's next seeds, with the
    cell's tuned hyperparameters; a round's trials record themselves and the next round reads them."""
    spec = load_spec(write_spec(
        factors={"architecture": ["unet", "noskip_unet", "attention_unet"], "alpha": [EASY, HARD]},
        seeds=None, confirm={"seeds": {"min": 2, "max": 4}, "resolve": {"margin": 0.05}},
    ))
    cells = expand_cells(spec)
    chosen = {cell_key(c): {"lr": 0.001 * (i + 1)} for i, c in enumerate(cells)}
    store, truth, rounds = ConfirmScores(tmp_path), known_scores(5), []

    def fit(todo, stage, open_):
        rounds.append((stage, [(cell_key(t["cell"]), t["seed"]) for t in todo], list(open_)))
        for trial in todo:
            cell = cell_key(trial["cell"])
            assert trial["hparams"] == chosen[cell] and trial["phase"] == M.PHASE_CONFIRM
            scores = dict(zip(IMAGES, truth[cell].loc[trial["seed"]].astype(float)))
            store.record(Ended(f"confirm|{cell}|seed={trial['seed']}", cell, trial["seed"], scores, True))
        return len(todo), 0

    states = []
    outcome = confirm_rounds(spec, cells, chosen, {}, store=store, slots=2, fit=fit, announce=states.append)
    hard = [key("noskip_unet", HARD), key("unet", HARD)]
    assert [r[0] for r in rounds] == ["round 1 of up to 3, 2 seeds per cell", "round 2 of up to 3, 3 seeds per cell",
                                      "round 3 of up to 3, 4 seeds per cell"]
    assert sorted(rounds[0][1]) == sorted((cell, s) for cell in CELLS for s in (0, 1)) and rounds[0][2] == []
    assert rounds[1] == (rounds[1][0], [(hard[0], 2), (hard[1], 2)], ["alpha 0.8: noskip_unet - unet"])
    assert rounds[2][1] == [(hard[0], 3), (hard[1], 3)]
    assert outcome.state.finished and outcome.completed == 12 + 2 + 2 and not outcome.stalled
    assert [s.round for s in states] == [1, 2, 3, 3]
    assert len(store.read()) == 16


def test_the_store_skips_a_line_cut_by_a_kill_and_keeps_the_last_of_a_rerun(tmp_path):
    store = ConfirmScores(tmp_path)
    store.record(Ended("confirm|c|seed=0", "c", 0, {"a": 0.5}, True))
    store.record(Ended("confirm|c|seed=0", "c", 0, {"a": 0.7}, False))
    with store.path.open("a") as f:
        f.write('{"key": "confirm|c|seed=1", "cell": "c", "se')
    lines = store.read()
    assert list(lines) == ["confirm|c|seed=0"] and lines["confirm|c|seed=0"].scores == {"a": 0.7}
    assert observed(lines.values()).not_learned == {"c": frozenset({0})}


@pytest.mark.filterwarnings("ignore:.*seed\\(s\\) for")
def test_the_report_gives_the_decisions_seeds_per_cell_and_why_and_what_stayed_unresolved(tmp_path):
    """A store written by hand with the known numbers, as the rounds would have left it: the report
    replays the procedure from MLflow and says what the driver decided."""
    from mlflow.entities import Metric, Param

    from analysis.commands.report import build_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("seqreport", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_STUDY}).info.run_id
    spec = tmp_path / "seqreport.yaml"
    spec.write_text("name: seqreport\ndata: {dataset: synthetic2d}\nfactors: {architecture: [unet, noskip_unet, "
                    "attention_unet], alpha: [0.2, 0.8]}\nconfirm: {seeds: {min: 2, max: 4}, resolve: {margin: 0.05}}\n")
    client.log_artifact(parent, str(spec))
    truth = known_scores(4)
    due = replay(DESIGN, COMPS, observed_of(truth), cells=sorted(CELLS)).due
    for cell, n in due.items():
        for seed in range(n):
            values = CELLS[cell]
            tags = {M.PARENT_TAG: parent, M.ROLE_TAG: M.ROLE_TRIAL, M.CELL_TAG: cell, M.PHASE_TAG: M.PHASE_CONFIRM,
                    M.SEED_TAG: str(seed), M.FACTORS_TAG: json.dumps(sorted(values)), M.LEARNED_TAG: "true"}
            run_id = client.create_run(exp, tags=tags).info.run_id
            dice = truth[cell].loc[seed].to_numpy()
            client.log_batch(run_id, metrics=[Metric(M.TEST_DICE, float(dice.mean()), 0, 0), Metric(M.VAL_DICE, 0.5, 0, 1)],
                             params=[Param(k, str(v)) for k, v in values.items()])
            table = pd.DataFrame({"image_id": IMAGES, "condition": "clean", "dice": dice, "hd95": 2.0, "nsd": 0.9,
                                  "assd": 1.0, "td": 1.0, "empty_gt": False, "empty_pred": False, "missed": False,
                                  "fbr": 0.1})
            path = tmp_path / run_id / M.PER_IMAGE_FILE
            path.parent.mkdir()
            table.to_csv(path, index=False)
            client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, status="FINISHED")
    client.set_terminated(parent, status="FINISHED")

    html = build_report("seqreport", out_dir=tmp_path / "report", tracking_uri=uri, n_boot=0, log_to_mlflow=False).read_text()
    lines = re.findall(r"<li>(.*?)</li>", re.search(r'<ul id="sequential-lines">(.*?)</ul>', html, re.S).group(1))
    assert [line.split(" = ")[0] for line in lines] == [c.label for c in COMPS]
    assert lines[1].startswith("alpha 0.2: noskip_unet - unet = -0.200 Dice [") and "(98.33% interval)" in lines[1]
    assert lines[1].endswith("2 seeds x 10 images, round 1: difference")
    assert lines[3].endswith("4 seeds x 10 images, round 3: unresolved at max seeds")
    assert "finished after round 3 of up to 3 (4 seeds): 3 of 4 comparisons resolved, 1 unresolved at max seeds" in html
    unresolved = re.search(r'<div class="warning" id="unresolved">(.*?)</div>', html, re.S).group(1)
    assert "1 comparison(s) stayed unresolved" in unresolved and "alpha 0.8: noskip_unet - unet" in unresolved
    rows = {cells[0]: cells[1:] for cells in (re.findall(r"<td>(.*?)</td>", row) for row in re.findall(
        r"<tr>(.*?)</tr>", re.search(r'<table id="seeds-per-cell">(.*?)</table>', html, re.S).group(1), re.S)) if cells}
    assert rows[key("unet", HARD)] == ["4", "4", "kept to 4 for alpha 0.8: noskip_unet - unet"]
    assert rows[key("attention_unet", HARD)] == ["2", "2", "round 1 (every cell)"]
    decisions = pd.read_csv(tmp_path / "report" / "sequential_decisions.csv")
    assert list(decisions["outcome"]) == [NO_DIFFERENCE, DIFFERENCE, DIFFERENCE, UNRESOLVED]


# --- Valid under optional stopping: simulated studies, the same inference ------------------------

N_STUDIES = 200
LOOKS = (3, 4, 5, 6, 7, 8, 9, 10)  # min 3, max 10: the benchmark's budget


def simulated_study(rng: np.random.Generator, delta: float, *, seeds: int = 10, images: int = 20) -> dict[str, pd.DataFrame]:
    """Both cells of one comparison under every seed the budget allows, from the model the
    inference assumes (tests/test_inference.py): seed effect, shared image effect, interaction, noise."""
    image = rng.normal(0.0, 0.10, images)
    cells = {}
    for cell, mean in (("arm", 0.8 + delta), ("ref", 0.8)):
        values = (mean + rng.normal(0.0, 0.03, (seeds, 1)) + image + rng.normal(0.0, 0.03, images)
                  + rng.normal(0.0, 0.03, (seeds, images)))
        cells[cell] = pd.DataFrame(values, index=pd.Index(range(seeds), name="seed"), columns=[f"i{j}" for j in range(images)])
    return cells


PAIR = {"arm": {"architecture": "noskip_unet", "alpha": 0.9}, "ref": {"architecture": "unet", "alpha": 0.9}}


def adaptive(scores: dict[str, pd.DataFrame], design: Design):
    """The whole adaptive study in one replay: every look reads only its first n seeds, so with all
    seeds present the replay takes exactly the decisions the round-by-round study takes."""
    full = Observed(scores, {cell: frozenset(t.index) for cell, t in scores.items()})
    return replay(design, comparisons(PAIR), full, cells=["arm", "ref"])


def round_by_round(scores: dict[str, pd.DataFrame], design: Design, *, slots: int):
    ended: dict[str, set[int]] = {"arm": set(), "ref": set()}
    while True:
        seen = Observed({c: t.loc[sorted(ended[c])] for c, t in scores.items()}, {c: frozenset(s) for c, s in ended.items()})
        state = replay(design, comparisons(PAIR), seen, cells=["arm", "ref"])
        if state.finished:
            return state
        for cell, seed in state.next_trials(slots=slots):
            ended[cell].add(seed)


def declared(delta: float, design: Design, rng: np.random.Generator) -> tuple[float, float]:
    """(share of studies declaring a difference, mean seeds per cell the arm got)."""
    states = [adaptive(simulated_study(rng, delta), design) for _ in range(N_STUDIES)]
    return float(np.mean([s.decisions[0].outcome == DIFFERENCE for s in states])), float(np.mean([s.due["arm"] for s in states]))


def test_round_by_round_takes_the_one_replay_decisions():
    rng = np.random.default_rng(11)
    design = Design(looks=LOOKS, margin=0.02)
    for delta in (0.0, 0.03, 0.06):
        scores = simulated_study(rng, delta)
        assert round_by_round(scores, design, slots=2).decisions == adaptive(scores, design).decisions
        assert round_by_round(scores, design, slots=5).decisions == adaptive(scores, design).decisions


def test_optional_stopping_declares_a_null_difference_in_at_most_5_percent():
    """200 adaptive studies with no true difference (min 3, max 10 seeds, a look after every
    round): at most 5% plus two standard errors declare one. The same looks at 95% each, without
    the spending, declare more: the check has teeth."""
    rng = np.random.default_rng(20261202)
    adjusted = Design(looks=LOOKS, margin=0.02)
    null, _ = declared(0.0, adjusted, rng)
    naive, _ = declared(0.0, Design(looks=LOOKS, margin=0.02, alpha=0.05 * len(LOOKS)), rng)
    power, seeds = declared(0.05, adjusted, rng)
    sampling = 2 * np.sqrt(0.05 * 0.95 / N_STUDIES)
    print(f"\nsequential confirm, looks at {LOOKS} seeds: a null difference declared in {null:.1%} of {N_STUDIES} "
          f"studies ({naive:.1%} with 95% at every look); a true +0.05 Dice found in {power:.1%}, "
          f"{seeds:.1f} seeds per cell on average")
    assert null <= 0.05 + sampling
    assert naive > null
    assert power > 0.5 and seeds < 10


def test_no_difference_beyond_the_margin_is_declared_wrongly_in_at_most_5_percent():
    """A true difference of exactly the margin: 'no difference beyond the margin' is wrong there."""
    rng = np.random.default_rng(5)
    design = Design(looks=LOOKS, margin=0.02)
    wrong = np.mean([adaptive(simulated_study(rng, 0.02), design).decisions[0].outcome == NO_DIFFERENCE
                     for _ in range(N_STUDIES)])
    assert wrong <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / N_STUDIES)


# --- A real study, stopped and killed in the middle of its rounds ---------------------------------

# alpha is the data; lr is a factor so one level always stays open: at lr 1e38 SGD overflows in the
# first step (a real NaN loss), every trial there fails, its comparison has no interval and asks for
# the next seed each round up to max. At lr 0.01 the models train (whatever they decide).
SPEC = """
name: {name}
data: {{dataset: synthetic2d, image_size: 32, n_images: 30, seed: 0, split: {{train: 0.6, val: 0.1, calib: 0.1, test: 0.2}}}}
model: {{unet: {{channels: [8, 16, 32], strides: [2, 2], num_res_units: 0}}}}
factors: {{architecture: [unet, noskip_unet], alpha: [0.5], lr: [0.01, 1.0e+38]}}
hyperparameters: {{batch_size: 6, optimizer: sgd}}
training: {{epochs: 3, loss: dice_ce}}
evaluation: {{perturbations: []}}
confirm: {{seeds: {{min: 2, max: 4}}, resolve: {{margin: 0.02}}}}
resources: {{cpu: 1, gpu: 0}}
"""


def printed(driver, text: str):
    return lambda: text in driver.stdout.read_text()


@pytest.mark.slow
def test_stop_and_kill_in_the_middle_of_rounds_resume_where_the_procedure_was(ray_head, tmp_path):
    from conftest import trial_workers
    from study_drivers import Driver, Store

    name = "seqresume"
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store, env = Store(uri, name, tmp_path / "r"), {**ray_head.env, "MLFLOW_TRACKING_URI": uri}
    address = ["--address", ray_head.gcs_address]

    # 1. Ctrl-C while round 2 runs (a trial of it running, held while the signal lands): the round's
    # fit stops, no round 3 begins.
    first = Driver(["run", str(spec), *address, "--storage", str(store.storage)], env=env, out=tmp_path / "run",
                   workers=lambda: trial_workers(ray_head.pid))
    first.signal_when(lambda: printed(first, "confirm phase, round 2 of up to 3")()
                      and not printed(first, "confirm phase, round 3")() and store.trials(M.PHASE_CONFIRM, "RUNNING"),
                      signal.SIGINT)
    assert first.wait() == 130, first.output()
    assert "confirm phase, round 3" not in first.stdout.read_text()
    tag = json.loads(store.study_run().data.tags[M.ROUNDS_TAG])
    assert tag["round"] == 2 and not tag["finished"]
    round_one = {r.data.tags[M.TRIAL_KEY_TAG]: r.info.run_id for r in store.runs(M.ROLE_TRIAL)
                 if int(r.data.tags[M.SEED_TAG]) < 2}
    assert len(round_one) == 8  # 4 cells x seeds 0, 1

    # 2. SIGKILL in round 3, in the resumed driver (paused while the round is checked not finished):
    # it went on with round 2, not round 1.
    second = Driver(["resume", str(store.folder()), *address], env=env, out=tmp_path / "resume")
    second.signal_while_paused(lambda: printed(second, "confirm phase, round 3 of up to 3")()
                               and not json.loads(store.study_run().data.tags[M.ROUNDS_TAG])["finished"],
                               signal.SIGKILL, group=True)
    second.proc.wait(timeout=30)
    resumed = second.stdout.read_text()
    assert "confirm phase, round 1" not in resumed and "confirm phase, round 2 of up to 3" in resumed

    # 3. Resume to the end.
    last = subprocess.run([str(BIN / "segstudy"), "resume", str(store.folder()), *address], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert last.returncode == 1, last.stdout[-3000:] + last.stderr[-3000:]  # the lr 1e38 trials failed
    assert "confirm phase, round 3 of up to 3" in last.stdout and "confirm phase, round 2" not in last.stdout
    assert "sequential confirm, finished after round" in last.stdout

    runs = store.runs(M.ROLE_TRIAL)
    keys = [r.data.tags[M.TRIAL_KEY_TAG] for r in runs]
    assert len(keys) == len(set(keys)), "a trial ran twice"
    assert all(round_one[k] == r.info.run_id for r in runs for k in [r.data.tags[M.TRIAL_KEY_TAG]] if k in round_one)
    assert {r.info.status for r in store.runs(M.ROLE_TRIAL, ViewType.DELETED_ONLY)} <= {"KILLED"}
    # What ran is what the procedure asks, replayed from the study folder's record and from MLflow alike.
    lines = ConfirmScores(store.folder()).read()
    assert set(lines) == set(keys)
    spec_ = load_spec(spec)
    cells = {cell_key(c): c for c in expand_cells(spec_)}
    state = replay(Design(looks=(2, 3, 4), margin=0.02), comparisons(cells), observed(lines.values()), cells=sorted(cells))
    assert state.finished
    ran = {(r.data.tags[M.CELL_TAG], int(r.data.tags[M.SEED_TAG])) for r in runs}
    assert ran == {(cell, s) for cell, n in state.due.items() for s in range(n)}
    failing = [cell for cell in cells if "lr=1e+38" in cell]
    assert all(state.due[cell] == 4 for cell in failing)
    assert json.loads(store.study_run().data.tags[M.ROUNDS_TAG])["finished"]

    # status and the report say where the procedure ended and what stayed unresolved.
    from analysis.commands.status import study_status

    table = study_status(name, tracking_uri=uri)
    open_label = "alpha 0.5, lr 1e+38: noskip_unet - unet"
    assert "finished after round 3 of up to 3 (4 seeds per cell)" in table.attrs["rounds"]
    assert f"unresolved at max seeds: {open_label}" in table.attrs["rounds"]
    confirm = table[table["phase"] == M.PHASE_CONFIRM].set_index("cell")["seeds"]
    assert confirm.to_dict() == {cell: 0 if cell in failing else n for cell, n in state.due.items()}  # failed: none done
    report = (store.folder() / "report" / "report.html").read_text()
    assert 'id="sequential"' in report and 'id="unresolved"' in report and 'id="seeds-per-cell"' in report
    assert f"{open_label}: a cell has no scored seed (its trials failed), round 3: unresolved at max seeds" in report
    assert "98.33% (alpha 0.05 / 3 looks, Bonferroni)" in report


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tracking write")
def test_rounds_are_decided_while_the_tracking_server_is_away(ray_head, tmp_path):
    """The server goes away in round 1 and comes back only after the study ended: every round is
    decided from the study folder, the writes wait in the outbox, and `sync` delivers them once."""
    from conftest import BackgroundStudy, TrackingServer

    name = "seqoutage"
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name))
    server = TrackingServer(tmp_path)
    server.start()
    try:
        study = BackgroundStudy(spec, address=ray_head.gcs_address, tracking_uri=server.uri, storage=tmp_path / "r")
        client = MlflowClient(tracking_uri=server.uri)
        deadline = time.monotonic() + 180
        while not (client.get_experiment_by_name(name) and client.search_runs(
                [client.get_experiment_by_name(name).experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")):
            assert time.monotonic() < deadline and study.thread.is_alive(), study.outcome
            time.sleep(0.3)
        server.stop()
        study.thread.join(timeout=600)
        assert not study.thread.is_alive() and "error" not in study.outcome, study.outcome.get("error")
        assert study.outcome["result"].pending_writes > 0  # it ended with the server still away
        server.start()
        result = study.result()  # delivers the outbox through `segstudy sync`
    finally:
        server.stop()
    server.start()
    try:
        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")
        (study_run,) = client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_STUDY}'")
    finally:
        server.stop()
    keys = [r.data.tags[M.TRIAL_KEY_TAG] for r in runs]
    assert len(keys) == len(set(keys)) and set(keys) == set(ConfirmScores(result.storage_path).read())
    assert {int(r.data.tags[M.SEED_TAG]) for r in runs if "lr=1e+38" in r.data.tags[M.CELL_TAG]} == {0, 1, 2, 3}
    tag = json.loads(study_run.data.tags[M.ROUNDS_TAG])
    assert tag["finished"] and tag["round"] == 3
