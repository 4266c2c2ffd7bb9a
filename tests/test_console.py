"""What a researcher sees while a study runs: progress counts, trial lines, the quiet log."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import warnings

import pandas as pd
import pytest

from analysis.commands.study_summary import StudySummary, cell_table, statement_lines, summary_lines
from study.process_state import route_library_output
from study.run.display.console import LiveConsole, PlainConsole, duration, make_console, status_line, trial_line
from study.run.display.library_log import LOG_FILE, LibraryLog
from study.run.display.progress import DONE, FAILED, STOPPED, StudyProgress, TrialEnd


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def end(cell: str, outcome: str, *, value: float = 0.8, seconds: float = 10.0, reason: str = "") -> TrialEnd:
    return TrialEnd(phase="tune", cell=cell, seed=0, outcome=outcome, value=value, epoch=20, seconds=seconds, reason=reason)


def test_progress_counts_each_cell_and_estimates_what_is_left():
    clock = Clock()
    p = StudyProgress("demo", clock=clock)
    p.begin("tune", {"a": 3, "b": 3})
    assert p.eta_s() is None  # nothing ended yet: no honest estimate
    for cell in ("a", "b"):
        p.trial_started(cell)
    p.trial_result("a", 0.5)
    p.trial_result("a", 0.7)
    p.trial_result("a", 0.6)  # best so far stays 0.7
    clock.now += 20
    p.trial_ended(end("a", DONE, value=0.7, seconds=10))
    p.trial_ended(end("b", STOPPED, value=0.2, seconds=30))
    assert (p.count("done"), p.count("stopped"), p.count("failed"), p.count("running"), p.count("left")) == (1, 1, 0, 0, 4)
    assert p.cells["a"].best == 0.7 and p.cells["b"].best == 0.2
    assert p.eta_s() == 4 * 20 / 2  # 4 left x median 20 s / 2 ran at once
    assert status_line(p) == "tune: 2/6 ended (1 done, 1 stopped early, 0 failed), 0 running; elapsed 20s, ETA 40s"


def test_a_new_phase_starts_its_own_counts_but_not_its_own_clock():
    clock = Clock()
    p = StudyProgress("demo", clock=clock)
    p.begin("tune", {"a": 1})
    p.trial_ended(end("a", FAILED, value=math.nan, reason="LossDivergedError: loss diverged"))
    clock.now += 65
    p.begin("confirm", {"a": 3})
    assert p.ended == 0 and p.count("total") == 3 and duration(p.elapsed_s()) == "1m05s"


def test_plain_console_prints_a_line_per_trial_and_progress_in_time():
    out = io.StringIO()
    console = PlainConsole(out, every_s=0.0)
    p = StudyProgress("demo")
    p.begin("confirm", {"alpha=0.2,architecture=unet": 2})
    console.phase_started(p)
    e = TrialEnd(phase="confirm", cell="alpha=0.2,architecture=unet", seed=1, outcome=DONE, value=0.912,
                 epoch=30, seconds=4.2, test_dice=0.9)
    p.trial_ended(e)
    console.trial_ended(p, e)
    console.tick(p)
    lines = out.getvalue().splitlines()
    assert lines == [
        "demo: confirm phase, 2 trials in 1 cells",
        "[confirm 1/2] alpha=0.2,architecture=unet seed=1: done, val 0.912 at epoch 30, test Dice 0.900 (4s)",
        status_line(p),
    ]


def test_a_round_of_a_sequential_confirm_phase_names_itself_and_its_open_claims():
    out = io.StringIO()
    console = PlainConsole(out, every_s=0.0)
    p = StudyProgress("demo", clock=lambda: 100.0)
    p.begin("confirm", {"alpha=0.9,architecture=noskip_unet": 1, "alpha=0.9,architecture=unet": 1},
            stage="round 2 of up to 8, 4 seeds per cell", open_claims=["(a) noskip_unet - unet, alpha 0.1 -> 0.9"])
    console.phase_started(p)
    console.tick(p)
    assert out.getvalue().splitlines() == [
        "demo: confirm phase, round 2 of up to 8, 4 seeds per cell: 2 trials in 2 cells, for (a) noskip_unet - unet, alpha 0.1 -> 0.9",
        "confirm (round 2 of up to 8, 4 seeds per cell): 0/2 ended (0 done, 0 stopped early, 0 failed), 0 running; "
        "elapsed 0s, ETA ?",
    ]
    live = LiveConsole(io.StringIO())
    live.phase_started(p)
    rendered = io.StringIO()
    from rich.console import Console

    Console(file=rendered, width=160).print(live._render())
    assert "demo confirm (round 2 of up to 8, 4 seeds per cell) 0/2 ended" in rendered.getvalue()
    assert "open claims: (a) noskip_unet - unet, alpha 0.1 -> 0.9" in rendered.getvalue()
    live.close()


def test_failed_and_not_learned_trials_say_why():
    p = StudyProgress("demo")
    p.begin("confirm", {"c": 1})
    e = end("c", DONE, reason="did not learn: below_floor: test Dice 0.41")
    p.trial_ended(e)
    assert trial_line(p, e).endswith(": did not learn: below_floor: test Dice 0.41")


def test_live_console_draws_cells_and_scrolls_failures_above():
    out = io.StringIO()
    console = LiveConsole(out)
    p = StudyProgress("demo")
    p.begin("tune", {f"cell{i}": 2 for i in range(3)})
    console.phase_started(p)
    p.trial_started("cell1")
    e = end("cell0", FAILED, value=math.nan, reason="worker process died")
    p.trial_ended(e)
    console.trial_ended(p, e)
    rendered = io.StringIO()
    from rich.console import Console

    Console(file=rendered, width=120).print(console._render())
    text = rendered.getvalue()
    assert "best val" in text and "cell1" in text and "demo tune 1/6 ended: 1 running" in text
    console.close()
    assert "worker process died" in out.getvalue()


def test_without_a_terminal_the_console_is_plain_lines():
    assert isinstance(make_console(io.StringIO()), PlainConsole)
    assert isinstance(make_console(io.StringIO(), live=True), LiveConsole)


def test_library_output_goes_to_the_log_and_our_warnings_stay(monkeypatch, capsys):
    shown: list[str] = []  # what reaches the console's warning display
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: shown.append(str(message)))
    sink = io.StringIO()
    undo = route_library_output(sink)
    try:
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
        logging.getLogger("ray.tune").warning("something Tune says")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            # A warning raised inside a third-party module goes to the log, with where it came from.
            warnings.warn_explicit("Add type hints to the `predict` method", UserWarning,
                                   "/x/site-packages/mlflow/pyfunc/utils/data_validation.py", 187)
            # One raised in segstudy's own code is the user's to act on: it stays on the console.
            warnings.warn_explicit("smoke: 1 confirmation seed(s)", UserWarning, __import__("study.run.driver.engine").run.driver.engine.__file__, 1)
    finally:
        undo()
    logged = sink.getvalue()
    assert "Creating initial MLflow database tables" in logged and "something Tune says" in logged
    assert "Add type hints" in logged and "data_validation.py:187" in logged
    assert "confirmation seed" not in logged
    assert shown == ["smoke: 1 confirmation seed(s)"]
    err = capsys.readouterr().err
    assert "Add type hints" not in err and "Creating initial" not in err
    # Undone: the library's own handlers are back.
    assert all(h.stream is not sink for h in logging.getLogger("mlflow").handlers if hasattr(h, "stream"))


def test_the_log_starts_in_a_temporary_file_and_moves_into_the_study_folder(tmp_path):
    log = LibraryLog()
    early = log.path
    log.write("before the folder existed\n")
    (tmp_path / "study").mkdir()
    assert log.move_to(tmp_path / "study") == tmp_path / "study" / LOG_FILE
    log.write("after\n")
    log.close()
    assert not early.exists()
    assert (tmp_path / "study" / LOG_FILE).read_text() == "before the folder existed\nafter\n"
    refused = LibraryLog()  # a study refused before its folder existed leaves no log behind
    refused.write("x")
    refused.close()
    assert not refused.path.exists()


def test_summary_table_is_per_arm_and_level_with_the_chosen_hyperparameters(tmp_path):
    trials = pd.DataFrame({
        "cell": ["alpha=0.2,architecture=unet"] * 3 + ["alpha=0.2,architecture=noskip_unet"] * 3,
        "test_dice": [0.90, 0.92, 0.94, 0.80, 0.82, 0.84],
    })
    chosen = {"alpha=0.2,architecture=unet": {"lr": 0.0123456, "batch_size": 8}}
    table = cell_table(trials, chosen)
    assert list(table["arm"]) == ["noskip_unet", "unet"] and set(table["level"]) == {"alpha=0.2"}
    assert table.loc[1, "test_dice"] == pytest.approx(0.92) and table.loc[1, "ci_low"] < 0.92 < table.loc[1, "ci_high"]
    assert table.loc[1, "chosen"] == "batch_size=8, lr=0.0123" and table.loc[0, "chosen"] == ""
    assert table.loc[1, "worst_dice"] == pytest.approx(0.90)  # the worst seed, without a breakdown table
    broke = pd.DataFrame({"cell": ["alpha=0.2,architecture=noskip_unet"], "broke_down": [2], "models": [3], "worst_dice": [0.8]})
    with_breakdown = cell_table(trials, chosen, breakdown=broke)
    assert with_breakdown.loc[0, "broke_down"] == "2/3" and with_breakdown.loc[1, "broke_down"] == ""
    findings = pd.DataFrame({"line": ["at alpha 0.2, noskip_unet - unet = -0.100 Dice"], "method": ["bh"], "family_level": [0.05],
                             "p": [0.01]})
    findings.to_csv(tmp_path / "findings.csv", index=False)
    summary = StudySummary("demo", "RUNID", "http://127.0.0.1:5999", tmp_path, experiment_id="7", table=with_breakdown,
                           said=statement_lines({"findings": tmp_path / "findings.csv"}))
    lines = summary_lines(summary)
    assert any("unet 0.920 [" in line for line in lines) and any(" 2/3 " in line for line in lines)
    assert ("findings per level, exploratory (Benjamini-Hochberg over 1 statement, expected share of false ones among "
            "the resolved <= 5%; clean test Dice):") in lines
    assert "  at alpha 0.2, noskip_unet - unet = -0.100 Dice" in lines
    assert "browse:       http://127.0.0.1:5999/#/experiments/7/runs/RUNID?workflowType=machine_learning" in lines
    assert not any(line.startswith("GPU:") for line in lines)  # a CPU study has no GPU figure
    summary.gpu = {"gpu_util_mean": 73.4, "gpu_peak_memory_mb": 812.0}
    assert "GPU:          73% mean utilisation while trials ran, largest trial peak 812 MB" in summary_lines(summary)


def test_the_browse_command_offers_make_only_in_the_project_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = StudySummary("demo", "RUNID", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, experiment_id="1")
    page = "http://127.0.0.1:5000/#/experiments/1/runs/RUNID?workflowType=machine_learning"
    assert summary.browse == f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'} --port 5000, then {page}"
    (tmp_path / "Makefile").write_text("mlflow-ui: $(STAMP)\n")
    assert summary.browse.startswith("make mlflow-ui (= mlflow ui --backend-store-uri")


def test_a_confirm_trial_that_restored_its_tune_training_says_which():
    p = StudyProgress("demo")
    p.begin("confirm", {"c": 1})
    e = dataclasses.replace(end("c", DONE), test_dice=0.871, trained_in="tune|c|optuna=3")
    p.trial_ended(e)
    assert ", test Dice 0.871, trained in tune trial 3 (" in trial_line(p, e)
