"""Addresses in the MLflow UI that open on a study's runs, not on an empty GenAI page.

MLflow 3 opens an experiment in its GenAI view (traces, none here) unless the address carries
``?workflowType=machine_learning`` after the hash path; the experiment tag ``mlflow.experimentKind``
does not change that. Every address segstudy prints or writes is built here, so each one lands on
the model-training view: the experiment's runs table, or a run's page.

Example:
    >>> run_page("http://127.0.0.1:5000", "3", "abc")
    'http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning'
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from study.redact import mask_uri

WORKFLOW_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` (and `make mlflow-ui`) serves a local store


def ui_base(tracking_uri: str) -> str | None:
    """The UI's address for a tracking server URI (user info and query dropped: never a secret in
    an address); None for a store that has no UI of its own (SQLite, PostgreSQL: run `mlflow ui`)."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def experiment_page(base: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?{WORKFLOW_QUERY}"


def run_page(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page (its metrics, tags and artifacts)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}"


def browse(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """What to open to see a run (or the experiment's runs table): the page itself for a tracking
    server, else the `mlflow ui` command to start first (`make mlflow-ui` in this project's folder
    for its default store) and the page it will serve."""
    base = ui_base(tracking_uri)
    def page(at: str) -> str:
        return experiment_page(at, experiment_id) if run_id is None else run_page(at, experiment_id, run_id)
    if base is not None:
        return page(base)
    command = f"mlflow ui --backend-store-uri {mask_uri(tracking_uri)} --port {urlsplit(LOCAL_UI).port}"
    makefile = Path.cwd() / "Makefile"
    if tracking_uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}" and makefile.is_file() \
            and "mlflow-ui:" in makefile.read_text(errors="replace"):  # the project's own store
        command = f"make mlflow-ui (= {command})"
    return f"{command}, then {page(LOCAL_UI)}"


__all__ = ["LOCAL_UI", "WORKFLOW_QUERY", "browse", "experiment_page", "run_page", "ui_base"]
