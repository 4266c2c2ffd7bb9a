"""The `statistics:` section of a spec: the claims the study is for, and the error control.

A study prints many statements. The ones it is *for* are declared up front (`claims`; default:
every claim its factors allow among (a)-(d)); they form one family whose chance of any false
claim is held at `alpha` (Holm). Everything else (the per-level findings, the pairwise tables,
claims not declared) is exploratory, with the false-discovery rate held at `fdr`
(Benjamini-Hochberg, or Benjamini-Yekutieli under any dependence). See
analysis/stats/core/multiplicity.py and docs/ARCHITECTURE.md 5.

A level where breakdown is the expected outcome (some training runs never find the cue) would
void every claim (a)-(d) averaged over it: a claim rests on models that learned
(docs/ARCHITECTURE.md 6). `claim_levels` names, per factor, the levels those claims are made
over, chosen with the design and not after the results; the other levels are still trained,
tested, counted by claim (e) (breakdown, every level) and reported as findings.

Example:
    statistics:
      claims: [complexity, {claim: out_of_domain, arms: [attention_unet]}]
      alpha: 0.05
      claim_levels: {alpha: [0.1, 0.8, 0.93]}   # 0.95, the breakdown level, is left to claim (e)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from study.errors import SegstudyError, unknown_name
from study.strict import StrictModel

ARCHITECTURE = "architecture"


@dataclass(frozen=True)
class ClaimKind:
    """One kind of claim: its letter in printed lines, what it says, and when a study can make it."""

    letter: str
    says: str
    needs: str


CLAIM_KINDS: dict[str, ClaimKind] = {
    "complexity": ClaimKind("a", "how each arm's difference from the reference arm changes from the easiest to the hardest alpha",
                            "an alpha factor with two or more levels"),
    "out_of_domain": ClaimKind("b", "each arm's loss out of domain (perturbations at their worst severity, train/test shift) "
                               "minus the reference arm's", "evaluation.perturbations or evaluation.shift"),
    "context": ClaimKind("c", "each arm's Dice at the largest patch minus at the smallest", "a patch_size factor with two or more levels"),
    "fbr_shift": ClaimKind("d", "each arm's loss on test volumes whose FBR lies outside its training range minus the reference arm's",
                           "patch training (a patches section or patch factor) on data with per-volume FBR"),
    "breakdown": ClaimKind("e", "each arm's share of models that broke down (clean test Dice below evaluation.breakdown) "
                           "against the reference arm's, by an exact test", "two or more arms"),
}
DEFAULT_KINDS = ("complexity", "out_of_domain", "context", "fbr_shift")  # (a)-(d); breakdown only when named
EXACT_CLAIM = "breakdown"  # decided once by an exact test of counts, not looked at round by round


class ClaimChoice(StrictModel):
    """A claim kind, for some arms only (`arms`; default every arm it compares)."""

    claim: str = Field(description="a name of CLAIM_KINDS (checked by `declared`, which names the item)")
    arms: list[str] | None = Field(None, min_length=1)


class Statistics(StrictModel):
    """Which claims the study is for, and the error rates of the two families."""

    claims: list[str | ClaimChoice] | None = Field(
        None, description="the claims the study is for; default: every claim (a)-(d) the factors allow"
    )
    alpha: float = Field(0.05, gt=0, le=0.5, description="chance of any false claim among the declared ones (Holm)")
    fdr: float = Field(0.05, gt=0, le=0.5, description="expected share of false statements among the resolved findings")
    fdr_method: Literal["bh", "by"] = Field("bh", description="bh: Benjamini-Hochberg; by: Benjamini-Yekutieli")
    claim_levels: dict[str, list[Any]] | None = Field(
        None, description="per factor, the levels claims (a)-(d) are made over (default: every level); the others are "
        "left to claim (e) and the findings"
    )

    @field_validator("claims", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, list) or not v or not all(isinstance(item, str | dict) for item in v):
            raise ValueError(f"takes a non-empty list of claim names ({', '.join(CLAIM_KINDS)}) or {{claim: NAME, arms: [...]}}")
        return v

    @field_validator("claim_levels", mode="before")
    @classmethod
    def _levels(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, dict) or not v or not all(isinstance(levels, list) and levels for levels in v.values()):
            raise ValueError("takes a mapping of factor names to non-empty lists of their levels, e.g. {alpha: [0.1, 0.8]}")
        return v

    def choices(self) -> list[ClaimChoice] | None:
        """The declared claims as `ClaimChoice`s; None: the default (every claim (a)-(d) allowed)."""
        if self.claims is None:
            return None
        return [c if isinstance(c, ClaimChoice) else ClaimChoice(claim=c) for c in self.claims]


@dataclass(frozen=True)
class Declared:
    """The declared claims of one study: kind -> the arms it is declared for (None: every arm)."""

    kinds: Mapping[str, frozenset[str] | None]

    def covers(self, kind: str, arm: str) -> bool:
        """Whether a statement of `kind` about `arm` is a declared claim."""
        if kind not in self.kinds:
            return False
        arms = self.kinds[kind]
        return arms is None or arm in arms


def allowed_kinds(*, factors: Mapping[str, Sequence[Any]], perturbations: bool, shift: bool, patch_mode: bool) -> list[str]:
    """The claim kinds a study with these factors and evaluation can make."""
    arms = len(factors.get(ARCHITECTURE, ())) > 1
    out = []
    if arms and len(factors.get("alpha", ())) > 1:
        out.append("complexity")
    if arms and (perturbations or shift):
        out.append("out_of_domain")
    if len(factors.get("patch_size", ())) > 1:
        out.append("context")
    if arms and patch_mode:
        out.append("fbr_shift")
    if arms:
        out.append("breakdown")
    return out


def declared(statistics: Statistics, allowed: Sequence[str], *, arms: Sequence[str] = (), where: str = "statistics.claims") -> Declared:
    """The declared claims, checked against what the study can make.

    Raises:
        SegstudyError: a claim the study's factors do not allow, or an arm not among its arms.
    """
    choices = statistics.choices()
    if choices is None:
        return Declared({k: None for k in DEFAULT_KINDS if k in allowed})
    kinds: dict[str, frozenset[str] | None] = {}
    for i, choice in enumerate(choices):
        if choice.claim not in CLAIM_KINDS:
            raise unknown_name("claim", choice.claim, CLAIM_KINDS, where=f"{where}[{i}]")
        if choice.claim not in allowed:
            raise SegstudyError(
                f"{where}[{i}]: claim '{choice.claim}' needs {CLAIM_KINDS[choice.claim].needs}, which this study does not have; "
                f"claims it can make: {', '.join(allowed) or 'none'}"
            )
        for arm in choice.arms or ():
            if arms and arm not in arms:
                raise SegstudyError(f"{where}[{i}].arms: '{arm}' is not one of factors.architecture: {', '.join(map(str, arms))}")
        before = kinds.get(choice.claim, frozenset())
        kinds[choice.claim] = None if choice.arms is None or before is None else before | set(choice.arms)
    return Declared(kinds)


def statistics_of(raw: Mapping[str, Any] | None) -> Statistics:
    """The statistics section of a logged spec mapping (defaults where absent or unreadable)."""
    try:
        return Statistics.model_validate(dict(raw or {}))
    except (ValueError, SegstudyError):
        return Statistics()


__all__ = [
    "CLAIM_KINDS", "ClaimChoice", "ClaimKind", "DEFAULT_KINDS", "Declared", "EXACT_CLAIM", "Statistics", "allowed_kinds", "declared",
    "statistics_of",
]
