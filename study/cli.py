"""`segstudy` command line: a thin layer over importable functions.

Every user mistake surfaces as a `SegstudyError`: one line on stderr, exit code 2, no traceback.
A full disk is one line too, naming the path and its free space, exit code 75 (`study.disk`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from study import disk, paths, process_state
from study.errors import SegstudyError
from study.metrics_names import MIN_SEEDS
from study.redact import mask_uri, printable

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="segstudy",
    help="Distributed ablation studies of segmentation robustness on Ray Tune, tracked in MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect a study's data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
tracking_app = typer.Typer(help="Run an MLflow tracking server for studies.", no_args_is_help=True)
app.add_typer(tracking_app, name="tracking")

SpecArg = Annotated[Path, typer.Argument(help="Study spec (YAML), e.g. search_spaces/smoke.yaml")]
TrackingOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, spec, ./mlflow.db)")
]
StateDbOpt = Annotated[
    str | None,
    typer.Option("--state-db", help="A study in a bucket: the PostgreSQL database of its tuning state and driver lock, "
                 "postgresql://HOST:PORT/DB (default: $SEGSTUDY_STATE_DB, or the one the study started with)"),
]

StudyOpt = Annotated[str, typer.Option(help="Which study run: latest, all, or a study run id")]
ExperimentOpt = Annotated[str, typer.Option(help="Study name (= MLflow experiment)")]
LargeGridOpt = Annotated[
    bool, typer.Option("--allow-large-grid", help="Go on with more trials than the spec's max_trials (default 1000)")
]


def say(text: str, *, err: bool = False) -> None:
    """Print one line; every line the CLI prints comes here, with its secrets masked and its
    control characters escaped (`study.redact.printable`): tracking URIs, addresses and library
    error texts may carry a token, names from a shared store or a spec may carry escape codes."""
    typer.echo(printable(text), err=err)


def user_errors(fn: F) -> F:
    """Turn SegstudyError into one line on stderr and exit code 2 (75 for too little space), and
    a full disk met by a command into one line naming the path and its free space, exit 75."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SegstudyError as exc:
            say(f"error: {exc}", err=True)
            raise typer.Exit(code=exc.exit_code) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            written = [v for v in kwargs.values() if isinstance(v, Path)]  # --out, --storage, ...: the fullest is named
            cause = disk.no_space_cause(exc, where=[*written, Path.cwd()])
            if cause is None:
                raise
            say(f"error: {cause}", err=True)
            raise typer.Exit(code=disk.NO_SPACE_EXIT) from None

    return wrapper  # type: ignore[return-value]


def stops_on_signals(fn: F) -> F:
    """SIGINT, SIGTERM and SIGHUP stop the study as interrupted (docs/ARCHITECTURE.md 3,
    "Stopping"): one line on stderr naming what resumes it, exit code 130, 143 or 129 (128 + the
    signal); a full disk the same way with its path and free space, exit code 75."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with process_state.stop_on_signals():
            try:
                done = fn(*args, **kwargs)
                process_state.raise_if_stopped()  # a stop whose exception was lost on the way, or met after the study
                return done
            except process_state.Interrupted as exc:
                say(str(exc), err=True)
                process_state.end_at_once_on_signals()
                raise typer.Exit(code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors
def validate(spec: SpecArg, allow_large_grid: LargeGridOpt = False) -> None:
    """Check a spec (keys, values, architectures, factors, grid size, data) without training anything;
    print the number of trials and an estimate of their time on this machine."""
    from study.spec import check_data, check_grid_size, load_spec

    parsed = load_spec(spec)
    n_cells = check_grid_size(parsed, allow_large=allow_large_grid).cells  # before any data is built
    check_data(parsed)
    from study.run.driver.engine import prepared_data  # torch and MONAI: only once the spec itself is sound
    from study.run.cluster.capacity import local_trials_at_once
    from study.run.driver.preflight import plan_line

    data, checked = prepared_data(parsed)  # what run checks, validate checks: data built, one step per network input
    seeds = parsed.confirm_seeds
    tune = ""
    if parsed.tuning is not None:
        t = parsed.tuning
        tune = (
            f"tune {n_cells * t.trials_per_cell} trials ({t.trials_per_cell} per cell, {t.sampler}, "
            f"early stopping {t.early_stopping.kind}, searching {', '.join(sorted(parsed.search_space))}); "
        )
    budget = parsed.confirm.budget
    confirm = f"confirm {n_cells} cells x {len(seeds)} seeds = {n_cells * len(seeds)} trials"
    if budget is not None:
        confirm = (f"confirm {n_cells} cells x {budget.min}-{budget.max} seeds, sequential (margin "
                   f"{parsed.confirm.resolution.margin:g}) = up to {n_cells * budget.max} trials")
    say(f"{spec}: ok: study '{parsed.name}', factors {', '.join(sorted(parsed.factors))}; {tune}{confirm}")
    say(f"claims: {_claims_line(parsed)}")
    say(f"plan: {plan_line(parsed, data, checked, at_once=local_trials_at_once(parsed), where='on this machine')}")
    first = budget.min if budget is not None else len(seeds)
    if first < MIN_SEEDS:
        say(f"warning: only {first} confirmation seed(s); comparisons need >= {MIN_SEEDS}", err=True)


def _claims_line(spec: Any) -> str:
    """'(a) complexity, (b) out_of_domain declared (Holm, alpha 0.05); findings and the rest exploratory (bh, fdr 0.05)',
    with the levels claims (a)-(d) are made over where `statistics.claim_levels` names them."""
    from study.spec.statistics import CLAIM_KINDS

    stats = spec.statistics
    kinds = spec.declared_claims().kinds
    named = ", ".join(f"({CLAIM_KINDS[k].letter}) {k}" + (f" for {', '.join(sorted(a))}" if a else "") for k, a in kinds.items())
    declared = f"{named} declared (Holm, alpha {stats.alpha:g})" if kinds else "none declared"
    over = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in (stats.claim_levels or {}).items())
    declared += f"; claims (a)-(d) over {over} (statistics.claim_levels)" if over else ""
    return f"{declared}; findings and the rest exploratory ({stats.fdr_method}, fdr {stats.fdr:g})"


@app.command()
@user_errors
@stops_on_signals
def run(
    spec: SpecArg,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (e.g. auto); default: start Ray here")] = None,
    tracking_uri: TrackingOpt = None,
    storage: Annotated[
        str | None, typer.Option(help="Where study folders are made: a local folder (default ./ray_results) or s3://BUCKET/PREFIX")
    ] = None,
    state_db: StateDbOpt = None,
    verbose: VerboseOpt = False,
    allow_large_grid: LargeGridOpt = False,
) -> None:
    """Run every cell x seed of the study and track it in MLflow."""
    from study.run.driver.engine import run_study

    _finished(run_study(spec, address=address, tracking_uri=tracking_uri, storage=storage, state_db=state_db,
                        verbose=verbose, allow_large_grid=allow_large_grid))


VerboseOpt = Annotated[
    bool, typer.Option("--verbose", help="Show Tune's own trial tables and Ray/MLflow output instead of the study log")
]
StorageOpt = Annotated[
    str | None, typer.Option(help="Where study folders are: a local folder (default ./ray_results) or s3://BUCKET/PREFIX")
]
StudyDirArg = Annotated[str, typer.Argument(help="Study folder, or study name (its newest folder under --storage)")]
StudyTrackingOpt = Annotated[str | None, typer.Option("--tracking-uri", help="Default: the URI the study started with")]


@app.command()
@user_errors
@stops_on_signals
def resume(
    study: StudyDirArg,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (e.g. auto); default: start Ray here")] = None,
    tracking_uri: StudyTrackingOpt = None,
    storage: StorageOpt = None,
    state_db: StateDbOpt = None,
    verbose: VerboseOpt = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run failed trials again too, not only those a fault of the machine failed")
    ] = False,
) -> None:
    """Continue a study whose driver was killed or stopped: finished trials are kept, the rest run,
    and so do trials a fault of the machine failed (killed worker, lost node, full disk)."""
    from study.run.driver.engine import resume_study

    _finished(resume_study(study, address=address, tracking_uri=tracking_uri, storage=storage, state_db=state_db,
                           verbose=verbose, retry_failed=retry_failed))


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SegstudyError(f"--seeds {text!r}: a comma-separated list of whole numbers, e.g. --seeds 3,4,5") from None


@app.command()
@user_errors
@stops_on_signals
def replicate(
    study: StudyDirArg,
    seeds: Annotated[str, typer.Option(help="The new confirm seeds, comma-separated, e.g. 3,4,5")],
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (e.g. auto); default: start Ray here")] = None,
    tracking_uri: StudyTrackingOpt = None,
    storage: StorageOpt = None,
    state_db: StateDbOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run a finished study's confirm phase again under new seeds (its chosen hyperparameters, the same
    MLflow experiment, tagged as a replicate) and say which of its statements hold."""
    from study.run.driver.engine import replicate_study

    _finished(replicate_study(study, seeds=_seed_list(seeds), address=address, tracking_uri=tracking_uri,
                              storage=storage, state_db=state_db, verbose=verbose))


@app.command()
@user_errors
def sync(
    study: StudyDirArg,
    tracking_uri: StudyTrackingOpt = None,
    storage: StorageOpt = None,
    state_db: StateDbOpt = None,
) -> None:
    """Deliver tracking writes kept while the MLflow server was unreachable."""
    from study.run.driver.engine import sync_study

    sent, left = sync_study(study, storage=storage, tracking_uri=tracking_uri, state_db=state_db)
    say(f"delivered {sent} kept tracking write(s); {left} still waiting")
    if left:
        raise typer.Exit(code=1)


@tracking_app.command("serve")
@user_errors
def tracking_serve(
    backend_store_uri: Annotated[
        str, typer.Option("--backend-store-uri", help="sqlite:///PATH or postgresql://USER@HOST/DB")
    ] = "sqlite:///mlflow-server.db",
    artifacts: Annotated[
        str, typer.Option(help="Artifact root the server writes to: a local folder, or s3://BUCKET/PREFIX")
    ] = "mlartifacts-server",
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it to the network")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 5000,
    workers: Annotated[int, typer.Option(help="Server worker processes")] = 1,
) -> None:
    """Start `mlflow server` (loopback by default); studies log to it with --tracking-uri http://HOST:PORT."""
    import signal

    from study.tracking.server import check_port_free, serve, server_command
    from study.tracking import resolve_tracking_uri
    from study.tracking.stores import check_database, check_sqlite_store

    from study.storage import BucketPath, place
    from study.storage.s3 import check_bucket, require_boto3

    root = place(artifacts, option="--artifacts")
    destination = root.uri if isinstance(root, BucketPath) else root
    server_command(backend=backend_store_uri, artifacts=destination, host=host, port=port, workers=workers)  # validates
    if backend_store_uri.startswith("sqlite:///"):
        backend_store_uri = resolve_tracking_uri(backend_store_uri, None)
        db = Path(backend_store_uri.removeprefix("sqlite:///"))
        paths.output_file(db, option="--backend-store-uri", what="SQLite store")
        check_sqlite_store(db, uri=mask_uri(backend_store_uri), what="--backend-store-uri")
    if isinstance(root, BucketPath):
        require_boto3(f"--artifacts {root.uri}")
        check_bucket(root, option="--artifacts")  # a bucket the server could not use is refused before it starts
    else:
        paths.output_folder(root, option="--artifacts")
    check_port_free(host, port)  # before the banner: a taken port is exit 2, not a server that never comes up
    check_database(backend_store_uri, what="--backend-store-uri")  # likewise a database that does not answer
    say(f"MLflow server on http://{host}:{port} (backend {mask_uri(backend_store_uri)}, artifacts {artifacts})", err=True)
    code = serve(backend=backend_store_uri, artifacts=destination, host=host, port=port, workers=workers)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):  # stopped on request is a clean end
        raise typer.Exit(code=1)


def _finished(result: Any) -> None:
    say(
        f"study '{result.experiment}': {result.n_trials - result.n_failed}/{result.n_trials} trials finished; "
        f"MLflow run {result.study_run_id} at {result.tracking_uri}; results in {result.location}"
    )
    again = f"`segstudy resume {result.location}`"
    if result.lost:
        say(f"warning: {result.lost} trial(s) failed by a fault of the machine (killed worker, lost node, full disk), "
            f"not by their configuration; {again} runs them again", err=True)
    elif result.n_failed or result.unfinished:
        say(f"warning: {max(result.n_failed, result.unfinished)} trial(s) failed; {again} --retry-failed runs them again",
            err=True)
    if not result.pending_writes:  # with writes still in the outbox, MLflow does not hold the study yet
        from analysis.commands.study_summary import REPORT_DIR, SUMMARY_DIR, summarise_study, summary_lines

        remote = result.location != str(result.storage_path)
        try:
            summary = summarise_study(result.experiment, study_run_id=result.study_run_id, tracking_uri=result.tracking_uri,
                                      study_folder=result.storage_path, location=result.location if remote else "")
            if result.folder is not None:  # a study in a bucket: its summary and report go there too
                result.folder.save(*(d for d in (SUMMARY_DIR, REPORT_DIR) if (result.storage_path / d).is_dir()))
        except Exception as exc:
            cause = disk.no_space_cause(exc, where=result.storage_path)
            if cause is None:
                raise
            say(f"error: {cause}, writing the study's summary and report; the study itself ended; free space, then "
                f"{again} writes them", err=True)
            raise typer.Exit(code=disk.NO_SPACE_EXIT) from None
        for line in summary_lines(summary):
            say(line)
    if result.not_learned:
        cells = sorted({entry.split(" seed=")[0] for entry in result.not_learned})
        say(
            f"warning: {len(result.not_learned)} confirm trial(s) did not learn, in cell(s) {', '.join(cells)}: "
            f"their comparisons mean nothing (see tag segstudy.learning_issue; first: {result.not_learned[0]})",
            err=True,
        )
    if not result.ok:
        raise typer.Exit(code=1)


@app.command()
@user_errors
def submit(
    spec: SpecArg,
    address: Annotated[str, typer.Option(help="Ray job server, e.g. http://HEAD:8265")],
    tracking_uri: TrackingOpt = None,
    storage: Annotated[
        str | None, typer.Option(help="Where study folders are, as the cluster sees them: a shared folder or s3://BUCKET/PREFIX")
    ] = None,
    state_db: StateDbOpt = None,
    no_follow: Annotated[bool, typer.Option("--no-follow", help="Return after submitting")] = False,
    allow_large_grid: LargeGridOpt = False,
) -> None:
    """Submit the study as a Ray job, stream its logs, exit with its status."""
    from study.run.cluster.submit import submit_study

    job_id, status = submit_study(spec, address=address, tracking_uri=tracking_uri, storage=storage, state_db=state_db,
                                  follow=not no_follow, allow_large_grid=allow_large_grid)
    say(f"job {job_id}: {status}")
    if not no_follow and status != "SUCCEEDED":
        raise typer.Exit(code=1)


@app.command()
@user_errors
def analyze(
    experiment: ExperimentOpt,
    out: Annotated[Path, typer.Option(help="Output directory for tables and plots")],
    tracking_uri: TrackingOpt = None,
    phase: Annotated[str, typer.Option(help="Which trials to read: confirm, tune or all")] = "confirm",
    study: StudyOpt = "latest",
) -> None:
    """Read the study's runs from MLflow; write tidy CSVs and robustness plots."""
    from analysis.commands.analyze import analyze as run_analysis
    from study.tracking import resolve_tracking_uri

    if phase not in {"confirm", "tune", "all"}:
        raise SegstudyError(f"--phase {phase!r}: accepted values are confirm, tune, all")
    paths.output_folder(out, option="--out")
    written = run_analysis(
        experiment,
        out_dir=out,
        tracking_uri=resolve_tracking_uri(tracking_uri, None),
        phase=None if phase == "all" else phase,
        study=study,
    )
    for name, path in written.items():
        say(f"{name}: {path}")
    from analysis.commands.study_summary import statement_lines

    for line in statement_lines(written):
        say(line)


def _stored_study(experiment: str, storage: str, study: str, tracking_uri: str | None, *, writing: bool) -> tuple[Any, str, str]:
    """The newest study folder of EXPERIMENT under `--storage` (a folder or a bucket; opened without
    its state database), its study run, and the tracking URI: `--tracking-uri`, else the one the
    study started with (on another machine the bucket is what the user knows)."""
    from study.run.record.bucket_study import find_study
    from study.tracking import resolve_tracking_uri

    folder = find_study(experiment, storage=storage, state=False, writing=writing)
    run_id = folder.manifest.get("study_run_id")
    if not run_id or study not in ("latest", run_id):
        raise SegstudyError(f"--study {study}: the newest study folder of '{experiment}', {folder.location}, holds study "
                            f"run {run_id or '(none yet)'}; give --tracking-uri and --study without --storage for another")
    return folder, run_id, resolve_tracking_uri(tracking_uri or folder.manifest["tracking_uri"], None)


@app.command()
@user_errors
def status(
    experiment: Annotated[str, typer.Argument(help="Study name (= MLflow experiment)")],
    tracking_uri: TrackingOpt = None,
    study: StudyOpt = "latest",
    storage: Annotated[
        str | None, typer.Option(help="Where the study folders are (a folder or s3://BUCKET/PREFIX): the newest study "
                                      "folder of the experiment names its study run and tracking URI")
    ] = None,
) -> None:
    """Where the study stands (running, interrupted, driver gone, finished), then per cell and
    phase: trials done, running, stopped early, failed, interrupted, best validation Dice."""
    from analysis.commands.status import study_status
    from study.tracking import resolve_tracking_uri

    folder, uri = None, resolve_tracking_uri(tracking_uri, None)
    if storage is not None:
        folder, study, uri = _stored_study(experiment, storage, study, tracking_uri, writing=False)
    table = study_status(experiment, tracking_uri=uri, study=study)
    for line in table.attrs.get("state", []):
        say(line)
    if folder is not None:
        say(f"study folder: {folder.location}")
    say(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if "rounds" in table.attrs:
        say(table.attrs["rounds"])
    if "browse" in table.attrs:
        say(f"browse: {table.attrs['browse']}")
    bad = table[table["not_learned"] > 0]
    if not bad.empty:
        say(
            f"warning: {int(bad['not_learned'].sum())} confirm trial(s) did not learn, in cell(s) "
            f"{', '.join(bad['cell'])}: do not compare arms there (tag segstudy.learning_issue says why)",
            err=True,
        )


@app.command()
@user_errors
def recommend(
    experiment: ExperimentOpt,
    data: Annotated[Path, typer.Option(help="Folder of <id>_image / <id>_mask pairs (PNG or NIfTI)")],
    tracking_uri: TrackingOpt = None,
) -> None:
    """Measure your labelled images and print which architecture won nearest to them (JSON)."""
    import json

    from analysis.commands.recommend import recommend as run_recommend
    from study.tracking import resolve_tracking_uri

    paths.input_folder(data, option="--data")
    result = run_recommend(experiment, data=data, tracking_uri=resolve_tracking_uri(tracking_uri, None))
    for text in result["warnings"]:
        say(f"warning: {text}", err=True)
    say(json.dumps(result, indent=2))


@app.command()
@user_errors
def report(
    experiment: ExperimentOpt,
    out: Annotated[Path | None, typer.Option(help="Output directory for report.html and its figures")] = None,
    tracking_uri: TrackingOpt = None,
    study: StudyOpt = "latest",
    storage: Annotated[
        str | None, typer.Option(help="Instead of --out: where the study folders are (a folder or s3://BUCKET/PREFIX); "
                                      "the report goes into the newest study folder of the experiment, report/")
    ] = None,
) -> None:
    """Build the self-contained HTML study report and log it to the study's MLflow run."""
    from analysis.commands.report import build_report
    from analysis.commands.study_summary import REPORT_DIR
    from study.tracking import resolve_tracking_uri

    if (out is None) == (storage is None):
        raise SegstudyError("give --out DIR for the report, or --storage where the study folders are (the report then "
                            "goes into the study's own folder), not both")
    folder, uri = None, resolve_tracking_uri(tracking_uri, None)
    if storage is not None:
        folder, study, uri = _stored_study(experiment, storage, study, tracking_uri, writing=True)
        out = folder.path / REPORT_DIR
    paths.output_folder(out, option="--out")
    path = build_report(experiment, out_dir=out, tracking_uri=uri, study=study)
    if folder is not None and folder.location != str(folder.path):
        folder.save(REPORT_DIR)
        say(f"report: {folder.where(f'{REPORT_DIR}/{path.name}')} (a copy in {path})")
    else:
        say(f"report: {path}")


@app.command()
@user_errors
def predict(
    model: Annotated[str, typer.Option(help="Confirm run id, runs:/RUN_ID/model, models:/NAME/VERSION or models:/NAME@ALIAS")],
    input: Annotated[Path, typer.Option("--input", help="Image to segment: .nii.gz, .nii or .png")],
    output: Annotated[Path, typer.Option(help="Mask to write, same format as the input")],
    tracking_uri: TrackingOpt = None,
    risk_controlled: Annotated[
        bool, typer.Option(help="Threshold at the calibrated FNR-controlling lambda instead of the study's threshold")
    ] = False,
) -> None:
    """Segment one image with a confirmed model; print its Dice lower bound and out-of-domain flag (JSON)."""
    import json

    from study.serving.predict import predict as run_predict
    from study.tracking import resolve_tracking_uri

    result = run_predict(
        model, input, output, tracking_uri=resolve_tracking_uri(tracking_uri, None), risk_controlled=risk_controlled
    )
    for reason in result["out_of_domain_reasons"]:
        say(f"warning: out of domain: {reason}; the bound is not backed by calibration", err=True)
    say(json.dumps(result, indent=2))


@data_app.command("synth")
@user_errors
def data_synth(
    spec: SpecArg,
    out: Annotated[Path, typer.Option(help="Output directory")],
    fmt: Annotated[str, typer.Option("--format", help="png or nifti")] = "png",
) -> None:
    """Write the study's data (every level of its data factors) to files for inspection."""
    from study.spec.cells import cell_key
    from study.data.export import export_level
    from study.spec import load_spec
    from study.training.inputs.study_data import build_study_data

    parsed = load_spec(spec)
    if fmt not in {"png", "nifti"}:
        raise SegstudyError(f"--format {fmt!r}: accepted values are png, nifti")
    paths.output_folder(out, option="--out")  # before the data are built
    for key, level in build_study_data(parsed).items():
        folder = out / (cell_key(dict(zip(parsed.dataset_factors, key))) or "data")
        files = export_level(level, folder, fmt=fmt)
        say(f"{folder}: {len(files)} files")


def main() -> None:
    """Console-script entry point."""
    process_state.format_warnings()
    app(prog_name="segstudy")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
