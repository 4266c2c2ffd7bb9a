"""Reading commands given a bad or unreachable tracking URI: one line, exit 2, no secret, no wait."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import run_app

SECRET = "hunter2-very-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMANDS = {
    "analyze": ["analyze", "--experiment", "x", "--out", "out"],
    "status": ["status", "x"],
    "report": ["report", "--experiment", "x", "--out", "out"],
    "predict": ["predict", "--model", "0" * 32, "--input", "in.png", "--output", "out.png"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"http://alice:{SECRET}@127.0.0.1:5000", "embeds credentials"),
        (f"postgresql://alice:{SECRET}@db/mlflow", "embeds credentials"),
        ("ftp://example/mlflow", "accepted are sqlite:///PATH"),
        ("mysql://db/mlflow", "needs the MySQLdb module: pip install mysqlclient"),
    ],
)
def test_bad_tracking_uri_is_one_line(tmp_path, command, uri, expected):
    (tmp_path / "in.png").write_bytes(b"not a png")
    proc = run_app(*COMMANDS[command], "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", ["analyze", "status", "report"])
@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "postgresql://127.0.0.1:{port}/mlflow"])
def test_unreachable_server_fails_fast(tmp_path, command, uri):
    """Nothing listens on the port: a one-line error in seconds, not MLflow's minutes of retries."""
    t0 = time.monotonic()
    proc = run_app(*COMMANDS[command], "--tracking-uri", uri.format(port=_free_port()), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not reachable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_out_naming_a_file_is_one_line(tmp_path, command):
    (tmp_path / "out").write_text("my notes")
    proc = run_app(*COMMANDS[command], "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--out out: is a file, not a folder" in proc.stderr
    assert (tmp_path / "out").read_text() == "my notes"  # nothing overwritten


def test_recommend_on_garbage_images_is_one_line(tmp_path):
    data = tmp_path / "mine"
    data.mkdir()
    (data / "a_image.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (data / "a_mask.png").write_bytes(b"also garbage")
    proc = run_app("recommend", "--experiment", "x", "--data", str(data), "--tracking-uri",
                   f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "a_image.png: cannot read as PNG" in proc.stderr


def _nifti(path, data, *, dims=None):
    """Save `data` as NIfTI; `dims` rewrites the header's claimed shape afterwards."""
    import nibabel as nib
    import numpy as np

    from test_msd import with_claimed_dims

    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), path)
    if dims is not None:
        with_claimed_dims(path, dims)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("nan", r"image \(as float32\) holds 1 non-finite voxel\(s\) \(NaN or inf; first at index \(1, 2, 3\)\)"),
        ("huge", r"the header claims 3000 x 3000 x 3000 = 2.7e\+10 voxels .*; the limit is 1073741824 voxels"),
        ("5d", r"image of shape \(4, 4, 4, 1, 2\); accepted: 2D, 3D or 4D"),
        ("png_bomb", r"the header claims too many pixels \(Image size \(1600000000 pixels\) exceeds limit"),
        ("folder", r"is a folder, not an image file"),
    ],
)
def test_predict_input_refusals_name_the_input(tmp_path, make, expected):
    """Each refusal about the image names it (`--input PATH`) and says what is wrong, before any
    model is fetched: a NaN voxel as non-finite, a header's claimed size with the limit."""
    import re
    import struct
    import zlib

    import numpy as np

    name = {"png_bomb": "in.png", "folder": "in.nii.gz"}.get(make, "in.nii.gz")
    path = tmp_path / name
    if make == "nan":
        data = np.zeros((4, 4, 4), np.float32)
        data[1, 2, 3] = np.nan
        _nifti(path, data)
    elif make == "huge":
        _nifti(path, np.zeros((4, 4, 4), np.float32), dims=[3, 3000, 3000, 3000])
    elif make == "5d":
        _nifti(path, np.zeros((4, 4, 4, 1, 2), np.float32))
    elif make == "png_bomb":  # a valid PNG header claiming 40000 x 40000 pixels, almost no data
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10))
                         + chunk(b"IEND", b""))
    else:
        path.mkdir()
    proc = run_app("predict", "--model", "0" * 32, "--input", str(path), "--output", str(tmp_path / f"out_{name}"),
                   "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: --input {path}: ") and re.search(expected, line), line
    assert not (tmp_path / f"out_{name}").exists()


def test_run_refused_by_the_preflight_leaves_no_store(ray_head, write_spec, tmp_path, monkeypatch):
    """The tracking store is made by the first write, after every check: a study the preflight
    refuses (after Ray is up) leaves no SQLite store and no study folder."""
    import study.run.driver.preflight as preflight

    real = preflight.build_network

    def three_channel_unet(cfg, **kwargs):
        return real(cfg, **{**kwargs, "in_channels": 3})

    monkeypatch.setattr(preflight, "build_network", three_channel_unet)
    spec = write_spec()
    work = tmp_path / "work"
    work.mkdir()
    proc = run_app("run", str(spec), "--address", ray_head.gcs_address, "--storage", str(work / "results"), cwd=work)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "one training step on the study's data fails" in proc.stderr
    assert sorted(p.name for p in work.iterdir()) == []


ESC = "\x1b]0;pwned\x07\x1b[2J\x1b[31m"  # set the window title, clear the screen, turn red


def test_names_from_a_shared_store_are_printed_with_escape_codes_escaped(tmp_path):
    """Anyone who can create an experiment or tag a run on a shared server could write to the
    terminals of everyone who runs `status`: every printed text has its control characters escaped."""
    from mlflow.tracking import MlflowClient

    from study import metrics_names as M

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(f"evil{ESC}")
    study = client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_STUDY}, run_name=f"run{ESC}").info.run_id
    client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_TRIAL, M.PARENT_TAG: study, M.CELL_TAG: f"a=1{ESC}", M.PHASE_TAG: "tune"})
    for args in (["status", "nosuch"], ["status", f"evil{ESC}"]):
        proc = run_app(*args, "--tracking-uri", uri, cwd=tmp_path)
        out = proc.stdout + proc.stderr
        assert "\x1b" not in out and "\x07" not in out, repr(out)
        assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31m" in out or "a=1\\x1b]0;pwned\\x07" in out, out
    assert "study run run\\x1b]0;pwned\\x07" in proc.stdout  # the first line names the study run, escaped


def test_spec_values_are_printed_with_escape_codes_escaped(write_spec):
    path = write_spec(factors={"architecture": [f"unet{ESC}"], "alpha": [0.2]})
    proc = run_app("validate", str(path), cwd=path.parent)
    assert proc.returncode == 2 and "\x1b" not in proc.stderr and "unknown architecture 'unet\\x1b]0;pwned" in proc.stderr


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("foreign", "is an SQLite database without MLflow's tables (alembic_version, experiments, runs), another "
                    "program's; it is left as it is: name an MLflow store or a new path"),
        ("text", "is not an SQLite database, so not an MLflow store; name an MLflow store or a new path"),
        ("empty", "is an empty file, not an MLflow store; remove it or name a new path"),
    ],
)
def test_a_file_that_is_not_an_mlflow_store_is_refused_and_left_byte_for_byte(write_spec, tmp_path, kind, expected):
    """`status` changed another program's SQLite database and `run` wrote MLflow's tables into it;
    a text file gave a traceback and left a lock beside it. Now: one line, and not a byte written."""
    import sqlite3

    db = tmp_path / "store.db"
    if kind == "foreign":
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE notes (text)")
            conn.execute("INSERT INTO notes VALUES ('mine')")
        conn.close()
    else:
        db.write_text("" if kind == "empty" else "my notes, not a database\n")
    before, files = _sha256(db), sorted(p.name for p in tmp_path.iterdir())
    uri = f"sqlite:///{db}"
    spec = write_spec()
    files = sorted(p.name for p in tmp_path.iterdir())
    for args in (["status", "x", "--tracking-uri", uri], ["analyze", "--experiment", "x", "--out", "out", "--tracking-uri", uri],
                 ["report", "--experiment", "x", "--out", "out", "--tracking-uri", uri],
                 ["run", str(spec), "--tracking-uri", uri, "--storage", "r"],
                 ["tracking", "serve", "--backend-store-uri", uri, "--port", "1", "--artifacts", "art"]):
        proc = run_app(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout + proc.stderr)
        line = proc.stderr.strip()
        assert "\n" not in line and line.endswith(f"{db} {expected}"), (args, line)
    assert _sha256(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no lock, no journal, no output folder


def test_reading_a_real_store_writes_nothing(tmp_path):
    """A read-only command leaves an MLflow store as it was, and makes no lock file beside it."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").create_experiment("x")
    for extra in tmp_path.glob("*.lock"):
        extra.unlink()
    before = _sha256(db)
    proc = run_app("status", "x", "--tracking-uri", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _sha256(db) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("999.1.1.1", "error: --host 999.1.1.1: cannot be resolved ("),
        ("no-such-host.invalid", "error: --host no-such-host.invalid: cannot be resolved ("),
        ("192.0.2.1", "error: --host 192.0.2.1: not an address of this machine ("),  # TEST-NET-1, never local
    ],
)
def test_tracking_serve_names_a_host_it_cannot_use(tmp_path, host, expected):
    proc = run_app("tracking", "serve", "--host", host, "--port", str(_free_port()), "--backend-store-uri",
                   f"sqlite:///{tmp_path / 's.db'}", "--artifacts", str(tmp_path / "art"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, proc.stderr
    assert "in use" not in proc.stderr and not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_out_is_made_only_after_every_check(tmp_path, command):
    """A refusal (here: no such experiment) leaves no --out folder behind."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").create_experiment("other")
    proc = run_app(command, "--experiment", "nosuch", "--out", str(tmp_path / "out" / "deep"), "--tracking-uri",
                   f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2 and "experiment 'nosuch' not found" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
