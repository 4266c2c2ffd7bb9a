"""The study spec: one YAML file that says what to train, on what, how often, and where to log.

`load_spec` reads and validates it completely (pydantic, plus checks that need the registries)
before anything starts, and turns every problem into a one-line `SegstudyError` that names the
file, the key and what is accepted.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlsplit
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from optuna.distributions import FloatDistribution
from pydantic import AllowInfNan, BaseModel, Field, ValidationError, field_validator, model_validator

from study import metrics_names as M
from study.data import DATASETS
from study.errors import CREDENTIALS_ENV, SegstudyError, embeds_credentials, unknown_name
from study.paths import input_file
from study.spec.safe_yaml import load_yaml_file
from study.strict import StrictModel
from study.models import check_input_size, check_target, mismatched_arm, resolve_architecture, target_factors
from study.perturbations import custom_perturbations, get_perturbation
from study.spec.samplers import get_sampler
from study.spec.statistics import EXACT_CLAIM, Declared, Statistics, allowed_kinds, declared
from study.spec.tuning import SEED_FORM_TAGS, Confirm, Tuning, check_seed_list
from study.spec.space import distribution_values, grid_size, is_distribution, parse_distribution

ARCHITECTURE = "architecture"
DEFAULT_SEEDS = (0, 1, 2)

# A factor or shift level. Non-finite numbers pass the type (the StrictModel base refuses them at
# once, and the union would then blame its last member: "0.bool: Input should be a valid
# boolean"): each level's own check refuses them, naming the range it accepts.
Scalar = Union[bool, int, Annotated[float, AllowInfNan(True)], str]


_Strict = StrictModel


class Hyperparameters(_Strict):
    """Resolved optimisation settings of one trial (the spec may give distributions instead)."""

    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, gt=0, le=4096)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"


HYPERPARAMETER_NAMES = tuple(Hyperparameters.model_fields)


class Training(_Strict):
    epochs: int = Field(10, gt=0, le=100_000)
    loss: Literal["dice", "dice_ce"] = "dice"
    # Learning-rate schedule over the epochs: cosine decays lr to 0 by the last epoch (as the
    # context-vs-FBR reference did); constant keeps it (the skip-connection reference).
    schedule: Literal["constant", "cosine"] = "constant"
    # Linear warm-up of the learning rate over the first epochs, per optimiser step from a tenth of
    # the rate (Goyal et al. 2017, "Accurate, large minibatch SGD"), then the schedule above. Adam's
    # first steps at the full rate left some seeds late to find the texture cue at the 2D flagship's
    # hardest level; 3 epochs cut the U-Net's between-seed SD there from 0.09 to 0.015
    # (benchmarks/RESULTS.md, "Where the spread at the breakdown comes from").
    warmup_epochs: int = Field(0, ge=0)
    # Clip the gradients' global L2 norm to this before every step (None: never).
    grad_clip: float | None = Field(None, gt=0)
    # Which weights the test split sees: the reference study mixed these up between arms.
    test_weights: Literal["best", "last"] = "best"
    # Mixed precision of the forward pass (study.training.device.accelerator): auto = bf16 autocast on a
    # CUDA device that supports it and fp32 everywhere else, so CPU numbers never change; bf16 =
    # bf16 autocast on CUDA and CPU alike; fp32 = never. bf16 needs no loss scaling.
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> Training:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs must be fewer than epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        return self


class LearningGate(_Strict):
    """When a confirm trial's model counts as having learned (study.training.evaluation.learning)."""

    min_dice: float = Field(0.5, ge=0, le=1, description="floor for test and best validation Dice")
    min_gain: float = Field(0.05, ge=0, le=1, description="best validation Dice over the all-foreground Dice")
    max_collapsed: float = Field(
        0.5, ge=0, lt=1, description="largest share of test images with an empty, full or repeated mask"
    )


class Evaluation(_Strict):
    threshold: float = Field(0.5, gt=0, lt=1)
    nsd_tolerance: float = Field(1.0, gt=0, description="surface Dice tolerance in mm")
    # Robustness: each named perturbation (registry: study/perturbations) at each severity is
    # applied to every test image with a seed derived from (seed, image, perturbation, severity).
    perturbations: list[str] = Field(default_factory=list)
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    perturbation_seed: int = Field(0, ge=0)
    failure_threshold: float = Field(0.5, gt=0, lt=1, description="Dice below this counts as a failure")
    breakdown: float = Field(
        0.5, gt=0, lt=1, description="a confirm model whose mean clean test Dice is below this broke down"
    )
    reference_arm: str | None = Field(None, description="architecture that corruption errors are relative to")
    learning: LearningGate = LearningGate()
    # Train/test shift (docs/ARCHITECTURE.md 5): dataset factor -> levels. Every confirm model is
    # also tested on its test split rendered at each listed level other than its own, e.g.
    # {alpha: [0.1, 0.5, 0.9]}; levels need not be levels of the grid.
    shift: dict[str, list[Scalar]] = Field(default_factory=dict)

    @field_validator("shift")
    @classmethod
    def _shift_levels(cls, v: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        for key, levels in v.items():
            if not levels:
                raise ValueError(f"'{key}' needs at least one level to test at")
            _check_distinct(key, levels)
        return v

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        if not v or any(s not in range(1, 6) for s in v) or len(set(v)) != len(v):
            raise ValueError(f"must be distinct severities from 1 to 5, got {v}")
        return sorted(v)


class Patches(_Strict):
    """Patch-based training (3D): crop size, share of foreground-centred crops, crops per volume."""

    size: int = Field(64, gt=0, le=512, description="patch side in voxels; the factor patch_size overrides it")
    pos_fraction: float = Field(0.5, ge=0, le=1, description="share of crops centred on foreground")
    samples_per_volume: int = Field(4, gt=0, le=1024)


class Inference(_Strict):
    """Sliding-window inference for validation and test (patch mode only)."""

    sw_batch_size: int = Field(4, gt=0, le=1024)
    overlap: float = Field(0.25, ge=0, lt=1)


class Conformal(_Strict):
    """Calibrated confidence for every confirmed model (split conformal on the calib split).

    `alpha`: the Dice lower bound holds for at least 1 - alpha of images, per stratum
    (perturbation x severity); `fnr_alpha`: the risk-controlled threshold keeps the expected
    pixel false-negative rate at most fnr_alpha.
    """

    alpha: float = Field(0.1, gt=0, lt=1)
    fnr_alpha: float = Field(0.1, gt=0, lt=1)


PATCH_FACTORS = {"patch_size": "a whole number of voxels from 1 to 512", "pos_fraction": "a number in [0, 1]"}


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    max_failures: int = Field(
        2, ge=0, le=100, description="retries of a trial whose worker crashed or was killed (0: no retry)"
    )

    @field_validator("gpu")
    @classmethod
    def _whole_or_fraction(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("must be a fraction in (0, 1] or a whole number of GPUs")
        return v


class Tracking(_Strict):
    uri: str | None = None

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        # The spec is copied into the study folder and logged as an artifact: no secrets here.
        if v is not None and embeds_credentials(v):
            secret = "a password" if urlsplit(v).password else "credentials"
            raise ValueError(f"embeds {secret}; remove it and set {CREDENTIALS_ENV} in the environment")
        return v


def _data_type() -> Any:
    configs = tuple(entry.config for entry in DATASETS.values())
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="dataset")]  # type: ignore[valid-type]


DataConfig = _data_type()


class StudySpec(_Strict):
    """A whole study: the ablation grid, how each cell is trained, evaluated and tracked."""

    name: str
    description: str = ""
    data: DataConfig  # type: ignore[valid-type]
    model: dict[str, dict[str, Any]] = Field(default_factory=dict)
    architectures: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The spec's own perturbations by import path (study/perturbations/target.py), named in
    # evaluation.perturbations beside the registered ones.
    perturbations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    factors: dict[str, list[Scalar]]
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    training: Training = Training()
    evaluation: Evaluation = Evaluation()
    patches: Patches | None = None
    inference: Inference = Inference()
    conformal: Conformal = Conformal()
    tuning: Tuning | None = None
    confirm: Confirm = Confirm()
    statistics: Statistics = Statistics()
    seeds: list[int] | None = None
    resources: Resources = Resources()
    tracking: Tracking = Tracking()
    max_trials: int | None = Field(
        None, gt=0, description="most trials the study starts without --allow-large-grid (default 1000)"
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v):
            raise ValueError("must be 1-100 letters, digits, '_', '-' or '.', starting with a letter or digit")
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list_only(cls, v: Any) -> Any:
        if isinstance(v, dict):
            raise ValueError("a seed budget ({min, max, step}) belongs under confirm.seeds, e.g. "
                             "confirm: {seeds: {min: 3, max: 12}}; top-level seeds takes a list of seeds only")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        return _check_seeds(v)

    @field_validator("factors", mode="before")
    @classmethod
    def _factor_values_plain(cls, v: Any) -> Any:
        for key, values in (v.items() if isinstance(v, dict) else ()):
            if isinstance(values, dict) or any(isinstance(x, dict) for x in values or ()):
                raise ValueError(
                    f"'{key}' takes a plain list of values (each value is a cell); "
                    "distributions and grid_search belong under hyperparameters"
                )
        return v

    @field_validator("factors")
    @classmethod
    def _factor_lists(cls, v: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        if ARCHITECTURE not in v:
            raise ValueError(f"must include '{ARCHITECTURE}'")
        for key, values in v.items():
            if not values:
                raise ValueError(f"factor '{key}' needs at least one value")
            _check_distinct(key, values)
        return v

    @model_validator(mode="before")
    @classmethod
    def _dataset_known(cls, raw: Any) -> Any:
        # Checked first so an unknown dataset gets a did-you-mean, not a union-mismatch dump.
        data = raw.get("data") if isinstance(raw, dict) else None
        if isinstance(data, dict) and "dataset" not in data:
            raise ValueError(f"data.dataset: required key is missing; accepted: {', '.join(sorted(DATASETS))}")
        if isinstance(data, dict) and data["dataset"] not in DATASETS:
            raise ValueError(str(unknown_name("dataset", data["dataset"], DATASETS, where="data.dataset")))
        return raw

    @model_validator(mode="after")
    def _seeds_once(self) -> StudySpec:
        if self.seeds is not None and self.confirm.seeds is not None:
            raise ValueError("give the seeds once: top-level seeds (shorthand) or confirm.seeds")
        if self.confirm.budget is None:
            _check_seeds(self.confirm.seeds)  # type: ignore[arg-type]
        return self

    @property
    def patch_mode(self) -> bool:
        """Train on random crops and infer by sliding window (else: whole images)."""
        return self.patches is not None or any(k in self.factors for k in PATCH_FACTORS)

    @property
    def patch_defaults(self) -> Patches:
        return self.patches or Patches()

    @property
    def objective(self) -> str:
        """The metric tuning maximises: it must match the weights the test split will see."""
        return M.BEST_VAL_DICE if self.training.test_weights == "best" else M.VAL_DICE

    @property
    def confirm_seeds(self) -> list[int]:
        """Seeds every cell's chosen configuration is trained and tested under; for a seed budget
        the most any cell can get (0..max-1, in the order rounds add them)."""
        budget = self.confirm.budget
        if budget is not None:
            return list(range(budget.max))
        return list(self.confirm.seeds or self.seeds or DEFAULT_SEEDS)  # type: ignore[arg-type]

    @property
    def fixed_hyperparameters(self) -> Hyperparameters:
        """The spec's fixed values over the defaults; searched ones keep their default here."""
        return Hyperparameters(**{k: v for k, v in self.hyperparameters.items() if not is_distribution(v)})

    @property
    def search_space(self) -> dict[str, Any]:
        """Hyperparameter name -> Optuna distribution, for those given as distributions."""
        return {k: parse_distribution(k, v) for k, v in self.hyperparameters.items() if is_distribution(v)}

    def declared_claims(self) -> Declared:
        """The claims the study is for (`statistics.claims`, default every claim (a)-(d) its factors
        allow), checked against its factors (a SegstudyError names a claim it cannot make)."""
        allowed = allowed_kinds(
            factors=self.factors, perturbations=bool(self.evaluation.perturbations), shift=bool(self.evaluation.shift),
            patch_mode=self.patch_mode,
        )
        return declared(self.statistics, allowed, arms=[str(a) for a in self.factors[ARCHITECTURE]])

    def claim_design(self) -> dict[str, list[Any]]:
        """The factor levels claims (a)-(d) are made over: the grid's, less the levels
        `statistics.claim_levels` leaves out (study/spec/statistics.py)."""
        chosen = self.statistics.claim_levels or {}
        return {k: [v for v in levels if k not in chosen or any(same_level(v, c) for c in chosen[k])]
                for k, levels in self.factors.items()}

    @property
    def network_factors(self) -> tuple[str, ...]:
        """The factors that are arguments of `_target_` arms (``@width``; checked by `load_spec`):
        those that are not the architecture, the dataset's, a hyperparameter or a patch factor."""
        known = {ARCHITECTURE, *DATASETS[self.data.dataset].factors_for(self.data), *HYPERPARAMETER_NAMES, *PATCH_FACTORS}
        return tuple(k for k in sorted(self.factors) if k not in known)

    @property
    def dataset_factors(self) -> tuple[str, ...]:
        """The factors the dataset consumes (e.g. alpha): data is built once per combination."""
        return tuple(k for k in sorted(self.factors) if k in DATASETS[self.data.dataset].factors_for(self.data))


def _check_seeds(v: list[int] | None) -> list[int] | None:
    return None if v is None else check_seed_list(v)


def load_spec(path: str | Path) -> StudySpec:
    """Read, validate and cross-check a study spec.

    Raises:
        SegstudyError: one line naming the file, the key and what is accepted.

    Example:
        >>> spec = load_spec("search_spaces/smoke.yaml")
        >>> spec.name
        'smoke'
    """
    path = input_file(Path(path), what="spec file")  # not a folder, FIFO, device or symlink loop
    raw = load_yaml_file(path)
    if not isinstance(raw, dict):
        raise SegstudyError(f"{path}: a spec must be a YAML mapping with keys {', '.join(StudySpec.model_fields)}")
    return parse_spec(raw, source=str(path))


def check_data(spec: StudySpec) -> None:
    """Validate the dataset's files (real data) without building tensors; no-op for synthetic."""
    check = DATASETS[spec.data.dataset].check
    if check is not None:
        check(spec.data)


def parse_spec(raw: dict[str, Any], *, source: str = "<spec>") -> StudySpec:
    """Validate an already-loaded spec mapping (see `load_spec`)."""
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise SegstudyError(f"{source}: {_describe(exc, raw)}") from None
    except SegstudyError as exc:
        raise SegstudyError(f"{source}: {exc}") from None
    try:
        _check_cross_references(spec)
    except SegstudyError as exc:
        raise SegstudyError(f"{source}: {exc}") from None
    return spec


def _check_cross_references(spec: StudySpec) -> None:
    _check_hyperparameters(spec)
    _check_tuning(spec)
    dataset = DATASETS[spec.data.dataset]
    factors = dataset.factors_for(spec.data)
    known = {ARCHITECTURE, *factors, *HYPERPARAMETER_NAMES, *PATCH_FACTORS}
    network = _check_target_arms(spec, list(spec.network_factors))  # over a _target_ arm's arguments
    accepted = known | network
    for key in spec.factors:
        if key not in accepted:
            raise unknown_name("factor", key, accepted, where="factors")
    needed = [name for name in dataset.required_for(spec.data) if name not in spec.factors]
    if needed:  # the dataset is built per value of these: without one, there is nothing to build
        raise SegstudyError(f"factors: {spec.data.dataset} data need the factor(s) {', '.join(needed)}, e.g. {needed[0]}: [...]")
    for key, values in spec.factors.items():
        check = factors.get(key) or _PATCH_CHECKS.get(key)
        for i, value in enumerate(values):
            if key == ARCHITECTURE or key in network:  # a network argument: the preflight builds each level
                continue
            if check is not None:
                problem = _level_problem(check, value)
                if problem:
                    raise SegstudyError(f"factors.{key}[{i}]: value {value!r} {problem}")
            else:
                _check_value(f"factors.{key}[{i}]", key, value)
    _check_input_sizes(spec)
    _check_evaluation(spec)
    claims = spec.declared_claims()
    _check_claim_levels(spec, claims)
    if spec.confirm.budget is not None and not any(kind != EXACT_CLAIM for kind in claims.kinds):
        raise SegstudyError(
            "confirm.seeds: a seed budget is spent on the declared claims (statistics.claims), and this study declares "
            "none its rounds can decide (claims (a)-(d) need an alpha or patch_size factor with two levels, "
            "evaluation.perturbations or evaluation.shift, and two arms); give a seed list, e.g. seeds: [0, 1, 2]"
        )


def _check_target_arms(spec: StudySpec, unknown: list[str]) -> set[str]:
    """Import every `_target_` arm and check its arguments (study/models/target.py); return those
    of the `unknown` factors (none of the dataset's, hyperparameters or patch factors) that are
    arguments of those arms (every arm must take each)."""
    arms = []
    for i, name in enumerate(spec.factors[ARCHITECTURE]):
        cfg = resolve_architecture(
            str(name), family_overrides=spec.model, custom=spec.architectures, where=f"factors.architecture[{i}]"
        )
        if cfg.kind == "target":
            check_target(cfg, factors=[f for f in spec.factors if f != ARCHITECTURE])
        arms.append((str(name), cfg))
    return target_factors(arms, unknown)


def _check_distinct(key: str, values: list[Any]) -> None:
    """Each level once: 0 and 0.0 (or 1e-3 and 0.001) are one level spelled twice, and would make
    two cells of the same experiment with one canonical name."""
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        norm = (type(value).__name__, value) if isinstance(value, bool | str) else ("number", float(value))
        if norm in seen:
            raise ValueError(f"{key}[{i}]: value {value!r} repeats {key}[{seen[norm]}] ({values[seen[norm]]!r}); list each level once")
        seen[norm] = i


def _check_evaluation(spec: StudySpec) -> None:
    custom_perturbations(spec.perturbations)  # imports each target, checks its arguments per severity
    for i, name in enumerate(spec.evaluation.perturbations):
        get_perturbation(name, custom=spec.perturbations, where=f"evaluation.perturbations[{i}]")
    _check_shift(spec)
    ref = spec.evaluation.reference_arm
    if ref is not None and ref not in spec.factors[ARCHITECTURE]:
        raise SegstudyError(
            f"evaluation.reference_arm: '{ref}' is not one of factors.architecture: "
            f"{', '.join(map(str, spec.factors[ARCHITECTURE]))}"
        )


def same_level(a: Any, b: Any) -> bool:
    """One factor level spelled two ways (0.8 and 0.80, 4 and 4.0)."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9) if numbers else a == b


def _check_claim_levels(spec: StudySpec, claims: Declared) -> None:
    """`statistics.claim_levels`: levels of the grid's factors (not the architecture), and two or
    more of a factor whose claim compares its extremes ((a) alpha, (c) patch_size)."""
    needs_two = {"alpha": "complexity", "patch_size": "context"}
    for key, levels in (spec.statistics.claim_levels or {}).items():
        where = f"statistics.claim_levels.{key}"
        if key == ARCHITECTURE or key not in spec.factors:
            accepted = ", ".join(sorted(str(f) for f in spec.factors if f != ARCHITECTURE)) or "none"
            raise SegstudyError(f"{where}: '{key}' is not a factor whose levels claims average over; factors: {accepted}")
        for i, value in enumerate(levels):
            if not any(same_level(value, level) for level in spec.factors[key]):
                raise SegstudyError(f"{where}[{i}]: {value!r} is not a level of factors.{key}: "
                                    f"{', '.join(map(str, spec.factors[key]))}")
        try:
            _check_distinct(where, list(levels))
        except ValueError as exc:
            raise SegstudyError(str(exc)) from None
        kind = needs_two.get(key)
        if kind in claims.kinds and len(levels) < 2:
            raise SegstudyError(f"{where}: claim '{kind}' compares the easiest and hardest of these levels, so it needs two "
                                f"or more (got {len(levels)}); name two or more, or leave '{kind}' out of statistics.claims")


def _check_shift(spec: StudySpec) -> None:
    """Each `evaluation.shift` key must be a factor of the grid (the models' training level) that the
    dataset can render at another level (its registry entry's `shiftable`), at levels it accepts."""
    name = spec.data.dataset
    dataset = DATASETS[name]
    shiftable = dataset.shiftable_for(spec.data)
    for key, levels in spec.evaluation.shift.items():
        if key not in shiftable:
            accepted = ", ".join(sorted(shiftable)) or f"none (dataset '{name}' renders its data at one level only)"
            raise SegstudyError(
                f"evaluation.shift: '{key}' is not a factor dataset '{name}' can render at another level; accepted: {accepted}"
            )
        if key not in spec.factors:
            raise SegstudyError(
                f"evaluation.shift.{key}: '{key}' is not in factors, so no model has a training level of it; "
                f"add factors.{key} (e.g. the level to train at)"
            )
        for i, value in enumerate(levels):
            problem = _level_problem(dataset.factors_for(spec.data)[key], value)
            if problem:
                raise SegstudyError(f"evaluation.shift.{key}[{i}]: value {value!r} {problem}")


def _check_input_sizes(spec: StudySpec) -> None:
    """Every architecture must accept every input it will see (patches, or whole images), and
    arms of families that must agree (U-Net++ and the U-Net family's widths) do."""
    if spec.patch_mode:
        sizes = [int(v) for v in spec.factors.get("patch_size", [spec.patch_defaults.size])]
        what = "patch"
    else:
        size = spec.data.image_size
        sizes, what = ([size] if size is not None else []), "image"
    for i, name in enumerate(spec.factors[ARCHITECTURE]):
        cfg = resolve_architecture(
            str(name), family_overrides=spec.model, custom=spec.architectures, where=f"factors.architecture[{i}]"
        )
        for size in sizes:
            problem = check_input_size(cfg, [size] * _spatial_dims(spec))
            if problem:
                raise SegstudyError(f"factors.architecture[{i}]: '{name}' with {what} size {size}: {problem}")
    names = [str(name) for name in spec.factors[ARCHITECTURE]]
    mismatch = mismatched_arm(names, family_overrides=spec.model, custom=spec.architectures)
    if mismatch:
        i, problem = mismatch
        raise SegstudyError(f"factors.architecture[{i}]: '{names[i]}': {problem}")


def _check_patch_size(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 512
    return None if ok else f"must be {PATCH_FACTORS['patch_size']}"


def _check_pos_fraction(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
    return None if ok else f"must be {PATCH_FACTORS['pos_fraction']}"


_PATCH_CHECKS = {"patch_size": _check_patch_size, "pos_fraction": _check_pos_fraction}


def _check_hyperparameters(spec: StudySpec) -> None:
    for key, value in spec.hyperparameters.items():
        where = f"hyperparameters.{key}"
        if key not in HYPERPARAMETER_NAMES:
            raise SegstudyError(f"{where}: unknown key; accepted keys here: {', '.join(HYPERPARAMETER_NAMES)}")
        if not is_distribution(value):
            _check_value(where, key, value)
            continue
        try:
            dist = parse_distribution(key, value)
        except ValueError as exc:
            raise SegstudyError(f"hyperparameters.{exc}") from None
        if Hyperparameters.model_fields[key].annotation is int and isinstance(dist, FloatDistribution):
            raise SegstudyError(f"{where}: {key} is a whole number; search it with int: [low, high] or choice: [...]")
        for bound in distribution_values(dist):
            _check_value(where, key, bound)


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _level_problem(check: Any, value: Any) -> str | None:
    """What a factor's check says of a level, and a non-finite number refused even by a check that
    would let it through (NaN compares false both ways)."""
    return check(value) or ("is not a finite number" if _non_finite(value) else None)


def _check_value(where: str, key: str, value: Any) -> None:
    if _non_finite(value):
        raise SegstudyError(f"{where}: value {value!r} is not a finite number; {key} takes {_accepted(key)}")
    try:
        Hyperparameters.model_validate({key: value})
    except ValidationError as exc:
        raise SegstudyError(f"{where}: value {value!r}: {exc.errors()[0]['msg']}") from None


def _accepted(key: str) -> str:
    """What a hyperparameter accepts, from its field, e.g. 'a number > 0' or 'a whole number in (0, 4096]'."""
    field = Hyperparameters.model_fields[key]
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(map(str, get_args(field.annotation)))
    bounds = {name: getattr(m, name) for m in field.metadata for name in ("gt", "ge", "lt", "le") if hasattr(m, name)}
    low = f"> {bounds['gt']}" if "gt" in bounds else f">= {bounds['ge']}" if "ge" in bounds else ""
    high = f"<= {bounds['le']}" if "le" in bounds else f"< {bounds['lt']}" if "lt" in bounds else ""
    kind = "a whole number" if field.annotation is int else "a number"
    return " and ".join(filter(None, [f"{kind} {low}".strip(), high]))


def _check_tuning(spec: StudySpec) -> None:
    space = spec.search_space
    tuning = spec.tuning
    if tuning is None:
        return
    if not space:
        raise SegstudyError(
            "tuning: no hyperparameter is given as a distribution, so there is nothing to tune; "
            "give one as e.g. lr: {loguniform: [1.0e-4, 1.0e-2]} or remove the tuning section"
        )
    max_t = tuning.early_stopping.max_t
    if max_t is not None and max_t > spec.training.epochs:
        raise SegstudyError(
            f"tuning.early_stopping.max_t: {max_t} is more than training.epochs ({spec.training.epochs})"
        )
    if tuning.early_stopping.kind == "asha" and tuning.early_stopping.grace_period > spec.training.epochs:
        raise SegstudyError(
            f"tuning.early_stopping.grace_period: {tuning.early_stopping.grace_period} is more than "
            f"training.epochs ({spec.training.epochs})"
        )
    if get_sampler(tuning.sampler).grid:
        not_choice = [k for k, v in spec.hyperparameters.items() if is_distribution(v) and "choice" not in v]
        if not_choice:
            raise SegstudyError(f"tuning.sampler: grid needs every searched hyperparameter as a choice; not: {', '.join(not_choice)}")
        if tuning.trials_per_cell > grid_size(space):
            raise SegstudyError(
                f"tuning.trials_per_cell: {tuning.trials_per_cell} is more than the {grid_size(space)} grid points"
            )


def _spatial_dims(spec: StudySpec) -> int:
    return spec.data.spatial_dims


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    """One line for the first validation error: where, what was given, what is accepted."""
    err = exc.errors()[0]
    parts = [p for p in err["loc"] if not str(p).startswith("function-after") and p not in SEED_FORM_TAGS]
    if len(parts) > 1 and parts[0] == "data" and parts[1] in DATASETS:
        del parts[1]  # the discriminated union's tag is noise to the user
    loc = ".".join(str(p) for p in parts)
    if err["type"] == "extra_forbidden":
        parent = _model_at(tuple(parts[:-1]), raw)
        accepted = ", ".join(parent.model_fields) if parent else "see README"
        return f"{loc}: unknown key; accepted keys here: {accepted}"
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r})"
    if isinstance(given, str) and embeds_credentials(given):
        shown = ""  # never echo a credential
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


def _members(ann: Any) -> list[Any]:
    """The types an annotation can hold: itself, or the members of its unions (Annotated unwrapped)."""
    args = get_args(ann)
    if get_origin(ann) is Annotated:
        return _members(args[0])
    if get_origin(ann) in (Union, UnionType):
        return [m for a in args for m in _members(a)]
    return [ann]


def _model_at(loc: tuple[Any, ...], raw: dict[str, Any]) -> type[BaseModel] | None:
    model: type[BaseModel] = StudySpec
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        if str(part) == "data":
            dataset = raw.get("data", {}).get("dataset", "synthetic2d") if isinstance(raw.get("data"), dict) else None
            entry = DATASETS.get(str(dataset))
            ann = entry.config if entry else None
        models = [a for a in _members(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) != 1:
            return None
        model = models[0]
    return model
