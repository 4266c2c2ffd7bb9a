"""No secret in any address segstudy echoes: user info and credential-like parameters are masked in
errors, CLI lines, warnings, the study log, MLflow tags and params, on every command given one."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, SMOKE, run_app
from study import process_state
from study.errors import SegstudyError
from study.redact import embeds_credentials, is_credential_name, mask_text, mask_uri
from study.tracking.writer import StudyTracker, check_reachable

SECRET = "S3cretTok-98765"

# Every form a secret takes in an address: user info (with and without a password, a password
# holding '@'), and query or fragment parameters whose name says credential, in any case.
SECRET_URIS = [
    f"http://alice:{SECRET}@mlflow:5000",
    f"https://{SECRET}@mlflow:5000/",
    f"http://bob:p@ss{SECRET}@mlflow:5000/path",
    f"postgresql://bob:{SECRET}@db:5432/mlflow",
    f"http://127.0.0.1:1/?token={SECRET}",
    f"http://127.0.0.1:1/?x=1&access_token={SECRET}&y=2",
    f"https://h/api?Password={SECRET}",
    f"postgresql://db/mlflow?sslmode=require&password={SECRET}",
    f"s3://bucket/root?X-Amz-Credential=AKIA/x&X-Amz-Signature={SECRET}",
    f"https://acct.blob.core.windows.net/c?sv=2020&sig={SECRET}",
    f"http://h:5000/#access_token={SECRET}",
    f"http://h:5000/?API-KEY={SECRET}",
    f"http://h:5000/?client_secret={SECRET};session=x",
    f"http://h:5000/?access%5Ftoken={SECRET}",
    f"ray://user:{SECRET}@head:10001",
]


@pytest.mark.parametrize("uri", SECRET_URIS)
def test_mask_uri_hides_every_secret_and_keeps_the_address(uri):
    masked = mask_uri(uri)
    assert SECRET not in masked and "***" in masked
    assert masked.split("://")[0] == uri.split("://")[0]  # the scheme stays
    host = uri.split("@")[-1].split("://")[-1].split("/")[0].split("?")[0]
    assert host in masked  # and where it points
    assert mask_uri(masked) == masked  # masking twice changes nothing


@pytest.mark.parametrize(
    "uri", ["sqlite:////tmp/mlflow.db", "http://127.0.0.1:5000", "https://h/x?max_results=1&order=asc", "auto"]
)
def test_addresses_without_secrets_are_unchanged(uri):
    assert mask_uri(uri) == uri and mask_text(uri, uri) == uri


@pytest.mark.parametrize(
    ("name", "secret"),
    [("token", True), ("Access_Token", True), ("X-Amz-Security-Token", True), ("PASSWORD", True), ("pwd", True),
     ("apikey", True), ("sig", True), ("authorization", True), ("max_results", False), ("sslmode", False),
     ("x-amz-date", False)],
)
def test_credential_names(name, secret):
    assert is_credential_name(name) is secret


def test_mask_text_finds_the_secret_without_its_uri():
    """requests quotes the URL path alone, and error texts are cut: the literal secret of the URI
    given is masked wherever it appears, the pattern catches the cut form."""
    uri = f"http://127.0.0.1:1/?token={SECRET}"
    text = f"Max retries exceeded with url: /?token={SECRET[:8]} (Caused by x); header echoed {SECRET}"
    masked = mask_text(text, uri)
    assert SECRET not in masked and SECRET[:8] not in masked
    assert "Max retries exceeded" in masked and "Caused by x" in masked
    assert "Bearer ***" in mask_text("Authorization: Bearer abcdefgh12345678")
    assert "password=***" in mask_text("connection to host=db user=x password=pw123 failed")


def test_mask_text_hides_the_secrets_of_the_environment(monkeypatch):
    """Credentials come from the environment: their values are masked in any text, wherever a
    library quotes them (the AWS secret key, a session token, PGPASSWORD)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY")
    monkeypatch.setenv("PGPASSWORD", "pg-secret-123")
    masked = mask_text("signing with wJalrXUtnFEMI/K7MDENG/bPxRfiCY; psql -W pg-secret-123 failed")
    assert masked == "signing with ***; psql -W *** failed"


@pytest.mark.parametrize(
    ("uri", "embeds"),
    [(f"http://h:1/?token={SECRET}", True), (f"postgresql://db/x?password={SECRET}", True), ("http://bob@h:1", True),
     (f"http://h:1/#access_token={SECRET}", True), ("postgresql://bob@db/mlflow", False), ("http://h:1/?token=", False),
     ("sqlite:////tmp/x.db", False)],
)
def test_embeds_credentials(uri, embeds):
    assert embeds_credentials(uri) is embeds


def test_segstudy_error_is_masked_where_it_is_made():
    exc = SegstudyError(f"cannot reach http://u:{SECRET}@h:1/?token={SECRET}")
    assert SECRET not in str(exc) and SECRET not in repr(exc.args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_error_quotes_no_token():
    """MLflow's and requests' own error text quotes the URL with its query: masked in the one line."""
    uri = f"http://127.0.0.1:{_free_port()}/?token={SECRET}"
    process_state.fail_fast_http()
    with pytest.raises(SegstudyError) as info:
        check_reachable(MlflowClient(tracking_uri=uri), uri)
    assert "is not reachable" in str(info.value) and SECRET not in str(info.value)


# Every command that takes an address: the secret-bearing URI is refused in one line, masked.
SPEC_COMMANDS = {
    "run": ["run", str(SMOKE)],
    "submit": ["submit", str(SMOKE), "--address", "http://127.0.0.1:1", "--no-follow"],
    "analyze": ["analyze", "--experiment", "x", "--out", "out"],
    "status": ["status", "x"],
    "report": ["report", "--experiment", "x", "--out", "out"],
    "predict": ["predict", "--model", "0" * 32, "--input", "in.png", "--output", "out.png"],
    "recommend": ["recommend", "--experiment", "x", "--data", "."],
    "resume": ["resume", "study"],
    "sync": ["sync", "study"],
}


@pytest.mark.parametrize("command", sorted(SPEC_COMMANDS))
@pytest.mark.parametrize("uri", [f"http://127.0.0.1:1/?token={SECRET}", f"http://127.0.0.1:1/?Access_Token={SECRET}",
                                 f"postgresql://db/mlflow?password={SECRET}", f"http://alice:{SECRET}@127.0.0.1:1"])
def test_every_command_masks_a_tracking_uri(tmp_path, command, uri):
    (tmp_path / "in.png").write_bytes(b"not a png")
    study = tmp_path / "study"
    study.mkdir()  # resume/sync: a study folder whose manifest would point elsewhere
    (study / "study.json").write_text('{"name": "x", "tracking_uri": "sqlite:////nonexistent/x.db"}')
    (study / "spec.yaml").write_text(SMOKE.read_text())
    proc = run_app(*SPEC_COMMANDS[command], "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and "***" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_spec_tracking_uri_with_a_token_is_refused_masked(write_spec):
    path = write_spec(tracking__uri=f"http://127.0.0.1:1/?token={SECRET}")
    proc = run_app("validate", str(path), cwd=path.parent)
    assert proc.returncode == 2 and "tracking.uri: embeds credentials" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_submit_masks_the_ray_address(tmp_path):
    """The job server does not answer: the error names the address without its password."""
    address = f"http://ray:{SECRET}@127.0.0.1:{_free_port()}"
    proc = run_app("submit", str(SMOKE), "--address", address, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                   "--no-follow", cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--address http://***@127.0.0.1" in proc.stderr and SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("backend", [f"sqlite:///store.db?token={SECRET}", f"postgresql://u:{SECRET}@db/mlflow",
                                     f"postgresql://db/mlflow?password={SECRET}"])
def test_tracking_serve_masks_the_backend(tmp_path, backend):
    proc = run_app("tracking", "serve", "--backend-store-uri", backend, "--port", str(_free_port()), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and "--backend-store-uri" in proc.stderr


def test_tags_params_log_and_warnings_are_masked(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "masked")
    leak = f"could not reach http://u:{SECRET}@h:1/?token={SECRET}"
    run = tracker.start_study(params={"note": leak}, tags={"segstudy.note": leak}, spec_file=None)
    tracker.finish(run, failed_reason=leak)
    stored = MlflowClient(tracking_uri=uri).get_run(run)
    texts = [*stored.data.params.values(), *stored.data.tags.values()]
    assert all(SECRET not in t for t in texts) and any("token=***" in t for t in texts)

    from study.run.display.library_log import LibraryLog

    log = LibraryLog()
    log.write(f"INFO ray: connecting to ray://u:{SECRET}@head:10001\n")
    log.flush()
    assert SECRET not in Path(log.path).read_text() and "ray://***@head" in Path(log.path).read_text()
    log.close()

    process_state.format_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn(leak, stacklevel=1)
    line = warnings.formatwarning(caught[0].message, caught[0].category, "f.py", 1)
    assert line.startswith("warning: ") and SECRET not in line
