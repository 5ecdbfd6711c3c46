"""FIDeL's OT scorer against POT (the reference), on small random problems."""

import numpy as np
import pytest
import torch
from ot.batch import solve_batch

from monitor.fidel import torch_threads
from monitor.ot import OTConfig, OTScorer, PatchCost, prior_potentials, solve_ot

STEPS, PATCHES, DIM = 6, 16, 8


@pytest.fixture(autouse=True)
def one_torch_thread():
    """As the monitor runs (see monitor.fidel.TORCH_THREADS): small tensors, and a shared machine."""
    with torch_threads(1):
        yield


def random_memory(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Smoothly varying timesteps, like an episode.
    mean = torch.cumsum(torch.randn(STEPS, PATCHES, DIM, generator=g), dim=0) + 2.0
    std = 0.5 + torch.rand(STEPS, PATCHES, DIM, generator=g)
    return mean, std


def query_near(mean: torch.Tensor, t: int, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return mean[t][torch.randperm(PATCHES, generator=g)] + noise * torch.randn(PATCHES, DIM, generator=g)


def pot_values(cost: torch.Tensor, epsilon: float) -> np.ndarray:
    return solve_batch(cost.double(), epsilon, tol=1e-6, max_iter=200_000).value_linear.numpy()


def test_fused_cost_matches_direct_float64_formula():
    mean, std = random_memory()
    x = query_near(mean, 2, 1.0, seed=1)
    z = (x.double()[None, :, None] - mean.double()[:, None]) / std.double()[:, None]
    direct = z.pow(2).sum(-1).sqrt() / DIM**0.5
    np.testing.assert_allclose(PatchCost(mean, std)(x).double(), direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(PatchCost(mean, std)(x, 2, 4).double(), direct[2:4], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("epsilon", [0.25, 0.5, 2.0])
def test_every_timestep_agrees_with_pot(epsilon):
    mean, std = random_memory()
    cost = PatchCost(mean, std)(query_near(mean, 3, 0.5, seed=2))
    result = solve_ot(cost, OTConfig(epsilon=epsilon, tol=1e-6, prune_margin=None))
    assert result.kept.tolist() == list(range(STEPS))
    np.testing.assert_allclose(result.values.numpy(), pot_values(cost, epsilon), rtol=1e-3)


def test_scorer_score_and_t_min_are_pots_minimum_and_heatmap_is_cheapest_patch():
    mean, std = random_memory()
    cost, config = PatchCost(mean, std), OTConfig()
    scorer = OTScorer(cost, config, prior_potentials(cost, mean, config), window=None)
    for k, t in enumerate([0, 1, 2, 4, 5, 5]):
        x = query_near(mean, t, 0.3, seed=10 + k)
        match = scorer(x)
        reference = pot_values(cost(x), config.epsilon)
        assert match.score == pytest.approx(reference.min(), rel=1e-3)
        assert match.t_min == reference.argmin()
        torch.testing.assert_close(match.heatmap, cost(x)[t].min(dim=1).values)


def test_windowed_search_stays_near_previous_t_min():
    mean, std = random_memory()
    cost, config = PatchCost(mean, std), OTConfig()
    scorer = OTScorer(cost, config, prior_potentials(cost, mean, config), window=1)
    assert scorer(query_near(mean, 0, 0.1, seed=3)).t_min == 0  # first frame: full search
    assert scorer.search_range() == (0, 2)
    assert scorer(query_near(mean, 5, 0.1, seed=4)).t_min <= 1  # t=5 is out of reach
    scorer.reset()
    assert scorer.search_range() == (0, STEPS)


def test_warm_start_makes_a_repeated_frame_free():
    mean, std = random_memory()
    cost, config = PatchCost(mean, std), OTConfig(prune_margin=None)
    scorer = OTScorer(cost, config, torch.zeros(STEPS, PATCHES), window=None)
    x = query_near(mean, 2, 0.5, seed=5)
    first, second = scorer(x), scorer(x)
    assert first.newton_steps > 0 and second.newton_steps == 0
    assert second.score == pytest.approx(first.score, rel=1e-4)


def test_pruning_keeps_the_minimum():
    mean, std = random_memory()
    cost = PatchCost(mean, std)
    for seed in range(5):
        costs = cost(query_near(mean, seed % STEPS, 1.0, seed=seed))
        pruned = solve_ot(costs, OTConfig(prune_margin=0.1))
        full = solve_ot(costs, OTConfig(prune_margin=None))
        assert len(pruned.kept) < STEPS
        assert float(pruned.values.min()) == pytest.approx(float(full.values.min()), rel=1e-4)


def test_non_finite_costs_raise():
    cost = torch.ones(2, 4, 4)
    cost[0, 1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        solve_ot(cost, OTConfig(prune_margin=None))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epsilon": 0}, "epsilon"),
        ({"tol": -1}, "tol"),
        ({"max_newton_steps": 0}, "max_newton_steps"),
        ({"prune_margin": -0.1}, "prune_margin"),
    ],
)
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OTConfig(**kwargs)


def test_scorer_rejects_mismatched_prior_and_window():
    mean, std = random_memory()
    cost = PatchCost(mean, std)
    with pytest.raises(ValueError, match="prior potentials must be"):
        OTScorer(cost, OTConfig(), torch.zeros(STEPS + 1, PATCHES), window=None)
    with pytest.raises(ValueError, match="window"):
        OTScorer(cost, OTConfig(), torch.zeros(STEPS, PATCHES), window=-1)
