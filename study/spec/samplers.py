"""The Optuna samplers a spec may name in `tuning.sampler`: one `Sampler` entry each in `SAMPLERS`.

The spec validates `tuning.sampler` against this registry's keys (did-you-mean on a typo) and the
searcher builds the sampler from the same entry, so adding a sampler is one entry here. It lives in
the spec layer because the spec's checks need it and it needs only Optuna, not Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import optuna
from optuna.trial import TrialState

from study.errors import unknown_name


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask-and-tell use.

    The stock sampler calls `study.stop()` once the grid is covered, which raises outside
    `study.optimize` and made Tune count the told trial as crashed. The searcher's per-cell
    budget already ends the search.
    """

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        return None


@dataclass(frozen=True)
class Sampler:
    """A registered sampler.

    Attributes:
        build: ``build(seed, space, n_trials) -> optuna sampler``; `space` maps a hyperparameter to
            its Optuna distribution, `n_trials` is the cell's budget.
        grid: True for a sampler that enumerates choices: every searched hyperparameter must be a
            `choice`, the budget at most the grid's size, and one seed per cell (it shuffles the
            grid by seed), not one per ask.
    """

    build: Callable[[int, Mapping[str, Any], int], optuna.samplers.BaseSampler]
    grid: bool = False


def _tpe(seed: int, space: Mapping[str, Any], n_trials: int) -> optuna.samplers.BaseSampler:
    # A third of the budget explores at random before TPE models it; constant_liar keeps
    # concurrent asks of one cell from all landing on the same point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, n_trials // 3), constant_liar=True)


def _grid(seed: int, space: Mapping[str, Any], n_trials: int) -> optuna.samplers.BaseSampler:
    return AskTellGridSampler({k: list(d.choices) for k, d in space.items()}, seed=seed)


SAMPLERS: Mapping[str, Sampler] = MappingProxyType(
    {
        "tpe": Sampler(_tpe),
        "random": Sampler(lambda seed, space, n_trials: optuna.samplers.RandomSampler(seed=seed)),
        "grid": Sampler(_grid, grid=True),
    }
)


def get_sampler(name: str, *, where: str = "tuning.sampler") -> Sampler:
    """The registry entry for `name`; an unknown name raises a did-you-mean `SegstudyError`."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise unknown_name("sampler", name, SAMPLERS, where=where) from None


def make_sampler(kind: str, *, seed: int, space: Mapping[str, Any], n_trials: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named in the spec, seeded."""
    return get_sampler(kind).build(seed, space, n_trials)


__all__ = ["SAMPLERS", "AskTellGridSampler", "Sampler", "get_sampler", "make_sampler"]
