"""Every allocation that tries one perturbation per rollout (a bandit over the candidates), by its `search=` name."""

from __future__ import annotations

from diagnosis.bandits import Bandit, RandomAllocation, ThompsonSampling, TopKIdentification, UniformAllocation
from diagnosis.boundary import BoundarySearch

BANDITS: dict[str, type[Bandit]] = {
    "uniform": UniformAllocation,
    "random": RandomAllocation,
    "thompson": ThompsonSampling,
    "lucb": TopKIdentification,
    "boundary": BoundarySearch,
}
