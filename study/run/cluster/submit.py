"""Submit a study to a Ray cluster as a Ray job and follow it to the end.

The project directory travels as the job's working_dir (Ray honours .gitignore/.rayignore, so the
venv and local stores stay behind); the job runs the same `segstudy run` entrypoint as a local run.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from pathlib import Path

from study.errors import SegstudyError, first_line
from study.redact import mask_text, mask_uri, printable
from study.spec import check_grid_size, load_spec
from study.tracking import resolve_tracking_uri

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def project_root(start: Path | None = None) -> Path:
    """The nearest folder holding pyproject.toml (the working_dir that travels), else cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "study").is_dir():
            return folder
    return here


def build_entrypoint(spec_rel: str, *, tracking_uri: str, storage: str, allow_large_grid: bool = False) -> str:
    return " ".join(
        [
            "python -m study run",
            shlex.quote(spec_rel),
            "--address auto",
            f"--tracking-uri {shlex.quote(tracking_uri)}",
            f"--storage {shlex.quote(storage)}",
            *(["--allow-large-grid"] if allow_large_grid else []),
        ]
    )


def submit_study(
    spec_path: str | Path,
    *,
    address: str,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
    follow: bool = True,
    allow_large_grid: bool = False,
) -> tuple[str, str]:
    """Submit the study and (by default) stream its logs until it ends.

    Returns:
        (job id, final status: SUCCEEDED, FAILED or STOPPED; PENDING/RUNNING if not following)

    Raises:
        SegstudyError: bad spec, a spec outside the project, or an unreachable job server.
    """
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)  # refuse bad input before anything reaches the cluster
    check_grid_size(spec, allow_large=allow_large_grid)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    root = project_root()
    try:
        spec_rel = spec_path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise SegstudyError(f"{spec_path}: the spec must lie inside the project folder {root} that is uploaded") from None
    storage_abs = str(Path(storage or "ray_results").resolve())
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        detail = mask_text(first_line(exc, limit=10_000), address)[:200]
        raise SegstudyError(f"--address {mask_uri(address)}: no Ray job server answered ({detail})") from None
    try:
        job_id = _submit_with_retry(
            client,
            entrypoint=build_entrypoint(spec_rel, tracking_uri=uri, storage=storage_abs, allow_large_grid=allow_large_grid),
            submission_id=f"segstudy-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            runtime_env={"working_dir": str(root)},
            metadata={"segstudy.spec": spec_rel, "segstudy.tracking_uri": mask_uri(uri)},  # shown by `ray job list`
        )
    except RuntimeError as exc:  # the job server answered with an error (e.g. the upload was refused)
        detail = mask_text(first_line(exc, limit=10_000), address, uri)[:200]
        raise SegstudyError(f"--address {mask_uri(address)}: the job server refused the job ({detail})") from None
    print(f"submitted {job_id} to {mask_uri(address)}; tracking {mask_uri(uri)}", file=sys.stderr, flush=True)
    if not follow:
        return job_id, str(client.get_job_status(job_id))
    asyncio.run(_stream_logs(client, job_id))
    return job_id, _wait_terminal(client, job_id)


def _submit_with_retry(client: object, *, attempts_s: float = 60.0, **job: object) -> str:
    """Submit, retrying while a just-started head has no job agent yet (HTTP 500, "No available agent")."""
    deadline = time.monotonic() + attempts_s
    while True:
        try:
            return client.submit_job(**job)  # type: ignore[attr-defined]
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


async def _stream_logs(client: object, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):  # type: ignore[attr-defined]
        print(printable(lines), end="", flush=True)


def _wait_terminal(client: object, job_id: str, *, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id))  # type: ignore[attr-defined]
        status = status.rsplit(".", 1)[-1]
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(0.5)
