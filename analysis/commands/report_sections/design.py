"""The design section: the study's factors, cells, seeds, phases, data, hyperparameters and arms."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from typing import Any

import pandas as pd
from mlflow.entities import Run

from analysis.commands.report_sections.blocks import ARM, Table, cell_text
from analysis.read.runs import factor_names
from study import metrics_names as M
from study.errors import SegstudyError
from study.models import TargetConfig, parameter_count, resolve_architecture
from study.spec import parse_spec


def design_section(
    experiment: str, spec: dict, spec_text: str, run: Run | None, trials: pd.DataFrame, runs: list[Run]
) -> dict[str, Any]:
    params = run.data.params if run else {}
    factors = spec.get("factors") or _json(params.get("factors")) or {
        f: sorted(trials[f].dropna().unique().tolist()) for f in factor_names(trials)
    }
    phases = Counter((r.data.tags.get(M.PHASE_TAG, "?"), r.info.status) for r in runs)
    hparams = spec.get("hyperparameters") or {}
    names = trials.attrs.get("hyperparameters", [])
    used = {h: ", ".join(map(cell_text, sorted(trials[h].dropna().unique()))) for h in names}
    chosen = _json(run.data.tags.get(M.CHOSEN_TAG)) if run else None
    data = spec.get("data") or {}
    return {
        "name": spec.get("name", experiment),
        "description": spec.get("description") or "",
        "factors": Table(["factor", "levels"], [[k, ", ".join(map(str, v))] for k, v in factors.items()]),
        "n_cells": math.prod(len(v) for v in factors.values()),
        "seeds": ", ".join(map(str, sorted(trials["seed"].unique()))),
        "phases": Table(["phase", "status", "trials"], [[p, s, str(n)] for (p, s), n in sorted(phases.items())]),
        "dataset": _dataset(data) if data else params.get("dataset", "not recorded"),
        "hyperparameters": Table(
            ["hyperparameter", "spec (fixed value or search space)", "values in confirm trials"],
            [[h, json.dumps(hparams[h]) if h in hparams else "default", v] for h, v in used.items()],
        ),
        "chosen": _chosen_table(chosen) if isinstance(chosen, dict) and chosen else None,
        "arms": _arms_table(spec),
        "spec_text": spec_text,
    }


def _arms_table(spec: dict[str, Any]) -> Table | None:
    """Each arm: its family, what makes it that arm, and its parameter count at the study's input size
    (the patch in patch mode, else the image); None for a study logged without a readable spec."""
    try:
        parsed = parse_spec(spec)
    except SegstudyError:
        return None
    dims = parsed.data.spatial_dims
    size = max(int(v) for v in parsed.factors.get("patch_size", [parsed.patch_defaults.size])) if parsed.patch_mode \
        else parsed.data.image_size
    rows = []
    for name in parsed.factors.get(ARM, []):
        base = resolve_architecture(str(name), family_overrides=parsed.model, custom=parsed.architectures)
        # A _target_ arm is one network per level of the factors it takes (@width): a row each.
        factors = base.factors if isinstance(base, TargetConfig) else []
        for levels in itertools.product(*(parsed.factors[f] for f in factors)):
            cfg = base.at(dict(zip(factors, levels))) if isinstance(base, TargetConfig) else base
            arm = f"{name} ({', '.join(f'{f}={cell_text(v)}' for f, v in cfg.levels.items())})" if factors else str(name)
            rows.append([arm, cfg.kind, _count(cfg, dims=dims, size=size), _settings(cfg)])
    return Table(["arm", "family", f"parameters (input {size}^{dims})", "settings"], rows) if rows else None


def _settings(cfg: Any) -> str:
    """A registered family's fields, or a _target_ arm's import path and the arguments the spec gives it."""
    if isinstance(cfg, TargetConfig):
        args = ", ".join(f"{k}={cell_text(v)}" for k, v in cfg.network.items() if not k.startswith("_"))
        return f"{cfg.target}({args})"
    return ", ".join(f"{k}={cell_text(v)}" for k, v in cfg.model_dump().items() if k != "kind")


def _count(cfg: Any, *, dims: int, size: int) -> str:
    """The parameter count, or why there is none: a _target_ module may not import where the report is built."""
    try:
        return f"{parameter_count(cfg, spatial_dims=dims, in_channels=1, out_channels=1, img_size=[size] * dims):,}"
    except SegstudyError as exc:
        return f"not built here ({exc})"


def _dataset(data: dict[str, Any]) -> str:
    """"synthetic2d (image_size=64, ...)": the dataset's name, then the spec's settings for it."""
    rest = ", ".join(f"{k}={v}" for k, v in data.items() if k != "dataset")
    return f"{data.get('dataset', '?')} ({rest})" if rest else str(data.get("dataset", "?"))


def _chosen_table(chosen: dict[str, dict[str, Any]]) -> Table:
    """Tuned studies: the hyperparameters the search chose for each cell."""
    names = sorted({name for values in chosen.values() for name in values})
    return Table(["cell", *names], [[cell, *(str(v.get(n, "")) for n in names)] for cell, v in sorted(chosen.items())])


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:  # e.g. a tag cut at MLflow's length limit
        return None


__all__ = ["design_section"]
