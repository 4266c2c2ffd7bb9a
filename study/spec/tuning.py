"""The `tuning:` and `confirm:` sections of a spec."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from study.spec.samplers import get_sampler
from study.strict import StrictModel


_Strict = StrictModel
# The largest training seed: torch.manual_seed takes 0..2**64-1, numpy's SeedSequence any whole
# number >= 0; a seed outside failed inside every trial, after the study had started.
SEED_MAX = 2**64 - 1


def check_seed_list(seeds: list[int]) -> list[int]:
    """`seeds` after checking it is a non-empty list of distinct seeds torch and numpy accept.

    Raises:
        ValueError: naming the first seed out of range (and the range), a repeat, or an empty list.
    """
    if not seeds:
        raise ValueError("needs at least one seed")
    for i, seed in enumerate(seeds):
        if not 0 <= seed <= SEED_MAX:
            raise ValueError(f"seed {seed} (item {i}) is out of range: a seed is a whole number from 0 to 2**64-1 "
                             f"= {SEED_MAX}, what torch and numpy accept")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    return seeds


class EarlyStopping(_Strict):
    """ASHA inside each cell (see `PerCellScheduler`), or none."""

    kind: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(3.0, ge=2, description="keep the top 1/reduction_factor at each rung")
    max_t: int | None = Field(None, ge=1, description="epochs of a full trial; default training.epochs")

    @model_validator(mode="after")
    def _grace_within_max_t(self) -> EarlyStopping:
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class Tuning(_Strict):
    """Per-cell Optuna search: every cell gets the same number of trials."""

    trials_per_cell: int = Field(8, ge=1, le=10_000)
    sampler: str = Field("tpe", description="a name of study.spec.samplers.SAMPLERS")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="sampler seed and the training seed of tune-phase trials")
    early_stopping: EarlyStopping = EarlyStopping(kind="none")
    max_concurrent: int | None = Field(None, ge=1, description="default: as many trials as the cluster fits")

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        get_sampler(name)  # a did-you-mean SegstudyError, which the spec loader prefixes with the file
        return name


class SeedBudget(_Strict):
    """Confirm seeds as a budget (docs/ARCHITECTURE.md 5, "Sequential confirm"): every cell gets
    seeds 0..min-1; the cells of comparisons still unresolved then get `step` more seeds a round,
    in order, up to `max`."""

    min: int = Field(ge=2, le=1000, description="seeds every cell gets in round 1 (an interval needs 2)")
    max: int = Field(ge=2, le=1000, description="most seeds a cell gets; seeds are 0..max-1 in order")
    step: int = Field(1, ge=1, le=1000, description="seeds added per round to each cell of an open comparison")

    @model_validator(mode="after")
    def _min_within_max(self) -> SeedBudget:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self

    @property
    def looks(self) -> tuple[int, ...]:
        """The seed counts the findings are computed at: min, min+step, ..., max (fixed before
        any result, so the error spending over them is too)."""
        return (*range(self.min, self.max, self.step), self.max)


# The union's tags name the two forms in pydantic's error locations; the spec loader drops them
# (a space never appears in a key, so no key is mistaken for one).
SEED_FORM_TAGS = ("seed list", "seed budget")
SeedForms = Annotated[
    Union[Annotated[list[int], Tag(SEED_FORM_TAGS[0])], Annotated[SeedBudget, Tag(SEED_FORM_TAGS[1])]],
    Discriminator(lambda v: SEED_FORM_TAGS[1] if isinstance(v, dict | SeedBudget) else SEED_FORM_TAGS[0]),
]


class Resolve(_Strict):
    """When a comparison of a sequential confirm phase is resolved (analysis/stats/statements/sequential.py)."""

    margin: float = Field(0.01, ge=0, lt=1, description="|difference| in Dice that does not matter")
    alpha: float | None = Field(
        None, gt=0, le=0.5, description="chance of any false declared claim, spent over all looks; default statistics.alpha"
    )


class Confirm(_Strict):
    """Retrain each cell's chosen hyperparameters under these seeds and test them: a fixed list,
    or a budget `{min, max, step}` spent where the comparisons are not yet resolved (`resolve`)."""

    seeds: SeedForms | None = None
    resolve: Resolve | None = None

    @field_validator("seeds", mode="before")
    @classmethod
    def _list_or_budget(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, list | dict | SeedBudget):
            raise ValueError("takes a list of seeds, e.g. [0, 1, 2], or a budget, e.g. {min: 3, max: 12}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seed_range(cls, v: Any) -> Any:
        return check_seed_list(v) if isinstance(v, list) else v

    @model_validator(mode="after")
    def _resolve_needs_budget(self) -> Confirm:
        if self.resolve is not None and not isinstance(self.seeds, SeedBudget):
            raise ValueError("resolve: only with a seed budget (seeds: {min: 3, max: 12}); a seed list is run as given")
        return self

    @property
    def budget(self) -> SeedBudget | None:
        """The seed budget of a sequential confirm phase; None for a fixed list."""
        return self.seeds if isinstance(self.seeds, SeedBudget) else None

    @property
    def resolution(self) -> Resolve:
        return self.resolve or Resolve()
