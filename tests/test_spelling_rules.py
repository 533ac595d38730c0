"""Every spelling verdict rule on synthetic truth (docs/method.md, Findings): without the effect it
says "supported" at most at its nominal size, a planted effect is found, and an effect too weak for
the run's sizes comes out "inconclusive", never "not supported".

The trainings are simulated by tests/spelling_truth.py (vectorised over replicates; the closed-form
reference stands in for the count null, the cascade null runs with 30 permutations). Rules:
2a / 3a / 5a = claims 2, 3, 5 as stated; 2b / 3b / 5b = beyond the null.

Size tests use tests/sizecheck.py's plan(): 181 replicates, at most 16 "supported" (a size-0.05
rule fails with p = 0.0097, a size-0.15 rule passes with p = 0.0097). The counts found with these
seeds are written beside each test; the margins were checked with two other seed bases (seed + 1,
seed + 2), which stayed inside the limits.
"""

import numpy as np
import pytest

from gptwaves.analysis import claims as cl
from sizecheck import plan, power_threshold
from spelling_truth import Truth, paper_rates, simulate, tally, verdicts

PLAN = plan()
RATES = paper_rates(4, 0.6, 0.2)  # four checkpoints, error rate 0.6 -> 0.2
N = 100  # samples per checkpoint
N_PERM = 20  # permutations of the cascade null (z uses their SD; its p-value is not read by the rules)


def _supported(vs, keys):
    return {k: tally(vs, k)[cl.SUPPORTED] for k in keys}


def _check_size(counts):
    bad = {k: PLAN.describe(c) for k, c in counts.items() if not PLAN.ok(c)}
    assert not bad, bad


# ------------------------------------------------------------------------------------------ size
def test_size_independent_errors_with_position_dependent_rate():
    """Errors independent given length and position (logit slope -2 over the sample), rate falling:
    no rule beyond the null is "supported" above its size, nor claim 5 as stated.
    Measured: 2b 1, 3b 3, 5a 7, 5b 2 of 181."""
    vs = verdicts(simulate([Truth(r) for r in RATES], PLAN.n, N, seed=11, n_perm=N_PERM))
    _check_size(_supported(vs, ("2b", "3b", "5a", "5b")))


def test_size_constant_per_sample_propensity():
    """Clustering constant through training (per-sample propensity, SD 0.5 on the log-odds): no
    change of the excess to claim, no cascade to suppress. Measured: 2b 2, 3b 0, 5a 12, 5b 0 of 181."""
    vs = verdicts(simulate([Truth(r, sigma=0.5) for r in RATES], PLAN.n, N, seed=12, n_perm=N_PERM))
    _check_size(_supported(vs, ("2b", "3b", "5a", "5b")))


def test_size_constant_propensity_at_the_papers_error_rates():
    """The same constant clustering with the error rate falling 0.92 -> 0.057 (the paper run's
    range), 200 samples: F / null median of the misspelled count rises by itself (the word-total
    variance dominates F_misspelled while errors are common), so the excess alone would call it
    a build-up; the residual variance ratio, which stays put, keeps claims 2 and 3 beyond from
    saying so. Measured: 2b 5, 3b 0 of 181."""
    vs = verdicts(simulate([Truth(r, sigma=0.5) for r in paper_rates(4)], PLAN.n, 200, seed=15, n_perm=0))
    _check_size(_supported(vs, ("2b", "3b")))


def test_size_cascade_that_persists():
    """A Markov cascade (+1 log-odds after an error) at every checkpoint: claim 5 beyond must not
    say it was suppressed. Measured: 0 of 181. (Claim 5 as stated, "z falls towards 0", said
    supported in 12 of 181: z also shrinks when a constant cascade gets harder to see as errors
    become rare, which is why the beyond verdict asks whether the cascade itself went away.)"""
    vs = verdicts(simulate([Truth(r, markov=1.0) for r in RATES], PLAN.n, N, seed=13, n_perm=N_PERM))
    _check_size(_supported(vs, ("5b",)))


def test_size_as_stated_poissonian_counts():
    """Random word starts with a Poisson total and independent errors: both counts are Poissonian
    at every checkpoint, so neither "Poissonian -> sub-Poissonian" (2a) nor a rising F_misspelled
    (3a) may be supported. Measured: 2a 1, 3a 6 of 181."""
    vs = verdicts(simulate([Truth(r, slope=0.0) for r in RATES], PLAN.n, N, seed=14, poisson=True, n_perm=0))
    _check_size(_supported(vs, ("2a", "3a")))


# ------------------------------------------------------------------------------------------ power
R_POWER = 40
RATES_6 = paper_rates(6, 0.95, 0.1)


@pytest.mark.parametrize("truths, keys, n, n_perm", [
    # clustered at first (per-sample propensity SD 1: F_correct above 1), independent later with
    # errors getting rare: the sub-Poissonian word total shows through, F_correct crosses 1
    ([Truth(r, sigma=1.0 if j < 2 else 0.0) for j, r in enumerate(RATES_6)], ("2a",), 300, 0),
    # thinning: as errors get rare F_misspelled rises towards 1
    ([Truth(r) for r in RATES_6], ("3a",), 600, 0),
    # errors become regular late (refractory: probability x 0.05 after an error, rate 0.5): the
    # correct excess falls below 1
    ([Truth(0.5, refractory=1.0 if j < 3 else 0.05) for j in range(6)], ("2b",), 300, 0),
    # clustering builds up (per-sample propensity SD 0 -> 1): the misspelled excess rises
    ([Truth(r, sigma=float(s)) for r, s in zip(RATES_6, np.linspace(0, 1, 6))], ("3b",), 200, 0),
    # a cascade that fades (+1.5 -> 0 log-odds after an error, rate 0.4): |z| falls, and the early
    # cascade is gone at the last checkpoint
    ([Truth(0.4, markov=float(m)) for m in np.linspace(1.5, 0, 6)], ("5a", "5b"), 200, N_PERM),
], ids=["crossing", "thinning", "refractory-late", "clustering-builds", "cascade-fades"])
def test_planted_effects_found(truths, keys, n, n_perm):
    """Measured (of 40): crossing 2a 40; thinning 3a 30; refractory 2b 40; clustering 3b 40;
    cascade 5a 39, 5b 40."""
    vs = verdicts(simulate(truths, R_POWER, n, seed=21, n_perm=n_perm))
    need = power_threshold(R_POWER)  # 26: a rule with power 0.8 reaches this with probability 0.99
    found = _supported(vs, keys)
    assert all(c >= need for c in found.values()), (found, need)


# ------------------------------------------------------------------------------------------ weak
N_WEAK = 60


@pytest.mark.parametrize("truths, poisson, keys, n_perm", [
    # F_words = 0.9 (binomial total), error rate 0.95 -> 0.2: F_correct 1.00 -> 0.92, F_misspelled
    # 0.90 -> 0.98
    ([Truth(r, slope=0.0) for r in paper_rates(4, 0.95, 0.2)], 0.9, ("2a", "3a"), 0),
    # a weak refractory effect late (RR 0.7): the correct excess falls a little
    ([Truth(r, refractory=1.0 if j < 2 else 0.7) for j, r in enumerate(RATES)], False, ("2b",), 0),
    # weak clustering building up (propensity SD 0 -> 0.3)
    ([Truth(r, sigma=float(s)) for r, s in zip(RATES, np.linspace(0, 0.3, 4))], False, ("3b",), 0),
    # a weak cascade (+0.25 log-odds: RR about 1.15) that fades
    ([Truth(0.4, markov=float(m)) for m in np.linspace(0.25, 0, 4)], False, ("5a", "5b"), N_PERM),
], ids=["thinning-weak", "refractory-weak", "clustering-weak", "cascade-weak"])
def test_weak_effects_are_inconclusive_not_not_supported(truths, poisson, keys, n_perm):
    """Effects beyond the 10% margin that 60 samples per checkpoint cannot show: mostly
    "inconclusive"; "not supported" only at the rate of a CI that excludes the true direction by
    chance (at most 2.5%), checked like a size: at most 16 of 181 (plan()).
    Measured (not supported / inconclusive of 181): thinning 2a 8 / 163, 3a 2 / 168; refractory
    2b 4 / 173; clustering 3b 0 / 162; cascade 5a 0 / 168, 5b 1 / 164."""
    vs = verdicts(simulate(truths, PLAN.n, N_WEAK, seed=31, poisson=poisson, n_perm=n_perm))
    for k in keys:
        t = tally(vs, k)
        assert PLAN.ok(t[cl.NOT_SUPPORTED]), (k, t, PLAN.describe(t[cl.NOT_SUPPORTED]))
        assert t[cl.INCONCLUSIVE] > PLAN.n // 2, (k, t)
