"""Replicate counts and thresholds for size tests that can tell a good rule from a bad one.

A size test runs a verdict rule on ``n`` replicates without the effect and passes when at most
``k`` of them come out "supported". ``plan`` picks the smallest ``n`` (and its ``k``) such that a
rule whose true size is ``good`` (the nominal 0.05) fails the test with probability below
``miss``, and a rule of size ``bad`` (0.15) passes it with probability below ``miss``. Both
probabilities are exact binomial tails; :func:`describe` states them beside each test.

    >>> plan()            # doctest: +SKIP
    SizePlan(n=181, k=16, p_fail_good=0.0097, p_pass_bad=0.0097)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from scipy.stats import binom


@dataclass(frozen=True)
class SizePlan:
    n: int  # replicates without the effect
    k: int  # most "supported" verdicts allowed
    p_fail_good: float  # P(test fails | true size = good)
    p_pass_bad: float  # P(test passes | true size = bad)

    def ok(self, count: int) -> bool:
        """Whether ``count`` false "supported" verdicts out of ``n`` pass the test."""
        return count <= self.k

    def describe(self, count: int) -> str:
        return (
            f"{count} of {self.n} replicates 'supported' (allowed <= {self.k}; a size-0.05 rule "
            f"fails this test with p={self.p_fail_good:.4f}, a size-0.15 rule passes with "
            f"p={self.p_pass_bad:.4f})"
        )


@lru_cache(maxsize=None)
def plan(good: float = 0.05, bad: float = 0.15, miss: float = 0.01, n_max: int = 2000) -> SizePlan:
    """The smallest replicate count that separates a size-``good`` rule from a size-``bad`` one."""
    for n in range(10, n_max + 1):
        k = int(binom.isf(miss, n, good))  # smallest k with P(X > k | good) <= miss, up to rounding
        while binom.sf(k, n, good) >= miss:
            k += 1
        if binom.cdf(k, n, bad) < miss:
            return SizePlan(n, k, float(binom.sf(k, n, good)), float(binom.cdf(k, n, bad)))
    raise ValueError("no replicate count up to n_max separates the two sizes")


@lru_cache(maxsize=None)
def power_threshold(n: int, power: float = 0.8, miss: float = 0.01) -> int:
    """Fewest detections out of ``n`` that a rule of true power ``power`` still reaches with
    probability at least 1 - ``miss`` (the pass mark of a power test)."""
    return int(binom.ppf(miss, n, power))


if __name__ == "__main__":  # pragma: no cover
    print(plan())
