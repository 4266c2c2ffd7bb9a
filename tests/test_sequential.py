"""The sequential confirm phase (analysis/stats/statements/sequential.py, study/run/driver/rounds.py): which cells get
the next seed on known numbers, the error rate under optional stopping by simulation with the same
inference, and a real study stopped and killed in the middle of its rounds, then resumed."""

from __future__ import annotations

import html as html_lib
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

from analysis.read.study_spec import Settings, settings_of_spec
from analysis.stats.core.inference import contrast
from analysis.stats.statements.sequential import (
    CENSORED, DIFFERENCE, FUTILE, NO_DIFFERENCE, NOT_LEARNED, OPEN, UNRESOLVED, Design, Observed, replay,
)
from analysis.stats.statements.study import declared_claims
from conftest import BIN, ROOT
from study import metrics_names as M
from study.run.driver.rounds import ConfirmScores, Ended, confirm_rounds, observed
from study.spec import load_spec
from study.spec.cells import cell_key, expand_cells
from study.spec.statistics import Declared
from study.spec.tuning import Confirm

pytestmark = pytest.mark.filterwarnings("ignore:.*confirmation seed")

IMAGES = [f"img{i}" for i in range(10)]
EASY, HARD = 0.2, 0.8
ARMS = ("unet", "noskip_unet", "attention_unet")
CELLS = {cell_key({"architecture": arm, "alpha": alpha}): {"architecture": arm, "alpha": alpha} for arm in ARMS for alpha in (EASY, HARD)}
BUDGET = Confirm.model_validate({"seeds": {"min": 2, "max": 4}, "resolve": {"margin": 0.05}})
SETTINGS = Settings(declared=Declared({"complexity": None}), confirm=BUDGET)  # the (a) claims of two arms: m = 2


def key(arm: str, alpha: float) -> str:
    return cell_key({"architecture": arm, "alpha": alpha})


def known_scores(seeds: int, *, swing: float = 0.05) -> dict[str, pd.DataFrame]:
    """Scores chosen so the looks decide each declared claim (a) one way. attention_unet - unet goes
    from +0.001 at alpha 0.2 to -0.3 at 0.8 with seeds that agree: a difference at the first look.
    noskip_unet - unet goes from -0.2 to +0.2 (a change of +0.4), but noskip_unet's seeds at 0.8
    swing by +-`swing`: two seeds leave it open, three resolve it (swing 0.05); with swing 0.3 no
    budget of 4 seeds could, and the claim is closed as futile at the first look."""
    image = np.linspace(-0.05, 0.05, len(IMAGES))
    steady = np.array([0.001, -0.001, 0.0005, -0.0005, 0.0])[:seeds, None]
    wobble = swing * np.array([1.0, -1.0, 0.8, -0.8, 1.0])[:seeds, None]
    arrays = {
        key("unet", EASY): 0.9 + image + steady,
        key("noskip_unet", EASY): 0.7 + image + steady,
        key("attention_unet", EASY): 0.901 + image + steady,
        key("unet", HARD): 0.6 + image + steady,
        key("noskip_unet", HARD): 0.8 + image + wobble,
        key("attention_unet", HARD): 0.3 + image + steady,
    }
    return {cell: pd.DataFrame(a, index=pd.Index(range(seeds), name="seed"), columns=IMAGES) for cell, a in arrays.items()}


def observed_of(scores: dict[str, pd.DataFrame], *, failed=(), not_learned=()) -> Observed:
    """Per-image rows of every (cell, seed) in `scores` but the `failed` ones, which ended without scores."""
    rows = [
        {"cell": cell, "seed": int(seed), "run_id": f"{cell}|{seed}", "image_id": image, "condition": "clean",
         "dice": float(value), **CELLS[cell]}
        for cell, table in scores.items() for seed, values in table.iterrows() if (cell, seed) not in set(failed)
        for image, value in values.items()
    ]
    frame = pd.DataFrame(rows)
    frame.attrs["factors"] = ["alpha", "architecture"]
    ended = [(cell, int(seed)) for cell, table in scores.items() for seed in table.index]
    return Observed.of(frame, ended=ended, not_learned=not_learned)


def claims_at(obs: Observed) -> pd.DataFrame:
    return declared_claims(obs, settings=SETTINGS, reference="unet")


DESIGN = Design(looks=(2, 3, 4), margin=0.05)
NOSKIP, ATTENTION = "(a) noskip_unet - unet, alpha 0.2 -> 0.8", "(a) attention_unet - unet, alpha 0.2 -> 0.8"


def outcomes(state) -> dict[str, str]:
    return {d.statement.label: d.outcome for d in state.decisions}


def test_round_one_asks_every_cell_for_the_first_seeds():
    state = replay(DESIGN, observed_of({c: t.iloc[:1] for c, t in known_scores(2).items()}), claims_at, cells=sorted(CELLS))
    assert state.round == 1 and not state.finished
    assert state.missing == {cell: (1,) for cell in CELLS}
    assert state.decisions == () and state.statements == 0  # nothing looked at yet


def test_after_round_one_only_the_cells_of_open_claims_get_the_next_seed():
    state = replay(DESIGN, observed_of(known_scores(2)), claims_at, cells=sorted(CELLS))
    assert outcomes(state) == {ATTENTION: DIFFERENCE, NOSKIP: OPEN}
    # Holm over m = 2 claims, each p-value times K = 3 looks: the resolved claim at the first step's
    # level, the open one at the level of the step where Holm stopped (one claim left).
    levels = {d.statement.label: d.confidence for d in state.decisions}
    assert state.statements == 2 and levels == pytest.approx({ATTENTION: 1 - 0.05 / 2 / 3, NOSKIP: 1 - 0.05 / 1 / 3})
    assert state.round == 2 and not state.finished
    noskip_cells = sorted(key(a, l) for a in ("noskip_unet", "unet") for l in (EASY, HARD))
    assert state.missing == {cell: (2,) for cell in noskip_cells}
    assert state.due[key("unet", HARD)] == 3 and state.due[key("attention_unet", HARD)] == 2
    assert state.kept_by[key("unet", HARD)] == (NOSKIP,)
    assert state.next_trials(slots=1) == [(cell, 2) for cell in noskip_cells]
    # Free slots take the next look's seeds of the same cells (they change no decision).
    assert state.next_trials(slots=6) == [*((cell, 2) for cell in noskip_cells), (noskip_cells[0], 3), (noskip_cells[1], 3)]
    interval = next(d for d in state.decisions if d.outcome == DIFFERENCE).estimate
    assert interval.ci_high < 0  # attention_unet loses 0.3 more at the hard level


def test_decisions_are_frozen_and_rederived_from_whatever_ended():
    """Extra seeds (look-ahead, or other claims' rounds) never reopen a decision; the state is a
    function of the ended trials alone, so a resumed driver finds the same round."""
    first = replay(DESIGN, observed_of(known_scores(2)), claims_at, cells=sorted(CELLS))
    every = replay(DESIGN, observed_of(known_scores(4)), claims_at, cells=sorted(CELLS))
    assert every.finished and every.round == 2
    resolved_first = {d.statement: d for d in first.decisions if d.outcome != OPEN}
    for d in every.decisions:
        if d.statement in resolved_first:
            assert d.estimate == resolved_first[d.statement].estimate  # round 1's interval, not the 4-seed one
    assert outcomes(every) == {ATTENTION: DIFFERENCE, NOSKIP: DIFFERENCE}
    assert next(d for d in every.decisions if d.statement.label == NOSKIP).seeds == 3
    assert every.due[key("noskip_unet", HARD)] == 3 and every.due[key("attention_unet", EASY)] == 2


def test_a_claim_that_max_seeds_cannot_resolve_is_closed_as_futile():
    """noskip_unet's seeds at alpha 0.8 swing by +-0.3: even one standard error more favourable,
    the interval at 4 seeds would hold 0 and be wider than the margin, so no more seeds are spent."""
    state = replay(DESIGN, observed_of(known_scores(2, swing=0.3)), claims_at, cells=sorted(CELLS))
    assert outcomes(state) == {ATTENTION: DIFFERENCE, NOSKIP: FUTILE}
    assert state.finished and state.round == 1 and state.missing == {}
    assert "1 closed as futile" in state.summary()
    # A tighter swing at the same estimate is worth the next seed: not futile.
    assert outcomes(replay(DESIGN, observed_of(known_scores(2)), claims_at, cells=sorted(CELLS)))[NOSKIP] == OPEN


def test_a_model_that_did_not_learn_closes_its_claims_without_more_seeds():
    state = replay(DESIGN, observed_of(known_scores(2), not_learned=[(key("unet", HARD), 1)]), claims_at, cells=sorted(CELLS))
    assert outcomes(state) == {ATTENTION: NOT_LEARNED, NOSKIP: NOT_LEARNED}
    assert state.finished and state.round == 1 and state.missing == {}
    assert "2 closed (a model did not learn)" in state.summary()


def test_a_claim_censored_at_the_trivial_answer_closes_without_more_seeds():
    """More seeds cannot make a loss at the trivial answer (analysis.stats.statements.claims: censored)
    mean robustness: the claim is closed in the round it is seen, and its cells get no seeds for it."""
    def censored_at(obs: Observed) -> pd.DataFrame:
        table = claims_at(obs)
        return table.assign(censored=["alpha=0.8,architecture=noskip_unet seed=0 under speckle:5: Dice 0.100, trivial 0.167"
                                      if arm == "noskip_unet" else "" for arm in table["arm"]])

    state = replay(DESIGN, observed_of(known_scores(2)), censored_at, cells=sorted(CELLS))
    assert outcomes(state) == {ATTENTION: DIFFERENCE, NOSKIP: CENSORED}
    assert state.finished and state.round == 1 and state.missing == {}
    assert "1 closed (a model at the trivial answer out of domain)" in state.summary()
    # `segstudy status` reads the round state from the study run's tag and says the same
    from analysis.commands.status import rounds_line
    from study import metrics_names as M
    from study.run.driver.rounds import round_tag

    assert "1 closed (a model at the trivial answer out of domain)" in rounds_line(round_tag(state)[M.ROUNDS_TAG])


def test_one_claim_gets_one_verdict_in_the_sequential_lines_and_the_claims_section():
    """The looking decides the declared family by Holm (each p-value times K looks), and when it
    ends the breakdown claim enters with its p-value: a contrast Holm could not resolve beside an
    undecided count claim is resolved then, in the sequential line as in the claims section."""
    from scipy import stats as st

    from analysis.stats.core.decisions import decide_claims
    from analysis.stats.core.statement import EXACT
    from analysis.stats.statements.sequential import final_claims

    def row(claim: str, kind: str, estimate: float, se: float, p: float | None = None) -> dict:
        p = 2 * st.t.sf(abs(estimate / se), 10) if p is None else p
        return {"claim": claim, "kind": kind, "arm": "arm0", "reference": "ref0", "about": "sim", "cells": "arm0;ref0",
                "estimate": estimate, "ci_low": estimate - 2 * se, "ci_high": estimate + 2 * se, "p": p, "se": se,
                "df": 10.0, "n_seeds": 2, "n_images": 10, "text": claim, "tail": "two-sided", "line": ""}

    contrast = row("a", "complexity", 0.0291, 0.01)  # p = 0.015: K p = 0.03, Holm beside one claim at p = 1: 0.06
    count = row("e", EXACT, -0.5, 0.1, p=0.001)
    design = Design(looks=(2, 3), margin=0.001)
    obs = simple_observed(simulated_study(np.random.default_rng(0), 0.0, seeds=3))
    state = replay(design, obs, lambda _: pd.DataFrame([contrast, count]), cells=sorted(obs.ended))
    (decision,) = state.decisions
    assert state.finished and decision.outcome == DIFFERENCE and decision.round == 2
    assert decision.confidence == pytest.approx(1 - 0.05 / 1 / 2)  # Holm's second step, over 2 looks
    # Without the count claim's p-value (still 1) the same contrast stays unresolved.
    unsettled = replay(design, obs, lambda _: pd.DataFrame([contrast, {**count, "p": 1.0}]), cells=sorted(obs.ended))
    assert unsettled.decisions[0].outcome == UNRESOLVED
    # The claims section (analysis.stats.statements.study) decides the same rows the same way.
    table = pd.concat([final_claims(state), pd.DataFrame([count])], ignore_index=True)
    looks = [int(k) if np.isfinite(k) else 1 for k in table["looks"].astype(float)]
    decided = decide_claims(table, Declared({"complexity": None, "breakdown": None}), alpha=0.05, q=0.05, looks=looks)
    assert decided["resolved"].tolist() == [True, True]
    assert decided["confidence"].iloc[0] == pytest.approx(decision.confidence)
    assert (decided["ci_low"].iloc[0], decided["ci_high"].iloc[0]) == pytest.approx(
        (decision.estimate.ci_low, decision.estimate.ci_high))


def test_a_failed_seed_leaves_the_claim_open_for_the_next_seed():
    state = replay(DESIGN, observed_of(known_scores(2), failed=[(key("attention_unet", EASY), 1)]), claims_at,
                   cells=sorted(CELLS))
    assert outcomes(state)[ATTENTION] == OPEN  # one finished seed in a cell: no interval
    assert state.missing[key("attention_unet", EASY)] == (2,)


def test_rounds_run_the_seeds_asked_under_each_cells_chosen_configuration(write_spec, tmp_path):
    """confirm_rounds on a real spec: each round's trials are the replay's next seeds, with the
    cell's tuned hyperparameters; a round's trials record themselves and the next round reads them."""
    spec = load_spec(write_spec(
        factors={"architecture": list(ARMS), "alpha": [EASY, HARD]}, seeds=None,
        confirm={"seeds": {"min": 2, "max": 4}, "resolve": {"margin": 0.05}}, statistics={"claims": ["complexity"]},
    ))
    cells = expand_cells(spec)
    chosen = {cell_key(c): {"lr": 0.001 * (i + 1)} for i, c in enumerate(cells)}
    store, truth, rounds = ConfirmScores(tmp_path), known_scores(5), []

    def fit(todo, stage, open_):
        rounds.append((stage, [(cell_key(t["cell"]), t["seed"]) for t in todo], list(open_)))
        for trial in todo:
            cell = cell_key(trial["cell"])
            assert trial["hparams"] == chosen[cell] and trial["phase"] == M.PHASE_CONFIRM
            rows = {"condition": ["clean"] * len(IMAGES), "image_id": IMAGES,
                    "dice": truth[cell].loc[trial["seed"]].astype(float).tolist()}
            store.record(Ended(f"confirm|{cell}|seed={trial['seed']}", cell, trial["seed"], rows, True))
        return len(todo), 0

    states = []
    outcome = confirm_rounds(spec, cells, chosen, {}, store=store, slots=2, fit=fit, announce=states.append)
    asked = sorted(key(a, l) for a in ("noskip_unet", "unet") for l in (EASY, HARD))
    assert [r[0] for r in rounds] == ["round 1 of up to 3, 2 seeds per cell", "round 2 of up to 3, 3 seeds per cell"]
    assert sorted(rounds[0][1]) == sorted((cell, s) for cell in CELLS for s in (0, 1)) and rounds[0][2] == []
    assert rounds[1] == (rounds[1][0], [(cell, 2) for cell in asked], [NOSKIP])
    assert outcome.state.finished and outcome.completed == 12 + 4 and not outcome.stalled
    assert outcomes(outcome.state) == {ATTENTION: DIFFERENCE, NOSKIP: DIFFERENCE}
    assert [s.round for s in states] == [1, 2, 2]
    assert len(store.read()) == 16


def test_the_store_skips_a_line_cut_by_a_kill_and_keeps_the_last_of_a_rerun(tmp_path):
    store = ConfirmScores(tmp_path)
    store.record(Ended("confirm|c|seed=0", "c", 0, {"condition": ["clean"], "image_id": ["a"], "dice": [0.5]}, True))
    store.record(Ended("confirm|c|seed=0", "c", 0, {"condition": ["clean"], "image_id": ["a"], "dice": [0.7]}, False))
    with store.path.open("a") as f:
        f.write('{"key": "confirm|c|seed=1", "cell": "c", "se')
        f.write('\n{"key": "confirm|c|seed=2", "cell": "c", "seed": 2, "scores": {"a": 0.6}, "learned": true}\n')
    lines = store.read()
    assert list(lines) == ["confirm|c|seed=0", "confirm|c|seed=2"] and lines["confirm|c|seed=0"].rows["dice"] == [0.7]
    seen = observed(lines.values(), {"c": {"architecture": "unet"}})
    assert seen.not_learned == {"c": frozenset({0})}
    # A line written before per-condition rows (clean scores only) still reads as its clean rows.
    assert seen.rows.set_index("seed").loc[2, "dice"] == 0.6 and set(seen.rows["architecture"]) == {"unet"}


@pytest.mark.filterwarnings("ignore:.*seed\\(s\\) for")
def test_the_report_gives_the_decisions_seeds_per_cell_and_why(tmp_path):
    """A store written by hand with the known numbers, as the rounds would have left it: the report
    replays the procedure from MLflow and says what the driver decided, and the declared claims
    carry the sequential decision's look into their Holm p-value."""
    from mlflow.entities import Metric, Param

    from analysis.commands.report import build_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("seqreport", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_STUDY}).info.run_id
    spec = tmp_path / "seqreport.yaml"
    spec.write_text("name: seqreport\ndata: {dataset: synthetic2d}\nfactors: {architecture: [unet, noskip_unet, "
                    "attention_unet], alpha: [0.2, 0.8]}\nconfirm: {seeds: {min: 2, max: 4}, resolve: {margin: 0.05}}\n"
                    "statistics: {claims: [complexity]}\n")
    client.log_artifact(parent, str(spec))
    truth = known_scores(4, swing=0.3)
    due = replay(DESIGN, observed_of(truth), claims_at, cells=sorted(CELLS)).due
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
    html = html_lib.unescape(html)
    lines = re.findall(r"<li>(.*?)</li>", re.search(r'<ul id="sequential-lines">(.*?)</ul>', html, re.S).group(1))
    assert [line.split(" = ")[0] for line in lines] == [ATTENTION, NOSKIP]
    assert lines[0].endswith("2 seeds x 10 images, round 1: difference")
    assert lines[1].endswith("round 1: futile (cannot be resolved by max seeds)")
    assert "finished after round 1 of up to 3 (2 seeds): 1 of 2 declared claims resolved, 1 closed as futile" in html
    assert ("at every look the 2 declared claims are decided by Holm at alpha 0.05, each p-value times the 3 looks"
            in html)
    rows = {cells[0]: cells[1:] for cells in (re.findall(r"<td>(.*?)</td>", row) for row in re.findall(
        r"<tr>(.*?)</tr>", re.search(r'<table id="seeds-per-cell">(.*?)</table>', html, re.S).group(1), re.S)) if cells}
    assert rows[key("unet", HARD)] == ["2", "2", "round 1 (every cell)"]
    claims = re.findall(r"<li>(.*?)</li>", re.search(r'<ul id="claims-lines">(.*?)</ul>', html, re.S).group(1))
    futile = next(c for c in claims if c.startswith("(a) complexity: noskip_unet"))
    assert "futile: could not be resolved by the budget's max seeds, after round 1" in futile and ": unresolved" in futile
    resolved = next(c for c in claims if c.startswith("(a) complexity: attention_unet"))
    assert ", Holm p " in resolved and ": resolved, 2 seeds x 10 images" in resolved
    decided = pd.read_csv(tmp_path / "report" / "claims.csv").query("claim == 'a'").set_index("arm")
    # The resolving look's p-value times the K = 3 looks, then Holm over the m = 2 declared claims.
    assert decided.loc["attention_unet", "p_adjusted"] == pytest.approx(min(1.0, 2 * 3 * decided.loc["attention_unet", "p"]))


# --- Valid under optional stopping: simulated studies, the same inference ------------------------

N_STUDIES = 200
LOOKS = (3, 4, 5, 6, 7, 8, 9, 10)  # min 3, max 10: the benchmark's budget


def simulated_study(rng: np.random.Generator, delta: float, *, claims: int = 1, seeds: int = 10,
                    images: int = 20) -> dict[str, pd.DataFrame]:
    """The cells of `claims` arm-minus-reference claims under every seed the budget allows, from the
    model the inference assumes (tests/test_inference.py): seed effect, shared image effect,
    interaction, noise. The first claim's arm is `delta` above its reference."""
    image = rng.normal(0.0, 0.10, images)
    cells = {}
    for c in range(claims):
        for cell, mean in ((f"arm{c}", 0.8 + (delta if c == 0 else 0.0)), (f"ref{c}", 0.8)):
            values = (mean + rng.normal(0.0, 0.03, (seeds, 1)) + image + rng.normal(0.0, 0.03, images)
                      + rng.normal(0.0, 0.03, (seeds, images)))
            cells[cell] = pd.DataFrame(values, index=pd.Index(range(seeds), name="seed"), columns=[f"i{j}" for j in range(images)])
    return cells


def simple_observed(scores: dict[str, pd.DataFrame], ended: dict[str, set[int]] | None = None) -> Observed:
    """The simulated cells as rows (no factor columns: `contrast_claims` reads them by cell)."""
    ended = ended if ended is not None else {c: set(t.index) for c, t in scores.items()}
    rows = pd.concat([t.loc[sorted(ended[c])].stack().rename("dice").reset_index().rename(columns={"level_1": "image_id"})
                      .assign(cell=c) for c, t in scores.items()], ignore_index=True)
    return Observed.of(rows, ended=[(c, s) for c, seeds in ended.items() for s in seeds])


def contrast_claims(obs: Observed) -> pd.DataFrame:
    """Each arm{c} - ref{c} as a claim row, through the study's one inference (the claims' own
    contrast code is covered above; this keeps 200 simulated studies fast)."""
    rows = []
    tables = {c: g.pivot(index="seed", columns="image_id", values="dice") for c, g in obs.rows.groupby("cell")}
    for c in sorted({cell[3:] for cell in tables if cell.startswith("arm")}):
        arm, ref = tables[f"arm{c}"], tables[f"ref{c}"]
        est = contrast([arm.to_numpy(), ref.to_numpy()], [1.0, -1.0])
        rows.append({"claim": "a", "kind": "complexity", "arm": f"arm{c}", "reference": f"ref{c}", "about": "sim",
                     "cells": f"arm{c};ref{c}", **est.as_dict()})
    return pd.DataFrame(rows)


def adaptive(scores: dict[str, pd.DataFrame], design: Design):
    """The whole adaptive study in one replay: every look reads only its first n seeds, so with all
    seeds present the replay takes exactly the decisions the round-by-round study takes."""
    return replay(design, simple_observed(scores), contrast_claims, cells=sorted(scores))


def round_by_round(scores: dict[str, pd.DataFrame], design: Design, *, slots: int):
    ended: dict[str, set[int]] = {c: set() for c in scores}
    while True:
        state = replay(design, simple_observed(scores, ended), contrast_claims, cells=sorted(scores))
        if state.finished:
            return state
        for cell, seed in state.next_trials(slots=slots):
            ended[cell].add(seed)


def declared(delta: float, design: Design, rng: np.random.Generator, *, claims: int = 1) -> tuple[float, float]:
    """(share of studies declaring any difference of a true-null claim, or of the first claim when
    delta != 0; mean seeds per cell its arm got)."""
    states = [adaptive(simulated_study(rng, delta, claims=claims), design) for _ in range(N_STUDIES)]
    hit = [any(d.outcome == DIFFERENCE for d in s.decisions if delta == 0 or d.statement.key[1] == "arm0") for s in states]
    return float(np.mean(hit)), float(np.mean([s.due["arm0"] for s in states]))


def test_round_by_round_takes_the_one_replay_decisions():
    rng = np.random.default_rng(11)
    design = Design(looks=LOOKS, margin=0.02)
    for delta in (0.0, 0.03, 0.06):
        scores = simulated_study(rng, delta)
        assert round_by_round(scores, design, slots=2).decisions == adaptive(scores, design).decisions
        assert round_by_round(scores, design, slots=5).decisions == adaptive(scores, design).decisions


def test_optional_stopping_declares_a_null_difference_in_at_most_5_percent():
    """200 adaptive studies with no true difference among 3 declared claims (min 3, max 10 seeds, a
    look after every round): at most 5% plus two standard errors declare any. The same looks at 95%
    each, without the spending, declare more: the check has teeth."""
    rng = np.random.default_rng(20261202)
    adjusted = Design(looks=LOOKS, margin=0.02)
    null, _ = declared(0.0, adjusted, rng, claims=3)
    naive, _ = declared(0.0, Design(looks=LOOKS, margin=0.02, alpha=0.05 * len(LOOKS) * 3), rng, claims=3)
    power, seeds = declared(0.05, adjusted, rng)
    sampling = 2 * np.sqrt(0.05 * 0.95 / N_STUDIES)
    print(f"\nsequential confirm, looks at {LOOKS} seeds: a null difference among 3 declared claims declared in "
          f"{null:.1%} of {N_STUDIES} studies ({naive:.1%} with 95% at every look); a true +0.05 Dice found in "
          f"{power:.1%}, {seeds:.1f} seeds per cell on average")
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


def test_futility_saves_seeds_and_never_declares_anything():
    """Where the arms' seeds disagree so much that 10 seeds cannot resolve a 0.01 difference, most
    studies stop early as futile; a study closed as futile declares nothing."""
    rng = np.random.default_rng(7)
    design = Design(looks=LOOKS, margin=0.005)
    states = []
    for _ in range(50):
        scores = simulated_study(rng, 0.01)
        scores = {c: t + rng.normal(0.0, 0.25, (len(t), 1)) for c, t in scores.items()}  # seeds swing by 0.25
        states.append(adaptive(scores, design))
    futile = [s for s in states if s.decisions[0].outcome == FUTILE]
    assert len(futile) > 25
    assert np.mean([s.due["arm0"] for s in futile]) < 6  # stopped well before the 10 seeds


# --- A real study, stopped and killed in the middle of its rounds ---------------------------------

# alpha is the data; lr is a factor so the one declared claim, (b) under speckle averaged over lr,
# always stays open: at lr 1e38 Adam overflows in the first step (a real NaN loss), every trial there
# fails, the claim has no interval and asks its cells for the next seed each round up to max. At lr
# 0.005 the models learn (Dice about 0.8 at alpha 0.2 in 10 epochs; a model that did not learn would
# close the claim and end the rounds). Speckle at severity 1: at severity 5 these models score 0.18-0.27
# against the trivial answer's 0.15, so a seed may be censored there (claims.at_trivial), which also
# closes the claim; at severity 1 they score 0.64-0.73 (measured: this spec run once, 4 seeds).
SPEC = """
name: {name}
data: {{dataset: synthetic2d, image_size: 32, n_images: 60, seed: 0, placement: anywhere, split: {{train: 0.6, val: 0.1, calib: 0.1, test: 0.2}}}}
model: {{unet: {{channels: [8, 16, 32], strides: [2, 2], num_res_units: 0}}}}
factors: {{architecture: [unet, noskip_unet], alpha: [0.2], lr: [0.005, 1.0e+38]}}
hyperparameters: {{batch_size: 6, optimizer: adam}}
training: {{epochs: 10, loss: dice_ce}}
evaluation: {{perturbations: [speckle], severities: [1]}}
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
    settings = settings_of_spec(spec_)
    state = replay(Design(looks=(2, 3, 4), margin=0.02), observed(lines.values(), cells),
                   lambda obs: declared_claims(obs, settings=settings, reference="unet"), cells=sorted(cells))
    assert state.finished
    ran = {(r.data.tags[M.CELL_TAG], int(r.data.tags[M.SEED_TAG])) for r in runs}
    assert ran == {(cell, s) for cell, n in state.due.items() for s in range(n)}
    failing = [cell for cell in cells if "lr=1e+38" in cell]
    assert all(n == 4 for n in state.due.values())  # the open claim rests on every cell (averaged over lr)
    assert json.loads(store.study_run().data.tags[M.ROUNDS_TAG])["finished"]

    # status and the report say where the procedure ended and what stayed unresolved.
    from analysis.commands.status import study_status

    table = study_status(name, tracking_uri=uri)
    open_label = "(b) noskip_unet - unet, speckle:1"  # averaged over both lr levels
    assert "finished after round 3 of up to 3 (4 seeds per cell)" in table.attrs["rounds"]
    assert f"unresolved at max seeds: {open_label}" in table.attrs["rounds"]
    confirm = table[table["phase"] == M.PHASE_CONFIRM].set_index("cell")["seeds"]
    assert confirm.to_dict() == {cell: 0 if cell in failing else n for cell, n in state.due.items()}  # failed: none done
    report = (store.folder() / "report" / "report.html").read_text()
    assert 'id="sequential"' in report and 'id="unresolved"' in report and 'id="seeds-per-cell"' in report
    assert f"{open_label}: a cell has no scored seed (its trials failed), round 3: unresolved at max seeds" in report
    assert "at every look the 1 declared claim is decided by Holm at alpha 0.05, each p-value times the 3 looks" in report


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
