"""analysis/commands/report.py and analysis/plots/robustness.py: a fake MLflow store with known Dice -> report.html."""

from __future__ import annotations

import html as html_lib
import json
import re
from importlib import metadata
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from analysis.commands.report import SECTIONS, build_report
from analysis.plots.robustness import pareto_front, plot_winner_map, winners
from study import metrics_names as M

ARMS = ("noskip", "unet")
ALPHAS = (0.1, 0.5)
BASE = {0.1: 0.90, 0.5: 0.75}  # clean Dice per complexity level
SEVERITIES = (1, 3)
IMAGES = 8
OFFSETS = np.linspace(-0.07, 0.07, IMAGES)  # per-image spread, mean 0
# Mixed-sign differences noskip - unet: no arm is significantly better on clean or speckle images.
WOBBLE = np.array([(-1) ** i * 0.01 * (i + 1) for i in range(IMAGES)])
NOISE_DROP = {"unet": 0.05, "noskip": 0.15}
UNLEARNED = ("noskip", 0.5, 2)  # (arm, alpha, seed) of the one confirm trial the learning gate rejected  # Dice lost per severity step of gaussian_noise
SPEC = """\
name: robust
description: Skip connections under Gaussian noise and speckle
data: {dataset: synthetic2d, image_size: 64}
factors:
  architecture: [unet, noskip]
  alpha: [0.1, 0.5]
hyperparameters: {lr: {loguniform: [1.0e-4, 1.0e-2]}, batch_size: 8}
evaluation:
  perturbations: [gaussian_noise, speckle]
  severities: [1, 3]
  failure_threshold: 0.6
  reference_arm: unet
seeds: [0, 1, 2]
"""


def _dice(arm: str, alpha: float, seed: int, condition: str) -> np.ndarray:
    """Known per-image Dice: seed adds 0.01 per seed, noise hurts noskip 3x more than unet."""
    values = BASE[alpha] + OFFSETS + 0.01 * seed
    if condition.startswith("gaussian_noise"):
        values = values - NOISE_DROP[arm] * int(condition.split(":")[1])
    elif condition.startswith("speckle"):
        values = values - 0.1 * int(condition.split(":")[1])
    return values + (WOBBLE if arm == "noskip" and not condition.startswith("gaussian_noise") else 0.0)


def _per_image(arm: str, alpha: float, seed: int) -> pd.DataFrame:
    conditions = ["clean", *(f"{p}:{s}" for p in ("gaussian_noise", "speckle") for s in SEVERITIES)]
    frames = []
    for condition in conditions:
        name = condition.split(":")[0]
        params = None if condition == "clean" else json.dumps({"std" if name == "gaussian_noise" else "variance": 0.1})
        frames.append(pd.DataFrame({
            "image_id": [f"img{i}" for i in range(IMAGES)], "condition": condition,
            "dice": _dice(arm, alpha, seed, condition), "hd95": 2.0, "nsd": 0.9, "assd": 1.0, "td": 1.0,
            "empty_gt": False, "empty_pred": False, "missed": False, "fbr": 0.1, "perturbation_params": params,
        }))
    return pd.concat(frames, ignore_index=True)


def _trial(client: MlflowClient, exp: str, parent: str, tmp: Path, *, arm: str, alpha: float | None, seed: int,
           phase: str = M.PHASE_CONFIRM, per_image: pd.DataFrame | None = None) -> None:
    factors = {"architecture": arm, **({"alpha": alpha} if alpha is not None else {})}
    cell = ",".join(f"{k}={v}" for k, v in sorted(factors.items()))
    tags = {M.PARENT_TAG: parent, M.ROLE_TAG: M.ROLE_TRIAL, M.CELL_TAG: cell, M.PHASE_TAG: phase,
            M.SEED_TAG: str(seed), M.FACTORS_TAG: json.dumps(sorted(factors))}
    if phase == M.PHASE_CONFIRM:  # the learning gate: one known trial did not learn
        learned = (arm, alpha, seed) != UNLEARNED
        tags[M.LEARNED_TAG] = "true" if learned else "false"
        if not learned:
            tags[M.LEARNING_ISSUE_TAG] = "collapsed: 8 of 8 test predictions are empty"
    run_id = client.create_run(exp, tags=tags).info.run_id
    params = {**{k: str(v) for k, v in factors.items()}, "lr": "0.002", "batch_size": "8"}
    dice = float(per_image["dice"][per_image["condition"] == "clean"].mean()) if per_image is not None else 0.5
    curve = [Metric(M.VAL_DICE, v, 0, epoch) for epoch, v in enumerate((0.2, 0.5, 0.7), start=1)]
    client.log_batch(run_id, metrics=[Metric(M.TEST_DICE, dice, 0, 0), Metric(M.TEST_TD, 1.0, 0, 0), *curve],
                     params=[Param(k, v) for k, v in params.items()])
    if per_image is not None:
        path = tmp / run_id / M.PER_IMAGE_FILE
        path.parent.mkdir(parents=True)
        per_image.to_csv(path, index=False)
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status="FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """'robust': 2 arms x 2 alphas x 3 seeds, clean + 2 perturbations x 2 severities; 'flat': clean, 2 seeds."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("robust", artifact_location=(root / "artifacts").as_uri())
    chosen = {f"alpha={a},architecture={arm}": {"lr": 0.002} for a in ALPHAS for arm in ARMS}
    parent = client.create_run(exp, tags={M.ROLE_TAG: M.ROLE_STUDY, "segstudy.chosen": json.dumps(chosen)}).info.run_id
    client.log_batch(parent, params=[Param("n_cells", "4"), Param("dataset", "synthetic2d")])
    spec = root / "robust.yaml"
    spec.write_text(SPEC)
    client.log_artifact(parent, str(spec))
    for arm in ARMS:
        for alpha in ALPHAS:
            for seed in range(3):
                table = _per_image(arm, alpha, seed)
                _trial(client, exp, parent, root, arm=arm, alpha=alpha, seed=seed, per_image=table)
    _trial(client, exp, parent, root, arm="unet", alpha=0.1, seed=0, phase=M.PHASE_TUNE)
    client.set_terminated(parent, status="FINISHED")

    flat = client.create_experiment("flat", artifact_location=(root / "flat").as_uri())
    flat_parent = client.create_run(flat, tags={M.ROLE_TAG: M.ROLE_STUDY}).info.run_id
    for arm in ARMS:
        for seed in range(2):
            table = _per_image(arm, 0.1, seed)
            _trial(client, flat, flat_parent, root, arm=arm, alpha=None, seed=seed,
                   per_image=table[table["condition"] == "clean"])
    return uri, parent


def _section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, flags=re.S)
    assert match, f"section {name} missing"
    return match.group(1)


def _rows(html: str, table_id: str) -> list[tuple[bool, list[str]]]:
    body = re.search(rf'<table id="{table_id}">(.*?)</table>', html, flags=re.S).group(1)
    return [(bool(cls), re.findall(r"<td>(.*?)</td>", cells))
            for cls, cells in re.findall(r'<tr( class="significant")?>(.*?)</tr>', body, flags=re.S)
            if "<td>" in cells]


def _columns(html: str, table_id: str) -> list[str]:
    body = re.search(rf'<table id="{table_id}">(.*?)</table>', html, flags=re.S).group(1)
    return re.findall(r"<th>(.*?)</th>", body)


@pytest.fixture(scope="module")
def report(store: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    uri, _ = store
    out = tmp_path_factory.mktemp("report")
    path = build_report("robust", out_dir=out, tracking_uri=uri, n_boot=40)
    return path, path.read_text()


def test_report_has_every_section_and_embedded_figures(report: tuple[Path, str]) -> None:
    path, html = report
    assert path.name == "report.html"
    positions = [html.index(f'<section id="{s}">') for s in SECTIONS]
    assert positions == sorted(positions)  # sections in the documented order
    assert html.count("data:image/png;base64,") == 8  # learning curves + 4 plots + 3 critical-difference diagrams
    for name in ("learning_curves", "dice_vs_complexity", "dice_vs_severity", "accuracy_vs_robustness", "winner_map", "cd_clean",
                 "cd_gaussian_noise", "cd_speckle"):
        image = matplotlib.image.imread(path.parent / f"{name}.png")
        assert image.shape[0] > 150 and image[..., :3].std() > 0.05, name
    for name in ("condition_summary", "robustness_summary", "pairwise_tests", "mean_ranks", "winners", "breakdown"):
        assert (path.parent / f"{name}.csv").is_file()


def test_design_and_versions_sections(report: tuple[Path, str]) -> None:
    _, html = report
    design = _section(html, "design")
    assert "Skip connections under Gaussian noise and speckle" in design
    assert "<strong>4</strong> cells" in design and "<strong>0, 1, 2</strong>" in design
    assert "<td>architecture</td><td>unet, noskip</td>" in design
    assert "reference_arm: unet" in design  # the spec YAML, verbatim in a <pre>
    assert ["confirm", "FINISHED", "12"] in [r for _, r in _rows(html, "phases")]
    assert ["tune", "FINISHED", "1"] in [r for _, r in _rows(html, "phases")]
    assert ["alpha=0.1,architecture=unet", "0.002"] in [r for _, r in _rows(html, "chosen")]
    versions = _section(html, "versions")
    for name in ("python", "segstudy", "torch", "monai", "ray", "optuna", "mlflow", "numpy"):
        assert f"<td>{name}</td>" in versions
    assert f"<td>{metadata.version('monai')}</td>" in versions


def test_perturbation_and_condition_tables_hold_known_values(report: tuple[Path, str]) -> None:
    path, html = report
    rows = {r[0]: r for _, r in _rows(html, "perturbations-table")}
    assert set(rows) == {"gaussian_noise", "speckle"}
    assert rows["gaussian_noise"][1] == "std (intensity units)" and rows["gaussian_noise"][3] == "1, 3"
    assert "std" in rows["gaussian_noise"][4] and "0.1" in rows["gaussian_noise"][4]
    # unet, alpha 0.1, noise severity 1: 0.90 - 0.05 + mean seed shift 0.01 (offsets average to 0).
    table = pd.read_csv(path.parent / "condition_summary.csv")
    row = table[(table["architecture"] == "unet") & (table["alpha"] == 0.1) & (table["condition"] == "gaussian_noise:1")
                & (table["statistic"] == "mean")].iloc[0]
    assert row["value"] == pytest.approx(0.86) and row["ci_low"] <= 0.86 <= row["ci_high"]
    mean_rows = {(r[0], r[1]): r for _, r in _rows(html, "mean-dice")}
    assert mean_rows[("0.1", "unet")][3].startswith("0.860 [")
    assert "Dice &lt; 0.6" in _section(html, "conditions")  # tau from the spec's evaluation.failure_threshold
    robust = pd.read_csv(path.parent / "robustness_summary.csv")
    ce = robust[(robust["summary"] == "corruption_error") & (robust["perturbation"] == "gaussian_noise")]
    assert ce.loc[ce["architecture"] == "unet", "value"].tolist() == pytest.approx([1.0, 1.0])  # the reference
    assert (ce.loc[ce["architecture"] == "noskip", "value"] > 1).all()


def _known_se(per_image_diffs: np.ndarray) -> tuple[float, float]:
    """(se, df) of noskip - unet when both arms' seed means are BASE + 0.01 * seed (variance 1e-4 each)."""
    seed_part = np.var([0.0, 0.01, 0.02], ddof=1) / 3
    image_part = np.var(per_image_diffs, ddof=1) / IMAGES if np.ptp(per_image_diffs) > 0 else 0.0
    variance = 2 * seed_part + image_part
    df = variance**2 / (2 * seed_part**2 / 2 + (image_part**2 / (IMAGES - 1)))
    return float(np.sqrt(variance)), float(df)


def test_pairwise_marks_the_known_winner_only(report: tuple[Path, str]) -> None:
    path, html = report
    rows = _rows(html, "pairwise")
    assert len(rows) == 2 * 5  # 2 alphas x 5 conditions x 1 pair
    for marked, cells in rows:
        alpha, condition, a, b = cells[:4]
        assert (a, b) == ("noskip", "unet")
        assert marked == condition.startswith("gaussian_noise"), cells
        if marked:  # noise costs noskip 0.1 Dice more per severity step, on every image and seed
            severity = int(condition.split(":")[1])
            assert float(cells[4]) == pytest.approx(-0.1 * severity)
            se, df = _known_se(np.zeros(IMAGES))
            columns = _columns(html, "pairwise")
            assert float(cells[columns.index("p")]) == pytest.approx(2 * stats.t.sf(0.1 * severity / se, df), rel=1e-2)
            low, high = float(cells[columns.index("ci_low")]), float(cells[columns.index("ci_high")])
            assert high < 0 and float(cells[columns.index("p_adjusted")]) < 0.05  # resolved: the interval agrees
    assert "fewer" not in _section(html, "statistics")
    assert html.count('class="warning"') == 1 and 'class="warning"' in _section(html, "findings")  # the unlearned trial
    win = pd.read_csv(path.parent / "winners.csv")
    noisy = win[win["perturbation"] == "gaussian_noise"]
    assert len(noisy) == 4 and set(noisy["winner"]) == {"unet"} and noisy["significant"].all()
    assert not win.loc[win["perturbation"] != "gaussian_noise", "significant"].any()


def test_findings_open_the_report_with_known_numbers(report: tuple[Path, str]) -> None:
    """noskip - unet = mean(WOBBLE) = -0.005 on every seed; the unlearned trial taints alpha 0.5 only."""
    path, html = report
    findings = _section(html, "findings")
    lines = re.findall(r"<li>(at alpha .*?)</li>", findings)
    se, df = _known_se(WOBBLE)
    p = 2 * stats.t.sf(0.005 / se, df)
    assert lines[0].startswith(f"at alpha 0.1, noskip - unet = -0.005 Dice [")
    # Two findings, one exploratory family: neither resolved, so both intervals at 1 - 0.05/2.
    assert f"] (97.5% interval), p = {p:.3f}, Benjamini-Hochberg p = " in lines[0]
    assert lines[0].endswith(": unresolved, 3 seeds x 8 images")
    # A comparison resting on a model that did not learn: no interval, never resolved, and said why.
    assert lines[1].startswith("at alpha 0.5, noskip - unet = -0.005 Dice (no interval: a model it rests on did not learn)")
    assert ": unresolved (a model it rests on did not learn)" in lines[1]
    assert "[NOT LEARNED: alpha=0.5,architecture=noskip seed=2; this comparison means nothing]" in lines[1]
    assert "1 confirm trial(s) did not learn" in findings
    # The claims open the section: (a) noskip - unet is -0.005 at both alphas (no change); (b) noise costs
    # noskip 0.1 Dice more per severity step (0.3 at severity 3) from a clean Dice 0.005 lower (the
    # wobble's mean), so 0.295 more; speckle costs both arms the same.
    claims = [html_lib.unescape(c) for c in re.findall(r"<li>(\(\w\) .*?)</li>", findings)]
    assert findings.index('id="claims-lines"') < findings.index('id="findings-lines"')
    assert "Holm over" in findings and all(", Holm p " in c for c in claims if not c.startswith("(e)"))
    assert claims[0].startswith("(a) complexity: noskip - unet went from -0.005 Dice at alpha 0.1 to -0.005 at alpha 0.5")
    # (b) averages over both alphas, so it rests on the model that did not learn: estimate, no interval.
    noise = next(c for c in claims if c.startswith("(b) out of domain, gaussian_noise:3"))
    assert "noskip loses 0.445 Dice, unet 0.150; noskip's loss minus unet's = +0.295 (no interval: a model" in noise
    speckle = next(c for c in claims if c.startswith("(b) out of domain, speckle:3"))
    assert "noskip's loss minus unet's = +0.000 (no interval" in speckle or "= -0.000 (no interval" in speckle
    assert "alpha=0.5,architecture=noskip seed=2: collapsed: 8 of 8 test predictions are empty" in findings
    table = pd.read_csv(path.parent / "findings.csv").dropna(subset=["ci_low"])
    assert len(table) == 1  # alpha 0.1; alpha 0.5 rests on the model that did not learn
    assert (table["ci_low"] >= WOBBLE.min()).all() and (table["ci_high"] <= WOBBLE.max()).all()
    assert (table["ci_low"] < -0.005).all() and (table["ci_high"] > -0.005).all()


def test_report_is_logged_on_the_study_run(store: tuple[str, str], report: tuple[Path, str]) -> None:
    uri, parent = store
    logged = {Path(f.path).name for f in MlflowClient(tracking_uri=uri).list_artifacts(parent, "report")}
    assert "report.html" in logged and "winner_map.png" in logged and "cd_clean.png" in logged


def test_study_without_perturbations_or_spec_says_why(store: tuple[str, str], tmp_path: Path) -> None:
    uri, _ = store
    with pytest.warns(UserWarning, match="only 2 seed"):
        path = build_report("flat", out_dir=tmp_path, tracking_uri=uri, n_boot=10, log_to_mlflow=False)
    html = path.read_text()
    for name in SECTIONS:
        assert f'<section id="{name}">' in html
    assert "No perturbations in this study" in _section(html, "perturbations")
    assert "Not available: no perturbations in this study" in _section(html, "conditions")
    assert "no spec file" in _section(html, "design")
    assert "no &#39;alpha&#39; (complexity) factor" in _section(html, "plots")
    assert 'class="warning">Only 2 seed(s)' in _section(html, "statistics")
    assert html.count("data:image/png;base64,") == 3  # learning curves, clean CD diagram, clean-only winner map
    flat_parent = MlflowClient(tracking_uri=uri).get_experiment_by_name("flat").experiment_id
    runs = MlflowClient(tracking_uri=uri).search_runs([flat_parent], f"tags.`{M.ROLE_TAG}` = 'study'")
    assert MlflowClient(tracking_uri=uri).list_artifacts(runs[0].info.run_id) == []


def test_pareto_front_and_winners_on_hand_made_numbers(tmp_path: Path) -> None:
    assert pareto_front({"a": (0.9, 0.2), "b": (0.8, 0.1), "c": (0.7, 0.3), "d": (0.9, 0.25)}) == ["a", "b"]
    assert pareto_front({"a": (0.9, 0.1), "b": (0.8, 0.2)}) == ["a"]
    conditions = pd.DataFrame({
        "alpha": [0.1] * 6, "architecture": ["x", "y", "z"] * 2, "condition": ["clean"] * 3 + ["noise:2"] * 3,
        "statistic": "mean", "value": [0.8, 0.85, 0.7, 0.5, 0.4, 0.45],
    })
    pairwise = pd.DataFrame({
        "alpha": 0.1, "condition": ["clean", "noise:2"], "a": ["x", "x"], "b": ["y", "z"],
        "p_adjusted": [0.01, 0.01], "significant": [True, True], "diff": [-0.05, 0.05],
    })
    table = winners(conditions, pairwise, within=["alpha"]).set_index("condition")
    assert table.loc["clean", "winner"] == "y" and table.loc["clean", "runner_up"] == "x"
    assert table.loc["clean", "margin"] == pytest.approx(0.05) and table.loc["clean", "significant"]
    assert table.loc["noise:2", "winner"] == "x" and table.loc["noise:2", "severity"] == 2
    assert table.loc["noise:2", "significant"]  # a = x is the winner and the difference favours it
    pairwise.loc[1, "diff"] = -0.05  # the pair says z beats x: not a significant win for x
    assert not winners(conditions, pairwise, within=["alpha"]).set_index("condition").loc["noise:2", "significant"]
    out = plot_winner_map(table.reset_index(), tmp_path / "map.png", within=["alpha"])
    assert matplotlib.image.imread(out).shape[1] > 300
