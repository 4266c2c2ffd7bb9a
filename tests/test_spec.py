"""Spec validation: every bad input is one line naming the key/value, exit code 2, nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import DELETE, SMOKE, SMOKE_TUNING, run_cli
from study.spec.cells import cell_key, expand_cells
from study.cli import app
from study.errors import SegstudyError
from study.spec import count_trials, load_spec

runner = CliRunner()


def test_smoke_spec_loads_and_expands():
    spec = load_spec(SMOKE)
    cells = expand_cells(spec)
    assert len(cells) == 4
    assert [cell_key(c) for c in cells] == [
        "alpha=0.2,architecture=unet",
        "alpha=0.2,architecture=noskip_unet",
        "alpha=0.6,architecture=unet",
        "alpha=0.6,architecture=noskip_unet",
    ]
    assert spec.dataset_factors == ("alpha",)


def test_skip_vs_complexity_spec_is_valid():
    spec = load_spec(Path(SMOKE).with_name("skip_vs_complexity.yaml"))
    assert len(expand_cells(spec)) == 16 and spec.confirm_seeds == list(range(8)) and spec.tuning.trials_per_cell == 3
    assert spec.confirm.budget.looks == (3, 8)
    # claims (a) and (b) over the levels where the arms learn; the breakdown level (0.95) left to (e)
    assert spec.factors["alpha"][-1] == 0.95 and spec.claim_design()["alpha"] == [0.1, 0.8, 0.93]
    assert set(spec.declared_claims().kinds) == {"complexity", "out_of_domain", "breakdown"}
    assert spec.factors["architecture"] == ["unet", "noskip_unet", "attention_unet", "nested_unet"]
    assert spec.evaluation.perturbations == ["speckle", "background_blur"] and spec.evaluation.severities == [1, 3, 5]
    assert spec.evaluation.shift == {"alpha": [0.1, 0.3, 0.5]}  # where the models trained at 0.1 still segment


def test_validate_command_reports_trial_count():
    result = runner.invoke(app, ["validate", str(SMOKE)])
    assert result.exit_code == 0, result.output
    assert "4 cells x 1 seeds = 4 trials" in result.output


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"factors__architecture": ["unet", "unte"]}, "unknown architecture 'unte'; did you mean 'unet'?"),
        ({"factors__colour": [1, 2]}, "factors: unknown factor 'colour'"),
        ({"factors__alpha": [0.2, 1.0]}, "factors.alpha[1]: value 1.0"),
        ({"factors__alpha": [-0.1]}, "factors.alpha[0]: value -0.1"),
        ({"data__image_size": 0}, "data.image_size"),
        ({"data__n_images": -5}, "data.n_images"),
        ({"training__epochs": 0}, "training.epochs"),
        ({"hyperparameters__batch_size": 0}, "hyperparameters.batch_size"),
        ({"hyperparameters__momentum": 0.9}, "hyperparameters.momentum: unknown key; accepted keys here: lr, batch_size"),
        ({"bogus": 1}, "bogus: unknown key; accepted keys here: name, description, data"),
        ({"resources__gpu": 1.5}, "resources.gpu: must be a fraction"),
        ({"resources__cpu": 0}, "resources.cpu"),
        ({"resources__max_failures": -1}, "resources.max_failures"),
        ({"tracking__uri": "http://bob:s3cret@mlflow:5000"}, "tracking.uri: embeds a password"),
        ({"evaluation__perturbations": ["gausian_noise"]}, "did you mean 'gaussian_noise'?"),
        ({"evaluation__severities": [6]}, "evaluation.severities"),
        ({"seeds": []}, "seeds: needs at least one seed"),
        ({"name": "bad name!"}, "name: must be 1-100 letters"),
        ({"data__dataset": "synthetic2x"}, "unknown dataset 'synthetic2x'; did you mean 'synthetic2d'?"),
        ({"factors__architecture": DELETE}, "factors: must include 'architecture'"),
        ({"factors__architecture": ["unetr"], "data__image_size": 40}, "'unetr' with image size 40: UNETR needs every patch/image dimension to be a multiple of 16, got 40"),
        # Numbers that are not numbers, sizes without bound, levels spelled twice.
        ({"training__epochs": True}, "epochs: must be a number, not true"),
        ({"hyperparameters__lr": float("inf")}, "hyperparameters.lr: value inf"),
        ({"hyperparameters__lr": {"loguniform": [1e-4, float("inf")]}}, "loguniform needs finite numbers"),
        ({"hyperparameters__lr": float("nan")}, "hyperparameters.lr: value nan"),
        ({"data__spacing": float("inf")}, "data.spacing: Input should be a finite number"),
        ({"hyperparameters__batch_size": {"uniform": [4, 16]}}, "batch_size is a whole number; search it with int"),
        ({"factors__alpha": [0, 0.0]}, "factors: alpha[1]: value 0.0 repeats alpha[0] (0)"),
        ({"factors__architecture": ["unet", "unet"]}, "factors: architecture[1]: value 'unet' repeats"),
        ({"data__image_size": 10**9}, "data.image_size"),
        ({"data__n_images": 10**12}, "data.n_images"),
        ({"model__unet__channels": [8, 10**9]}, "channels must be at most 16 values of at most 4096"),
        ({"training__epochs": 10**9}, "training.epochs"),
        ({"training__warmup_epochs": 99}, "training: warmup_epochs must be fewer than epochs"),
        ({"training__grad_clip": 0}, "training.grad_clip"),
        # Seeds outside what torch and numpy accept failed inside every trial; levels that are not numbers.
        ({"seeds": [-1, 0, 1]}, "seeds: seed -1 (item 0) is out of range: a seed is a whole number from 0 to 2**64-1"),
        ({"seeds": DELETE, "confirm": {"seeds": [0, 99999999999999999999]}},
         "confirm.seeds: seed 99999999999999999999 (item 1) is out of range: a seed is a whole number from 0 to 2**64-1"),
        ({"seeds": {"min": 3, "max": 12}}, "seeds: a seed budget ({min, max, step}) belongs under confirm.seeds"),
        ({"factors__alpha": [float("nan"), 0.8]}, "factors.alpha[0]: value nan must be a number in [0, 1)"),
        ({"factors__alpha": [0.2, float("-inf")]}, "factors.alpha[1]: value -inf must be a number in [0, 1)"),
        ({"factors__lr": [float("nan")]}, "factors.lr[0]: value nan is not a finite number; lr takes a number > 0"),
        ({"factors__batch_size": [float("inf")]},
         "factors.batch_size[0]: value inf is not a finite number; batch_size takes a whole number > 0 and <= 4096"),
        ({"evaluation__shift": {"alpha": [0.5, float("nan")]}}, "evaluation.shift.alpha[1]: value nan must be a number in [0, 1)"),
    ],
)
def test_bad_spec_is_one_line_exit_2(write_spec, overrides, expected):
    path = write_spec(**overrides)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: ")
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert "s3cret" not in result.output


ALIAS_BOMB = "name: bomb\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{k}: &{k} [{', '.join(['*' + p] * 10)}]\n" for p, k in zip("abcdefgh", "bcdefghi")
) + "hyperparameters: {lr: *i}\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (ALIAS_BOMB.encode(), "anchors and aliases expand to more than 100000 YAML nodes"),
        (b"name: a\nname: b\n", "key 'name' appears twice (lines 1 and 2)"),
        (b"name: caf\xe9\n", "not UTF-8 text (byte 9)"),
        (b"a: &a [*a]\n", "an alias refers to a node that contains it"),
        (b"[" * 3000 + b"]" * 3000, "nested too deeply"),
        (b"# padding\n" * 200_000, "bytes; a spec may have at most 1000000"),
    ],
)
def test_hostile_yaml_is_refused_before_it_is_built(tmp_path, content, expected):
    """Alias bombs, duplicate keys, other encodings, recursion and size: one line, exit 2, in bounded time."""
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"error: {path}: {result.stderr.split(': ', 2)[2].strip()}"]
    assert expected in result.stderr and len(result.stderr) < 300


def test_missing_spec_file(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: spec file not found"


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nfactors: [unclosed\n")
    with pytest.raises(SegstudyError, match=r"broken.yaml: not valid YAML at line"):
        load_spec(path)


def test_real_console_script_exit_code(write_spec, tmp_path):
    """The installed `segstudy` binary, not just the in-process app: exit 2, one line, no trial."""
    path = write_spec(factors__alpha=[0.5, 1.2])
    proc = run_cli("run", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}: factors.alpha[1]: value 1.2 must be a number in [0, 1)"
    ]
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "ray_results").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"hyperparameters__lr": {"grid_search": [0.1, 0.01]}}, "hyperparameters.lr: grid_search is not accepted here"),
        ({"factors__lr": {"loguniform": [1e-4, 1e-2]}}, "factors: 'lr' takes a plain list of values"),
        ({"factors__lr": [{"loguniform": [1e-4, 1e-2]}]}, "distributions and grid_search belong under hyperparameters"),
        ({"hyperparameters__lr": {"loguniform": [0, 1e-2]}}, "hyperparameters.lr: loguniform needs low > 0"),
        ({"hyperparameters__lr": {"normal": [0, 1]}}, "hyperparameters.lr: unknown distribution 'normal'; accepted: loguniform"),
        ({"hyperparameters__batch_size": {"choice": [0, 8]}}, "hyperparameters.batch_size: value 0"),
        ({"tuning__trials_per_cell": 0}, "tuning.trials_per_cell"),
        ({"tuning__early_stopping__reduction_factor": 1.5}, "tuning.early_stopping.reduction_factor"),
        ({"tuning__early_stopping__grace_period": 8, "tuning__early_stopping__max_t": 5}, "grace_period (8) must be <= max_t (5)"),
        ({"tuning__early_stopping__grace_period": 30}, "grace_period: 30 is more than training.epochs (20)"),
        ({"tuning__early_stopping__max_t": 50}, "max_t: 50 is more than training.epochs (20)"),
        ({"tuning__max_concurrent": 0}, "tuning.max_concurrent"),
        ({"tuning__sampler": "cmaes"}, "tuning.sampler"),
        ({"tuning__sampler": "tpee"}, "tuning.sampler: unknown sampler 'tpee'; did you mean 'tpe'? Accepted: grid, random, tpe"),
        ({"tuning__sampler": "grid"}, "tuning.sampler: grid needs every searched hyperparameter as a choice; not: lr"),
        ({"hyperparameters__lr": 0.01, "hyperparameters__batch_size": 4}, "tuning: no hyperparameter is given as a distribution"),
        ({"seeds": [0, 1, 2]}, "give the seeds once"),
        # The confirm seeds as a budget (sequential confirm).
        ({"confirm__seeds": {"min": 5, "max": 3}}, "confirm.seeds: min (5) must be <= max (3)"),
        ({"confirm__seeds": {"min": 1, "max": 3}}, "confirm.seeds.min: Input should be greater than or equal to 2"),
        ({"confirm__seeds": {"min": 3}}, "confirm.seeds.max: required key is missing"),
        ({"confirm__seeds": {"min": 3, "max": 5, "stpe": 2}}, "confirm.seeds.stpe: unknown key; accepted keys here: min, max, step"),
        ({"confirm__seeds": 3}, "confirm.seeds: takes a list of seeds, e.g. [0, 1, 2], or a budget, e.g. {min: 3, max: 12}"),
        ({"confirm__resolve": {"margin": 0.01}}, "confirm: resolve: only with a seed budget"),
        ({"confirm__seeds": {"min": 3, "max": 5}, "confirm__resolve": {"margin": -0.1}}, "confirm.resolve.margin"),
        ({"confirm__seeds": {"min": 3, "max": 5}, "confirm__resolve": {"alpha": 0}}, "confirm.resolve.alpha"),
        ({"confirm__seeds": {"min": 3, "max": 5}, "confirm__resolve": {"margn": 0.1}}, "confirm.resolve.margn: unknown key; accepted keys here: margin, alpha"),
        ({"confirm__seeds": {"min": 3, "max": 5}, "factors__alpha": [0.2]},
         "confirm.seeds: a seed budget is spent on the declared claims (statistics.claims), and this study declares none"),
        # The declared claims (statistics.claims).
        ({"statistics__claims": ["complexiti"]},
         "statistics.claims[0]: unknown claim 'complexiti'; did you mean 'complexity'? Accepted: breakdown, complexity"),
        ({"statistics__claims": ["context"]}, "statistics.claims[0]: claim 'context' needs a patch_size factor with two or more"),
        ({"statistics__claims": [{"claim": "complexity", "arms": ["unte"]}]},
         "statistics.claims[0].arms: 'unte' is not one of factors.architecture: unet, noskip_unet"),
        ({"statistics__claims": "complexity"}, "statistics.claims: takes a non-empty list of claim names"),
        ({"statistics__alpha": 0.7}, "statistics.alpha: Input should be less than or equal to 0.5"),
        ({"statistics__fdr_method": "holm"}, "statistics.fdr_method: Input should be 'bh' or 'by'"),
        ({"evaluation__breakdown": 1.5}, "evaluation.breakdown: Input should be less than 1"),
        # The levels claims (a)-(d) are made over (statistics.claim_levels).
        ({"statistics__claim_levels": {"alpha": [0.2, 0.7]}}, "statistics.claim_levels.alpha[1]: 0.7 is not a level of factors.alpha: 0.2, 0.6"),
        ({"statistics__claim_levels": {"alpha": [0.2, float("nan")]}}, "statistics.claim_levels.alpha[1]: nan is not a level of factors.alpha"),
        ({"statistics__claim_levels": {"alfa": [0.2]}}, "statistics.claim_levels.alfa: 'alfa' is not a factor whose levels claims average over; factors: alpha"),
        ({"statistics__claim_levels": {"architecture": ["unet"]}}, "statistics.claim_levels.architecture: 'architecture' is not a factor whose levels"),
        ({"statistics__claim_levels": {"alpha": [0.2]}}, "statistics.claim_levels.alpha: claim 'complexity' compares the easiest and "
         "hardest of these levels, so it needs two or more (got 1)"),
        ({"statistics__claim_levels": {"alpha": [0.2, 0.20]}}, "statistics.claim_levels.alpha[1]: value 0.2 repeats"),
        ({"statistics__claim_levels": {"alpha": []}}, "statistics.claim_levels: takes a mapping of factor names to non-empty lists"),
    ],
)
def test_bad_tuning_spec(write_spec, overrides, expected):
    path = write_spec(_base=SMOKE_TUNING, **overrides)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {path}: ") and expected in line, line


def test_a_seed_budget_runs_seeds_in_order_and_counts_its_most(write_spec):
    spec = load_spec(write_spec(seeds=DELETE, confirm={"seeds": {"min": 3, "max": 10, "step": 3}}))
    assert spec.confirm_seeds == list(range(10)) and spec.confirm.budget.looks == (3, 6, 9, 10)
    assert spec.confirm.resolution.margin == 0.01 and spec.confirm.resolution.alpha is None  # statistics.alpha then
    assert spec.statistics.alpha == 0.05 and set(spec.declared_claims().kinds) == {"complexity", "out_of_domain"}
    assert count_trials(spec).describe() == "up to 40 trials (4 cells x 3-10 seeds, sequential)"
    result = runner.invoke(app, ["validate", str(write_spec(seeds=DELETE, confirm={"seeds": {"min": 2, "max": 2}}))])
    assert "confirm 4 cells x 2-2 seeds, sequential (margin 0.01) = up to 8 trials" in result.output
    assert ("claims: (a) complexity, (b) out_of_domain declared (Holm, alpha 0.05); findings and the rest "
            "exploratory (bh, fdr 0.05)") in result.output
    named = write_spec(seeds=DELETE, statistics={"claims": [{"claim": "out_of_domain", "arms": ["noskip_unet"]}], "alpha": 0.1})
    assert "claims: (b) out_of_domain for noskip_unet declared (Holm, alpha 0.1)" in runner.invoke(app, ["validate", str(named)]).output
    assert "only 2 confirmation seed(s)" in result.stderr


def test_tuning_spec_space_and_seeds():
    spec = load_spec(SMOKE_TUNING)
    assert set(spec.search_space) == {"lr", "batch_size"}
    assert spec.fixed_hyperparameters.optimizer == "adam"
    assert spec.confirm_seeds == [0, 1, 2] and spec.objective == "best_val_dice"
    assert load_spec(SMOKE).confirm_seeds == [0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"factors__patch_size": [24, 32]}, "factors.architecture[1]: 'unetr' with patch size 24: UNETR needs every patch/image dimension to be a multiple of 16, got 24"),
        ({"factors__patch_size": [0]}, "factors.patch_size[0]: value 0 must be a whole number of voxels from 1 to 512"),
        ({"factors__pos_fraction": [0.5, 1.5]}, "factors.pos_fraction[1]: value 1.5 must be a number in [0, 1]"),
        ({"inference__overlap": 1.0}, "inference.overlap"),
        ({"patches__samples_per_volume": 0}, "patches.samples_per_volume"),
        ({"data__volume_size": 8}, "data.volume_size"),
        ({"data__bogus": 1}, "data.bogus: unknown key; accepted keys here: dataset, volume_size"),
    ],
)
def test_bad_3d_spec(write_spec, overrides, expected):
    from conftest import SMOKE_3D

    path = write_spec(_base=SMOKE_3D, **overrides)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {path}: ") and expected in line, line


def test_validate_trains_one_step_per_network_input_and_names_the_failing_cell(write_spec, monkeypatch):
    """A network that cannot take the study's data fails every trial; validate (and run) say so first."""
    import study.run.driver.preflight as preflight

    real = preflight.build_network

    def three_channel_unet(cfg, **kwargs):
        if getattr(cfg, "skip_mask", None) is not None and not any(cfg.skip_mask):  # only the noskip arm
            kwargs["in_channels"] = 3
        return real(cfg, **kwargs)

    monkeypatch.setattr(preflight, "build_network", three_channel_unet)
    path = write_spec()
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "architecture=noskip_unet: one training step on the study's data fails" in line
    assert "RuntimeError" in line and "channels" in line
