"""The strict pydantic bases: `StrictModel` for every user-facing config model, `StrictRecord` for
the records segstudy saves and reads back.

In a config, unknown keys, non-finite numbers and booleans posing as numbers are refused, so a
typo or `epochs: true` fails validation instead of training.

pydantic's lax mode turns `true` into 1 and accepts `.inf` for a float; neither is ever what a
spec author meant.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


def _numeric_not_bool(annotation: Any) -> bool:
    """True if the annotation accepts int or float but not bool (e.g. `int`, `float | None`)."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        members = set(get_args(annotation))
    else:
        members = {annotation}
    return bool(members & {int, float}) and bool not in members


class StrictRecord(BaseModel):
    """The base of every record segstudy writes and reads back (calibration.json,
    preprocessing.json): unknown keys are refused, so a file from another tool or version fails
    to load instead of half-loading. Not frozen and not finite-only: records are built from
    computed values, not typed by a user."""

    model_config = ConfigDict(extra="forbid")


class StrictModel(StrictRecord):
    """extra="forbid", frozen, finite numbers only, no booleans where a number is expected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # A model validator, not a per-field one: pydantic forbids "before" validators on the
    # discriminator field (`dataset`) that a wildcard field validator would also cover.
    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(str(key))
                if isinstance(value, bool) and field is not None and _numeric_not_bool(field.annotation):
                    raise ValueError(f"{key}: must be a number, not {str(value).lower()}")
        return data


__all__ = ["StrictModel", "StrictRecord"]
