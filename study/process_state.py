"""Every change segstudy makes to process-wide state, in one place.

Environment defaults, library log levels, thread counts and warning formats outlive the call that
sets them and reach every module of the process, so each one is a small named function here with
the reason it exists; the code that needs the state calls the function where the state used to be
set. Libraries are imported inside the function that touches them, so importing this module costs
nothing (it is rank 0 of docs/ARCHITECTURE.md 2: everyone may call it).

Environment defaults use `setdefault`: a user who sets the variable keeps their value.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from study.disk import NO_SPACE_EXIT
from study.redact import printable


def fail_fast_http() -> None:
    """MLflow retries a refused connection for minutes by default; segstudy fails fast instead
    (a study keeps its writes in the outbox, a reading command says the server is away)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def artifacts_through_server() -> None:
    """A client of an MLflow server whose artifacts are in a bucket reads them through the server
    (`--serve-artifacts`), as it writes them: MLflow 3 otherwise fetches each file from the bucket
    itself by a presigned URL, which needs the bucket's endpoint reachable from every client (a
    MinIO inside a cluster is not) and puts a signature in the URLs a client logs."""
    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")


def quiet_artifact_downloads() -> None:
    """MLflow draws a progress bar per artifact download on stderr; `segstudy predict` keeps stderr
    to one line per problem."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def quiet_tune_loggers() -> None:
    """Tune's own CSV/JSON/TensorBoard loggers duplicate what MLflow records and cost driver CPU on
    every result; a user can turn them back on by setting the variable to 0."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def let_tune_use_prestarted_workers() -> None:
    """Drop Tune's fixed PL_DISABLE_FORK actor variable so trainable actors can take Ray's
    prestarted workers (see study/run/cluster/warm_workers.py for why that matters).

    Ray hands a prestarted worker only to an actor whose runtime_env is empty; PL_DISABLE_FORK is a
    PyTorch Lightning switch segstudy never needs. Variables Tune propagates from the driver's
    environment (AWS credentials and Train settings) are kept: with them set, trials still run, in
    fresh workers. This edits a private Ray class cache, hence its place among the process state.
    """
    from ray.tune.execution import class_cache

    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; one line per trial per cell buries segstudy's own output,
    and the study's record is MLflow."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def set_torch_threads(n: int) -> None:
    """A trial uses as many intra-op threads as the CPUs its spec reserves (at least one):
    torch's default of every core oversubscribes a node running several trials at once."""
    import torch

    torch.set_num_threads(max(1, int(n)))


def _warning_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"warning: {printable(str(message))}\n"  # a warning may quote a tracking URI, or a name with escape codes


def format_warnings() -> None:
    """Python prints a warning as file:line plus the source line; the CLI prints one readable
    `warning: ...` line instead, like its errors."""
    warnings.formatwarning = _warning_line


def project_folder() -> Path:
    """The user's project folder: the current folder, where `segstudy` is run and a submitted job's
    entrypoint runs (inside the unpacked working_dir)."""
    return Path.cwd()


def import_from_project_folder() -> None:
    """Let `import my_nets` find modules in the project folder, as `python -m` does: a spec's
    ``_target_`` names the user's own modules (study/targets.py). The console script's sys.path
    starts at the venv's bin folder instead. Appended, so a file of the project never shadows an
    installed package; Ray gives local workers the driver's current folder on their path, and a
    submitted job's workers the working_dir."""
    import sys

    folder = str(project_folder())
    if folder not in sys.path and "" not in sys.path:
        sys.path.append(folder)


# Loggers of the libraries segstudy drives; what they say goes to the study's log file.
LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "alembic", "urllib3", "filelock", "numba")
# Our own packages: warnings raised from them are the user's to act on and stay on the console.
OWN_PACKAGES = ("study", "analysis")


def route_library_output(sink: IO[str]) -> Callable[[], None]:
    """Send what Ray, Tune, MLflow and Optuna log, and warnings raised inside third-party code, to
    `sink` (the study's log file) instead of the console; returns the function that undoes it.

    By logger name and by the module a warning comes from, never globally: segstudy's own warnings
    (too few seeds, cells that did not learn) still reach the console, and nothing is dropped.
    """
    import logging

    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        logger.handlers = [handler]
        logger.propagate = False  # levels stay the libraries' own (Ray and MLflow: INFO)
    # Library sub-loggers that bring their own console handler (e.g. ray.tune, ray.data).
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in LIBRARY_LOGGERS and "." in name:
            own = [h for h in logger.handlers if type(h) is logging.StreamHandler]
            if own:
                saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
                logger.handlers = [h for h in logger.handlers if h not in own]
                logger.propagate = True
    shown = warnings.showwarning
    own = _package_roots(OWN_PACKAGES)

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if str(Path(filename).resolve()).startswith(own):
            shown(message, category, filename, lineno, file, line)
        else:
            sink.write(f"warning: {category.__name__}: {message} ({filename}:{lineno})\n")

    warnings.showwarning = showwarning

    def undo() -> None:
        warnings.showwarning = shown
        for logger, handlers, propagate, level in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)

    return undo


def _package_roots(names: tuple[str, ...]) -> tuple[str, ...]:
    """The folders of the named packages, wherever they are installed (found, not imported)."""
    import importlib.util

    roots = []
    for name in names:
        spec = importlib.util.find_spec(name)
        roots += [str(Path(r).resolve()) + os.sep for r in (spec.submodule_search_locations or [])] if spec else []
    return tuple(roots)


def route_ray_worker_output(sink: IO[str]) -> Callable[[], None]:
    """Write the trial workers' stdout and stderr, which Ray forwards to the driver's console, to
    `sink`; returns the undo. Ray has no public switch for the destination (only `log_to_driver`,
    which would lose it), so this swaps the handler of Ray's private log dispatcher; when Ray
    changes it, the output simply stays on the console."""
    try:
        from ray._private import worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return lambda: None
    names = [name for name, _ in dispatcher.handlers]
    if "ray_print_logs" not in names:
        return lambda: None
    original = dict(dispatcher.handlers)["ray_print_logs"]

    def to_sink(data: dict[str, Any]) -> None:
        who = data.get("actor_name") or data.get("task_name") or "worker"
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # its status table every 5 s: keep only its events, as Ray does
            lines = list(ray_worker.filter_autoscaler_events(lines))
        for text in lines:
            sink.write(f"({who} pid={data.get('pid')}) {text}\n")
        sink.flush()

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", to_sink)

    def undo() -> None:
        dispatcher.remove_handler("ray_print_logs")
        if ray_worker.global_worker.connected:
            dispatcher.add_handler("ray_print_logs", original)

    return undo


def tune_prints_to(sink: IO[str] | None) -> contextlib.AbstractContextManager[Any]:
    """While Tune runs, what it `print`s (its experiment header and "View detailed results here",
    which it prints even at verbose=0) goes to `sink`; None leaves stdout alone (--verbose).
    segstudy's console holds the real stdout, so its own lines are not affected."""
    return contextlib.redirect_stdout(sink) if sink is not None else contextlib.nullcontext()


def autotune_cudnn() -> None:
    """cuDNN picks its convolution algorithms by timing them on the first step: every step of a
    trial has the same shapes, so the search is paid once. CUDA trials only (CPU numbers stay
    bit-identical); it outlives the trial, which is why it lives here."""
    import torch

    torch.backends.cudnn.benchmark = True


# ---- Stopping a study on SIGINT, SIGTERM, SIGHUP or a full disk (docs/ARCHITECTURE.md 3, "Stopping") ----
# Signal dispositions are process-wide, so the whole stop record lives here: `run_study`,
# `resume_study` and the CLI around them open the scope (`stop_on_signals`), the driver marks what
# must not be cut (`defer_stop`), and the Tune stopper of every phase asks whether a stop came
# (`stop_requested`). A full disk met anywhere in the driver is recorded as a stop as well
# (`stop_on_full_disk`): the study ends the same way, resumable, with the cause in its line.

# SIGHUP: the terminal of a study started by hand was closed; a stop like SIGTERM, not a kill.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
ECHO_S = 0.5  # the same signal again within this: one Ctrl-C seen twice (the terminal's and a wrapper's forward)


class Interrupted(BaseException):
    """The driver was asked to stop (SIGINT, SIGTERM, SIGHUP), or met a full disk. A BaseException,
    like KeyboardInterrupt, so the `except Exception` clean-ups it passes on its way out do not
    take it for an error.

    Attributes:
        signum: the signal that asked for the stop (None for a full disk).
        study: what `segstudy resume` continues (the study folder), or None before it existed.
        cause: 'no space left on device: PATH (N free)' when a full disk stopped the study.
    """

    def __init__(self, signum: int | None, study: str | None = None, cause: str | None = None) -> None:
        super().__init__(signum, study, cause)
        self.signum = signum
        self.study = study
        self.cause = cause

    @property
    def exit_code(self) -> int:
        """128 + the signal number, what a shell reports for a process the signal ended (130, 143,
        129); 75 (EX_TEMPFAIL) for a full disk."""
        return 128 + self.signum if self.signum is not None else NO_SPACE_EXIT

    def __str__(self) -> str:
        if self.signum is None and self.cause:
            if self.study is None:
                return f"interrupted before the study folder was made: {self.cause}; nothing to resume"
            return f"interrupted: {self.cause}; free space, then `segstudy resume {self.study}` continues"
        if self.study is None:
            return "interrupted before the study folder was made; nothing to resume"
        return f"interrupted; `segstudy resume {self.study}` continues"


@dataclass
class _Stop:
    active: bool = False  # a scope is open and its handlers are installed
    signum: int | None = None  # the first stop signal received
    cause: str | None = None  # a full disk met before any signal came (see `stop_on_full_disk`)
    at: float = 0.0  # when (monotonic)
    deferred: int = 0  # depth of `defer_stop` blocks the main thread is in
    study: str | None = None  # what resume needs to continue (see `name_stopped_study`)


_STOP = _Stop()


def _on_stop_signal(signum: int, frame: Any) -> None:
    """First signal: record it and raise Interrupted at once, or, inside `defer_stop`, at its end.
    A second one ends the process now: whatever the clean-up had left is what a SIGKILL leaves,
    which resume is built to continue."""
    now = time.monotonic()
    if _STOP.signum is None:
        _STOP.signum, _STOP.at = signum, now
        if _STOP.deferred == 0:
            raise Interrupted(signum, _STOP.study)
        return
    if signum == _STOP.signum and now - _STOP.at < ECHO_S:
        return
    hint = f"`segstudy resume {_STOP.study}` continues" if _STOP.study else "nothing to resume"
    show_cursor = "\x1b[?25h" if os.isatty(1) else ""  # a live display hid it (sys.stdout may be redirected now)
    os.write(2, f"{show_cursor}interrupted again: ending at once; {printable(hint)}\n".encode())
    os._exit(128 + _STOP.signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the body, SIGINT, SIGTERM and SIGHUP stop the study instead of killing the process: the
    first raises `Interrupted` (at once, or at the end of a `defer_stop` block), a second ends the
    process without clean-up. Tune's own SIGINT handler is switched off meanwhile
    (TUNE_DISABLE_SIGINT_HANDLER): it would take the signal as "end this phase" and the driver
    would go on to the next. Only the main thread can own signals; elsewhere this does nothing.
    An `Interrupted` Python could only report as "Exception ignored" (a signal landing in code a C
    extension runs) is not printed: the stop holds and is raised again (`raise_if_stopped`).
    """
    global _STOP
    if threading.current_thread() is not threading.main_thread() or _STOP.active:
        yield
        return
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    unraisable = sys.unraisablehook
    sys.unraisablehook = lambda info: None if isinstance(info.exc_value, Interrupted) else unraisable(info)
    _STOP = _Stop(active=True)
    _own_stop_signals()
    try:
        yield
    finally:
        _STOP.active = False
        sys.unraisablehook = unraisable
        for s, handler in saved.items():
            signal.signal(s, handler)
        if saved_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env


def end_at_once_on_signals() -> None:
    """For a process on its way out after a stop: a further SIGINT, SIGTERM or SIGHUP ends it at once,
    with the stop's exit code, instead of a traceback (finalising torch, Ray and MLflow takes
    seconds, long enough for a second Ctrl-C)."""
    if threading.current_thread() is threading.main_thread() and _STOP.signum is not None:
        _own_stop_signals()


def _own_stop_signals() -> None:
    for s in STOP_SIGNALS:
        signal.signal(s, _on_stop_signal)


@contextlib.contextmanager
def defer_stop() -> Iterator[None]:
    """A block a stop must not cut (starting Ray, a Tune phase, closing the study run): a stop
    signal received inside is raised as `Interrupted` when the outermost such block ends.

    Our handlers are put back at the end, for libraries that install their own inside (ray.init
    sets a SIGTERM handler that calls sys.exit(15)); a SIGTERM that one took is our stop too.
    """
    if not _STOP.active:
        yield
        return
    _STOP.deferred += 1
    try:
        yield
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:
            raise
        _STOP.signum = _STOP.signum or signal.SIGTERM
        raise Interrupted(_STOP.signum, _STOP.study) from None
    finally:
        _STOP.deferred -= 1
        _own_stop_signals()
    raise_if_stopped()


def raise_if_stopped() -> None:
    """Raise `Interrupted` when a stop was asked for and its `Interrupted` is not on its way out
    already, outside `defer_stop` blocks (their ends call this, and the CLI once a command is
    done, so a full disk met after the last block still stops it).

    Raised at once by the signal handler, an `Interrupted` can be lost: a signal that lands while
    a C extension runs Python code (an import's callback) is reported as "Exception ignored" and
    the program goes on. The stop holds all the same, and the next check raises it again; one
    made during the clean-up of a propagating `Interrupted` leaves that one be."""
    if stop_requested() and _STOP.deferred == 0 and not isinstance(sys.exc_info()[1], Interrupted):
        raise Interrupted(_STOP.signum, _STOP.study, None if _STOP.signum is not None else _STOP.cause)


def stop_on_full_disk(cause: str) -> bool:
    """Record a stop for a full disk (`cause`: 'no space left on device: PATH (N free)'), met by a
    Tune callback, the searcher or the study log, from any thread: the phase ends at Tune's next
    step and `Interrupted` is raised where a signal's would be. Returns False when no stop scope
    is open (a library caller in a thread): the caller raises its error instead."""
    if not _STOP.active:
        return False
    if _STOP.cause is None:
        _STOP.cause = cause
    return True


def interrupted_by_full_disk(cause: str) -> Interrupted:
    """The `Interrupted` to raise now for a full disk met outside a Tune phase (the cause of a stop
    already recorded wins: it came first)."""
    if _STOP.active:
        _STOP.cause = _STOP.cause or cause
    if _STOP.signum is not None:
        return Interrupted(_STOP.signum, _STOP.study)
    return Interrupted(None, _STOP.study, _STOP.cause or cause)


def stop_requested() -> bool:
    """Whether this process was asked to stop: Tune phases end at their next step when it is."""
    return _STOP.active and (_STOP.signum is not None or _STOP.cause is not None)


def stop_signal_name() -> str | None:
    """'SIGINT', 'SIGTERM' or 'SIGHUP' once a stop signal came, else None."""
    return signal.Signals(_STOP.signum).name if _STOP.active and _STOP.signum is not None else None


def stop_reason() -> str | None:
    """What stopped the study: a signal's name, or the full disk's cause; None before a stop."""
    if not _STOP.active:
        return None
    return stop_signal_name() or _STOP.cause


def name_stopped_study(study: str) -> None:
    """What `segstudy resume` is given to continue this study, for the stop messages."""
    _STOP.study = study


__all__ = [
    "Interrupted",
    "autotune_cudnn",
    "defer_stop",
    "end_at_once_on_signals",
    "artifacts_through_server",
    "fail_fast_http",
    "format_warnings",
    "interrupted_by_full_disk",
    "let_tune_use_prestarted_workers",
    "name_stopped_study",
    "quiet_artifact_downloads",
    "raise_if_stopped",
    "quiet_optuna",
    "quiet_tune_loggers",
    "route_library_output",
    "route_ray_worker_output",
    "set_torch_threads",
    "stop_on_full_disk",
    "stop_on_signals",
    "stop_reason",
    "stop_requested",
    "stop_signal_name",
    "tune_prints_to",
]
