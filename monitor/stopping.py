"""When to stop collecting successful rollouts of a policy that fails too often to supply them (the monitor's
nominal episodes, SimFails' `fit` split): say so after a few attempts, not after all of them."""

from __future__ import annotations

from scipy.stats import betabinom

NOMINAL_GIVE_UP = 1e-3
"""Collection stops once the chance of still finding the missing successful episodes is below this (`hopeless`)."""
MIN_ATTEMPTS = 5
"""Attempts before a collection may be judged hopeless on its success rate (the cap is checked from the first)."""


def hopeless(successes: int, attempts: int, needed: int, max_attempts: int, give_up: float = NOMINAL_GIVE_UP) -> bool:
    """Whether collecting `needed` successful episodes within `max_attempts` is no longer worth trying, after
    `successes` of `attempts` so far.

    The rule: always when even every remaining attempt succeeding would fall short; from MIN_ATTEMPTS on, also when
    the chance of the remaining attempts supplying the missing successes is below `give_up`. That chance is taken
    under what the attempts so far say about the policy's success rate p: with a uniform prior, p ~ Beta(k+1, n−k+1)
    after k of n, so the remaining successes are beta-binomial(max_attempts − n, k+1, n−k+1). A small `give_up`
    keeps it from abandoning a collection that would have finished while an always-failing policy still stops
    after a handful of attempts instead of `max_attempts` rollouts."""

    if not 0 <= successes <= attempts <= max_attempts or needed < 1:
        raise ValueError(
            f"need 0 <= successes <= attempts <= max_attempts and needed >= 1, got successes={successes}, "
            f"attempts={attempts}, max_attempts={max_attempts}, needed={needed}"
        )
    if successes >= needed:
        return False
    remaining, missing = max_attempts - attempts, needed - successes
    if missing > remaining:
        return True
    if attempts < MIN_ATTEMPTS:
        return False
    chance = betabinom.sf(missing - 1, remaining, successes + 1, attempts - successes + 1)
    return bool(chance < give_up)
