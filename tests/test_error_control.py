"""Error control across a study's statements (analysis/stats/core/multiplicity.py, decisions.py,
analysis/stats/statements/study.py), checked on simulated studies run through the same code a real
study's summary uses: with no true difference anywhere, a false claim among the declared claims in
at most 5% of studies (Holm), and false discoveries among the findings at most 5% on average
(Benjamini-Hochberg); a claim's clean and perturbed scores of one model are one repeated measure."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from analysis.read.study_spec import Settings
from analysis.stats.core.contrasts import frame_contrast
from analysis.stats.core.decisions import decide_claims
from analysis.stats.statements.study import study_statements
from study.spec.statistics import Declared

ARMS = ("unet", "noskip_unet", "attention_unet")
LEVELS = (0.1, 0.9)
N_STUDIES = 200
SAMPLING = 2 * np.sqrt(0.05 * 0.95 / N_STUDIES)  # two standard errors of a 5% rate over N_STUDIES


def simulated_study(rng: np.random.Generator, *, effect: float = 0.0, seeds: int = 3, images: int = 16,
                    levels: tuple[float, ...] = LEVELS):
    """Per-image rows and trials of a 3-arm x 2-level study, clean and under one perturbation, from
    the model the inference assumes: a seed effect per trained model (shared by its clean and
    perturbed scores), an image effect shared by every cell, an image x cell interaction and noise.
    `effect`: how much more noskip_unet loses under the perturbation than every other arm."""
    image = rng.normal(0.0, 0.08, images)
    rows, trials = [], []
    for arm in ARMS:
        for level in levels:
            cell = f"alpha={level},architecture={arm}"
            interaction = rng.normal(0.0, 0.02, images)
            for seed in range(seeds):
                run = f"{cell}|{seed}"
                clean = 0.9 - 0.3 * level + rng.normal(0.0, 0.04) + image + interaction + rng.normal(0.0, 0.03, images)
                loss = 0.2 + (effect if arm == "noskip_unet" else 0.0) + rng.normal(0.0, 0.02)
                perturbed = clean - loss + rng.normal(0.0, 0.03, images)
                for condition, values in (("clean", clean), ("speckle:5", perturbed)):
                    rows += [(cell, seed, run, f"img{i}", condition, v, arm, level) for i, v in enumerate(values)]
                trials.append((run, cell, seed, arm, level, float(clean.mean()), True))
    per_image = pd.DataFrame(rows, columns=["cell", "seed", "run_id", "image_id", "condition", "dice", "architecture", "alpha"])
    trials = pd.DataFrame(trials, columns=["run_id", "cell", "seed", "architecture", "alpha", "test_dice", "learned"])
    for frame in (per_image, trials):
        frame.attrs["factors"] = ["alpha", "architecture"]
    return per_image, trials


SETTINGS = Settings(reference="unet", declared=Declared({"complexity": None, "out_of_domain": None}),
                    factors={"alpha": list(LEVELS), "architecture": list(ARMS)})


def test_no_true_difference_gives_a_false_declared_claim_or_finding_in_at_most_5_percent_of_studies():
    rng = np.random.default_rng(20261206)
    false_claim, naive_claim, false_share = [], [], []
    for _ in range(N_STUDIES):
        said = study_statements(*simulated_study(rng), settings=SETTINGS)
        declared = said.declared()
        assert len(declared) == 4  # (a) and (b) for two arms: one family
        false_claim.append(bool(declared["resolved"].any()))
        naive_claim.append(bool((declared["p"] < 0.05).any()))
        found = said.findings
        false_share.append(found["resolved"].sum() / max(int(found["resolved"].sum()), 1))  # every finding is false here
    fwer, naive, fdr = np.mean(false_claim), np.mean(naive_claim), np.mean(false_share)
    print(f"\n{N_STUDIES} studies with no true difference: a false declared claim in {fwer:.1%} (each at 5% alone: "
          f"{naive:.1%}); false discoveries among the findings {fdr:.1%} on average")
    assert fwer <= 0.05 + SAMPLING
    assert fdr <= 0.05 + SAMPLING
    assert naive > fwer  # the family's control is doing something


def test_a_true_difference_is_resolved_and_its_interval_agrees_with_the_decision():
    rng = np.random.default_rng(3)
    said = study_statements(*simulated_study(rng, effect=0.15, seeds=4), settings=SETTINGS)
    claims = said.claims.set_index(["claim", "arm"])
    row = claims.loc[("b", "noskip_unet")]
    assert row["family"] == "declared" and row["resolved"] and row["estimate"] == pytest.approx(0.15, abs=0.05)
    assert row["ci_low"] > 0 and row["confidence"] > 0.95  # a Holm step's level, wider than 95%
    for r in said.claims.dropna(subset=["ci_low"]).itertuples():
        assert (r.ci_low > 0 or r.ci_high < 0) == r.resolved, r.line  # never an interval against its decision
    assert ", Holm p " in row["line"] and row["line"].count(": resolved") == 1


def test_a_models_clean_and_perturbed_scores_are_one_repeated_measure():
    """A seed that scores high clean scores high perturbed too: its loss carries no seed effect. Taking
    the two conditions as independent cells counts each model twice and inflates the interval."""
    rng = np.random.default_rng(8)
    per_image, _ = simulated_study(rng, seeds=5)
    used = per_image[per_image["alpha"] == 0.1]
    terms = [({"architecture": "noskip_unet", "condition": "clean"}, 1.0), ({"architecture": "noskip_unet", "condition": "speckle:5"}, -1.0),
             ({"architecture": "unet", "condition": "clean"}, -1.0), ({"architecture": "unet", "condition": "speckle:5"}, 1.0)]
    paired = frame_contrast(used, terms)
    apart = [frame_contrast(used.assign(architecture=used["architecture"] + "|" + used["condition"]),
                            [({"architecture": f"{a}|{c}"}, w)]) for (a, c), w in
             ((("noskip_unet", "clean"), 1.0), (("noskip_unet", "speckle:5"), -1.0), (("unet", "clean"), -1.0), (("unet", "speckle:5"), 1.0))]
    assert paired.estimate == pytest.approx(sum(e.estimate for e in apart))  # each already weighted
    separate_seed_variance = sum(e.seed_variance for e in apart)
    assert paired.seed_variance < separate_seed_variance / 3  # the shared seed effect cancels in each model's loss


def test_undeclared_claims_are_exploratory_and_declared_arms_only_count():
    rng = np.random.default_rng(5)
    per_image, trials = simulated_study(rng)
    settings = Settings(reference="unet", declared=Declared({"out_of_domain": frozenset({"noskip_unet"})}),
                        factors=SETTINGS.factors)
    said = study_statements(per_image, trials, settings=settings)
    declared = said.declared()
    assert list(zip(declared["claim"], declared["arm"])) == [("b", "noskip_unet")]
    assert declared["method"].tolist() == ["holm"]
    rest = said.claims[said.claims["family"] == "exploratory"]
    assert set(rest["method"]) == {"bh"} and {"a", "e"} <= set(rest["claim"])
    # With one declared claim Holm is no adjustment: its p is its own.
    assert declared["p_adjusted"].iloc[0] == pytest.approx(declared["p"].iloc[0])


def test_holm_over_claims_with_their_looks():
    """A sequential claim enters its family as K p: resolved exactly when K p passes its Holm step."""
    table = pd.DataFrame({
        "claim": ["a", "a"], "kind": ["complexity"] * 2, "arm": ["x", "y"], "reference": ["r"] * 2, "about": ["s"] * 2,
        "estimate": [0.1, 0.1], "ci_low": [0.0, 0.0], "ci_high": [0.2, 0.2], "p": [0.004, 0.004], "se": [0.01, 0.01],
        "df": [10.0, 10.0], "n_seeds": [3, 3], "n_images": [10, 10], "not_learned": ["", ""], "text": ["t", "t"],
        "tail": ["x", "x"], "line": ["", ""],
    })
    decided = decide_claims(table, Declared({"complexity": None}), alpha=0.05, q=0.05, looks=[8, 1])
    assert decided["p_adjusted"].tolist() == pytest.approx([0.032, 0.008])  # 8p and p, then Holm over 2
    assert decided["resolved"].tolist() == [True, True]
    looked = decide_claims(table.assign(p=[0.007, 0.01]), Declared({"complexity": None}), alpha=0.05, q=0.05, looks=[8, 1])
    assert looked["resolved"].tolist() == [False, True]  # 8 x 0.007 = 0.056: the look cost x its decision


def test_claim_levels_leave_a_breakdown_level_to_claim_e():
    """At a breakdown level (0.95) one model did not learn. Claims (a) and (b) averaged over it are
    void; made over `statistics.claim_levels` (0.1 and 0.9) they rest on models that learned, while
    claim (e) still counts every model at every level."""
    per_image, trials = simulated_study(np.random.default_rng(3), levels=(0.1, 0.9, 0.95))
    bad = trials["run_id"] == "alpha=0.95,architecture=noskip_unet|1"
    trials.loc[bad, "learned"] = False
    every = Settings(reference="unet", declared=SETTINGS.declared, factors={"alpha": [0.1, 0.9, 0.95], "architecture": list(ARMS)})
    void = study_statements(per_image, trials, settings=every).claims.set_index(["claim", "arm"])
    assert void.loc[("a", "noskip_unet"), "about"] == "alpha 0.1 -> 0.95"
    assert void.loc[("a", "noskip_unet"), "not_learned"] == "alpha=0.95,architecture=noskip_unet seed=1"
    assert void.loc[("b", "noskip_unet"), "not_learned"] != "" and not void.loc[("b", "noskip_unet"), "resolved"]

    claim_levels = Settings(reference="unet", declared=SETTINGS.declared, factors={"alpha": [0.1, 0.9], "architecture": list(ARMS)})
    said = study_statements(per_image, trials, settings=claim_levels).claims.set_index(["claim", "arm"])
    assert said.loc[("a", "noskip_unet"), "about"] == "alpha 0.1 -> 0.9"
    made = said.loc[said.index.get_level_values("claim").isin(["a", "b"])]
    assert (made["not_learned"] == "").all() and made["p"].notna().all()
    # (b) is the same contrast as over the rows of 0.1 and 0.9 alone
    alone = per_image[per_image["alpha"] < 0.95]
    only = study_statements(alone, trials[trials["alpha"] < 0.95], settings=claim_levels).claims.set_index(["claim", "arm"])
    assert said.loc[("b", "noskip_unet"), "estimate"] == pytest.approx(only.loc[("b", "noskip_unet"), "estimate"])
    # (e) counts the models at 0.95 too: 9 per arm
    assert said.loc[("e", "noskip_unet"), "n_seeds"] == 9, said.loc[("e", "noskip_unet")].to_dict()


def test_a_claim_at_the_trivial_answer_out_of_domain_is_censored_and_never_resolved():
    """noskip_unet loses 0.1 more under speckle (a real difference, resolved). When one of its models
    falls to the trivial answer under speckle at 0.9 (Dice 0.15; every pixel foreground scores 0.167
    on images whose foreground is a tenth of the background), its loss is its clean Dice minus a
    constant: the claim is censored, shows no interval, is not resolved, and enters Holm at p = 1 so
    it relaxes no other claim's threshold."""
    per_image, trials = simulated_study(np.random.default_rng(5), effect=0.1)
    per_image["fbr"] = 0.1
    said = study_statements(per_image, trials, settings=SETTINGS).claims.set_index(["claim", "arm"])
    assert said.loc[("b", "noskip_unet"), "resolved"] and said.loc[("b", "noskip_unet"), "censored"] == ""

    floored = per_image.copy()
    hit = (floored["run_id"] == "alpha=0.9,architecture=noskip_unet|2") & (floored["condition"] == "speckle:5")
    floored.loc[hit, "dice"] = 0.15
    void = study_statements(floored, trials, settings=SETTINGS).claims.set_index(["claim", "arm"])
    row = void.loc[("b", "noskip_unet")]
    assert row["censored"] == "alpha=0.9,architecture=noskip_unet seed=2 under speckle:5: Dice 0.150, trivial 0.167"
    assert not row["resolved"] and row["outcome"].startswith("unresolved (a model it rests on is at the trivial answer")
    assert np.isnan(row["ci_low"]) and row["p_adjusted"] == 1.0
    assert "[AT THE TRIVIAL ANSWER: alpha=0.9,architecture=noskip_unet seed=2 under speckle:5" in row["line"]
    assert (void.drop(index=[("b", "noskip_unet")])["censored"].fillna("") == "").all()  # the other arm's claim rests on other models
    # A gain of 0 moves the line to the trivial answer itself: 0.150 is still at or below it.
    assert study_statements(floored, trials, settings=dataclasses.replace(SETTINGS, trivial_gain=0.0)).claims.set_index(
        ["claim", "arm"]).loc[("b", "noskip_unet"), "censored"] != ""
