"""study/tracking/ui_links.py: every MLflow UI address lands on the runs, never carries a secret."""

from __future__ import annotations

from pathlib import Path

from study.tracking.ui_links import browse, experiment_page, run_page, ui_base


def test_pages_open_the_model_training_view() -> None:
    assert experiment_page("http://h:5000/", "4") == "http://h:5000/#/experiments/4?workflowType=machine_learning"
    assert run_page("http://h:5000", "4", "r1") == "http://h:5000/#/experiments/4/runs/r1?workflowType=machine_learning"


def test_the_ui_base_drops_credentials_and_query() -> None:
    assert ui_base("http://bob:S3cret@mlflow.lab:5000/?token=T0k") == "http://mlflow.lab:5000"
    assert ui_base("https://mlflow.lab/prefix/?access_token=T0k") == "https://mlflow.lab/prefix"
    assert ui_base("http://[::1]:5000") == "http://[::1]:5000"
    for store in ("sqlite:////tmp/mlflow.db", "postgresql://u:p@db/mlflow", "file:///tmp/x"):
        assert ui_base(store) is None


def test_browse_names_the_ui_command_for_a_store_and_the_page_for_a_server(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    server = browse("http://u:pw@127.0.0.1:5999/?token=x", "7", "r9")
    assert server == "http://127.0.0.1:5999/#/experiments/7/runs/r9?workflowType=machine_learning"
    assert "pw" not in server and "token" not in server
    store = browse(f"sqlite:///{tmp_path / 'other.db'}", "2")
    assert store.startswith(f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'other.db'} --port 5000, then ")
    assert store.endswith("http://127.0.0.1:5000/#/experiments/2?workflowType=machine_learning")
