"""Every path option is checked for what it is before anything is created: one line naming the
option and what the path is, and nothing left behind (no store, no study folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import SMOKE, run_app, run_cli
from study.errors import SegstudyError
from study.paths import input_file, input_folder, output_file, output_folder

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []


@pytest.fixture
def odd(tmp_path: Path) -> dict[str, Path]:
    """One path of every kind that is not what an option expects."""
    (tmp_path / "file.txt").write_text("notes")
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    return {
        "file": tmp_path / "file.txt", "folder": tmp_path / "folder", "fifo": tmp_path / "fifo",
        "device": Path("/dev/zero"), "loop": tmp_path / "loop", "dangling": tmp_path / "dangling",
        "missing": tmp_path / "missing", "under_a_file": tmp_path / "file.txt" / "x",
    }


READ_FILE = {
    "folder": "is a folder, not a spec file", "fifo": "is a FIFO (named pipe), not a spec file",
    "device": "is a character device, not a spec file", "loop": "a symlink loop", "dangling": "a symlink to",
    "missing": "spec file not found", "under_a_file": "file.txt is a file, not a folder",
}


@pytest.mark.parametrize("kind", sorted(READ_FILE))
def test_spec_that_is_not_a_regular_file(odd, kind):
    """validate reads nothing from a FIFO or a device (it would block or never end)."""
    proc = run_app("validate", str(odd[kind]), cwd=odd["folder"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"error: {odd[kind]}: ") and READ_FILE[kind] in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("file", "is a file, not a folder"), ("fifo", "is a FIFO (named pipe), not a folder"), ("loop", "a symlink loop"),
     ("under_a_file", "cannot be created: ")],
)
def test_output_folder_refusals(odd, kind, expected):
    with pytest.raises(SegstudyError, match=expected.replace("(", r"\(").replace(")", r"\)")) as info:
        output_folder(odd[kind], option="--out")
    assert str(info.value).startswith(f"--out {odd[kind]}: ")


def test_output_folder_accepts_existing_and_creatable_and_creates_nothing(odd, tmp_path):
    assert output_folder(odd["folder"], option="--out") == odd["folder"]
    deep = tmp_path / "a" / "b" / "c"
    assert output_folder(deep, option="--out") == deep
    assert not (tmp_path / "a").exists()
    assert sorted(p.name for p in odd["folder"].iterdir()) == []  # the write probe left nothing


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("folder", "is a folder, not a mask file; give a file path"), ("fifo", "is a FIFO"), ("device", "is a character device"),
     ("loop", "a symlink loop"), ("under_a_file", "file.txt is a file, not a folder")],
)
def test_output_file_refusals(odd, kind, expected):
    with pytest.raises(SegstudyError, match=expected) as info:
        output_file(odd[kind], option="--output", what="mask file")
    assert str(info.value).startswith(f"--output {odd[kind]}: ")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("missing", "folder not found"), ("file", "is a file, not a folder"), ("loop", "a symlink loop"),
     ("dangling", "a symlink to")],
)
def test_input_folder_refusals(odd, kind, expected):
    with pytest.raises(SegstudyError, match=expected):
        input_folder(odd[kind], option="--data")
    assert input_file(odd["file"], option="--input") == odd["file"]


@pytest.mark.parametrize("kind", ["file", "fifo", "loop", "under_a_file"])
def test_run_storage_that_is_not_a_folder_leaves_no_store(odd, kind, tmp_path):
    """--storage is checked before the tracking store exists: a refusal leaves no mlflow.db."""
    proc = run_app("run", str(SMOKE), "--storage", str(odd[kind]), cwd=odd["folder"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--storage {odd[kind]}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in odd["folder"].iterdir()) == []


def test_data_synth_out_naming_a_file(odd):
    proc = run_app("data", "synth", str(SMOKE), "--out", str(odd["file"]), cwd=odd["folder"])
    assert proc.returncode == 2 and f"--out {odd['file']}: is a file, not a folder" in proc.stderr
    assert odd["file"].read_text() == "notes"


def test_predict_output_naming_a_folder(odd, tmp_path):
    (tmp_path / "in.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "masks.png"
    out.mkdir()
    proc = run_app("predict", "--model", "0" * 32, "--input", "in.png", "--output", str(out),
                   "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--output {out}: is a folder, not a mask file" in proc.stderr


@pytest.mark.parametrize(("kind", "expected"), [("missing", "folder not found"), ("file", "is a file, not a folder")])
def test_recommend_data_says_missing_as_missing(odd, kind, expected):
    proc = run_app("recommend", "--experiment", "x", "--data", str(odd[kind]), cwd=odd["folder"])
    assert proc.returncode == 2 and f"--data {odd[kind]}: {expected}" in proc.stderr, proc.stderr


def test_tracking_serve_artifacts_naming_a_file(odd):
    proc = run_app("tracking", "serve", "--artifacts", str(odd["file"]), "--backend-store-uri",
                   f"sqlite:///{odd['folder'] / 'm.db'}", cwd=odd["folder"])
    assert proc.returncode == 2 and f"--artifacts {odd['file']}: is a file, not a folder" in proc.stderr
    assert sorted(p.name for p in odd["folder"].iterdir()) == []


@pytest.fixture
def shared_tmp():
    """A folder an unprivileged user can work in (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="segstudy-paths-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_read_only_folders_are_refused_for_an_unprivileged_user(shared_tmp):
    """A folder without write permission (root would write there anyway, so the check runs as an
    unprivileged user): refused by the probe, for --storage under it and for a store in it."""
    locked = shared_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    code = (
        "import sys; from pathlib import Path; from study.paths import output_folder, output_file\n"
        "from study.errors import SegstudyError\n"
        "for check, path in ((output_folder, 'locked'), (output_folder, 'locked/new'), (output_file, 'locked/m.db')):\n"
        "    try:\n"
        "        check(Path(sys.argv[1]) / path, option='--x')\n"
        "        print('accepted', path)\n"
        "    except SegstudyError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run([*NOBODY, sys.executable, "-c", code, str(shared_tmp)], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and not any(line.startswith("accepted") for line in lines), out.stdout + out.stderr
    assert "folder is not writable" in lines[0] and "cannot be created" in lines[1] and "cannot be written" in lines[2]


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_run_with_a_read_only_storage_creates_no_store(shared_tmp):
    """The real console script, as an unprivileged user: --storage under a read-only folder is one
    line, exit 2, and the working folder holds no mlflow.db afterwards."""
    locked = shared_tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    spec = shared_tmp / "spec.yaml"
    spec.write_text(SMOKE.read_text())
    spec.chmod(0o644)
    home = shared_tmp / "home"  # where libraries keep their caches
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    env = {**os.environ, "HOME": str(home)}
    proc = _run_cli_as_nobody(["run", str(spec), "--storage", str(locked / "results")], cwd=shared_tmp, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--storage {locked / 'results'}: cannot be created: {locked} is not writable" in proc.stderr
    assert sorted(p.name for p in shared_tmp.iterdir()) == ["home", "locked", "spec.yaml"]
    assert list(locked.iterdir()) == []


def _run_cli_as_nobody(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    if not NOBODY:
        return run_cli(*args, cwd=cwd, env=env)
    exe = Path(sys.executable).parent / "segstudy"
    return subprocess.run([*NOBODY, str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
