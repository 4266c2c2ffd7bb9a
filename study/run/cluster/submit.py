"""Submit a study to a Ray cluster as a Ray job and follow it to the end.

The project folder (the current folder, where `segstudy submit` is typed and relative paths in the
spec resolve) travels as the job's working_dir; the job runs the same `segstudy run` entrypoint
as a local run inside the unpacked copy, so the spec's relative paths and the modules its
``_target_`` entries name resolve there as they do here. Ray honours .gitignore/.rayignore, and
segstudy's own outputs (`UPLOAD_EXCLUDES`) never travel. segstudy's packages, and a package a
``_target_`` names from outside the project folder, travel as py_modules (`job_runtime_env`): the
cluster needs segstudy's dependencies, not segstudy itself.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shlex
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from study import process_state
from study.errors import SegstudyError, first_line
from study.redact import mask_text, mask_uri, printable
from study.spec import StudySpec, check_grid_size, load_spec
from study.storage import storage_root
from study.storage.state_db import check_shared_tracking, checked_state_db, state_db_url
from study.targets import TARGET, is_component
from study.tracking import resolve_tracking_uri

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
OWN_PACKAGES = ("study", "analysis")  # segstudy's code: travels with the job unless the project folder holds it
# Never uploaded: a local run's store, study folders and artifacts, the venv, caches.
UPLOAD_EXCLUDES = [".venv/", ".git/", "__pycache__/", "mlflow.db", "*.db.lock", "mlartifacts/", "ray_results/"]


def job_runtime_env(spec: StudySpec, root: Path) -> dict[str, Any]:
    """The job's runtime_env: `root` as working_dir, plus as py_modules segstudy's own packages
    and the packages of ``_target_`` modules that lie outside `root`, when they do.

    A target module installed in this environment's site-packages is left to the cluster's
    environment (install it there as here); one in the standard library needs nothing.

    Raises:
        SegstudyError: a ``_target_`` module outside the project folder that is a single file
            (py_modules ships folders): naming the key, the file and what to do.
    """
    own = [importlib.util.find_spec(name) for name in OWN_PACKAGES]
    modules = [str(Path(s.origin).parent) for s in own if s and s.origin and not _inside(Path(s.origin), root)]
    process_state.import_from_project_folder()
    for where, target in _targets(spec):
        top = str(target).split(".", 1)[0]
        found = importlib.util.find_spec(top)
        origin = Path(found.origin) if found is not None and found.origin else None
        if origin is None or _inside(origin, root) or _installed(origin):
            continue
        if not found.submodule_search_locations:
            raise SegstudyError(
                f"{where}.{TARGET}: module '{top}' ({origin}) lies outside the project folder {root} that travels to "
                "the cluster; move it into the project folder, or make it a package (a folder with __init__.py)"
            )
        folder = str(origin.parent)
        if folder not in modules:
            modules.append(folder)
    env: dict[str, Any] = {"working_dir": str(root), "excludes": list(UPLOAD_EXCLUDES)}
    if modules:
        env["py_modules"] = modules
    return env


def _targets(spec: StudySpec) -> Iterator[tuple[str, str]]:
    """(spec key, import path) of every ``_target_`` of the spec, nested ones included."""
    def walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
        if is_component(node):
            yield where, str(node[TARGET])
        if isinstance(node, dict):
            for key, value in node.items():
                if key != TARGET:
                    yield from walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}[{i}]")

    yield from walk(spec.architectures, "architectures")
    yield from walk(spec.perturbations, "perturbations")


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _installed(path: Path) -> bool:
    """In the standard library or an installed packages folder of this Python."""
    paths = sysconfig.get_paths()
    places = {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]}
    resolved = path.resolve()
    return any(resolved.is_relative_to(Path(p).resolve()) for p in places) or "site-packages" in resolved.parts


def build_entrypoint(spec_rel: str, *, tracking_uri: str, storage: str, state_db: str | None = None,
                     allow_large_grid: bool = False) -> str:
    return " ".join(
        [
            "python -m study run",
            shlex.quote(spec_rel),
            "--address auto",
            f"--tracking-uri {shlex.quote(tracking_uri)}",
            f"--storage {shlex.quote(storage)}",
            *([f"--state-db {shlex.quote(state_db)}"] if state_db else []),
            *(["--allow-large-grid"] if allow_large_grid else []),
        ]
    )


def cluster_storage(storage: str | Path | None, *, state_db: str | None, tracking_uri: str) -> tuple[str, str | None]:
    """`--storage` as the job gets it: a bucket URI as given, a folder made absolute (the cluster
    sees it at the same path); and the state database a bucket needs, checked for its form here
    (whether the cluster reaches it, and the bucket, the job checks before any trial starts)."""
    root = storage_root(storage)
    if isinstance(root, Path):
        return str(root), None
    url = checked_state_db(state_db_url(state_db), storage=root.uri, reach=False)
    check_shared_tracking(root.uri, tracking_uri)
    # Passed on only when given: a cluster whose nodes set SEGSTUDY_STATE_DB needs none.
    return root.uri, state_db and url


def submit_study(
    spec_path: str | Path,
    *,
    address: str,
    tracking_uri: str | None = None,
    storage: str | Path | None = None,
    state_db: str | None = None,
    follow: bool = True,
    allow_large_grid: bool = False,
) -> tuple[str, str]:
    """Submit the study and (by default) stream its logs until it ends.

    Returns:
        (job id, final status: SUCCEEDED, FAILED or STOPPED; PENDING/RUNNING if not following)

    Raises:
        SegstudyError: bad spec, a spec outside the project folder, a module that cannot travel, or
            an unreachable job server.
    """
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)  # refuse bad input before anything reaches the cluster
    check_grid_size(spec, allow_large=allow_large_grid)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    storage_abs, state_db = cluster_storage(storage, state_db=state_db, tracking_uri=uri)
    root = process_state.project_folder()
    try:
        spec_rel = spec_path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise SegstudyError(
            f"{spec_path}: the spec must lie inside the project folder {root} (the current folder), which travels to the "
            "cluster as the job's working_dir; run segstudy submit from the folder that holds the spec and its files"
        ) from None
    runtime_env = job_runtime_env(spec, root)
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        detail = mask_text(first_line(exc, limit=10_000), address)[:200]
        raise SegstudyError(f"--address {mask_uri(address)}: no Ray job server answered ({detail})") from None
    try:
        job_id = _submit_with_retry(
            client,
            entrypoint=build_entrypoint(spec_rel, tracking_uri=uri, storage=storage_abs, state_db=state_db,
                                        allow_large_grid=allow_large_grid),
            submission_id=f"segstudy-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            runtime_env=runtime_env,
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
