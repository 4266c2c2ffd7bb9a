"""What `segstudy run` shows while a study runs.

On a terminal: a live rich display (phase, trials done/running/stopped/failed of the total,
elapsed and ETA, one row per cell with its best validation Dice and trials left), with failed
trials and phase changes printed above it. Without one (CI, a Ray job's log, `| tee`): one plain
line per ended trial and a progress line every `every_s` seconds, so a log reads top to bottom.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from study.redact import printable
from study.run.display.library_log import LibraryLog
from study.run.display.progress import FAILED, ProgressCallback, StudyProgress, TrialEnd
from study.spec import StudySpec

PROGRESS_EVERY_S = 30.0


def duration(seconds: float | None) -> str:
    """'1h02m', '4m05s', '12s' or '?'.

    Example:
        >>> duration(3725), duration(245), duration(12.4), duration(None)
        ('1h02m', '4m05s', '12s', '?')
    """
    if seconds is None or math.isnan(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _dice(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def status_line(p: StudyProgress) -> str:
    """'tune: 12/60 ended (9 done, 2 stopped early, 1 failed), 2 running; elapsed 1m20s, ETA 5m10s'
    (a confirm round: 'confirm (round 2 of up to 8, 4 seeds per cell): ...')."""
    stage = f" ({p.stage})" if p.stage else ""
    return (
        f"{p.phase}{stage}: {p.ended}/{p.count('total')} ended ({p.count('done')} done, {p.count('stopped')} stopped early, "
        f"{p.count('failed')} failed), {p.count('running')} running; elapsed {duration(p.elapsed_s())}, "
        f"ETA {duration(p.eta_s())}"
    )


def trial_line(p: StudyProgress, end: TrialEnd) -> str:
    """One ended trial: '[tune 12/60] alpha=0.2,architecture=unet seed=0: done, val 0.912 at epoch 20 (4s)'."""
    value = f"val {_dice(end.value)} at epoch {end.epoch}"
    if not math.isnan(end.test_dice):
        value += f", test Dice {end.test_dice:.3f}"
    if end.trained_in:  # 'tune|<cell>|optuna=3': the tune trial whose training it tested
        value += f", trained in tune trial {end.trained_in.rsplit('=', 1)[-1]}"
    why = f": {end.reason}" if end.reason else ""
    return f"[{p.phase} {p.ended}/{p.count('total')}] {end.cell} seed={end.seed}: {end.outcome}, {value} ({duration(end.seconds)}){why}"


def phase_line(p: StudyProgress) -> str:
    """'demo: tune phase, 60 trials in 6 cells', or for a round of a sequential confirm phase
    'demo: confirm phase, round 2 of up to 8, 4 seeds per cell: 4 trials in 2 cells, for alpha 0.9: noskip_unet - unet'."""
    if not p.stage:
        return f"{p.name}: {p.phase} phase, {p.count('total')} trials in {len(p.cells)} cells"
    line = f"{p.name}: {p.phase} phase, {p.stage}: {p.count('total')} trials in {len(p.cells)} cells"
    return line + (f", for {'; '.join(p.open_claims)}" if p.open_claims else "")


def stopping_line(signal_name: str) -> str:
    """What a running phase says when the driver is asked to stop (docs/ARCHITECTURE.md 3, "Stopping")."""
    return (
        f"stopping ({signal_name}): no new trials; the running ones end now and run again on resume "
        "(a second Ctrl-C ends at once, without clean-up)"
    )


class PlainConsole:
    """Line-per-event output for logs: every ended trial, and progress every `every_s` seconds."""

    def __init__(self, stream: IO[str] | None = None, *, every_s: float = PROGRESS_EVERY_S) -> None:
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self._last = time.monotonic()

    def _print(self, text: str) -> None:
        print(printable(text), file=self.stream, flush=True)  # cell names and trial errors may hold escape codes

    def phase_started(self, progress: StudyProgress) -> None:
        self._print(phase_line(progress))
        self._last = time.monotonic()

    def trial_ended(self, progress: StudyProgress, end: TrialEnd) -> None:
        self._print(trial_line(progress, end))

    def tick(self, progress: StudyProgress) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self._print(status_line(progress))
            self._last = time.monotonic()

    def note(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        pass


class LiveConsole:
    """A live display that redraws in place; failures and phase changes scroll above it."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.console = Console(file=stream or sys.stdout)
        self._live: Live | None = None
        self._progress: StudyProgress | None = None

    def _render(self) -> Any:
        p = self._progress
        if p is None:
            return Text("")
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("cell", "best val", "left", "run", "done", "stop", "fail"):
            table.add_column(name, justify="left" if name == "cell" else "right", no_wrap=True)
        rows = sorted(p.cells.items(), key=lambda kv: (-kv[1].running, kv[1].left == 0, kv[0]))
        room = max(3, shutil.get_terminal_size((100, 30)).lines - 6)
        for cell, c in rows[:room]:
            table.add_row(Text(printable(cell)), _dice(c.best), str(c.left), str(c.running), str(c.done), str(c.stopped),
                          Text(str(c.failed), style="red" if c.failed else ""))
        if len(rows) > room:
            table.add_row(f"... {len(rows) - room} more cells", "", "", "", "", "", "")
        stage = f" ({p.stage})" if p.stage else ""
        head = printable(f"{p.name} {p.phase}{stage} {p.ended}/{p.count('total')} ended: {p.count('running')} running, "
                f"{p.count('stopped')} stopped early, {p.count('failed')} failed; "
                f"{duration(p.elapsed_s())} elapsed, ETA {duration(p.eta_s())}")
        if not p.open_claims:
            return Group(Text(head, style="bold"), table)
        return Group(Text(head, style="bold"), Text(printable(f"open claims: {'; '.join(p.open_claims)}")), table)

    def phase_started(self, progress: StudyProgress) -> None:
        self._progress = progress
        self._print(phase_line(progress))
        if self._live is None:
            # No stdout/stderr capture: Tune's prints are sent to the study log while it runs
            # (process_state.tune_prints_to), and a Live that swapped sys.stdout would restore
            # whatever stream was current when it started.
            self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2,
                              transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def trial_ended(self, progress: StudyProgress, end: TrialEnd) -> None:
        if end.outcome == FAILED or end.reason:
            self._print(trial_line(progress, end), style="red" if end.outcome == FAILED else "yellow")

    def tick(self, progress: StudyProgress) -> None:
        pass  # Live redraws on its own

    def note(self, text: str) -> None:
        self._print(text)

    def _print(self, text: str, style: str = "") -> None:
        # A Text, never markup: a cell name like "[red]" is shown as written; escape codes as escapes.
        self.console.print(Text(printable(text), style=style))

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._progress is not None:
            self._print(status_line(self._progress))


StudyConsole = PlainConsole | LiveConsole


@dataclass
class Display:
    """A study's console, whether Tune's own reporter is wanted, and the log file library output
    goes to (None with `verbose`)."""

    console: StudyConsole
    verbose: bool = False
    library_log: LibraryLog | None = None
    progress: StudyProgress | None = None

    @classmethod
    def of(cls, console: StudyConsole | None, *, verbose: bool, library_log: LibraryLog | None) -> Display:
        """The given console, or the default one: live on a terminal unless `verbose` (Tune's own
        reporter then draws, and a live display would fight it)."""
        return cls(console or make_console(live=False if verbose else None), verbose, library_log)

    def watch(
        self, spec: StudySpec, phase: str, totals: Mapping[str, int], *, full_epochs: int, stage: str = "",
        open_claims: Sequence[str] = (),
    ) -> ProgressCallback:
        """Start `phase` (or a round of it: `stage`, and the `open_claims` it runs for) with
        `totals` trials per cell; the callback feeds the console."""
        if self.progress is None:
            self.progress = StudyProgress(spec.name)
        self.progress.begin(phase, totals, stage=stage, open_claims=open_claims)
        self.console.phase_started(self.progress)
        return ProgressCallback(self.progress, self.console, spec, full_epochs=full_epochs)


def make_console(stream: IO[str] | None = None, *, live: bool | None = None) -> PlainConsole | LiveConsole:
    """A live display on a terminal, plain lines otherwise (`live` forces either)."""
    stream = stream or sys.stdout
    if live is None:
        live = stream.isatty() and os.environ.get("TERM", "") != "dumb" and not os.environ.get("CI")
    return LiveConsole(stream) if live else PlainConsole(stream)


__all__ = [
    "Display", "StudyConsole", "LiveConsole", "PlainConsole", "duration", "make_console", "phase_line", "status_line",
    "stopping_line",
    "trial_line",
]
