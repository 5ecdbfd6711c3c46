"""FIDeL's OT scorer against POT (the reference), on small random problems."""

import numpy as np
import pytest
import torch
from ot.batch import solve_batch

from monitor.fidel import torch_threads
from monitor.ot import OTConfig, OTScorer, PatchCost, grid_distances, prior_potentials, solve_ot

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


def test_positional_term_adds_lambda_times_grid_distance():
    mean, std = random_memory()
    x = query_near(mean, 2, 1.0, seed=1)
    distances = grid_distances(PATCHES)
    assert (
        distances[0, 1] == 1 and distances[0, 5] == pytest.approx(2**0.5) and distances[3, 12] == pytest.approx(18**0.5)
    )  # 4×4 grid, row-major
    torch.testing.assert_close(PatchCost(mean, std, 0.7)(x), PatchCost(mean, std)(x) + 0.7 * distances)
    with pytest.raises(ValueError, match="square patch grid"):
        grid_distances(15)


@pytest.mark.parametrize("position_weight", [0.0, 0.3])
@pytest.mark.parametrize("epsilon", [0.25, 0.5, 2.0])
def test_every_timestep_agrees_with_pot(epsilon, position_weight):
    mean, std = random_memory()
    cost = PatchCost(mean, std, position_weight)(query_near(mean, 3, 0.5, seed=2))
    result = solve_ot(cost, OTConfig(epsilon=epsilon, tol=1e-6, prune_margin=None))
    assert result.kept.tolist() == list(range(STEPS))
    np.testing.assert_allclose(result.values.numpy(), pot_values(cost, epsilon), rtol=1e-3)
    # Per-query-patch transported costs: n·Σ_j Π_ij C_ij from POT's plan, averaging to the transport cost.
    plan = solve_batch(cost.double(), epsilon, tol=1e-6, max_iter=200_000).plan
    np.testing.assert_allclose(result.rows.numpy(), PATCHES * (plan * cost.double()).sum(2).numpy(), atol=2e-3)
    np.testing.assert_allclose(result.rows.mean(1).numpy(), result.values.numpy(), rtol=1e-9)


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


def test_frame_score_options_read_the_heatmap():
    mean, std = random_memory()
    cost, config = PatchCost(mean, std), OTConfig(prune_margin=None, tol=1e-6)
    prior = prior_potentials(cost, mean, config)
    x = query_near(mean, 3, 0.3, seed=7)
    published = OTScorer(cost, config, prior, window=None)(x)
    top = OTScorer(cost, config, prior, window=None, frame_score="heatmap", top_k=3)(x)
    assert top.t_min == published.t_min
    torch.testing.assert_close(top.heatmap, published.heatmap)
    assert top.score == pytest.approx(float(torch.topk(published.heatmap, 3).values.mean()), rel=1e-6)
    moved = OTScorer(cost, config, prior, window=None, frame_score="heatmap", top_k=1, heatmap="transport")(x)
    full = solve_ot(cost(x), config)
    assert moved.t_min == published.t_min
    torch.testing.assert_close(moved.heatmap, full.rows[moved.t_min].float())
    assert moved.score == pytest.approx(float(full.rows[moved.t_min].max()), rel=1e-5)
    assert float(moved.heatmap.mean()) == pytest.approx(published.score, rel=1e-5)


def lookalike_steps():
    """A memory whose steps 1 and 4 look alike, its cost, OT settings and prior, and a frame near step 1."""
    mean, std = random_memory()
    mean = mean.clone()
    mean[4] = mean[1] + 0.05
    cost, config = PatchCost(mean, std), OTConfig()
    x = mean[1] + 0.01 * torch.randn(PATCHES, DIM, generator=torch.Generator().manual_seed(0))
    return mean, cost, config, prior_potentials(cost, mean, config), x


def test_time_prior_prefers_timesteps_near_the_frame_index():
    """Memory steps 1 and 4 look alike: the published score takes the cheaper, the temporal prior the one near
    the frame's place in the episode."""
    mean, cost, config, prior, x = lookalike_steps()
    plain = OTScorer(cost, config, prior, window=None)
    assert plain(x).t_min == 1
    timed = OTScorer(cost, config, prior, window=None, time_weight=5.0)
    for _ in range(4):  # frames 0..3
        timed(mean[0])
    assert timed(x).t_min == 4  # frame 4: step 4 is near, step 1 is 3 steps away
    timed.reset()
    assert timed(x).t_min == 1  # frame 0


def test_time_prior_anchored_on_progress_follows_a_slow_execution():
    """Memory steps 1 and 4 look alike. After four frames spent at step 0 (a pause), the clock-anchored prior
    pulls the fifth frame to step 4 (its index); anchored on progress it expects the step after the last match."""
    mean, cost, config, prior, x = lookalike_steps()
    matches = {}
    for anchor in ("clock", "progress"):
        scorer = OTScorer(cost, config, prior, window=None, time_weight=2.0, time_anchor=anchor)
        paused = [scorer(mean[0]).t_min for _ in range(4)]
        matches[anchor] = (paused, scorer(x).t_min)
    assert matches == {"clock": ([0, 0, 0, 0], 4), "progress": ([0, 0, 0, 0], 1)}
    with pytest.raises(ValueError, match="time_anchor"):
        OTScorer(cost, config, prior, window=None, time_anchor="wall")


def test_lag_limits_the_search_before_the_previous_t_min():
    mean, std = random_memory()
    cost, config = PatchCost(mean, std), OTConfig()
    scorer = OTScorer(cost, config, prior_potentials(cost, mean, config), window=2, lag=0)
    assert scorer(query_near(mean, 3, 0.1, seed=3)).t_min == 3
    assert scorer.search_range() == (3, 6)


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
        ({"position_weight": -1}, "position_weight"),
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
    prior = torch.zeros(STEPS, PATCHES)
    for kwargs, message in [
        ({"frame_score": "mean"}, "valid: transport, heatmap, band"),
        ({"heatmap": "max"}, "valid: min, transport"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": PATCHES + 1}, "top_k"),
        ({"time_weight": -1.0}, "time_weight"),
        ({"lag": -1}, "lag"),
    ]:
        with pytest.raises(ValueError, match=message):
            OTScorer(cost, OTConfig(), prior, window=None, **kwargs)
