"""Shared fixtures. One Ray instance per test session: a real head node on loopback, started
lazily by the first test that needs it and stopped at the end."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "smoke.yaml"
SMOKE_TUNING = ROOT / "search_spaces" / "smoke_tuning.yaml"
SMOKE_3D = ROOT / "search_spaces" / "smoke_3d.yaml"
BIN = Path(sys.executable).parent


def trial_workers(head_pid: int) -> list[int]:
    """Pids of this test cluster's Ray workers that hold a trial (Ray titles them after the
    trainable). Only descendants of our own head: other Ray clusters on the machine are not ours."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or [])
            if title.startswith("ray::") and ("train_trial" in title or "ImplicitFunc" in title):
                if any(parent.pid == head_pid for parent in proc.parents()):
                    found.append(proc.pid)
        except psutil.Error:
            continue
    return found


SETTLE_S = 2.0  # a paused study's driver takes in what its workers sent before they were paused


@contextlib.contextmanager
def held(pids: list[int], *, settle_s: float = SETTLE_S):
    """The processes `pids` paused (SIGSTOP) for the body and let go after (SIGCONT), so a moment
    of a running study checked inside still holds when the test acts on it: with its trial
    workers paused no trial reports, ends or starts; with its driver paused nothing moves at all.
    `settle_s`: how long the driver has to take in what the workers had sent before the pause."""
    import signal

    paused = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGSTOP)
            paused.append(pid)
        except ProcessLookupError:
            continue
    try:
        if paused and settle_s:
            time.sleep(settle_s)
        yield
    finally:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Files whose tests start a local Ray instance (no --address): they share one pytest worker, so two
# local instances never start at once.
LOCAL_RAY_FILES = {"test_interrupt.py", "test_ray_reaper.py", "test_own_study.py"}


# Fixtures that mean real processes (a Ray head, a database): their files take most of the time.
HEAVY_FIXTURES = {"ray_head", "postgres_server", "postgres", "s3_server"}


def test_group(nodeid: str) -> str:
    """The group a test runs in under `make test`: its file, or `local_ray` for the local-Ray files."""
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return "local_ray" if name in LOCAL_RAY_FILES else name


def pytest_configure(config: pytest.Config) -> None:
    """xdist sorts the groups by their number of tests unless told not to, which would undo the
    order `pytest_collection_modifyitems` gives them (heaviest first)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` with the groups of `test_group`, read from the node ids. Not xdist's own
    `xdist_group` marks: pytest-xdist 3.8 writes a mark's group into `item._nodeid`, which pytest 9
    no longer reads, so under pytest 9 every test was a group of its own (a file's module fixtures
    made on both workers, two local Ray instances at once)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid)

    return FileGroups(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two pytest workers (`-n 2 --dist loadgroup`): a file's tests stay on one
    worker (`pytest_xdist_make_scheduler`), so its module fixtures (a reference study, a built
    dataset) are made once. The files with the most real-process tests go first, so the short ones
    fill the end instead of one long file running alone on one worker."""
    weight: dict[str, int] = {}
    for item in items:
        heavy = bool(HEAVY_FIXTURES & set(getattr(item, "fixturenames", ()))) or item.get_closest_marker("slow") is not None
        weight[test_group(item.nodeid)] = weight.get(test_group(item.nodeid), 0) + heavy
    # Stable: the tests of a file keep their order and stay together (module fixtures are made once).
    items.sort(key=lambda item: -weight[test_group(item.nodeid)])


@dataclass(frozen=True)
class RayHead:
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]
    pid: int  # the `ray start --block` process: every node process of this cluster descends from it


def head_env() -> dict[str, str]:
    """The head runs job entrypoints with the first `python` on PATH: make it this venv's."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"  # loopback-only test cluster
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory):
    """A real `ray start --head --block` on 127.0.0.1 with the job server, and this process connected.

    The head runs in its own process group so teardown stops exactly this cluster (never other
    Ray instances on the machine, as `ray stop` would).
    """
    import ray

    env = head_env()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port, dash = free_port(), free_port()
    # Not under pytest's temp folder: under xdist (popen-gwN/) Ray's socket paths pass the 107-byte limit.
    ray_temp = tempfile.mkdtemp(prefix="segray-")
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={free_port()}",  # the job agent's; Ray's fixed default clashes with other heads
        f"--ray-client-server-port={free_port()}",  # likewise (10001): `make test` runs two heads, one per pytest worker
        "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats",
        f"--temp-dir={ray_temp}",
    ]
    log = (tmp_path_factory.getbasetemp() / "ray_head.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(gcs_address=f"127.0.0.1:{port}", dashboard_url=f"http://127.0.0.1:{dash}", env=env, pid=proc.pid)
    try:
        wait_for_dashboard(head.dashboard_url, proc, timeout=120)
        ray.init(address=head.gcs_address, logging_level="WARNING")
        yield head
    finally:
        ray.shutdown()
        # `ray start --block` stops its node's processes on SIGTERM but does not exit itself.
        stop_process_group(proc, grace_s=3)
        log.close()
        shutil.rmtree(ray_temp, ignore_errors=True)


def wait_for_dashboard(url: str, proc: subprocess.Popen, *, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}; see ray_head.log in the pytest temp dir")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Ray dashboard at {url} did not answer within {timeout} s")


def stop_process_group(proc: subprocess.Popen, *, grace_s: float = 30) -> None:
    """SIGTERM the process group `proc` leads, then SIGKILL whatever is left after `grace_s`."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a variant of the smoke spec: `write_spec(**overrides)` -> path (dotted keys allowed)."""

    def _write(_file: str = "spec.yaml", _base: Path = SMOKE, **overrides: object) -> Path:
        raw = yaml.safe_load(_base.read_text())
        for dotted, value in overrides.items():
            node = raw
            *parents, leaf = dotted.split("__")
            for key in parents:
                node = node.setdefault(key, {})
            if value is DELETE:
                node.pop(leaf, None)
            else:
                node[leaf] = value
        path = tmp_path / _file
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return _write


DELETE = object()


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `segstudy` console script."""
    exe = shutil.which("segstudy", path=str(BIN)) or str(BIN / "segstudy")
    return subprocess.run([exe, *args], cwd=cwd, env=env or os.environ.copy(), capture_output=True, text=True, timeout=timeout)


def run_app(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the `segstudy` app in this process, the way the console script would.

    For commands whose subprocess would spend most of its time importing torch, MONAI and MLflow
    again (5-10 s each on 2 cores); `run_cli` keeps the real console script covered.
    """
    from typer.testing import CliRunner

    from study.cli import app

    with contextlib.chdir(cwd):
        result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["segstudy", *args], result.exit_code, result.stdout, result.stderr)


class TrackingServer:
    """`segstudy tracking serve` on a free loopback port, in its own process group, restartable.

    It inherits this process's environment (PGPASSWORD for a PostgreSQL backend among it).
    """

    def __init__(self, tmp: Path, *, backend: str | None = None, artifacts: str | None = None) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.args = [
            str(BIN / "segstudy"), "tracking", "serve", "--port", str(self.port),
            "--backend-store-uri", backend or f"sqlite:///{tmp / 'server.db'}", "--artifacts", artifacts or str(tmp / "artifacts"),
        ]
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        import urllib.request

        with self.log.open("a") as log:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(self.log.read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process_group(self.proc, grace_s=20)
            self.proc.wait(timeout=10)


POSTGRES_USER = "segstudy"  # the cluster's superuser; its password comes from PGPASSWORD only


def postgres_bin() -> Path | None:
    """The folder of `initdb`, `pg_ctl` and `createdb`: that of an `initdb` on PATH (links followed:
    some machines link only a few tools), else Debian's versioned folder, the newest."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return versions[-1].parent if versions else None


class Postgres:
    """A real PostgreSQL cluster in a temporary folder, on a free 127.0.0.1 port.

    Local (socket) connections are trusted, TCP ones need the password (scram-sha-256): what the
    MLflow server and studies use, given in PGPASSWORD. PostgreSQL refuses to run as root, so as
    root every tool runs as the package's `postgres` user (`as_user`), which owns the folder; the
    folder is not pytest's tmp_path, which is root's alone (mode 700).
    """

    def __init__(self, bin_dir: Path, *, as_user: list[str]) -> None:
        self.bin, self.as_user = bin_dir, as_user
        self.home = Path(tempfile.mkdtemp(prefix="segstudy-pg-"))  # data, socket, log
        self._own(self.home)
        self.data = self.home / "data"
        self.port = free_port()
        self.password = secrets.token_hex(12)

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")

    def init(self) -> None:
        pwfile = self.home / "pw"
        pwfile.write_text(self.password + "\n")
        self._own(pwfile)
        try:
            self._run("initdb", "-D", str(self.data), "-U", POSTGRES_USER, "--pwfile", str(pwfile),
                      "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        finally:
            pwfile.unlink()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.home / "server.log"), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        """A new database; returns its URI (no password: that is PGPASSWORD's)."""
        self._run("createdb", "-h", str(self.home), "-p", str(self.port), "-U", POSTGRES_USER, name)
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{name}"

    def _own(self, path: Path) -> None:
        if self.as_user:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)


def postgres_missing(reason: str) -> NoReturn:
    """Skip, saying why; in CI (whose .ci/run installs the package) fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def postgres_as_user() -> list[str]:
    """The prefix that runs PostgreSQL's tools: none, or as root `runuser -u postgres --`."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        postgres_missing("running as root, which PostgreSQL refuses, and there is no 'postgres' user to run it as")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL cluster for the session (initdb and a start cost seconds); tests take a database each."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        postgres_missing("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
                         "apt-get install postgresql")
    server = Postgres(bin_dir, as_user=postgres_as_user())
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError):  # not running (never started, or a test stopped it) is fine
            server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server, request, monkeypatch) -> str:
    """A fresh database of the session's PostgreSQL for this test; its URI, PGPASSWORD set."""
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    return postgres_server.create_database(f"{name}_{secrets.token_hex(4)}")  # unique, readable in psql


def two_cell_spec(write_spec, name: str, *, epochs: int = 2, alphas: tuple[float, ...] = (0.2, 0.8)) -> Path:
    """A small study for the tracking tests: one arm (unet) at `alphas`, one perturbation at one severity."""
    return write_spec(
        f"{name}.yaml",
        name=name,
        factors={"architecture": ["unet"], "alpha": list(alphas)},
        training__epochs=epochs,
        evaluation__perturbations=["gaussian_noise"],
        evaluation__severities=[2],
    )


class BackgroundStudy:
    """`run_study` in a thread of this process, for tests that take the tracking store away while
    trials train. `wait_for_trials` returns once the trials' MLflow runs exist; `result` joins,
    delivers what the outbox still keeps (`segstudy sync`), and checks nothing is left in it."""

    def __init__(self, spec: Path, *, address: str, tracking_uri: str, storage: Path) -> None:
        import threading

        from study.run.driver.engine import run_study

        self.tracking_uri, self.storage = tracking_uri, storage
        self.outcome: dict = {}

        def drive() -> None:
            try:
                self.outcome["result"] = run_study(spec, address=address, tracking_uri=tracking_uri, storage=storage)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                self.outcome["error"] = exc

        self.thread = threading.Thread(target=drive)
        self.thread.start()

    def wait_for_trials(self, experiment: str, count: int, *, timeout: float = 180) -> None:
        from mlflow.tracking import MlflowClient

        from study import metrics_names as M

        client = MlflowClient(tracking_uri=self.tracking_uri)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.thread.is_alive():
            exp = client.get_experiment_by_name(experiment)
            if exp and len(client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")) == count:
                return
            time.sleep(0.3)
        raise AssertionError(f"{count} trial runs of '{experiment}' did not appear: {self.outcome}")

    @contextlib.contextmanager
    def training(self, experiment: str, count: int, *, head_pid: int):
        """Once `count` trial runs exist: the body runs with every one still RUNNING and its worker
        paused (`held`), so a store taken away inside is away while they train, not after they
        ended. Trials that ended before they could be held fail the test: the moment never comes again."""
        from mlflow.tracking import MlflowClient

        from study import metrics_names as M

        self.wait_for_trials(experiment, count)
        client = MlflowClient(tracking_uri=self.tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        with held(trial_workers(head_pid)):
            runs = client.search_runs([exp.experiment_id], f"tags.`{M.ROLE_TAG}` = '{M.ROLE_TRIAL}'")
            statuses = sorted(r.info.status for r in runs)
            assert statuses == ["RUNNING"] * count, f"the trials ended before the moment could be held: {statuses}"
            yield

    def result(self, *, timeout: float = 300):
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive() and "error" not in self.outcome, self.outcome.get("error")
        result = self.outcome["result"]
        outbox = result.storage_path / "outbox"
        assert (outbox / "ids.json").is_file(), "nothing was kept: the outage did not hit the study"
        if result.pending_writes:  # the study ended before the store was back: sync delivers
            proc = run_cli("sync", str(result.storage_path), cwd=self.storage.parent)
            assert proc.returncode == 0, proc.stderr
        assert not (outbox / "ops.jsonl").read_text().strip()
        return result


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (moto's server mode) on loopback, signing checked (tests/s3_server.py)."""
    import s3_server as s3

    server = s3.start(BIN, tmp_path_factory.getbasetemp() / "moto_server.log")
    try:
        yield server
    finally:
        stop_process_group(server.proc, grace_s=5)


@pytest.fixture
def bucket(s3_server, monkeypatch) -> str:
    """A fresh bucket of the session's S3 server, and this process's AWS variables pointing at it."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.create_bucket()
